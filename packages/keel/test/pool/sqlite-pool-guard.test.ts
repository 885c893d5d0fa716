import { randomUUID } from 'node:crypto';
import { rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DeadlineExceededError, InvalidOptionError, type PolicyEvent, withTimeBudget } from 'keel';
import {
  guardSqlitePool,
  PoolAcquireTimeoutError,
  type SqliteWorkerPool,
  StatementTimeoutError,
  sqliteWorkerPool,
} from 'keel/sqlite';
import { afterAll, afterEach, describe, expect, it } from 'vitest';

const files: string[] = [];
const pools: SqliteWorkerPool[] = [];

/** A pool whose workers are all started, as they are once a service has started. */
async function openPool(size: number): Promise<SqliteWorkerPool> {
  const path = join(tmpdir(), `keel-guard-${process.pid}-${randomUUID().slice(0, 8)}.db`);
  files.push(path);
  const pool = sqliteWorkerPool({ path, size });
  pools.push(pool);
  await pool.ready();
  return pool;
}

afterEach(async () => {
  await Promise.all(pools.splice(0).map((pool) => pool.close()));
});

afterAll(() => {
  for (const file of files) for (const suffix of ['', '-wal', '-shm']) rmSync(file + suffix, { force: true });
});

/** Counts to `n` in a recursive CTE: pure CPU inside SQLite, a stand-in for a heavy report. */
const HEAVY =
  'WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?) SELECT count(*) AS n FROM c';
const REPORT_ROWS = 1_500_000;

/** Records the order in which promises settle, and how. */
function recorder() {
  const order: string[] = [];
  const track = <T>(label: string, promise: Promise<T>) =>
    promise.then(
      (value) => {
        order.push(label);
        return { label, value } as { label: string; value?: T; error?: unknown };
      },
      (error: unknown) => {
        order.push(`${label}!`);
        return { label, error } as { label: string; value?: T; error?: unknown };
      },
    );
  return { order, track };
}

