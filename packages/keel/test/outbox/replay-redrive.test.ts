import { DatabaseSync } from 'node:sqlite';
import { InvalidOptionError } from 'keel';
import { type OutboxEvent, type OutboxTelemetryEvent, outboxConsumer, redriveDeadLetters } from 'keel/outbox';
import { sqliteInbox } from 'keel/sqlite';
import { afterEach, describe, expect, it } from 'vitest';
import { RecordingTransport } from './consumer-recording-transport.ts';
import { eventFixture, ManualClock } from './inbox-conformance.ts';

const T0 = 1_700_000_000_000;

/** An invoice consumer whose renderer is broken until `fixed` is set. */
function setup() {
  const db = new DatabaseSync(':memory:');
  db.exec('CREATE TABLE invoices (event_id TEXT NOT NULL)');
  const clock = new ManualClock(T0 + 1_000);
  const inbox = sqliteInbox({ db, clock });
  const transport = new RecordingTransport();
  const state = { fixed: false };
  const telemetry: OutboxTelemetryEvent[] = [];
  const contexts: unknown[] = [];
  const consumer = outboxConsumer({
    transport,
    inbox,
    group: 'invoices',
    maxAttempts: 2,
    backoff: () => 1,
    clock,
    telemetry: { emit: (event) => telemetry.push(event) },
    handlers: {
      'payment.completed': async (event, tx, context) => {
        contexts.push(context);
        tx.prepare('INSERT INTO invoices (event_id) VALUES (?)').run(event.id);
        if (!state.fixed) throw new Error('template missing');
      },
    },
  });
  const invoices = (id: string) =>
    Number((db.prepare('SELECT count(*) AS n FROM invoices WHERE event_id = ?').get(id) as { n: number }).n);
  /** Publishes events and lets the consumer park them. */
  const park = async (...events: OutboxEvent[]) => {
    await consumer.start();
    for (const event of events) await transport.publish(event);
    await transport.drained();
    await consumer.stop();
  };
  return { db, inbox, transport, consumer, state, telemetry, contexts, invoices, park };
}

let current: ReturnType<typeof setup> | undefined;
function make() {
  current = setup();
  return current;
}
afterEach(async () => {
  await current?.transport.close();
  current?.db.close();
  current = undefined;
});

const ids = (list: readonly { id: string }[]) => list.map((event) => event.id);

