import { DatabaseSync } from 'node:sqlite';
import { InvalidOptionError } from 'keel';
import { type OutboxTelemetryEvent, outboxConsumer, outboxRelay, republish } from 'keel/outbox';
import { sqliteInbox, sqliteOutbox } from 'keel/sqlite';
import { afterEach, describe, expect, it } from 'vitest';
import { RecordingTransport } from './consumer-recording-transport.ts';
import { ManualClock } from './inbox-conformance.ts';

const T0 = 1_700_000_000_000;

/** The payments service (its own database, outbox and relay) and the invoice consumer (its own database). */
function setup() {
  const clock = new ManualClock(T0);
  const paymentsDb = new DatabaseSync(':memory:');
  const invoicesDb = new DatabaseSync(':memory:');
  invoicesDb.exec('CREATE TABLE invoices (event_id TEXT NOT NULL)');
  const outbox = sqliteOutbox({ db: paymentsDb, clock });
  const transport = new RecordingTransport();
  const relay = outboxRelay({ store: outbox, transport, clock, pollIntervalMs: 5 });
  const telemetry: OutboxTelemetryEvent[] = [];
  const consumer = outboxConsumer({
    transport,
    inbox: sqliteInbox({ db: invoicesDb, clock }),
    group: 'invoices',
    clock,
    telemetry: { emit: (event) => telemetry.push(event) },
    handlers: {
      'payment.completed': async (event, tx) => {
        tx.prepare('INSERT INTO invoices (event_id) VALUES (?)').run(event.id);
      },
    },
  });
  const append = async (at: number, aggregateId: string) => {
    clock.time = at;
    paymentsDb.exec('BEGIN IMMEDIATE');
    const [event] = await outbox.append(paymentsDb, {
      type: 'payment.completed',
      aggregateType: 'payment',
      aggregateId,
      payload: { amount: 100 },
    });
    paymentsDb.exec('COMMIT');
    if (event === undefined) throw new Error('append returned no event');
    return event;
  };
  const invoices = (id: string) =>
    Number(
      (invoicesDb.prepare('SELECT count(*) AS n FROM invoices WHERE event_id = ?').get(id) as { n: number })
        .n,
    );
  /** Waits until the consumer has reported `count` events of `type`. */
  const seen = async (type: OutboxTelemetryEvent['type'], count: number) => {
    while (telemetry.filter((event) => event.type === type).length < count) {
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
    await transport.drained();
  };
  const close = async () => {
    await relay.stop();
    await consumer.stop();
    await transport.close();
    paymentsDb.close();
    invoicesDb.close();
  };
  return { outbox, relay, consumer, telemetry, append, invoices, seen, close };
}

let current: ReturnType<typeof setup> | undefined;
function make() {
  current = setup();
  return current;
}
afterEach(async () => {
  await current?.close();
  current = undefined;
});

const ids = (list: readonly { id: string }[]) => list.map((event) => event.id);

describe('republishing outbox events', () => {
  it('requeues by time range with the same ids; the consumer skips them as duplicates', async () => {
    const { outbox, relay, consumer, telemetry, append, invoices, seen } = make();
    await consumer.start();
    const early = [await append(T0 + 1_000, 'p-1'), await append(T0 + 1_500, 'p-2')];
    const late = await append(T0 + 5_000, 'p-3');
    relay.start();
    await seen('consumed', 3);

    const plan = await republish(outbox, { since: T0, until: T0 + 2_000, dryRun: true });
    expect(plan).toEqual({
      dryRun: true,
      matched: 2,
      requeued: early.map((event) => ({
        id: event.id,
        type: 'payment.completed',
        aggregateType: 'payment',
        aggregateId: event.aggregateId,
        createdAt: event.createdAt,
      })),
      pending: [],
    });
    // A dry run changes nothing: the events stay published.
    expect((await outbox.find({ ids: ids(early) })).every((event) => event.publishedAt !== null)).toBe(true);

    const report = await republish(outbox, { since: T0, until: T0 + 2_000 });
    expect(report.dryRun).toBe(false);
    expect(ids(report.requeued)).toEqual(ids(early));
    await seen('duplicate-skipped', 2);

    const skipped = telemetry.filter((event) => event.type === 'duplicate-skipped');
    expect(skipped.map((event) => event.eventId).sort()).toEqual(ids(early).sort());
    for (const event of [...early, late]) expect(invoices(event.id)).toBe(1);
  });

  it('requeues by aggregate, and reports unpublished events as pending without touching them', async () => {
    const { outbox, relay, consumer, telemetry, append, invoices, seen } = make();
    await consumer.start();
    const first = await append(T0 + 1_000, 'p-7');
    const other = await append(T0 + 1_100, 'p-8');
    relay.start();
    await seen('consumed', 2);
    await relay.stop();
    const unpublished = await append(T0 + 2_000, 'p-7');

    const plan = await republish(outbox, { aggregateType: 'payment', aggregateId: 'p-7', dryRun: true });
    expect(ids(plan.requeued)).toEqual([first.id]);
    expect(ids(plan.pending)).toEqual([unpublished.id]);

    const report = await republish(outbox, { aggregateType: 'payment', aggregateId: 'p-7' });
    expect(ids(report.requeued)).toEqual([first.id]);
    expect(ids(report.pending)).toEqual([unpublished.id]);
    relay.start();
    await seen('consumed', 3);
    await seen('duplicate-skipped', 1);

    expect(telemetry.filter((e) => e.type === 'duplicate-skipped').map((e) => e.eventId)).toEqual([first.id]);
    expect(invoices(first.id)).toBe(1);
    expect(invoices(other.id)).toBe(1);
    expect(invoices(unpublished.id)).toBe(1);
  });

  it('refuses a selection that names nothing, before touching the store', async () => {
    const { outbox } = make();
    await expect(republish(outbox, {})).rejects.toThrow(InvalidOptionError);
    await expect(republish(outbox, { dryRun: true })).rejects.toThrow(/^filter: /);
    await expect(republish(outbox, { ids: [1] as never })).rejects.toThrow(/^ids: /);
  });
});
