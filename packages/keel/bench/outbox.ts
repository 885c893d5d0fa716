/**
 * What the transactional outbox costs on the event path, measured in one run per setup:
 *
 * - raw: the transport's own publish throughput from this process (same in-flight window as the relay);
 * - relay: events/s from outbox rows, appended beforehand, to the same point as raw;
 * - lag: end-to-end latency from the appending commit to a consumer's delivery, while a producer
 *   appends at half the relay's maximum rate, one event per transaction. The producer's achieved
 *   rate is reported beside the target: a database that cannot commit that many one-event
 *   transactions a second shows as a shortfall there, not as a lower target.
 *
 * Raw and relay measure the same thing per transport. For NATS JetStream it is the broker's
 * confirmation (the PubAck: the event is stored in the stream). The in-process transport's publish
 * confirms by pushing onto an array, which says nothing about delivery, so for it both are timed until
 * a subscribed consumer group has received every event: the event is retained *and* delivered.
 *
 * Setups: sqlite (`node:sqlite`, WAL) → in-process transport, always; PostgreSQL → NATS JetStream
 * when DATABASE_URL and NATS_URL are set. The Postgres producer is a pool of concurrent appenders,
 * each transaction on its own connection, like a service's request handlers; the relay has its own
 * pool. `BENCH_SETUP=sqlite` or `postgres` runs one setup; `BENCH_EVENTS` and `BENCH_SECONDS` shorten.
 *
 *   npm run bench:outbox            a table
 *   npm run bench:outbox -- --json  the same as JSON
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { natsTransport } from 'keel/nats';
import {
  inProcessTransport,
  type OutboxEvent,
  type OutboxStore,
  outboxRelay,
  type Transport,
  uuidv7,
} from 'keel/outbox';
import { postgresOutbox } from 'keel/postgres';
import { sqliteOutbox } from 'keel/sqlite';
import pg from 'pg';

const json = process.argv.includes('--json');
const EVENTS = Number(process.env.BENCH_EVENTS ?? 20_000);
const LAG_SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
/** Events in flight at once, for the relay (aggregates published concurrently) and for raw publishing. */
const WINDOW = 64;
const BATCH = 500;
/** Concurrent appenders of the Postgres producer, each holding one connection per transaction. */
const PRODUCER_CONNECTIONS = 16;

/** One setup: an outbox, a way to append in a transaction, a transport, and how to clean up. */
interface Setup {
  readonly name: string;
  readonly store: OutboxStore;
  readonly transport: Transport;
  /** Raw and relay are timed until a consumer group has received every event, not to the publish. */
  readonly untilDelivered: boolean;
  appendMany(count: number): Promise<void>;
  appendOne(): Promise<void>;
  close(): Promise<void>;
}

function newEvent(i: number) {
  return {
    type: 'payment.completed',
    aggregateType: 'payment',
    aggregateId: `p-${i}`,
    payload: { amount: 1_500 },
  };
}

