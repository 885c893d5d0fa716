import { DatabaseSync } from 'node:sqlite';
import { InvalidOptionError } from 'keel';
import {
  type EventHandlers,
  NonRetryableEventError,
  type OutboxConsumerOptions,
  type OutboxEvent,
  type OutboxTelemetryEvent,
  outboxConsumer,
  UnknownEventTypeError,
} from 'keel/outbox';
import { sqliteInbox } from 'keel/sqlite';
import { afterEach, describe, expect, it } from 'vitest';
import { RecordingTransport } from './consumer-recording-transport.ts';
import { eventFixture, ManualClock } from './inbox-conformance.ts';

const T0 = 1_700_000_000_000;
const linear = (attempt: number) => attempt * 3;

function setup(
  overrides: Partial<OutboxConsumerOptions<DatabaseSync>> = {},
  handlers?: EventHandlers<DatabaseSync>,
) {
  const db = new DatabaseSync(':memory:');
  db.exec('CREATE TABLE invoices (payment_id TEXT NOT NULL, event_id TEXT NOT NULL)');
  const clock = new ManualClock(T0 + 250);
  const inbox = sqliteInbox({ db, clock });
  const transport = new RecordingTransport();
  const events: OutboxTelemetryEvent[] = [];
  const consumer = outboxConsumer({
    transport,
    inbox,
    group: 'invoices',
    handlers: handlers ?? {
      'payment.completed': async (event, tx) => {
        tx.prepare('INSERT INTO invoices (payment_id, event_id) VALUES (?, ?)').run(
          event.aggregateId,
          event.id,
        );
      },
    },
    backoff: linear,
    telemetry: { emit: (event) => events.push(event) },
    clock,
    ...overrides,
  });
  const invoices = (eventId: string) =>
    Number(
      (db.prepare('SELECT count(*) AS n FROM invoices WHERE event_id = ?').get(eventId) as { n: number }).n,
    );
  const types = (eventId: string) => events.filter((e) => e.eventId === eventId).map((e) => e.type);
  return { db, clock, inbox, transport, consumer, events, invoices, types };
}

type Setup = ReturnType<typeof setup>;
let current: Setup | undefined;
function make(...args: Parameters<typeof setup>): Setup {
  current = setup(...args);
  return current;
}
afterEach(async () => {
  await current?.consumer.stop();
  await current?.transport.close();
  current?.db.close();
  current = undefined;
});

