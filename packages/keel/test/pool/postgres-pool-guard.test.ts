import { randomUUID } from 'node:crypto';
import {
  DeadlineExceededError,
  FakeClock,
  InvalidOptionError,
  isRejection,
  type PolicyEvent,
  runWithDeadline,
  TimeoutError,
  withTimeBudget,
} from 'keel';
import {
  guardPool,
  PoolAcquireTimeoutError,
  postgresStore,
  StatementTimeoutError,
  statementTimeoutSlackMs,
} from 'keel/postgres';
import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import { describeWithService } from '../support/services.ts';

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

/** Every statement the pool's real `pg` clients send, in order: one entry per round trip. */
function countRoundTrips(pool: pg.Pool): string[] {
  const sent: string[] = [];
  pool.on('connect', (client) => {
    const query = client.query.bind(client) as (...args: unknown[]) => unknown;
    (client as unknown as { query: (...args: unknown[]) => unknown }).query = (...args: unknown[]) => {
      sent.push(String(args[0]));
      return query(...args);
    };
  });
  return sent;
}

const fakePool = { connect: async () => ({}) as never, options: { max: 6 } };

describe('guardPool options', () => {
  it('refuses bad options at construction, naming the option', () => {
    expect(() => guardPool({} as never, { classes: { a: {} } })).toThrow(/^pool: /);
    expect(() => guardPool({ connect: fakePool.connect }, { classes: { a: {} } })).toThrow(/^size: /);
    expect(() => guardPool(fakePool, { classes: { a: {} }, size: 7 })).toThrow(/^size: /);
    expect(() => guardPool(fakePool, { classes: { a: {} }, statementTimeoutMs: 0 })).toThrow(
      /^statementTimeoutMs: /,
    );
    expect(() => guardPool(fakePool, { classes: { a: {} }, statementTimeoutMs: 2 ** 31 })).toThrow(
      /^statementTimeoutMs: /,
    );
    expect(() => guardPool(fakePool, { classes: { a: {} }, acquireTimeoutMs: -5 })).toThrow(
      /^acquireTimeoutMs: /,
    );
    expect(() => guardPool(fakePool, { classes: { login: { reserved: 4 }, api: { reserved: 3 } } })).toThrow(
      InvalidOptionError,
    );
    expect(() => guardPool(fakePool, { classes: { login: { reserved: 6 }, report: {} } })).toThrow(
      /^classes\.report: /,
    );
    expect(() => guardPool(fakePool, { classes: {} })).toThrow(/^classes: /);
    const guard = guardPool(fakePool, { classes: { a: {} }, size: 3 });
    expect(guard.stats().size).toBe(3);
    expect(() => guard.for('b' as 'a')).toThrow(/^routeClass: /);
  });
});

describe('statementTimeoutSlackMs', () => {
  it('is 5 % of the budget, never under 10 ms nor over 100 ms', () => {
    expect(statementTimeoutSlackMs(1_400)).toBe(70);
    expect(statementTimeoutSlackMs(400)).toBe(20);
    expect(statementTimeoutSlackMs(200)).toBe(10);
    expect(statementTimeoutSlackMs(1)).toBe(10);
    expect(statementTimeoutSlackMs(2_000)).toBe(100);
    expect(statementTimeoutSlackMs(30_000)).toBe(100);
  });
});