async function sqliteSetup(): Promise<Setup> {
  const dir = mkdtempSync(join(tmpdir(), 'keel-outbox-bench-'));
  const db = new DatabaseSync(join(dir, 'outbox.db'), { timeout: 5_000 });
  db.exec('PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL');
  const store = sqliteOutbox({ db });
  let n = 0;
  let queue: Promise<void> = Promise.resolve();
  return {
    name: 'sqlite → in-process',
    store,
    transport: inProcessTransport({ confirm: 'accepted' }),
    untilDelivered: true,
    async appendMany(count) {
      for (let done = 0; done < count; done += BATCH) {
        db.exec('BEGIN IMMEDIATE');
        await store.append(
          db,
          Array.from({ length: Math.min(BATCH, count - done) }, () => newEvent(n++)),
        );
        db.exec('COMMIT');
      }
    },
    appendOne() {
      // One handle holds one transaction at a time: appends queue behind each other, each on its
      // own turn of the event loop, as requests of a service would, so a backlog of appends does not
      // hold the relay off the thread until it has drained.
      queue = queue
        .then(() => new Promise<void>((resolve) => setImmediate(resolve)))
        .then(async () => {
          db.exec('BEGIN IMMEDIATE');
          await store.append(db, newEvent(n++));
          db.exec('COMMIT');
        });
      return queue;
    },
    async close() {
      db.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

async function postgresNatsSetup(databaseUrl: string, natsUrl: string): Promise<Setup> {
  const pool = new pg.Pool({ connectionString: databaseUrl, max: 4 });
  const producers = new pg.Pool({ connectionString: databaseUrl, max: PRODUCER_CONNECTIONS });
  const table = `keel_outbox_bench_${process.pid}`;
  const store = postgresOutbox({ pool, table });
  await store.ensureSchema();
  const nc = await connect({ servers: natsUrl });
  const stream = `KEEL_BENCH_${process.pid}`;
  const manager = await jetstreamManager(nc);
  const transport = natsTransport({
    jetstream: jetstream(nc),
    manager,
    stream,
    subjectPrefix: `keel.bench.${process.pid}`,
  });
  let n = 0;
  const inTransaction = async (work: (client: pg.PoolClient) => Promise<unknown>) => {
    const client = await producers.connect();
    try {
      await client.query('BEGIN');
      await work(client);
      await client.query('COMMIT');
    } finally {
      client.release();
    }
  };
  return {
    name: 'PostgreSQL → NATS JetStream',
    store,
    transport,
    untilDelivered: false,
    async appendMany(count) {
      for (let done = 0; done < count; done += BATCH) {
        await inTransaction((client) =>
          store.append(
            client,
            Array.from({ length: Math.min(BATCH, count - done) }, () => newEvent(n++)),
          ),
        );
      }
    },
    appendOne: () => inTransaction((client) => store.append(client, newEvent(n++))),
    async close() {
      await transport.close();
      await store.close();
      await pool.query(`DROP TABLE IF EXISTS "${table}"`);
      await pool.end();
      await producers.end();
      await manager.streams.delete(stream).catch(() => {});
      await nc.close();
    },
  };
}

/**
 * Resolves once a new consumer group has received `count` events (each acknowledged at once), for
 * setups timed until delivery; for the others, resolves at once and `close` does nothing.
 */
async function deliveredTo(setup: Setup, count: number) {
  if (!setup.untilDelivered) return { all: Promise.resolve(), close: async () => {} };
  let received = 0;
  const all = Promise.withResolvers<void>();
  const subscription = await setup.transport.subscribe(
    { group: `bench-${randomUUID().slice(0, 8)}`, prefetch: WINDOW * 4 },
    async (delivery) => {
      await delivery.ack();
      if (++received === count) all.resolve();
    },
  );
  return { all: all.promise, close: () => subscription.close() };
}

/** The transport's publish throughput with `WINDOW` publishes in flight. */
async function rawPublish(setup: Setup): Promise<number> {
  const events: OutboxEvent[] = Array.from({ length: EVENTS }, (_, i) => ({
    ...newEvent(i),
    id: uuidv7(),
    headers: {},
    createdAt: Date.now(),
  }));
  const delivered = await deliveredTo(setup, EVENTS);
  let next = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: WINDOW }, async () => {
      while (next < events.length) await setup.transport.publish(events[next++] as OutboxEvent);
    }),
  );
  await delivered.all;
  const rate = EVENTS / ((performance.now() - started) / 1000);
  await delivered.close();
  return rate;
}

/** Events/s the relay moves from a full outbox to the broker. */
async function relayThroughput(setup: Setup): Promise<number> {
  await setup.appendMany(EVENTS);
  const delivered = await deliveredTo(setup, EVENTS);
  let published = 0;
  const done = Promise.withResolvers<void>();
  const relay = outboxRelay({
    store: setup.store,
    transport: setup.transport,
    batchSize: BATCH,
    concurrency: WINDOW,
    publishedRetentionMs: Number.POSITIVE_INFINITY,
    telemetry: {
      emit: (event) => {
        if (event.type === 'published' && ++published === EVENTS) done.resolve();
      },
    },
  });
  const started = performance.now();
  relay.start();
  await done.promise;
  await delivered.all;
  const rate = EVENTS / ((performance.now() - started) / 1000);
  await relay.stop();
  await delivered.close();
  return rate;
}

