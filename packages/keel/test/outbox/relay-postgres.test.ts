import { inProcessTransport, type OutboxEvent, outboxRelay, type Transport } from 'keel/outbox';
import { postgresOutbox } from 'keel/postgres';
import pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { overriding } from '../support/overriding.ts';
import { dropPostgresOutbox } from '../support/postgres-outbox-tables.ts';
import { describeWithService } from '../support/services.ts';
import { waitFor } from './broker-test-kit.ts';
import { type FixtureExit, runFixture } from './fixture-process.ts';

function runWorker(args: string[]): Promise<FixtureExit> {
  return runFixture('relay-crash-worker.ts', args);
}

describeWithService('DATABASE_URL', 'PostgreSQL relays', (url) => {
  const prefix = `obr_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
  let pool: pg.Pool;
  const dropped: string[] = [];
  const outboxes: string[] = [];
  beforeAll(() => {
    pool = new pg.Pool({ connectionString: url, max: 10 });
  });
  afterAll(async () => {
    for (const table of dropped) await pool.query(`DROP TABLE IF EXISTS "${table}"`);
    for (const table of outboxes) await dropPostgresOutbox(pool, table);
    await pool.end();
  });

  async function outboxWith(table: string, aggregates: number, perAggregate: number) {
    outboxes.push(table);
    dropped.push(`${table}_received`);
    const store = postgresOutbox({ pool, table });
    await store.ensureSchema();
    await pool.query(
      `CREATE TABLE "${table}_received" (seq bigserial, event_id text NOT NULL, aggregate_id text NOT NULL, n int NOT NULL)`,
    );
    const client = await pool.connect();
    try {
      for (let n = 0; n < perAggregate; n++) {
        await client.query('BEGIN');
        await store.append(
          client,
          Array.from({ length: aggregates }, (_, a) => ({
            type: 'step',
            aggregateType: 'order',
            aggregateId: `o${a}`,
            payload: { n },
          })),
        );
        await client.query('COMMIT');
      }
    } finally {
      client.release();
    }
    return store;
  }

  it('reports a failed mark once, pauses, and publishes the batch again once its lease has run out', async () => {
    const outbox = await outboxWith(`${prefix}_lostmark`, 3, 1);
    const transport = inProcessTransport();
    const received: string[] = [];
    await transport.subscribe({ group: 'g' }, async (delivery) => {
      received.push(delivery.event.aggregateId);
      await delivery.ack();
    });
    let marks = 0;
    // The store as it is, but its first mark is lost before it reaches Postgres.
    const store = overriding(outbox, {
      markPublished: async (relayId, ids) => {
        if (++marks === 1) throw new Error('mark lost');
        await outbox.markPublished(relayId, ids);
      },
    });
    const errors: unknown[] = [];
    const relay = outboxRelay({
      store,
      transport,
      leaseMs: 300,
      pollIntervalMs: 20,
      onError: (e) => errors.push(e),
    });
    relay.start();
    await waitFor(async () => (await outbox.gauges()).unpublished === 0, 'every event marked');
    await relay.stop();
    expect(errors.map(String)).toEqual(['Error: mark lost']);
    expect(relay.stats().storeErrors).toBe(1);
    // At least once: the batch whose mark was lost went out again.
    expect(received.sort()).toEqual(['o0', 'o0', 'o1', 'o1', 'o2', 'o2']);
    await transport.close();
  });

  it('two relays on one table never hold one aggregate at once and keep its order', async () => {
    const store = await outboxWith(`${prefix}_two`, 6, 25);
    const inFlight = new Map<string, string>();
    const overlaps: string[] = [];
    const received = new Map<string, number[]>();
    const byRelay = new Map<string, number>();
    const recording = (relay: string): Transport => ({
      name: 'recording',
      async publish(event: OutboxEvent) {
        const holder = inFlight.get(event.aggregateId);
        if (holder !== undefined) overlaps.push(`${event.aggregateId}: ${holder} and ${relay}`);
        inFlight.set(event.aggregateId, relay);
        await new Promise((resolve) => setTimeout(resolve, Math.random() * 3));
        inFlight.delete(event.aggregateId);
        const list = received.get(event.aggregateId) ?? [];
        list.push((event.payload as { n: number }).n);
        received.set(event.aggregateId, list);
        byRelay.set(relay, (byRelay.get(relay) ?? 0) + 1);
      },
      subscribe: async () => {
        throw new Error('publish only');
      },
      close: async () => {},
    });
    const relays = ['r1', 'r2'].map((relayId) =>
      outboxRelay({ store, transport: recording(relayId), relayId, batchSize: 4, pollIntervalMs: 10 }),
    );
    for (const relay of relays) relay.start();
    while ((await store.gauges()).unpublished > 0) await new Promise((resolve) => setTimeout(resolve, 20));
    await Promise.all(relays.map((relay) => relay.stop()));
    await store.close();
    expect(overlaps).toEqual([]);
    for (let a = 0; a < 6; a++)
      expect(received.get(`o${a}`)).toEqual(Array.from({ length: 25 }, (_, n) => n));
    // Both relays did share the work (SKIP LOCKED hands each its own aggregates).
    expect(byRelay.get('r1')).toBeGreaterThan(0);
    expect(byRelay.get('r2')).toBeGreaterThan(0);
  });

  it('publishes every event after a relay process is killed mid-batch (duplicates counted, none lost)', async () => {
    const table = `${prefix}_crash`;
    const store = await outboxWith(table, 5, 10);
    const crashed = await runWorker([url, table, '300', '17']);
    expect(crashed.signal, crashed.stderr).toBe('SIGKILL');
    expect((await store.gauges()).unpublished).toBeGreaterThan(0);
    // The dead relay's lease runs out; a new relay process takes over.
    await new Promise((resolve) => setTimeout(resolve, 350));
    // A long lease for the new relay: on a slow machine a 300 ms one could run out between its own
    // publishes and their mark, and it would publish its own batch twice.
    const restarted = await runWorker([url, table, '10000']);
    expect(restarted.code, restarted.stderr).toBe(0);
    const { rows } = await pool.query(
      `SELECT event_id, count(*)::int AS copies FROM "${table}_received" GROUP BY event_id`,
    );
    const events = await store.find({});
    expect(new Set(rows.map((row) => row.event_id))).toEqual(new Set(events.map((e) => e.id)));
    expect(events.every((e) => e.publishedAt !== null)).toBe(true);
    const duplicates = rows.reduce((sum, row) => sum + (row.copies - 1), 0);
    // Only what the killed relay published and had not yet marked is published twice: at least the
    // publish it died on, at most its 17 publishes (two batches can be in flight at once).
    expect(duplicates).toBeGreaterThanOrEqual(1);
    expect(duplicates).toBeLessThanOrEqual(17);
    // Per aggregate, the first copy of each event arrived in append order.
    const { rows: firsts } = await pool.query(
      `SELECT DISTINCT ON (event_id) event_id, aggregate_id, n, seq FROM "${table}_received" ORDER BY event_id, seq`,
    );
    const sorted = (firsts as { aggregate_id: string; n: number; seq: string }[]).sort(
      (x, y) => Number(x.seq) - Number(y.seq),
    );
    for (let a = 0; a < 5; a++) {
      expect(sorted.filter((row) => row.aggregate_id === `o${a}`).map((row) => row.n)).toEqual(
        Array.from({ length: 10 }, (_, n) => n),
      );
    }
    await store.close();
  }, 20_000);
});
