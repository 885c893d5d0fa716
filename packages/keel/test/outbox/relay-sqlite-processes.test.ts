/**
 * Relays in separate processes on one SQLite file: one publishes at a time (the outbox's lease), and
 * one that is killed mid-batch hands over when its lease runs out, with nothing lost and each
 * aggregate in order.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { sqliteOutbox } from 'keel/sqlite';
import { afterAll, describe, expect, it } from 'vitest';
import { type FixtureExit, runFixture } from './fixture-process.ts';

const scratch = mkdtempSync(join(tmpdir(), 'keel-relay-processes-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

function runWorker(args: string[], writeThread = false): Promise<FixtureExit> {
  return runFixture('sqlite-relay-worker.ts', writeThread ? [...args, '--write-thread'] : args);
}

interface Received {
  event_id: string;
  aggregate_id: string;
  n: number;
  relay: string;
  at: number;
}

/** A WAL-mode file with `aggregates × perAggregate` events appended, each aggregate's numbered from 0. */
async function outboxFile(name: string, aggregates: number, perAggregate: number) {
  const path = join(scratch, `${name}.db`);
  const db = new DatabaseSync(path, { timeout: 10_000 });
  db.exec('PRAGMA journal_mode = WAL');
  db.exec(
    'CREATE TABLE received (seq INTEGER PRIMARY KEY, event_id TEXT NOT NULL, aggregate_id TEXT NOT NULL, n INTEGER NOT NULL, relay TEXT NOT NULL, at REAL NOT NULL)',
  );
  const store = sqliteOutbox({ db });
  for (let n = 0; n < perAggregate; n++) {
    db.exec('BEGIN IMMEDIATE');
    await store.append(
      db,
      Array.from({ length: aggregates }, (_, a) => ({
        type: 'step',
        aggregateType: 'order',
        aggregateId: `o${a}`,
        payload: { n },
      })),
    );
    db.exec('COMMIT');
  }
  const received = () => db.prepare('SELECT * FROM received ORDER BY seq').all() as unknown as Received[];
  return { path, db, store, received };
}

/** Each aggregate's first copies, in the order they arrived, numbered 0, 1, 2 …. */
function expectAggregatesInOrder(rows: readonly Received[], aggregates: number, perAggregate: number) {
  const seen = new Set<string>();
  const firsts = rows.filter((row) => !seen.has(row.event_id) && seen.add(row.event_id));
  for (let a = 0; a < aggregates; a++) {
    expect(firsts.filter((row) => row.aggregate_id === `o${a}`).map((row) => row.n)).toEqual(
      Array.from({ length: perAggregate }, (_, n) => n),
    );
  }
}

describe.each([
  ['on the store’s handle', false],
  ['on a write thread', true],
])('SQLite relays in separate processes on one file, writing %s', (_, writeThread) => {
  it('publishes from one relay at a time, each event once', async () => {
    const { path, db, store, received } = await outboxFile(`two-${writeThread}`, 8, 40);
    const [first, second] = await Promise.all([
      runWorker([path, 'p1', '30000'], writeThread),
      runWorker([path, 'p2', '30000'], writeThread),
    ]);
    expect(first.code, first.stderr).toBe(0);
    expect(second.code, second.stderr).toBe(0);
    const rows = received();
    // Every event once: the relays never published side by side, so neither repeated the other.
    expect(rows).toHaveLength(320);
    expect(new Set(rows.map((row) => row.event_id)).size).toBe(320);
    expect((await store.gauges()).unpublished).toBe(0);
    // One relay's publishes form one run: it held the outbox from its first publish to its last.
    const relays = rows.map((row) => row.relay);
    const switches = relays.filter((relay, i) => i > 0 && relay !== relays[i - 1]).length;
    expect(switches).toBeLessThanOrEqual(1);
    expectAggregatesInOrder(rows, 8, 40);
    db.close();
  }, 30_000);

  it('publishes every event after the relay holding the outbox is killed mid-batch', async () => {
    const { path, db, store, received } = await outboxFile(`crash-${writeThread}`, 5, 20);
    const crashed = await runWorker([path, 'killed', '500', '17'], writeThread);
    expect(crashed.signal, crashed.stderr).toBe('SIGKILL');
    const killedAt = Math.max(...received().map((row) => row.at));
    expect((await store.gauges()).unpublished).toBeGreaterThan(0);
    // Started at once: it waits for the killed relay's lease to run out, then takes the outbox over.
    const restarted = await runWorker([path, 'restarted', '10000'], writeThread);
    expect(restarted.code, restarted.stderr).toBe(0);
    const rows = received();
    const byRestarted = rows.filter((row) => row.relay === 'restarted');
    expect(Math.min(...byRestarted.map((row) => row.at)) - killedAt).toBeGreaterThanOrEqual(400);
    expect(new Set(rows.map((row) => row.event_id)).size).toBe(100);
    expect((await store.gauges()).unpublished).toBe(0);
    // Only what the killed relay published and had not yet marked is published twice: at least the
    // publish it died on, at most its 17 publishes (two batches can be in flight at once).
    const duplicates = rows.length - 100;
    expect(duplicates).toBeGreaterThanOrEqual(1);
    expect(duplicates).toBeLessThanOrEqual(17);
    expectAggregatesInOrder(rows, 5, 20);
    db.close();
  }, 30_000);
});