/** Lag percentiles (append commit → consumer delivery) at `rate` events/s, one event per transaction. */
async function lagAtRate(setup: Setup, rate: number) {
  const lags: number[] = [];
  // A new group starts at the oldest event the broker retains (a stream's first message), so it
  // also receives the earlier phases' events: only this phase's appends count.
  const phaseStart = Date.now();
  const subscription = await setup.transport.subscribe(
    { group: `bench-${randomUUID().slice(0, 8)}`, prefetch: 256 },
    async (delivery) => {
      const { createdAt } = delivery.event;
      if (createdAt >= phaseStart) lags.push(Date.now() - createdAt);
      await delivery.ack();
    },
  );
  const relay = outboxRelay({
    store: setup.store,
    transport: setup.transport,
    batchSize: BATCH,
    concurrency: WINDOW,
    publishedRetentionMs: Number.POSITIVE_INFINITY,
  });
  relay.start();
  // Open loop: appends are issued on a fixed schedule whether or not earlier ones finished.
  const tickMs = 10;
  const perTick = rate * (tickMs / 1000);
  const total = Math.round(rate * LAG_SECONDS);
  let issued = 0;
  let owed = 0;
  const appends: Promise<void>[] = [];
  const started = performance.now();
  await new Promise<void>((resolve) => {
    const timer = setInterval(() => {
      owed += perTick;
      while (owed >= 1 && issued < total) {
        owed -= 1;
        issued++;
        appends.push(setup.appendOne());
      }
      if (issued >= total) {
        clearInterval(timer);
        resolve();
      }
    }, tickMs);
  });
  await Promise.all(appends);
  // Every append committed: the rate the producer achieved, against the `rate` it was asked for.
  const produced = total / ((performance.now() - started) / 1000);
  const deadline = Date.now() + 30_000;
  while (lags.length < total && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  await relay.stop();
  await subscription.close();
  if (lags.length < total) throw new Error(`${setup.name}: only ${lags.length} of ${total} events arrived`);
  lags.sort((a, b) => a - b);
  const at = (q: number) => lags[Math.min(lags.length - 1, Math.floor(q * lags.length))] as number;
  return {
    rate: Math.round(rate),
    produced: Math.round(produced),
    events: total,
    p50: at(0.5),
    p95: at(0.95),
    p99: at(0.99),
    max: at(1),
  };
}

async function measure(open: () => Promise<Setup>) {
  const setup = await open();
  try {
    const raw = await rawPublish(setup);
    const relay = await relayThroughput(setup);
    const lag = await lagAtRate(setup, relay / 2);
    return { setup: setup.name, raw: Math.round(raw), relay: Math.round(relay), lag };
  } finally {
    await setup.close();
  }
}

const setups: Array<() => Promise<Setup>> = [];
const { DATABASE_URL, NATS_URL, BENCH_SETUP } = process.env;
if (BENCH_SETUP === undefined || BENCH_SETUP === 'sqlite') setups.push(sqliteSetup);
if (DATABASE_URL && NATS_URL && (BENCH_SETUP === undefined || BENCH_SETUP === 'postgres')) {
  setups.push(() => postgresNatsSetup(DATABASE_URL, NATS_URL));
}

const results = [];
for (const open of setups) results.push(await measure(open));

/** Below this share of the asked rate, the lag was not measured at half the relay's rate. */
const PRODUCER_SUSTAINED = 0.95;
const targets = results.flatMap((r) => [
  { name: `${r.setup}: relay ≥ 50 % of raw publish`, value: r.relay / r.raw, pass: r.relay / r.raw >= 0.5 },
  { name: `${r.setup}: p99 lag < 250 ms at half the relay's rate`, value: r.lag.p99, pass: r.lag.p99 < 250 },
  {
    name: `${r.setup}: producer sustained half the relay's rate (achieved / asked)`,
    value: r.lag.produced / r.lag.rate,
    pass: r.lag.produced / r.lag.rate >= PRODUCER_SUSTAINED,
  },
]);
const summary = {
  node: process.version,
  events: EVENTS,
  window: WINDOW,
  results,
  targets: targets.map((t) => ({ ...t, value: Number(t.value.toFixed(2)) })),
  pass: targets.every((t) => t.pass),
};
if (json) console.log(JSON.stringify(summary, null, 2));
else {
  console.log(`Outbox → relay → broker — Node ${process.version}, ${EVENTS} events, ${WINDOW} in flight\n`);
  console.table(
    results.map((r) => ({
      setup: r.setup,
      'raw publish/s': r.raw,
      'relay events/s': r.relay,
      ratio: Number((r.relay / r.raw).toFixed(2)),
      'lag at rate/s': r.lag.rate,
      'produced/s': r.lag.produced,
      'p50 ms': r.lag.p50,
      'p95 ms': r.lag.p95,
      'p99 ms': r.lag.p99,
    })),
  );
  console.table(
    summary.targets.map((t) => ({ target: t.name, value: t.value, result: t.pass ? 'PASS' : 'MISS' })),
  );
}
process.exitCode = summary.pass ? 0 : 1;