describe('guardSqlitePool', () => {
  it('serves login while reports hold their share, and refuses reports beyond their max in time', async () => {
    const pool = await openPool(4);
    const guard = guardSqlitePool(pool, {
      classes: { login: { reserved: 2 }, report: { max: 2 } },
      acquireTimeoutMs: 50,
      name: 'app-db',
    });
    const events: PolicyEvent[] = [];
    guard.onEvent((event) => events.push(event));
    const { order, track } = recorder();
    const reports = Array.from({ length: 6 }, (_, i) =>
      track(`report${i}`, guard.get('report', HEAVY, [REPORT_ROWS])),
    );
    expect(guard.stats().classes.report).toMatchObject({ inUse: 2, waiting: 4 });
    const login = await track('login', guard.get('login', 'SELECT ? AS user', ['ada']));
    expect(login.value).toEqual({ user: 'ada' });
    const settled = await Promise.all(reports);
    const ran = settled.filter((r) => r.value !== undefined);
    const refused = settled.filter((r) => r.error !== undefined);
    // Login finished while the two admitted reports were still running.
    for (const r of ran) expect(order.indexOf('login')).toBeLessThan(order.indexOf(r.label));
    expect(ran.map((r) => r.value)).toEqual([{ n: REPORT_ROWS }, { n: REPORT_ROWS }]);
    expect(refused).toHaveLength(4);
    for (const r of refused) {
      expect(r.error).toBeInstanceOf(PoolAcquireTimeoutError);
      expect(r.error).toMatchObject({ code: 'KEEL_POOL_ACQUIRE_TIMEOUT', routeClass: 'report', status: 503 });
    }
    // The refusals came at the acquire timeout, before the reports that ran were done.
    expect(order.slice(0, 5).sort()).toEqual(['login', ...refused.map((r) => `${r.label}!`)].sort());
    expect(events.filter((e) => e.type === 'rejection')).toHaveLength(4);
    expect(events.filter((e) => e.type === 'success')).toHaveLength(3);
    expect(guard.stats()).toMatchObject({ size: 4, inUse: 0, waiting: 0 });
  });

  it('without the guard, login waits in line behind the reports (the failure it prevents)', async () => {
    const pool = await openPool(4);
    const { order, track } = recorder();
    const reports = Array.from({ length: 5 }, (_, i) => track(`report${i}`, pool.get(HEAVY, [300_000])));
    const login = track('login', pool.get('SELECT ? AS user', ['ada']));
    expect(pool.stats()).toMatchObject({ busy: 4, waiting: 2 });
    await Promise.all([...reports, login]);
    // Every worker was running a report, so login got one only after a report had finished.
    expect(order.indexOf('login')).toBeGreaterThan(0);
    expect(order.filter((label) => label.endsWith('!'))).toEqual([]);
  });

  it('abandons a statement at the request deadline and keeps its share until it really ends', async () => {
    const pool = await openPool(2);
    const guard = guardSqlitePool(pool, { classes: { api: { max: 2 } }, statementTimeoutMs: 10_000 });
    const events: PolicyEvent[] = [];
    guard.onEvent((event) => events.push(event));
    const error = await withTimeBudget(60, () => guard.get('api', HEAVY, [REPORT_ROWS])).catch(
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(StatementTimeoutError);
    expect(error).toMatchObject({ code: 'KEEL_STATEMENT_TIMEOUT', routeClass: 'api' });
    expect((error as StatementTimeoutError).timeoutMs).toBeLessThanOrEqual(60);
    expect(events.map((e) => e.type)).toEqual(['timeout']);
    // The abandoned statement still runs on its old thread and still counts against the share.
    expect(guard.stats().classes.api.inUse).toBe(1);
    expect(await guard.get('api', 'SELECT 42 AS answer')).toEqual({ answer: 42 });
    await (error as StatementTimeoutError).work;
    await new Promise((resolve) => setImmediate(resolve));
    expect(guard.stats().classes.api.inUse).toBe(0);
    expect(pool.stats()).toMatchObject({ size: 2, abandoned: 0 });
    // A deadline that has passed starts nothing.
    await expect(withTimeBudget(-1, () => guard.get('api', 'SELECT 1'))).rejects.toBeInstanceOf(
      DeadlineExceededError,
    );
  });

  it('pins a guarded transaction to one connection and commits or rolls it back', async () => {
    const pool = await openPool(2);
    const guard = guardSqlitePool(pool, { classes: { api: { reserved: 1 }, report: { max: 1 } } });
    await guard.exec('api', 'CREATE TABLE orders (id INTEGER PRIMARY KEY, total INTEGER NOT NULL)');
    await guard.transaction('api', async (tx) => {
      await tx.run('INSERT INTO orders (total) VALUES (?)', [10]);
      expect(guard.stats().classes.api.inUse).toBe(1);
      // The report class reads on its own connection and does not see the uncommitted row.
      expect(await guard.for('report').get('SELECT count(*) AS n FROM orders')).toEqual({ n: 0 });
    });
    await expect(
      guard.transaction('api', async (tx) => {
        await tx.run('INSERT INTO orders (total) VALUES (?)', [20]);
        throw new Error('declined');
      }),
    ).rejects.toThrow('declined');
    expect(await guard.all('report', 'SELECT total FROM orders')).toEqual([{ total: 10 }]);
    expect(guard.stats()).toMatchObject({ inUse: 0, waiting: 0 });
  });

  it('refuses bad options and unknown route classes', async () => {
    const pool = await openPool(4);
    expect(() => guardSqlitePool({} as never, { classes: { a: {} } })).toThrow(/^pool: /);
    expect(() => guardSqlitePool(pool, { classes: { a: { reserved: 3 }, b: { reserved: 2 } } })).toThrow(
      InvalidOptionError,
    );
    expect(() => guardSqlitePool(pool, { classes: { a: { max: 5 } } })).toThrow(/^classes\.a\.max: /);
    expect(() => guardSqlitePool(pool, { classes: { a: {} }, statementTimeoutMs: 0 })).toThrow(
      /^statementTimeoutMs: /,
    );
    expect(() => guardSqlitePool(pool, { classes: { a: {} }, acquireTimeoutMs: Number.NaN })).toThrow(
      /^acquireTimeoutMs: /,
    );
    const guard = guardSqlitePool(pool, { classes: { a: {} } });
    await expect(guard.get('b' as 'a', 'SELECT 1')).rejects.toThrow(/^routeClass: /);
    expect(() => guard.for('b' as 'a')).toThrow(/^routeClass: /);
  });
});
