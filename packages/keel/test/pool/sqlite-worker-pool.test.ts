import { randomUUID } from 'node:crypto';
import { rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { InvalidOptionError, TimeoutError } from 'keel';
import {
  PoolClosedError,
  PoolConnectionLostError,
  StatementTimeoutError,
  sqliteWorkerPool,
} from 'keel/sqlite';
import { afterAll, describe, expect, it } from 'vitest';

const files: string[] = [];

function tempDatabase(): string {
  const path = join(tmpdir(), `keel-pool-${process.pid}-${randomUUID().slice(0, 8)}.db`);
  files.push(path);
  return path;
}

afterAll(() => {
  for (const file of files) for (const suffix of ['', '-wal', '-shm']) rmSync(file + suffix, { force: true });
});

/** Counts to `n` in a recursive CTE: pure CPU inside SQLite, a stand-in for a heavy report. */
const HEAVY =
  'WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?) SELECT count(*) AS n FROM c';

describe('sqliteWorkerPool', () => {
  it('runs statements on worker threads in WAL mode and answers rows and changes', async () => {
    const pool = sqliteWorkerPool({ path: tempDatabase(), size: 2, pragmas: { synchronous: 'NORMAL' } });
    try {
      await pool.exec('CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL)');
      expect(await pool.run('INSERT INTO items (name) VALUES (?)', ['a'])).toEqual({
        changes: 1,
        lastInsertRowid: 1,
      });
      expect(await pool.query('INSERT INTO items (name) VALUES (?), (?)', ['b', 'c'])).toMatchObject({
        rows: [],
        rowCount: 2,
      });
      expect(await pool.query('SELECT name FROM items ORDER BY id')).toEqual({
        rows: [{ name: 'a' }, { name: 'b' }, { name: 'c' }],
        rowCount: 3,
      });
      expect(await pool.query('DELETE FROM items WHERE name = ? RETURNING id', ['c'])).toEqual({
        rows: [{ id: 3 }],
        rowCount: 1,
      });
      expect(await pool.get('SELECT count(*) AS n FROM items')).toEqual({ n: 2 });
      expect(await pool.all('PRAGMA journal_mode')).toEqual([{ journal_mode: 'wal' }]);
      const violation = await pool.run('INSERT INTO items (name) VALUES (?)', ['a']).catch((e: unknown) => e);
      expect(violation).toMatchObject({ code: 'ERR_SQLITE_ERROR', errcode: 2067 });
      expect(pool.stats()).toEqual({ size: 2, busy: 0, idle: 2, waiting: 0, abandoned: 0 });
    } finally {
      await pool.close();
    }
  });

  it('keeps the event loop turning while a heavy query runs', async () => {
    const pool = sqliteWorkerPool({ path: tempDatabase(), size: 1 });
    try {
      let done = false;
      const heavy = pool.get(HEAVY, [1_500_000]).then((row) => {
        done = true;
        return row;
      });
      let ticks = 0;
      let ticksWhileRunning = 0;
      const interval = setInterval(() => {
        ticks++;
        if (!done) ticksWhileRunning++;
      }, 5);
      expect(await heavy).toEqual({ n: 1_500_000 });
      clearInterval(interval);
      expect(ticks).toBeGreaterThan(0);
      expect(ticksWhileRunning).toBeGreaterThan(0);
    } finally {
      await pool.close();
    }
  });

  it('queues callers without bound for a free worker, first come first served', async () => {
    const pool = sqliteWorkerPool({ path: tempDatabase(), size: 1 });
    try {
      const order: string[] = [];
      const heavy = pool.get(HEAVY, [300_000]).then(() => order.push('heavy'));
      const light = Array.from({ length: 20 }, (_, i) =>
        pool.get('SELECT ? AS i', [i]).then(() => order.push(`light${i}`)),
      );
      expect(pool.stats()).toMatchObject({ busy: 1, idle: 0, waiting: 20 });
      await Promise.all([heavy, ...light]);
      expect(order).toEqual(['heavy', ...Array.from({ length: 20 }, (_, i) => `light${i}`)]);
    } finally {
      await pool.close();
    }
  });

  it('pins a transaction to one connection and commits or rolls it back', async () => {
    const pool = sqliteWorkerPool({ path: tempDatabase(), size: 2 });
    try {
      await pool.exec('CREATE TABLE ledger (id INTEGER PRIMARY KEY, amount INTEGER NOT NULL)');
      const seenInside = await pool.transaction(async (tx) => {
        await tx.run('INSERT INTO ledger (amount) VALUES (?)', [10]);
        const inside = (await tx.get('SELECT count(*) AS n FROM ledger')) as { n: number };
        // Another connection does not see the uncommitted row.
        const outside = (await pool.get('SELECT count(*) AS n FROM ledger')) as { n: number };
        return [inside.n, outside.n];
      });
      expect(seenInside).toEqual([1, 0]);
      const failure = await pool
        .transaction(async (tx) => {
          await tx.run('INSERT INTO ledger (amount) VALUES (?)', [20]);
          throw new Error('business rule failed');
        })
        .catch((e: unknown) => e);
      expect(failure).toEqual(new Error('business rule failed'));
      expect(await pool.all('SELECT amount FROM ledger')).toEqual([{ amount: 10 }]);
      // A client released inside an open transaction is rolled back before anyone else gets it.
      const client = await pool.connect();
      await client.exec('BEGIN');
      await client.run('INSERT INTO ledger (amount) VALUES (?)', [30]);
      client.release();
      await expect(client.get('SELECT 1')).rejects.toThrow(/already released/);
      await Promise.all([pool.exec('SELECT 1'), pool.exec('SELECT 1')]);
      expect(await pool.all('SELECT amount FROM ledger')).toEqual([{ amount: 10 }]);
      await expect(pool.transaction(async () => 1, { behavior: 'eager' as never })).rejects.toThrow(
        /^behavior: /,
      );
      await expect(pool.get('SELECT 1', [], { timeoutMs: 0 })).rejects.toThrow(/^timeoutMs: /);
    } finally {
      await pool.close();
    }
  });

  it('abandons a statement past its timeout and carries on with a fresh worker', async () => {
    const pool = sqliteWorkerPool({ path: tempDatabase(), size: 1, statementTimeoutMs: 5_000 });
    try {
      await pool.exec('CREATE TABLE t (n INTEGER)');
      const client = await pool.connect();
      await client.exec('BEGIN IMMEDIATE');
      await client.run('INSERT INTO t VALUES (1)');
      const error = await client
        .get(HEAVY, [1_000_000], { routeClass: 'report', timeoutMs: 50 })
        .catch((e: unknown) => e);
      expect(error).toBeInstanceOf(StatementTimeoutError);
      expect(error).toBeInstanceOf(TimeoutError);
      expect(error).toMatchObject({
        code: 'KEEL_STATEMENT_TIMEOUT',
        routeClass: 'report',
        timeoutMs: 50,
        status: 504,
      });
      // The transaction died with its worker: the client refuses more work instead of running it elsewhere.
      await expect(client.exec('COMMIT')).rejects.toBeInstanceOf(PoolConnectionLostError);
      client.release();
      expect(pool.stats()).toMatchObject({ size: 1, idle: 1, abandoned: 1 });
      // The fresh worker answers at once; the uncommitted insert never landed.
      expect(await pool.get('SELECT count(*) AS n FROM t')).toEqual({ n: 0 });
      await (error as StatementTimeoutError).work;
      expect(pool.stats().abandoned).toBe(0);
      await pool.exec('INSERT INTO t VALUES (2)');
      expect(await pool.all('SELECT n FROM t')).toEqual([{ n: 2 }]);
    } finally {
      await pool.close();
    }
  });

  it('reports a database that cannot be opened from ready() and from every statement', async () => {
    const pool = sqliteWorkerPool({ path: join(tmpdir(), `keel-missing-${randomUUID()}`, 'x.db'), size: 1 });
    try {
      await expect(pool.ready()).rejects.toThrow(/unable to open/);
      await expect(pool.get('SELECT 1')).rejects.toThrow(/unable to open/);
    } finally {
      await pool.close();
    }
  });

  it('refuses calls once closed', async () => {
    const pool = sqliteWorkerPool({ path: tempDatabase(), size: 1 });
    const held = await pool.connect();
    const queued = pool.get('SELECT 1').catch((e: unknown) => e);
    await pool.close();
    expect(await queued).toBeInstanceOf(PoolClosedError);
    await expect(pool.get('SELECT 1')).rejects.toBeInstanceOf(PoolClosedError);
    await expect(held.get('SELECT 1')).rejects.toBeInstanceOf(PoolClosedError);
  });

  it('refuses bad options, naming the option', () => {
    expect(() => sqliteWorkerPool({ path: ':memory:' })).toThrow(InvalidOptionError);
    expect(() => sqliteWorkerPool({ path: '' })).toThrow(/^path: /);
    expect(() => sqliteWorkerPool({ path: 'x.db', size: 0 })).toThrow(/^size: /);
    expect(() => sqliteWorkerPool({ path: 'x.db', busyTimeoutMs: -1 })).toThrow(/^busyTimeoutMs: /);
    expect(() => sqliteWorkerPool({ path: 'x.db', statementTimeoutMs: 0 })).toThrow(/^statementTimeoutMs: /);
    expect(() => sqliteWorkerPool({ path: 'x.db', pragmas: { 'x; DROP TABLE t': 1 } })).toThrow(/^pragmas\./);
    expect(() => sqliteWorkerPool({ path: 'x.db', pragmas: { synchronous: 'OFF; ATTACH' } })).toThrow(
      /^pragmas\.synchronous: /,
    );
  });
});
