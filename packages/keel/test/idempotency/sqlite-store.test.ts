import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { InvalidOptionError } from 'keel';
import { idempotency } from 'keel/idempotency';
import { SqliteIdempotencyStore, sqliteIdempotencyDdl, sqliteStore } from 'keel/sqlite';
import { afterAll, describe, expect, it } from 'vitest';
import { recordFixture } from './record-fixture.ts';
import { runStoreConformance } from './store-conformance.ts';

runStoreConformance('sqlite', async () => {
  const db = new DatabaseSync(':memory:');
  return { store: sqliteStore({ db }), close: async () => db.close() };
});

const PACKAGE_DIR = fileURLToPath(new URL('../../', import.meta.url));
const SOURCE = (path: string) => pathToFileURL(join(PACKAGE_DIR, 'src', path)).href;

const record = recordFixture;

/**
 * A WAL file with two connections: `db`, under a store that records every `BEGIN` it runs, and
 * `other`, as another process's would be.
 */
function walPair(path: string) {
  const db = new DatabaseSync(path, { timeout: 5_000 });
  db.exec('PRAGMA journal_mode = WAL');
  const other = new DatabaseSync(path, { timeout: 5_000 });
  const begins: string[] = [];
  const counting = {
    exec: (sql: string) => {
      if (sql.startsWith('BEGIN')) begins.push(sql);
      return db.exec(sql);
    },
    prepare: (sql: string) => db.prepare(sql),
  };
  return { db, other, store: sqliteStore({ db: counting }), begins };
}