describe('outboxConsumer over the sqlite inbox', () => {
  it('handles an event once, commits the invoice with the inbox row, then acks and reports the lag', async () => {
    const { transport, consumer, events, invoices, inbox } = make();
    await consumer.start();
    const event = eventFixture({ createdAt: T0 });
    await transport.publish(event);
    await transport.drained();

    expect(invoices(event.id)).toBe(1);
    expect(await inbox.isProcessed('invoices', event.id)).toBe(true);
    expect(transport.settlements).toEqual([
      { group: 'invoices', eventId: event.id, deliveryCount: 1, outcome: 'ack' },
    ]);
    expect(events).toEqual([
      {
        type: 'consumed',
        consumer: 'invoices',
        lagMs: 250,
        eventId: event.id,
        eventType: 'payment.completed',
        aggregateType: 'payment',
        aggregateId: event.aggregateId,
      },
    ]);
  });

  it('acks a redelivered event without running the handler again', async () => {
    const { transport, consumer, invoices, types } = make();
    await consumer.start();
    const event = eventFixture();
    await transport.publish(event);
    await transport.drained();
    await transport.publish(event); // the relay published again after a lost confirm
    await transport.drained();

    expect(invoices(event.id)).toBe(1);
    expect(transport.settlements.map((s) => s.outcome)).toEqual(['ack', 'ack']);
    expect(types(event.id)).toEqual(['consumed', 'duplicate-skipped']);
  });

  it('rolls back a failed attempt, retries after the back-off, and succeeds once', async () => {
    let calls = 0;
    const { transport, consumer, invoices, types, inbox } = make(
      {},
      {
        'payment.completed': async (event, tx, context) => {
          calls++;
          tx.prepare('INSERT INTO invoices (payment_id, event_id) VALUES (?, ?)').run(
            event.aggregateId,
            event.id,
          );
          expect(context).toMatchObject({ group: 'invoices', attempt: calls, redrive: false });
          if (calls < 3) throw new Error(`invoice renderer busy (${calls})`);
        },
      },
    );
    await consumer.start();
    const event = eventFixture();
    await transport.publish(event);
    await transport.drained();

    expect(calls).toBe(3);
    expect(invoices(event.id)).toBe(1);
    expect(transport.settlements).toEqual([
      { group: 'invoices', eventId: event.id, deliveryCount: 1, outcome: 'retry', delayMs: 3 },
      { group: 'invoices', eventId: event.id, deliveryCount: 2, outcome: 'retry', delayMs: 6 },
      { group: 'invoices', eventId: event.id, deliveryCount: 3, outcome: 'ack' },
    ]);
    expect(types(event.id)).toEqual(['consume-failed', 'consume-failed', 'consumed']);
    expect(await inbox.failedAttempts('invoices', event.id)).toBeUndefined();
  });

  it('parks a poison event after maxAttempts while the events of other aggregates behind it are handled', async () => {
    const poison = eventFixture({ aggregateId: 'p-poison', payload: { amount: 'NaN' } });
    const others = Array.from({ length: 5 }, (_, i) => eventFixture({ aggregateId: `p-${i}` }));
    const { transport, consumer, invoices, types, events, clock } = make(
      { maxAttempts: 3, prefetch: 1 },
      {
        'payment.completed': async (event, tx) => {
          if (event.id === poison.id) {
            clock.time += 1_000;
            throw new RangeError(
              `amount is not a number: ${String((event.payload as { amount: unknown }).amount)}`,
            );
          }
          tx.prepare('INSERT INTO invoices (payment_id, event_id) VALUES (?, ?)').run(
            event.aggregateId,
            event.id,
          );
        },
      },
    );
    await consumer.start();
    await transport.publish(poison);
    for (const event of others) await transport.publish(event);
    await transport.drained();

    for (const event of others) expect(invoices(event.id)).toBe(1);
    // The others were acked before the poison event's last attempt: it never held them up.
    const firstOtherAck = transport.settlements.findIndex((s) => s.eventId === others[0]?.id);
    const poisonParked = transport.settlements.findIndex(
      (s) => s.eventId === poison.id && s.outcome === 'ack',
    );
    expect(firstOtherAck).toBeLessThan(poisonParked);

    expect(types(poison.id)).toEqual(['consume-failed', 'consume-failed', 'consume-failed', 'dead-lettered']);
    expect(events.find((e) => e.type === 'dead-lettered')).toMatchObject({
      attempts: 3,
      error: expect.any(RangeError),
    });
    const [letter] = await consumer.deadLetters({ ids: [poison.id] });
    expect(letter).toMatchObject({
      group: 'invoices',
      event: poison,
      attempts: 3,
      firstFailedAt: T0 + 1_250,
      lastFailedAt: T0 + 3_250,
      lastError: { message: 'RangeError: amount is not a number: NaN' },
    });
    expect(letter?.lastError?.stack).toContain('RangeError: amount is not a number');
    expect(await consumer.countDeadLetters()).toBe(1);
    expect(invoices(poison.id)).toBe(0);
  });

  it('parks an event of an unknown type at once with a typed error, having written nothing', async () => {
    const { transport, consumer, events, inbox, db } = make();
    await consumer.start();
    const event = eventFixture({ type: 'payment.disputed' });
    await transport.publish(event);
    await transport.drained();

    expect(transport.settlements).toEqual([
      { group: 'invoices', eventId: event.id, deliveryCount: 1, outcome: 'ack' },
    ]);
    const failed = events.find((e) => e.type === 'consume-failed');
    expect(failed).toMatchObject({ attempt: 1, error: expect.any(UnknownEventTypeError) });
    expect((failed as { error: UnknownEventTypeError }).error.code).toBe('KEEL_OUTBOX_UNKNOWN_EVENT_TYPE');
    const [letter] = await consumer.deadLetters({ type: 'payment.disputed' });
    expect(letter?.attempts).toBe(1);
    expect(letter?.lastError?.message).toBe(
      "UnknownEventTypeError: No handler for event type 'payment.disputed' in consumer group 'invoices'",
    );
    expect(await inbox.isProcessed('invoices', event.id)).toBe(false);
    expect(db.prepare('SELECT count(*) AS n FROM invoices').get()).toEqual({ n: 0 });
  });

  it("acks an unknown type and keeps nothing with onUnknown: 'skip'", async () => {
    const { transport, consumer, events, inbox } = make({ onUnknown: 'skip' });
    await consumer.start();
    const event = eventFixture({ type: 'payment.disputed' });
    await transport.publish(event);
    await transport.drained();
    expect(transport.settlements.map((s) => s.outcome)).toEqual(['ack']);
    expect(events).toEqual([]);
    expect(await consumer.countDeadLetters()).toBe(0);
    expect(await inbox.isProcessed('invoices', event.id)).toBe(false);
  });

  it('parks at once an event whose handler throws NonRetryableEventError or an error the predicate names', async () => {
    const byClass = eventFixture();
    const byPredicate = eventFixture();
    const { transport, consumer, types } = make(
      { nonRetryable: (error) => error instanceof SyntaxError },
      {
        'payment.completed': async (event) => {
          if (event.id === byClass.id) throw new NonRetryableEventError('payload is not a payment');
          throw new SyntaxError('Unexpected token');
        },
      },
    );
    await consumer.start();
    await transport.publish(byClass);
    await transport.publish(byPredicate);
    await transport.drained();
    expect(types(byClass.id)).toEqual(['consume-failed', 'dead-lettered']);
    expect(types(byPredicate.id)).toEqual(['consume-failed', 'dead-lettered']);
    expect(transport.settlements.every((s) => s.outcome === 'ack')).toBe(true);
  });

  it("counts attempts from the broker's delivery count too, when failures were never recorded", async () => {
    const { consumer, inbox } = make(
      { maxAttempts: 4 },
      {
        'payment.completed': async () => {
          throw new Error('still failing');
        },
      },
    );
    const event = eventFixture();
    const settled: string[] = [];
    await consumer.handle({
      event,
      deliveryCount: 4, // three earlier attempts crashed before their failure was recorded
      ack: async () => {
        settled.push('ack');
      },
      retry: async (delayMs) => {
        settled.push(`retry ${delayMs}`);
      },
    });
    expect(settled).toEqual(['ack']);
    expect((await inbox.deadLetters('invoices', { ids: [event.id] }))[0]?.attempts).toBe(1);
  });

  it('keeps consuming when the telemetry sink throws', async () => {
    const { transport, consumer, invoices } = make({
      telemetry: {
        emit: () => {
          throw new Error('metrics down');
        },
      },
    });
    await consumer.start();
    const event = eventFixture();
    await transport.publish(event);
    await transport.drained();
    expect(invoices(event.id)).toBe(1);
    expect(transport.settlements.map((s) => s.outcome)).toEqual(['ack']);
  });

  it('stops receiving on stop(), after the delivery in progress has settled', async () => {
    let started = () => {};
    const inHandler = new Promise<void>((resolve) => {
      started = resolve;
    });
    let release = () => {};
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    const handled: string[] = [];
    const { transport, consumer } = make(
      {},
      {
        'payment.completed': async (event: OutboxEvent) => {
          started();
          await held;
          handled.push(event.id);
        },
      },
    );
    await consumer.start();
    await consumer.start(); // a second start is a no-op, not a second subscription
    const first = eventFixture();
    await transport.publish(first);
    await inHandler;
    const stopping = consumer.stop();
    release();
    await stopping;
    expect(handled).toEqual([first.id]);
    expect(transport.settlements.map((s) => s.outcome)).toEqual(['ack']);

    const second = eventFixture();
    await transport.publish(second);
    await new Promise((resolve) => setTimeout(resolve, 10));
    expect(handled).toEqual([first.id]);
    // The broker kept it for the group: it arrives once the consumer is started again.
    await consumer.start();
    await transport.drained();
    expect(handled).toEqual([first.id, second.id]);
  });

  it('prunes inbox rows older than the retention, in batches, and refuses bad prune options', async () => {
    const { transport, consumer, inbox, clock } = make();
    await consumer.start();
    const old = [eventFixture(), eventFixture(), eventFixture()];
    for (const event of old) await transport.publish(event);
    await transport.drained();
    clock.time += 8 * 24 * 60 * 60 * 1_000;
    const recent = eventFixture();
    await transport.publish(recent);
    await transport.drained();

    expect(await consumer.prune({ batchSize: 2 })).toBe(3);
    for (const event of old) expect(await inbox.isProcessed('invoices', event.id)).toBe(false);
    expect(await inbox.isProcessed('invoices', recent.id)).toBe(true);
    expect(await consumer.prune()).toBe(0);
    await expect(consumer.prune({ retentionMs: -1 })).rejects.toThrow(/^retentionMs: /);
    await expect(consumer.prune({ batchSize: 0 })).rejects.toThrow(/^batchSize: /);
  });

  it('refuses bad options, naming each', () => {
    const db = new DatabaseSync(':memory:');
    const base = {
      transport: new RecordingTransport(),
      inbox: sqliteInbox({ db }),
      group: 'g',
      handlers: { a: async () => {} },
    };
    const bad: [Partial<OutboxConsumerOptions<DatabaseSync>>, RegExp][] = [
      [{ transport: {} as never }, /^transport: /],
      [{ inbox: {} as never }, /^inbox: /],
      [{ group: '' }, /^group: /],
      [{ handlers: {} }, /^handlers: /],
      [{ handlers: { a: 'nope' as never } }, /^handlers\['a'\]: /],
      [{ maxAttempts: 0 }, /^maxAttempts: /],
      [{ maxAttempts: 1.5 }, /^maxAttempts: /],
      [{ prefetch: 0 }, /^prefetch: /],
      [{ onUnknown: 'drop' as never }, /^onUnknown: /],
      [{ backoff: 5 as never }, /^backoff: /],
      [{ nonRetryable: true as never }, /^nonRetryable: /],
      [{ telemetry: {} as never }, /^telemetry: /],
      [{ clock: {} as never }, /^clock: /],
    ];
    for (const [override, message] of bad) {
      expect(() => outboxConsumer({ ...base, ...override }), String(message)).toThrow(InvalidOptionError);
      expect(() => outboxConsumer({ ...base, ...override })).toThrow(message);
    }
    db.close();
  });
});