describeWithService('DATABASE_URL', 'guardPool against Postgres', (url) => {
  const pools: pg.Pool[] = [];
  const openPool = (max: number) => {
    const pool = new pg.Pool({ connectionString: url, max });
    pools.push(pool);
    return pool;
  };
  afterEach(async () => {
    await Promise.all(pools.splice(0).map((pool) => pool.end()));
  });

  it('serves login while 20 heavy reports fill their share, and refuses the excess after the acquire timeout', async () => {
    const pool = openPool(6);
    // Open all six connections first, as a running service has them.
    await Promise.all(Array.from({ length: 6 }, () => pool.query('SELECT pg_sleep(0.05)')));
    const guard = guardPool(pool, {
      classes: { login: { reserved: 2 }, report: { max: 4 } },
      acquireTimeoutMs: 300,
      name: 'app-db',
    });
    const events: PolicyEvent[] = [];
    guard.onEvent((event) => events.push(event));
    const { order, track } = recorder();
    const reports = Array.from({ length: 20 }, (_, i) =>
      track(`report${i}`, guard.query('report', 'SELECT pg_sleep(1), $1::int AS i', [i])),
    );
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(guard.stats().classes.report).toMatchObject({ inUse: 4, waiting: 16 });
    const logins = Array.from({ length: 3 }, (_, i) =>
      track(`login${i}`, guard.query('login', 'SELECT $1::text AS user', [`user${i}`])),
    );
    const loggedIn = await Promise.all(logins);
    expect(loggedIn.map((l) => l.value?.rows)).toEqual([
      [{ user: 'user0' }],
      [{ user: 'user1' }],
      [{ user: 'user2' }],
    ]);
    // Every login finished while all four admitted reports were still sleeping.
    expect(order.filter((label) => label.startsWith('report') && !label.endsWith('!'))).toEqual([]);
    const settled = await Promise.all(reports);
    const ran = settled.filter((r) => r.value !== undefined);
    const refused = settled.filter((r) => r.error !== undefined);
    expect(ran).toHaveLength(4);
    expect(refused).toHaveLength(16);
    for (const r of refused) {
      expect(r.error).toBeInstanceOf(PoolAcquireTimeoutError);
      expect(isRejection(r.error)).toBe(true);
      expect(r.error).toMatchObject({ code: 'KEEL_POOL_ACQUIRE_TIMEOUT', routeClass: 'report', status: 503 });
      expect((r.error as PoolAcquireTimeoutError).problemHeaders).toEqual({ 'retry-after': '1' });
    }
    // The excess reports were refused before any admitted report finished: nobody waited behind them.
    const firstReportDone = order.findIndex((label) => label.startsWith('report') && !label.endsWith('!'));
    expect(order.slice(0, firstReportDone).filter((label) => label.endsWith('!'))).toHaveLength(16);
    expect(events.filter((e) => e.type === 'rejection')).toHaveLength(16);
    expect(guard.stats()).toMatchObject({ inUse: 0, waiting: 0 });
  });

  it('without the guard, login waits behind the reports for a connection (the failure it prevents)', async () => {
    const pool = openPool(6);
    const { order, track } = recorder();
    const reports = Array.from({ length: 20 }, (_, i) =>
      track(`report${i}`, pool.query('SELECT pg_sleep(0.3), $1::int AS i', [i])),
    );
    const login = track('login', pool.query('SELECT $1::text AS user', ['ada']));
    await Promise.all([...reports, login]);
    // Login queued behind every report that asked before it: at least 14 of them finished first.
    expect(order.indexOf('login')).toBeGreaterThanOrEqual(14);
    expect(order.filter((label) => label.endsWith('!'))).toEqual([]);
  });

  it('cancels a statement at the request deadline with a typed error and reuses the connection', async () => {
    const pool = openPool(1);
    const { rows: before } = await pool.query(
      'SELECT pg_backend_pid() AS pid, current_setting($1) AS timeout',
      ['statement_timeout'],
    );
    const guard = guardPool(pool, { classes: { api: {} }, statementTimeoutMs: 10_000 });
    const events: PolicyEvent[] = [];
    guard.onEvent((event) => events.push(event));
    const error = await withTimeBudget(300, () => guard.query('api', 'SELECT pg_sleep(5)')).catch(
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(StatementTimeoutError);
    expect(error).toBeInstanceOf(TimeoutError);
    expect(error).toMatchObject({ code: 'KEEL_STATEMENT_TIMEOUT', routeClass: 'api', status: 504 });
    expect((error as StatementTimeoutError).timeoutMs).toBeLessThanOrEqual(300);
    expect((error as { cause?: { code?: string } }).cause?.code).toBe('57014');
    expect(events.map((e) => e.type)).toEqual(['timeout']);
    // The same connection serves the next statement, and plain pool users do not inherit the timeout.
    const { rows: after } = await pool.query(
      'SELECT pg_backend_pid() AS pid, current_setting($1) AS timeout',
      ['statement_timeout'],
    );
    expect(after).toEqual(before);
    expect((await guard.query('api', 'SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
    // Without a deadline the ceiling applies.
    const ceiling = guardPool(pool, { classes: { api: {} }, statementTimeoutMs: 100 });
    await expect(ceiling.query('api', 'SELECT pg_sleep(5)')).rejects.toMatchObject({ timeoutMs: 100 });
    // A deadline already passed starts nothing and takes no connection.
    await expect(withTimeBudget(-1, () => guard.query('api', 'SELECT 1'))).rejects.toBeInstanceOf(
      DeadlineExceededError,
    );
    expect(guard.stats()).toMatchObject({ inUse: 0, waiting: 0 });
  });

  it('spends no round trip on the timeout of a transaction, and one SET and one RESET around lone statements', async () => {
    const pool = openPool(1);
    const sent = countRoundTrips(pool);
    const { rows: before } = await pool.query('SELECT current_setting($1) AS timeout', ['statement_timeout']);
    const guard = guardPool(pool, { classes: { api: {} }, statementTimeoutMs: 20_000 });

    // A transaction: the first SET LOCAL rides on the BEGIN, and COMMIT reverts it (no RESET).
    sent.length = 0;
    const inTransaction = await withTimeBudget(10_000, async () => {
      const client = await guard.connect('api');
      try {
        await client.query('BEGIN');
        const shown = await client.query('SELECT current_setting($1) AS timeout', ['statement_timeout']);
        for (let i = 0; i < 3; i++) await client.query('SELECT $1::int AS i', [i]);
        await client.query('COMMIT');
        return (shown.rows[0] as { timeout: string }).timeout;
      } finally {
        await client.release();
      }
    });
    expect(sent).toHaveLength(6);
    expect(sent[0]).toMatch(/^BEGIN\n;SET LOCAL statement_timeout = \d+$/);
    expect(sent.slice(1)).toEqual([
      'SELECT current_setting($1) AS timeout',
      'SELECT $1::int AS i',
      'SELECT $1::int AS i',
      'SELECT $1::int AS i',
      'COMMIT',
    ]);
    // The timeout was in force inside the transaction: the deadline's, not the ceiling.
    expect(Number.parseInt(inTransaction, 10)).toBeGreaterThan(9_000);
    expect(Number.parseInt(inTransaction, 10)).toBeLessThanOrEqual(10_000);

    // Statements outside a transaction on one client: one SET, then one RESET before release.
    sent.length = 0;
    await withTimeBudget(10_000, async () => {
      const client = await guard.connect('api');
      try {
        for (let i = 0; i < 4; i++) await client.query('SELECT $1::int AS i', [i]);
      } finally {
        await client.release();
      }
    });
    expect(sent).toHaveLength(6);
    expect(sent[0]).toMatch(/^SET statement_timeout = \d+$/);
    expect(sent.at(-1)).toBe('RESET statement_timeout');

    // A lone statement: SET, the statement, RESET. Without a deadline the ceiling is set.
    sent.length = 0;
    await guard.query('api', 'SELECT 1 AS one');
    expect(sent).toEqual(['SET statement_timeout = 20000', 'SELECT 1 AS one', 'RESET statement_timeout']);

    // Plain pool users never inherit a guard's value, after a transaction or after lone statements.
    const { rows: after } = await pool.query('SELECT current_setting($1) AS timeout', ['statement_timeout']);
    expect(after).toEqual(before);
    expect(guard.stats()).toMatchObject({ inUse: 0, waiting: 0 });
  });

  it('sets the timeout again only when the session would overrun the deadline by more than the slack', async () => {
    const pool = openPool(1);
    const sent = countRoundTrips(pool);
    const clock = new FakeClock(1_000);
    const guard = guardPool(pool, { classes: { api: {} }, statementTimeoutMs: 20_000, clock });
    const deadline = clock.now() + 1_000;
    const client = await guard.connect('api');
    /** The `statement_timeout` statements sent for `text`, run `elapsedMs` later under the deadline. */
    const step = async (elapsedMs: number, text = 'SELECT 1 AS one') => {
      clock.advance(elapsedMs);
      sent.length = 0;
      await runWithDeadline(deadline, () => client.query(text));
      return sent.filter((sentText) => /statement_timeout/.test(sentText));
    };
    try {
      expect(await step(0)).toEqual(['SET statement_timeout = 1000']);
      // 960 ms left, slack 48: the session's 1000 reaches 40 ms past the deadline, within it.
      expect(await step(40)).toEqual([]);
      // 940 ms left, slack 47: 60 ms past is too far.
      expect(await step(20)).toEqual(['SET statement_timeout = 940']);
      // Near the deadline the slack is its floor of 10 ms.
      expect(await step(840)).toEqual(['SET statement_timeout = 100']);
      expect(await step(10)).toEqual([]);
      expect(await step(1)).toEqual(['SET statement_timeout = 89']);
      // The session has exactly the value the guard believes.
      sent.length = 0;
      const shown = await runWithDeadline(deadline, () => client.query('SHOW statement_timeout'));
      expect(shown.rows).toEqual([{ statement_timeout: '89ms' }]);
      expect(sent).toEqual(['SHOW statement_timeout']);

      // Inside a transaction, SET LOCAL; after COMMIT the session's own value is back in force.
      expect(await step(50, 'BEGIN')).toEqual(['BEGIN\n;SET LOCAL statement_timeout = 39']);
      expect(await step(0)).toEqual([]);
      expect(await step(0, 'COMMIT')).toEqual([]);
      expect(await step(0)).toEqual(['SET statement_timeout = 39']);
      // A session value shorter than the budget would cancel a statement early: without a deadline
      // the ceiling is set again, however far the session's value is below it.
      sent.length = 0;
      await client.query('SELECT 1 AS one');
      expect(sent).toEqual(['SET statement_timeout = 20000', 'SELECT 1 AS one']);
    } finally {
      await client.release();
    }
    expect(sent.at(-1)).toBe('RESET statement_timeout');
  });

  it('runs a transaction on a guarded client, and destroys a client released mid-transaction', async () => {
    const pool = openPool(1);
    const table = `keel_pool_${process.pid}_${randomUUID().slice(0, 8)}`;
    const guard = guardPool(pool, { classes: { api: { reserved: 1 } }, statementTimeoutMs: 5_000 });
    const api = guard.for('api');
    expect(guard.for('api')).toBe(api);
    // A bound class is a PostgresQueryable: stores accept it as their pool.
    expect(postgresStore({ pool: api, table: 'keel_idempotency' }).pool).toBe(api);
    await api.query(`CREATE TABLE ${table} (n int)`);
    try {
      const pid = async () => (await api.query('SELECT pg_backend_pid() AS pid')).rows[0];
      const firstPid = await pid();

      const committed = await guard.connect('api');
      await committed.query('BEGIN');
      await committed.query(`INSERT INTO ${table} VALUES ($1)`, [1]);
      // A statement cut short inside the transaction; ROLLBACK TO keeps the transaction usable.
      await committed.query('SAVEPOINT s');
      await expect(withTimeBudget(100, () => committed.query('SELECT pg_sleep(5)'))).rejects.toBeInstanceOf(
        StatementTimeoutError,
      );
      await committed.query('ROLLBACK TO SAVEPOINT s');
      await committed.query(`INSERT INTO ${table} VALUES ($1)`, [2]);
      await committed.query('COMMIT');
      await committed.release();
      await expect(committed.query('SELECT 1')).rejects.toThrow(/already released/);
      expect(await pid()).toEqual(firstPid);

      const abandoned = await guard.connect('api');
      await abandoned.query('BEGIN');
      await abandoned.query(`INSERT INTO ${table} VALUES ($1)`, [3]);
      await abandoned.release();
      // The connection left inside a transaction was destroyed, not handed to the next caller.
      expect(await pid()).not.toEqual(firstPid);
      expect((await api.query(`SELECT n FROM ${table} ORDER BY n`)).rows).toEqual([{ n: 1 }, { n: 2 }]);
      expect(guard.stats()).toMatchObject({ inUse: 0, waiting: 0 });
    } finally {
      await pool.query(`DROP TABLE IF EXISTS ${table}`);
    }
  });
});
