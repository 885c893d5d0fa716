import { existsSync, mkdtempSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { inProcessTransport, OutboxTransactionError, OutboxWriteThreadError, outboxRelay } from 'keel/outbox';
import { sqliteOutbox } from 'keel/sqlite';
import { afterAll, describe, expect, it } from 'vitest';
import { overriding } from '../support/overriding.ts';
import { anonymousParametersOnly, withoutArrayRows } from '../support/sqlite-driver-variants.ts';
import { runFixture } from './fixture-process.ts';
import { manualClock, type OutboxHarness, outboxStoreConformance } from './outbox-store-conformance.ts';

const scratch = mkdtempSync(join(tmpdir(), 'keel-outbox-store-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));
let files = 0;

/**
 * A store on a new file. `write thread`: in WAL mode, with the relay's writes on their thread;
 * `anonymous parameters`: on a handle that binds parameters as better-sqlite3 does.
 */
async function harness(mode?: 'write thread' | 'anonymous parameters'): Promise<OutboxHarness> {
  const file = new DatabaseSync(join(scratch, `outbox-${files++}.db`), { timeout: 5_000 });
  const writeThread = mode === 'write thread';
  if (writeThread) file.exec('PRAGMA journal_mode = WAL');
  const db = mode === 'anonymous parameters' ? anonymousParametersOnly(file) : file;
  db.exec('CREATE TABLE business (id TEXT PRIMARY KEY)');
  const clock = manualClock();
  const store = sqliteOutbox({ db, clock, writeThread });
  return {
    store,
    clock,
    oneRelayAtATime: true,
    async transaction(work, businessId) {
      db.exec('BEGIN IMMEDIATE');
      try {
        db.prepare('INSERT INTO business VALUES (?)').run(businessId);
        const result = await work(db);
        db.exec('COMMIT');
        return result;
      } catch (error) {
        db.exec('ROLLBACK');
        throw error;
      }
    },
    async businessRows() {
      return (db.prepare('SELECT count(*) AS n FROM business').get() as { n: number }).n;
    },
    async dispose() {
      await store.close();
      db.close();
    },
  };
}

outboxStoreConformance('sqlite', () => harness());
outboxStoreConformance('sqlite, writes on a thread', () => harness('write thread'));
outboxStoreConformance('sqlite, parameters bound as better-sqlite3 binds them', () =>
  harness('anonymous parameters'),
);

describe('sqlite outbox specifics', () => {
  it('refuses an append outside a transaction', async () => {
    const db = new DatabaseSync(':memory:');
    const outbox = sqliteOutbox({ db });
    await expect(
      outbox.append(db, { type: 't', aggregateType: 'a', aggregateId: '1', payload: null }),
    ).rejects.toBeInstanceOf(OutboxTransactionError);
    expect(await outbox.find({})).toEqual([]);
  });

  it('claims nothing while its own handle is inside an open transaction, then wakes after the commit', async () => {
    const db = new DatabaseSync(':memory:');
    const outbox = sqliteOutbox({ db });
    const controller = new AbortController();
    let woken = false;
    const wake = outbox.appended(controller.signal).then(() => {
      woken = true;
    });
    db.exec('BEGIN');
    await outbox.append(db, { type: 't', aggregateType: 'a', aggregateId: '1', payload: null });
    expect(await outbox.claim('r1', 10, 1_000)).toEqual([]);
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(woken).toBe(false);
    db.exec('COMMIT');
    await wake;
    expect(await outbox.claim('r1', 10, 1_000)).toHaveLength(1);
    controller.abort();
  });

  it('drops the type, publication-time and aggregate indexes that earlier versions created', () => {
    const db = new DatabaseSync(':memory:');
    sqliteOutbox({ db, table: 'old_outbox' });
    db.exec(`CREATE INDEX old_outbox_type_idx ON old_outbox (type, created_at);
      CREATE INDEX old_outbox_published_idx ON old_outbox (published_at) WHERE published_at IS NOT NULL;
      CREATE INDEX old_outbox_pending_aggregate_idx ON old_outbox (aggregate_type, aggregate_id, seq)
        WHERE published_at IS NULL;
      CREATE INDEX old_outbox_aggregate_idx ON old_outbox (aggregate_type, aggregate_id, seq)`);
    sqliteOutbox({ db, table: 'old_outbox' });
    const indexes = db
      .prepare(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'old_outbox' AND sql IS NOT NULL",
      )
      .all()
      .map((row) => (row as { name: string }).name)
      .sort();
    expect(indexes).toEqual(['old_outbox_created_idx', 'old_outbox_pending_idx']);
  });

  it('marks events published that another store instance on the same file claimed', async () => {
    const db = new DatabaseSync(':memory:');
    const claiming = sqliteOutbox({ db });
    const marking = sqliteOutbox({ db });
    db.exec('BEGIN');
    await claiming.append(db, { type: 't', aggregateType: 'a', aggregateId: '1', payload: null });
    db.exec('COMMIT');
    const [claimed] = await claiming.claim('r1', 10, 1_000);
    await marking.markPublished('r2', [claimed?.id as string]);
    expect((await marking.find({}))[0]?.publishedAt).toBeNull();
    await marking.markPublished('r1', [claimed?.id as string]);
    expect((await marking.find({}))[0]?.publishedAt).not.toBeNull();
  });

  it('lets one relay claim at a time, renewing its lease with each claim, until it gives the lease up', async () => {
    const path = join(scratch, `lease-${files++}.db`);
    const clock = manualClock();
    const firstDb = new DatabaseSync(path, { timeout: 1_000 });
    const secondDb = new DatabaseSync(path, { timeout: 1_000 });
    const first = sqliteOutbox({ db: firstDb, clock });
    const second = sqliteOutbox({ db: secondDb, clock });
    firstDb.exec('BEGIN');
    await first.append(firstDb, [
      { type: 't', aggregateType: 'a', aggregateId: '1', payload: null },
      { type: 't', aggregateType: 'a', aggregateId: '2', payload: null },
    ]);
    firstDb.exec('COMMIT');
    const [one] = await first.claim('r1', 1, 1_000);
    // r1 holds the whole outbox, not only the event it claimed.
    expect(await second.claim('r2', 10, 1_000)).toEqual([]);
    clock.advance(900);
    expect((await first.claim('r1', 10, 1_000)).map((e) => e.aggregateId)).toEqual(['2']);
    // The second claim, with a tenth of the lease left, renewed it: to 1,900 ms now, not 1,000.
    clock.advance(500);
    expect(await second.claim('r2', 10, 1_000)).toEqual([]);
    await first.markPublished('r1', [one?.id as string]);
    await first.unclaim('r1', []);
    await first.relinquish('r1');
    // Given up: r2 takes over at once and finds what r1 had claimed and not published.
    expect((await second.claim('r2', 10, 1_000)).map((e) => e.aggregateId)).toEqual(['2']);
    expect(await first.claim('r1', 10, 1_000)).toEqual([]);
    firstDb.close();
    secondDb.close();
  });

  it('skips the events in flight, and their aggregates, whether they are one run of seq or not', async () => {
    const db = new DatabaseSync(':memory:');
    const store = sqliteOutbox({ db });
    const event = (aggregateId: string) => ({ type: 't', aggregateType: 'a', aggregateId, payload: null });
    db.exec('BEGIN');
    const [a1, b1, a2] = await store.append(db, [event('a'), event('b'), event('a'), event('c'), event('d')]);
    db.exec('COMMIT');
    expect((await store.claim('r1', 3, 1_000)).map((e) => e.id)).toEqual([a1?.id, b1?.id, a2?.id]);
    // In flight: a1 and a2, with the published b1 between them.
    await store.markPublished('r1', [b1?.id as string]);
    expect((await store.claim('r1', 1, 1_000)).map((e) => e.aggregateId)).toEqual(['c']);
    // a2 handed back while a1 is still out: it waits behind a1.
    await store.unclaim('r1', [a2?.id as string]);
    expect((await store.claim('r1', 10, 1_000)).map((e) => e.aggregateId)).toEqual(['d']);
    await store.markPublished('r1', [a1?.id as string]);
    expect((await store.claim('r1', 10, 1_000)).map((e) => e.id)).toEqual([a2?.id]);
  });

  it('reads on past a page of held-back events until the batch is full', async () => {
    for (const arrays of [true, false]) {
      const db = new DatabaseSync(':memory:');
      // A driver whose statements cannot return arrays gets rows as objects: both paths decide alike.
      const store = sqliteOutbox({ db: arrays ? db : withoutArrayRows(db) });
      const event = (aggregateId: string) => ({ type: 't', aggregateType: 'a', aggregateId, payload: null });
      db.exec('BEGIN');
      const [a1] = await store.append(db, [event('a')]);
      const [w1] = await store.append(db, [event('w')]);
      await store.append(db, [
        ...Array.from({ length: 7 }, () => event('a')),
        event('w'),
        event('b'),
        event('c'),
      ]);
      db.exec('COMMIT');
      expect((await store.claim('r1', 2, 1_000)).map((e) => e.id)).toEqual([a1?.id, w1?.id]);
      // w1 goes back to wait for its retry; a1 stays in flight. Behind them: seven a, one w, then b, c.
      await store.release('r1', w1?.id as string, 'Error: broker down', Date.now() + 60_000);
      expect(
        (await store.claim('r1', 2, 1_000)).map((e) => e.aggregateId),
        String(arrays),
      ).toEqual(['b', 'c']);
      expect(await store.claim('r1', 2, 1_000)).toEqual([]);
      // Once a1 is published, a's seven follow in order; w still waits.
      await store.markPublished('r1', [a1?.id as string]);
      const next = await store.claim('r1', 10, 1_000);
      expect(next.map((e) => e.aggregateId)).toEqual(Array.from({ length: 7 }, () => 'a'));
    }
  });

  it('gives the lease up when its relay stops, so a relay on another connection starts at once', async () => {
    const path = join(scratch, `stop-${files++}.db`);
    const firstDb = new DatabaseSync(path, { timeout: 1_000 });
    const secondDb = new DatabaseSync(path, { timeout: 1_000 });
    const first = sqliteOutbox({ db: firstDb });
    const second = sqliteOutbox({ db: secondDb });
    const transport = inProcessTransport({ confirm: 'accepted' });
    const relay = outboxRelay({ store: first, transport, relayId: 'r1', leaseMs: 60_000 });
    relay.start();
    await relay.runOnce();
    await relay.stop();
    firstDb.exec('BEGIN');
    await first.append(firstDb, { type: 't', aggregateType: 'a', aggregateId: '1', payload: null });
    firstDb.exec('COMMIT');
    expect(await second.claim('r2', 10, 60_000)).toHaveLength(1);
    await transport.close();
    firstDb.close();
    secondDb.close();
  });

  describe.each([
    ['on the store’s handle', false],
    ['on the write thread', true],
  ])('while another connection holds the write lock, with writes %s', (_, writeThread) => {
    /** A store with one claimed event, and a second connection on the same file. */
    async function lockedFile(timeoutMs: number) {
      const path = join(scratch, `busy-${files++}.db`);
      const db = new DatabaseSync(path, { timeout: timeoutMs });
      db.exec('PRAGMA journal_mode = WAL');
      const other = new DatabaseSync(path, { timeout: timeoutMs });
      const store = sqliteOutbox({ db, writeThread });
      db.exec('BEGIN');
      await store.append(db, [
        { type: 't', aggregateType: 'a', aggregateId: '1', payload: 1 },
        { type: 't', aggregateType: 'a', aggregateId: '2', payload: 2 },
      ]);
      db.exec('COMMIT');
      const claimed = await store.claim('r1', 1, 60_000);
      // The other connection takes the write lock and keeps it until `unlock`.
      other.exec('BEGIN IMMEDIATE');
      other.exec(`INSERT INTO "${store.table}_lease" (singleton, relay_id, until) VALUES (1, 'r1', 0)
        ON CONFLICT (singleton) DO NOTHING`);
      const busyTimeout = () => Object.values(db.prepare('PRAGMA busy_timeout').get() as object)[0];
      const unlock = () => other.exec('COMMIT');
      const close = async () => {
        if (other.isTransaction) other.exec('ROLLBACK');
        await store.close();
        other.close();
        db.close();
      };
      return { db, store, claimed, busyTimeout, unlock, close };
    }

    /** How many times a 1 ms interval fired until `promise` settled: the thread kept turning. */
    async function ticksUntil(promise: Promise<unknown>): Promise<number> {
      let ticks = 0;
      const timer = setInterval(() => ticks++, 1);
      try {
        await promise.catch(() => undefined);
      } finally {
        clearInterval(timer);
      }
      return ticks;
    }

    it('waits for the lock without blocking the thread, then marks and keeps the handle’s busy timeout', async () => {
      const { store, claimed, busyTimeout, unlock, close } = await lockedFile(5_000);
      let marked = false;
      const marking = store.markPublished('r1', [claimed[0]?.id as string]).then(() => {
        marked = true;
      });
      setTimeout(unlock, 60);
      // In SQLite's busy handler the interval could not fire until the lock came free.
      expect(await ticksUntil(marking)).toBeGreaterThanOrEqual(10);
      expect(marked).toBe(true);
      const [first, second] = await store.find({});
      expect(first?.publishedAt).not.toBeNull();
      expect(second?.publishedAt).toBeNull();
      expect(busyTimeout()).toBe(5_000);
      await close();
    });

    it('keeps the events of a waiting mark in flight, so a claim beside it does not take them again', async () => {
      const { store, claimed, unlock, close } = await lockedFile(5_000);
      const marking = store.markPublished('r1', [claimed[0]?.id as string]);
      // The lease is the relay's own and still fresh: this claim only reads.
      const beside = await store.claim('r1', 10, 60_000);
      expect(beside.map((event) => event.id)).not.toContain(claimed[0]?.id);
      unlock();
      await marking;
      await close();
    });

    it('fails with SQLITE_BUSY once the handle’s busy timeout has passed, without blocking the thread', async () => {
      const { store, claimed, busyTimeout, unlock, close } = await lockedFile(150);
      const started = performance.now();
      const marking = store.markPublished('r1', [claimed[0]?.id as string]);
      const ticks = ticksUntil(marking);
      await expect(marking).rejects.toMatchObject({ errcode: 5 });
      expect(performance.now() - started).toBeGreaterThanOrEqual(145);
      expect(await ticks).toBeGreaterThanOrEqual(20);
      expect(busyTimeout()).toBe(150);
      // Off the events in flight: once the lock is free, the next claim takes the event again.
      unlock();
      expect((await store.claim('r1', 10, 60_000)).map((event) => event.id)).toContain(claimed[0]?.id);
      await close();
    });

    // The write thread refuses a handle without a busy timeout (see its own tests).
    if (!writeThread) {
      it('fails at once on a handle without a busy timeout, as SQLite would', async () => {
        const { store, claimed, close } = await lockedFile(0);
        await expect(store.release('r1', claimed[0]?.id as string, 'boom', 0)).rejects.toMatchObject({
          errcode: 5,
        });
        await close();
      });
    }
  });

  it('validates its options', () => {
    const db = new DatabaseSync(':memory:');
    expect(() => sqliteOutbox({ db, table: '1bad' })).toThrow(/table/);
    expect(() => sqliteOutbox({ db: {} as DatabaseSync })).toThrow(/db/);
  });

  describe('with its writes on a thread', () => {
    /** A WAL file with `count` events appended and claimed by `r1`. */
    async function claimedOnFile(count: number) {
      const dir = mkdtempSync(join(scratch, 'thread-'));
      const db = new DatabaseSync(join(dir, 'outbox.db'), { timeout: 5_000 });
      db.exec('PRAGMA journal_mode = WAL');
      const store = sqliteOutbox({ db, writeThread: true });
      db.exec('BEGIN');
      await store.append(
        db,
        Array.from({ length: count }, (_, n) => ({
          type: 't',
          aggregateType: 'a',
          aggregateId: `${n}`,
          payload: n,
        })),
      );
      db.exec('COMMIT');
      return { dir, db, store };
    }

    it('refuses a handle the thread cannot share: in memory, not in WAL mode, exclusive, without a busy timeout, of another driver, or a flag that is not a boolean', () => {
      const memory = new DatabaseSync(':memory:');
      expect(() => sqliteOutbox({ db: memory, writeThread: true })).toThrow(
        expect.objectContaining({
          name: 'InvalidOptionError',
          message: expect.stringMatching(/writeThread.*not in memory/),
        }),
      );
      const rollbackJournal = new DatabaseSync(join(scratch, `journal-${files++}.db`));
      expect(() => sqliteOutbox({ db: rollbackJournal, writeThread: true })).toThrow(
        /writeThread.*WAL mode.*delete/,
      );
      expect(() => sqliteOutbox({ db: memory, writeThread: 'yes' as unknown as boolean })).toThrow(
        /writeThread.*boolean/,
      );
      const path = join(scratch, `refused-${files++}.db`);
      const impatient = new DatabaseSync(path);
      impatient.exec('PRAGMA journal_mode = WAL');
      expect(() => sqliteOutbox({ db: impatient, writeThread: true })).toThrow(/writeThread.*busy timeout/);
      const exclusive = new DatabaseSync(path, { timeout: 1_000 });
      exclusive.exec('PRAGMA locking_mode = EXCLUSIVE');
      expect(() => sqliteOutbox({ db: exclusive, writeThread: true })).toThrow(
        /writeThread.*locking_mode normal, got exclusive/,
      );
      // A handle that cannot say which file it has open, as better-sqlite3's, whose copy of SQLite
      // would not see the thread's locks.
      const patient = new DatabaseSync(path, { timeout: 1_000 });
      const otherDriver = overriding(patient, { location: undefined });
      expect(() => sqliteOutbox({ db: otherDriver, writeThread: true })).toThrow(/writeThread.*node:sqlite/);
      for (const handle of [memory, rollbackJournal, impatient, exclusive, patient]) handle.close();
    });

    it('never creates the file, and refuses one without the outbox’s tables', async () => {
      const { dir, db, store } = await claimedOnFile(1);
      const path = join(dir, 'outbox.db');
      const aside = join(dir, 'aside.db');
      renameSync(path, aside);
      const missing = await store.claim('r1', 10, 60_000).catch((error: unknown) => error);
      expect(missing).toBeInstanceOf(OutboxWriteThreadError);
      expect(existsSync(path)).toBe(false);
      renameSync(aside, path);
      // A file without the lease table is not the outbox's: the thread writes nothing there.
      db.exec(`DROP TABLE "${store.table}_lease"`);
      const other = await store.claim('r1', 10, 60_000).catch((error: unknown) => error);
      expect(other).toBeInstanceOf(OutboxWriteThreadError);
      expect(String((other as Error).cause)).toMatch(/no table "keel_outbox_lease"/);
      store.ensureSchema();
      expect(await store.claim('r1', 10, 60_000)).toHaveLength(1);
      await store.close();
      db.close();
    });

    it('closes once a thread lost with a write under way has failed that write', async () => {
      const { dir, db, store } = await claimedOnFile(1);
      const renamed = `${dir}-moved`;
      renameSync(dir, renamed);
      const claiming = store.claim('r1', 10, 60_000).catch((error: unknown) => error);
      const closing = store.close();
      expect(await claiming).toBeInstanceOf(OutboxWriteThreadError);
      await closing;
      // Every later call returns the same settled close, and writes fail.
      await store.close();
      await expect(store.relinquish('r1')).rejects.toBeInstanceOf(OutboxWriteThreadError);
      renameSync(renamed, dir);
      db.close();
    });

    it('lets the application write on its handle beside the relay, with BEGIN IMMEDIATE and the busy timeout', async () => {
      const { db, store } = await claimedOnFile(0);
      db.exec('CREATE TABLE business (id INTEGER PRIMARY KEY)');
      const transport = inProcessTransport({ confirm: 'accepted' });
      const relay = outboxRelay({ store, transport, batchSize: 20, pollIntervalMs: 5 });
      relay.start();
      let committed = 0;
      for (let n = 0; n < 200; n++) {
        db.exec('BEGIN IMMEDIATE');
        db.prepare('INSERT INTO business (id) VALUES (?)').run(n);
        await store.append(db, { type: 't', aggregateType: 'a', aggregateId: `${n % 7}`, payload: n });
        db.exec('COMMIT');
        committed++;
        // A turn of the event loop between requests, so the relay's marks commit among them.
        if (n % 10 === 0) await new Promise((resolve) => setImmediate(resolve));
      }
      while ((await store.gauges()).unpublished > 0) await new Promise((resolve) => setTimeout(resolve, 5));
      await relay.stop();
      await transport.close();
      expect(committed).toBe(200);
      expect((await store.find({ published: true, limit: 1_000 })).length).toBe(200);
      await store.close();
      db.close();
    });

    it('fails the writes of a thread that cannot open the file, and starts a new one for the next write', async () => {
      const { dir, db, store } = await claimedOnFile(1);
      const renamed = `${dir}-moved`;
      // The thread opens the file by its path on the first write: with the folder moved away, it fails.
      renameSync(dir, renamed);
      const failed = await store.claim('r1', 10, 60_000).catch((error: unknown) => error);
      expect(failed).toBeInstanceOf(OutboxWriteThreadError);
      expect((failed as OutboxWriteThreadError).code).toBe('KEEL_OUTBOX_WRITE_THREAD');
      renameSync(renamed, dir);
      const claimed = await store.claim('r1', 10, 60_000);
      expect(claimed).toHaveLength(1);
      await store.markPublished('r1', [claimed[0]?.id as string]);
      expect((await store.gauges()).unpublished).toBe(0);
      await store.close();
      db.close();
    });

    it('fails writes after close with OutboxWriteThreadError, and close waits for the writes under way', async () => {
      const { db, store } = await claimedOnFile(2);
      const claimed = await store.claim('r1', 10, 60_000);
      const marking = store.markPublished('r1', [claimed[0]?.id as string]);
      await store.close();
      await marking;
      expect((await store.find({ published: true })).map((event) => event.id)).toEqual([claimed[0]?.id]);
      await expect(store.release('r1', claimed[1]?.id as string, 'boom', 0)).rejects.toBeInstanceOf(
        OutboxWriteThreadError,
      );
      await store.close();
      db.close();
    });

    it('lets the process end once its writes are done, closed or not', async () => {
      const started = performance.now();
      const { code, stderr } = await runFixture('sqlite-write-thread-unclosed.ts', [
        join(scratch, `exit-${files++}.db`),
      ]);
      expect(stderr).toContain('published 50');
      expect(code).toBe(0);
      expect(performance.now() - started).toBeLessThan(20_000);
    });
  });
});