describe('sqliteStore', () => {
  it('creates its table and indexes at construction, once, under the table name given', () => {
    const db = new DatabaseSync(':memory:');
    sqliteStore({ db, table: 'idem_a' });
    sqliteStore({ db, table: 'idem_a' }); // IF NOT EXISTS: a second store on the same table is fine
    const objects = db
      .prepare("SELECT type, name FROM sqlite_master WHERE tbl_name = 'idem_a' ORDER BY name")
      .all();
    expect(objects).toEqual([
      { type: 'table', name: 'idem_a' },
      { type: 'index', name: 'idem_a_expires_idx' },
      { type: 'index', name: 'idem_a_lease_idx' },
      { type: 'index', name: 'sqlite_autoindex_idem_a_1' },
    ]);
    expect(sqliteStore({ db }).table).toBe('keel_idempotency');
    db.close();
  });

  it('serves the sweeps from its indexes rather than a table scan', () => {
    const db = new DatabaseSync(':memory:');
    sqliteStore({ db });
    const plan = (sql: string) => JSON.stringify(db.prepare(`EXPLAIN QUERY PLAN ${sql}`).all(Date.now(), 10));
    expect(
      plan(
        "SELECT key FROM keel_idempotency WHERE state = 'in-flight' AND lease_until < ? ORDER BY lease_until LIMIT ?",
      ),
    ).toContain('keel_idempotency_lease_idx');
    expect(
      plan('SELECT key FROM keel_idempotency WHERE expires_at < ? ORDER BY expires_at LIMIT ?'),
    ).toContain('keel_idempotency_expires_idx');
    db.close();
  });

  it.each([
    ['', 'empty'],
    ['1table', 'a leading digit'],
    ['idem; DROP TABLE users', 'SQL'],
    ['idem"x', 'a quote'],
    ['a'.repeat(49), 'more than 48 characters'],
  ])('refuses the table name %j (%s), naming the option', (table) => {
    const db = new DatabaseSync(':memory:');
    expect(() => sqliteStore({ db, table })).toThrow(InvalidOptionError);
    expect(() => sqliteStore({ db, table })).toThrow(/^table: /);
    expect(() => sqliteIdempotencyDdl({ table })).toThrow(/^table: /);
    db.close();
  });

  it('refuses something that is not a SQLite handle', () => {
    expect(() => sqliteStore({ db: {} as never })).toThrow(/^db: /);
    expect(() => sqliteStore(undefined as never)).toThrow(InvalidOptionError);
  });

  it('refuses a negative or fractional sweep limit', async () => {
    const store = sqliteStore({ db: new DatabaseSync(':memory:') });
    await expect(store.expiredLeases(Date.now(), -1)).rejects.toThrow(/^limit: /);
    await expect(store.purgeExpired(Date.now(), 1.5)).rejects.toThrow(/^limit: /);
  });

  it('stores times as integers and the response and phases as JSON text', async () => {
    const db = new DatabaseSync(':memory:');
    const store = sqliteStore({ db });
    await store.insertIfAbsent(
      record('k', {
        response: { status: 200, headers: { 'content-type': 'text/plain' }, body: 'ok' },
        phases: { a: 1 },
      }),
    );
    const row = db
      .prepare(
        'SELECT typeof(lease_until) AS lease, typeof(sequence) AS seq, response, phases FROM keel_idempotency',
      )
      .get();
    expect(row).toEqual({
      lease: 'integer',
      seq: 'null',
      response: '{"status":200,"headers":{"content-type":"text/plain"},"body":"ok"}',
      phases: '{"a":1}',
    });
  });

  it('reuses its prepared statements instead of preparing one per call', async () => {
    const db = new DatabaseSync(':memory:');
    let prepared = 0;
    const counting = {
      exec: (sql: string) => db.exec(sql),
      prepare: (sql: string) => {
        prepared++;
        return db.prepare(sql);
      },
    };
    const store = sqliteStore({ db: counting });
    for (let i = 0; i < 20; i++) {
      const r = record(`k${i}`);
      await store.insertIfAbsent(r);
      await store.get(r.key);
      await store.replace(r.token, { ...r, token: randomUUID() });
    }
    // insert, get and replace, and the read of the handle's busy timeout before each group.
    expect(prepared).toBe(4);
  });

  it('joins the open transaction of its handle: a rollback undoes the stored response with the business write', async () => {
    const db = new DatabaseSync(':memory:');
    db.exec('CREATE TABLE charges (id TEXT PRIMARY KEY)');
    let t = 1_700_000_000_000;
    const engine = idempotency({ store: sqliteStore({ db }), clock: { now: () => t } });
    const request = { key: 'tx-1', principal: 'u', method: 'POST', route: '/charges', payload: { a: 1 } };
    const response = { status: 201, headers: {}, body: '{"id":"ch_1"}' };

    const first = await engine.begin(request);
    if (first.kind !== 'execute') throw new Error('expected execute');
    db.exec('BEGIN IMMEDIATE');
    db.prepare('INSERT INTO charges (id) VALUES (?)').run('ch_1');
    await first.lease.complete(response, { tx: db });
    db.exec('ROLLBACK');
    expect(db.prepare('SELECT count(*) AS n FROM charges').get()).toEqual({ n: 0 });
    // The record is back in flight: the handler did not durably finish, so no replay is possible.
    t += 30_001;
    const retry = await engine.begin(request);
    expect(retry.kind).toBe('execute');
    if (retry.kind !== 'execute') return;
    expect(retry.lease.resumed).toBe(true);

    db.exec('BEGIN IMMEDIATE');
    db.prepare('INSERT INTO charges (id) VALUES (?)').run('ch_1');
    await retry.lease.complete(response, { tx: db });
    db.exec('COMMIT');
    expect(db.prepare('SELECT count(*) AS n FROM charges').get()).toEqual({ n: 1 });
    expect(await engine.begin(request)).toEqual({ kind: 'replay', response });
  });

  it('writes on another handle passed as tx, and refuses a tx that is not a handle', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'keel-sqlite-tx-'));
    try {
      const path = join(dir, 'idem.db');
      const own = new DatabaseSync(path, { timeout: 5_000 });
      const other = new DatabaseSync(path, { timeout: 5_000 });
      const store = sqliteStore({ db: own });
      const r = record('k');
      await store.insertIfAbsent(r);
      other.exec('BEGIN IMMEDIATE');
      expect(await store.replace(r.token, { ...r, recoveryPoint: 'p' }, other)).toBe(true);
      other.exec('ROLLBACK');
      expect((await store.get('k'))?.recoveryPoint).toBeNull();
      await expect(store.replace(r.token, r, { nope: true })).rejects.toThrow(/^tx: /);
      own.close();
      other.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('group-commits the writes of one event-loop turn, acknowledging each only once committed', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'keel-sqlite-group-'));
    try {
      const { db, other: reader, store, begins } = walPair(join(dir, 'idem.db'));
      const records = Array.from({ length: 50 }, (_, i) => record(`group-${i}`));
      const inserted = await Promise.all(records.map((r) => store.insertIfAbsent(r)));
      expect(inserted.every(Boolean)).toBe(true);
      expect(begins).toEqual(['BEGIN IMMEDIATE']);
      // Acknowledged means committed: another connection already sees every row.
      expect(reader.prepare('SELECT count(*) AS n FROM keel_idempotency').get()).toEqual({ n: 50 });
      // The same key claimed twice in one group: exactly one claim wins.
      const twice = await Promise.all([
        store.insertIfAbsent(record('dup')),
        store.insertIfAbsent(record('dup')),
      ]);
      expect(twice.filter(Boolean)).toHaveLength(1);
      reader.close();
      db.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("waits for another connection's write lock on a timer, gathering the writes queued meanwhile", async () => {
    const dir = mkdtempSync(join(tmpdir(), 'keel-sqlite-busy-'));
    try {
      const { db, other, store, begins } = walPair(join(dir, 'idem.db'));
      other.exec('BEGIN IMMEDIATE');
      other.exec(
        "INSERT INTO keel_idempotency (key, fingerprint, state, token, lease_until, expires_at, created_at, updated_at) VALUES ('other', 'f', 'in-flight', 't', 0, 0, 0, 0)",
      );
      let ticks = 0;
      const timer = setInterval(() => ticks++, 1);
      const first = Array.from({ length: 10 }, (_, i) => store.insertIfAbsent(record(`first-${i}`)));
      await new Promise((resolve) => setTimeout(resolve, 40));
      const second = Array.from({ length: 10 }, (_, i) => store.insertIfAbsent(record(`second-${i}`)));
      setTimeout(() => other.exec('COMMIT'), 40);
      expect(await Promise.all([...first, ...second])).toEqual(Array.from({ length: 20 }, () => true));
      clearInterval(timer);
      // In SQLite's busy handler the thread would have slept through the wait: no tick, and the
      // second writes would have waited for a group of their own.
      expect(ticks).toBeGreaterThanOrEqual(20);
      // Every try that found the lock taken counts too; one of them opened the group of all twenty.
      expect(begins.length).toBeGreaterThan(1);
      expect(Object.values(db.prepare('PRAGMA busy_timeout').get() as object)).toEqual([5_000]);
      expect((db.prepare('SELECT count(*) AS n FROM keel_idempotency').get() as { n: number }).n).toBe(21);

      // A lock held past the busy timeout fails the group with SQLITE_BUSY; nothing is written.
      db.exec('PRAGMA busy_timeout = 120');
      other.exec('BEGIN IMMEDIATE');
      const started = performance.now();
      await expect(store.insertIfAbsent(record('late'))).rejects.toMatchObject({ errcode: 5 });
      expect(performance.now() - started).toBeGreaterThanOrEqual(115);
      other.exec('ROLLBACK');
      expect(await store.get('late')).toBeUndefined();
      expect(await store.insertIfAbsent(record('late'))).toBe(true);
      other.close();
      db.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("keeps one failing write of a group from failing the others'", async () => {
    const db = new DatabaseSync(':memory:');
    const store = sqliteStore({ db });
    const a = record('a');
    const b = record('b');
    await Promise.all([store.insertIfAbsent(a), store.insertIfAbsent(b)]);
    const results = await Promise.allSettled([
      store.replace(a.token, { ...a, recoveryPoint: 'charged' }),
      // Violates the table's CHECK on state: this write alone must fail.
      store.replace(b.token, { ...b, state: 'bogus' as 'completed' }),
      store.insertIfAbsent(record('c')),
    ]);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect((await store.get('a'))?.recoveryPoint).toBe('charged');
    expect((await store.get('b'))?.state).toBe('in-flight');
    expect(await store.get('c')).toBeDefined();
    db.close();
  });

  it('lets grouped writes join a transaction left open on its handle, as single statements would', async () => {
    const db = new DatabaseSync(':memory:');
    const store = sqliteStore({ db });
    db.exec('BEGIN IMMEDIATE');
    expect(await store.insertIfAbsent(record('joined'))).toBe(true);
    db.exec('ROLLBACK');
    expect(await store.get('joined')).toBeUndefined();
    db.close();
  });

  it('exposes its class and DDL for migration tools', () => {
    const db = new DatabaseSync(':memory:');
    const store = sqliteStore({ db, table: 'idem_ddl' });
    expect(store).toBeInstanceOf(SqliteIdempotencyStore);
    expect(store.ddl).toBe(sqliteIdempotencyDdl({ table: 'idem_ddl' }));
    expect(store.ddl).toContain('CREATE TABLE IF NOT EXISTS "idem_ddl"');
  });
});

const WORKER_SOURCE = `
import { DatabaseSync } from 'node:sqlite';
import { IdempotencyKeyInFlightError, idempotency } from '${SOURCE('idempotency/index.ts')}';
import { sqliteStore } from '${SOURCE('adapters/sqlite/index.ts')}';

const [path, keysArg, attemptsArg] = process.argv.slice(2);
const keys = Number(keysArg);
const attempts = Number(attemptsArg);
const db = new DatabaseSync(path, { timeout: 10_000 });
db.exec('PRAGMA journal_mode = WAL');
db.exec('CREATE TABLE IF NOT EXISTS effects (key TEXT NOT NULL, pid INTEGER NOT NULL)');
const engine = idempotency({ store: sqliteStore({ db }) });
const addEffect = db.prepare('INSERT INTO effects (key, pid) VALUES (?, ?)');
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const outcomes = { executed: 0, replayed: 0, conflicted: 0, errors: [] as string[] };

process.stdout.write('ready\\n');
await new Promise((resolve) => process.stdin.once('data', resolve));
process.stdin.pause();

const order = Array.from({ length: keys * attempts }, (_, i) => i % keys);
for (let i = order.length - 1; i > 0; i--) {
  const j = Math.floor(Math.random() * (i + 1));
  [order[i], order[j]] = [order[j] as number, order[i] as number];
}
await Promise.all(
  order.map(async (index) => {
    try {
      await sleep(Math.random() * 150); // spread the burst so the two processes interleave
      const request = { key: 'key-' + index, principal: 'p', method: 'POST', route: '/effects', payload: { index } };
      const decision = await engine.begin(request);
      if (decision.kind === 'replay') {
        outcomes.replayed++;
        return;
      }
      if (decision.kind !== 'execute') throw new Error('unexpected ' + decision.kind);
      addEffect.run('key-' + index, process.pid);
      await sleep(Math.random() * 10);
      await decision.lease.complete({ status: 201, headers: {}, body: String(process.pid) });
      outcomes.executed++;
    } catch (error) {
      if (error instanceof IdempotencyKeyInFlightError) outcomes.conflicted++;
      else outcomes.errors.push(String(error));
    }
  }),
);
db.close();
process.stdout.write(JSON.stringify(outcomes) + '\\n');
`;

interface WorkerOutcomes {
  executed: number;
  replayed: number;
  conflicted: number;
  errors: string[];
}

describe('sqliteStore across two OS processes', () => {
  const dir = mkdtempSync(join(tmpdir(), 'keel-sqlite-2p-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('runs each of 100 keys once when two processes share one WAL database file', async () => {
    const path = join(dir, 'shared.db');
    const worker = join(dir, 'worker.ts');
    writeFileSync(worker, WORKER_SOURCE);
    const setup = new DatabaseSync(path);
    setup.exec('PRAGMA journal_mode = WAL');
    sqliteStore({ db: setup });
    setup.close();

    const keys = 100;
    const attempts = 3;
    const children = [0, 1].map(() =>
      spawn(process.execPath, ['--conditions=keel-source', worker, path, String(keys), String(attempts)], {
        cwd: PACKAGE_DIR,
        stdio: ['pipe', 'pipe', 'pipe'],
      }),
    );
    const runs = children.map((child) => {
      let out = '';
      let err = '';
      child.stdout.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
      child.stderr.setEncoding('utf8').on('data', (chunk: string) => (err += chunk));
      const ready = new Promise<void>((resolve, reject) => {
        child.stdout.on('data', () => out.startsWith('ready\n') && resolve());
        child.once('exit', () => reject(new Error(`worker exited before ready: ${out}${err}`)));
      });
      const done = new Promise<string>((resolve, reject) =>
        child.once('exit', (code) =>
          code === 0 ? resolve(out) : reject(new Error(`worker exited ${code}: ${err}`)),
        ),
      );
      done.catch(() => undefined);
      ready.catch(() => undefined);
      return { ready, done };
    });
    await Promise.all(runs.map((r) => r.ready));
    for (const child of children) child.stdin.end('go\n');
    const outcomes = (await Promise.all(runs.map((r) => r.done))).map(
      (out) => JSON.parse(out.slice('ready\n'.length)) as WorkerOutcomes,
    );

    expect(outcomes.flatMap((o) => o.errors)).toEqual([]);
    for (const o of outcomes) expect(o.executed + o.replayed + o.conflicted).toBe(keys * attempts);
    expect(outcomes.reduce((sum, o) => sum + o.executed, 0)).toBe(keys);
    // Every key was raced by both processes (how the executions split between them varies: SQLite's
    // busy handler backs off, so a process that hits the lock early can lose most of the keys).
    expect(outcomes.every((o) => o.replayed + o.conflicted > 0)).toBe(true);

    const db = new DatabaseSync(path);
    const effects = db.prepare('SELECT key, count(*) AS n FROM effects GROUP BY key').all() as {
      key: string;
      n: number;
    }[];
    expect(effects).toHaveLength(keys);
    expect(effects.filter((e) => e.n !== 1)).toEqual([]);
    expect(db.prepare("SELECT count(*) AS n FROM keel_idempotency WHERE state = 'completed'").get()).toEqual({
      n: keys,
    });
    db.close();
  }, 60_000);
});