describe('redriving dead letters', () => {
  it('takes effect once after the fix, by the original id, and removes the dead letter', async () => {
    const { consumer, state, invoices, park, inbox, contexts } = make();
    const event = eventFixture();
    await park(event);
    expect(await consumer.countDeadLetters()).toBe(1);
    expect(invoices(event.id)).toBe(0);

    state.fixed = true;
    const report = await consumer.redrive({ ids: [event.id] });
    expect(report).toEqual({
      dryRun: false,
      group: 'invoices',
      matched: 1,
      redriven: [
        {
          id: event.id,
          type: 'payment.completed',
          aggregateType: 'payment',
          aggregateId: event.aggregateId,
          createdAt: event.createdAt,
        },
      ],
      alreadyProcessed: [],
      failed: [],
    });
    expect(invoices(event.id)).toBe(1);
    expect(await consumer.countDeadLetters()).toBe(0);
    expect(await inbox.isProcessed('invoices', event.id)).toBe(true);
    expect(contexts.at(-1)).toEqual({ group: 'invoices', attempt: 3, redrive: true });

    // A second re-drive finds nothing; a redelivery from the broker is now a duplicate.
    expect((await consumer.redrive({ ids: [event.id] })).matched).toBe(0);
    expect((await inbox.process('invoices', event.id, async () => {})).duplicate).toBe(true);
    expect(invoices(event.id)).toBe(1);
  });

  it('lists what it would do in a dry run and changes nothing', async () => {
    const { consumer, state, invoices, park, inbox } = make();
    const a = eventFixture({ createdAt: T0 + 1 });
    const b = eventFixture({ createdAt: T0 + 2 });
    await park(a, b);
    // b got handled by another route meanwhile (say a manual fix that went through the inbox).
    state.fixed = true;
    await inbox.process('invoices', b.id, async () => {});

    const plan = await consumer.redrive({ all: true, dryRun: true });
    expect(plan.dryRun).toBe(true);
    expect(plan.matched).toBe(1);
    expect(ids(plan.redriven)).toEqual([a.id]);
    expect(plan.alreadyProcessed).toEqual([]);
    expect(invoices(a.id)).toBe(0);
    expect(await consumer.countDeadLetters()).toBe(1);
  });

  it('only removes the dead letter of an event the inbox already has', async () => {
    const { consumer, park, inbox, invoices, db } = make();
    const event = eventFixture();
    await park(event);
    // Recorded in the inbox behind the dead letters' back (a row restored from a backup, say).
    db.prepare('INSERT INTO keel_inbox (group_name, event_id, processed_at) VALUES (?, ?, ?)').run(
      'invoices',
      event.id,
      T0,
    );
    const plan = await consumer.redrive({ ids: [event.id], dryRun: true });
    expect(ids(plan.alreadyProcessed)).toEqual([event.id]);
    const report = await consumer.redrive({ ids: [event.id] });
    expect(ids(report.alreadyProcessed)).toEqual([event.id]);
    expect(report.redriven).toEqual([]);
    expect(invoices(event.id)).toBe(0);
    expect(await consumer.countDeadLetters()).toBe(0);
    expect(await inbox.isProcessed('invoices', event.id)).toBe(true);
  });

  it('keeps an event that fails again parked, with its attempts and last error updated', async () => {
    const { consumer, park, invoices, telemetry } = make();
    const event = eventFixture();
    await park(event);
    const report = await consumer.redrive({ type: 'payment.completed' });
    expect(report.redriven).toEqual([]);
    expect(report.failed).toEqual([
      expect.objectContaining({ id: event.id, error: 'Error: template missing' }),
    ]);
    const [letter] = await consumer.deadLetters({ ids: [event.id] });
    expect(letter?.attempts).toBe(3);
    expect(letter?.lastFailedAt).toBe(T0 + 1_000);
    expect(invoices(event.id)).toBe(0); // the failed re-drive's write rolled back
    expect(telemetry.at(-1)).toMatchObject({ type: 'consume-failed', attempt: 3 });
  });

  it('selects by type and aggregate, leaving the others parked', async () => {
    const { consumer, park, state, invoices } = make();
    const a = eventFixture({ aggregateId: 'p-1' });
    const b = eventFixture({ aggregateId: 'p-2' });
    await park(a, b);
    state.fixed = true;
    const report = await consumer.redrive({ aggregateType: 'payment', aggregateId: 'p-2' });
    expect(ids(report.redriven)).toEqual([b.id]);
    expect(invoices(a.id)).toBe(0);
    expect(invoices(b.id)).toBe(1);
    expect(ids((await consumer.deadLetters({ all: true })).map((letter) => letter.event))).toEqual([a.id]);
  });

  it('fails an event without a handler on re-drive with the typed error, and keeps it parked', async () => {
    const { inbox, invoices } = make();
    const event = eventFixture({ type: 'payment.disputed' });
    await inbox.recordFailure('invoices', event.id, { message: 'x', stack: null }, T0);
    await inbox.deadLetter('invoices', event);
    const report = await redriveDeadLetters(
      { inbox, group: 'invoices', handlers: { 'payment.completed': async () => {} } },
      { all: true },
    );
    expect(report.failed).toEqual([
      expect.objectContaining({
        id: event.id,
        error:
          "UnknownEventTypeError: No handler for event type 'payment.disputed' in consumer group 'invoices'",
      }),
    ]);
    expect((await inbox.deadLetters('invoices', { all: true }))[0]?.attempts).toBe(2);
    expect(invoices(event.id)).toBe(0);
  });

  it('refuses a filter that names nothing, and a dryRun that is not a boolean', async () => {
    const { consumer } = make();
    await expect(consumer.redrive({})).rejects.toThrow(InvalidOptionError);
    await expect(consumer.redrive({ dryRun: true })).rejects.toThrow(/^filter: /);
    await expect(consumer.redrive({ all: true, dryRun: 'yes' as never })).rejects.toThrow(/^dryRun: /);
  });
});
