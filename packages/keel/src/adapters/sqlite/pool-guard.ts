/**
 * The SQLite twin of the Postgres pool guard, in front of a `sqliteWorkerPool`: connection shares
 * per route class, an acquire timeout, and a statement timeout bounded by the request's deadline,
 * with the same class accounting (`PoolShares`) and the same typed errors. Reports can never take
 * the workers login needs, even on the embedded default database.
 *
 * A statement past its timeout is abandoned (see `sqliteWorkerPool`): its caller gets a
 * {@link StatementTimeoutError} at once, and its share stays counted until the abandoned thread has
 * really finished, so the guard never lets more statements run than the pool has connections.
 *
 * Answers: resource exhaustion — a heavy report takes every worker and even login waits.
 *
 * @module
 */
import { InvalidOptionError } from '../../errors/keel-error.ts';
import { DeadlineExceededError } from '../../errors/policy-errors.ts';
import { StatementTimeoutError } from '../../errors/pool-errors.ts';
import { currentDeadline } from '../../policy/deadline.ts';
import type { CommonOptions } from '../../policy/options.ts';
import { checkInteger } from '../../policy/options.ts';
import { type PoolClasses, PoolShares, type PoolSharesStats } from '../../policy/pool-shares.ts';
import type { Disposable, PolicyListener } from '../../policy/telemetry.ts';
import type { SqliteParam } from './sqlite-worker.ts';
import {
  inSqliteTransaction,
  type SqliteAsyncQueryable,
  type SqliteQueryResult,
  type SqliteRunResult,
  type SqliteStatementOptions,
  type SqliteTransactionOptions,
  type SqliteWorkerClient,
} from './worker-pool.ts';

export {
  PoolAcquireTimeoutError,
  PoolClosedError,
  PoolConnectionLostError,
  StatementTimeoutError,
} from '../../errors/pool-errors.ts';
export type {
  PoolClasses,
  PoolClassOptions,
  PoolClassStats,
  PoolSharesStats,
} from '../../policy/pool-shares.ts';

/** The part of a `sqliteWorkerPool` the guard calls. */
export interface SqliteGuardablePool {
  /** Connections in the pool; the guard never admits more at once. */
  readonly size: number;
  connect(): Promise<SqliteWorkerClient>;
}

/** Options of {@link guardSqlitePool}. */
export interface SqlitePoolGuardOptions<C extends string> extends CommonOptions {
  /** Route classes and their shares of the pool's connections. */
  classes: PoolClasses<C>;
  /**
   * Longest wait for a connection; the request's remaining deadline shortens it.
   * @default 1000
   */
  acquireTimeoutMs?: number;
  /**
   * Ceiling of every statement's timeout in milliseconds; the request's remaining deadline
   * shortens it.
   * @default 30000
   */
  statementTimeoutMs?: number;
}

/** A connection of one route class, taken from a guarded pool. Release it exactly once. */
export interface GuardedSqliteClient extends SqliteWorkerClient {
  readonly routeClass: string;
}

const DEFAULTS = Object.freeze({ statementTimeoutMs: 30_000 });

type Op = 'query' | 'all' | 'get' | 'run' | 'exec';

/** One lease of a worker connection. */
class Lease {
  readonly client: SqliteWorkerClient;
  /** Settles when a statement of this lease that was abandoned has really ended. */
  abandonedWork: Promise<void> | undefined = undefined;
  released = false;
  constructor(client: SqliteWorkerClient) {
    this.client = client;
  }
}

/** See {@link guardSqlitePool}. */
export class SqlitePoolGuard<C extends string> {
  readonly pool: SqliteGuardablePool;
  readonly shares: PoolShares<C>;
  readonly statementTimeoutMs: number;
  readonly #bound = new Map<C, SqliteAsyncQueryable>();

  constructor(pool: SqliteGuardablePool, options: SqlitePoolGuardOptions<C>) {
    if (typeof pool?.connect !== 'function' || !Number.isInteger(pool.size)) {
      throw new InvalidOptionError('pool', 'must be a sqliteWorkerPool (an object with size and connect)');
    }
    this.pool = pool;
    this.shares = new PoolShares({ ...options, name: options?.name ?? 'sqlite', size: pool.size });
    this.statementTimeoutMs = checkInteger(
      'statementTimeoutMs',
      options.statementTimeoutMs ?? DEFAULTS.statementTimeoutMs,
    );
  }

  /** Subscribes to rejections, statement timeouts and statement outcomes; returns a disposer. */
  onEvent(listener: PolicyListener): Disposable {
    return this.shares.onEvent(listener);
  }

  /** Connections in use and requests waiting, per route class. */
  stats(): PoolSharesStats<C> {
    return this.shares.stats();
  }

  /**
   * Runs one statement on a connection of `routeClass`'s share.
   *
   * @example
   * const { rows } = await guard.query('login', 'SELECT id FROM users WHERE email = ?', [email]);
   */
  query(routeClass: C, sql: string, params?: readonly SqliteParam[]): Promise<SqliteQueryResult> {
    return this.#once(routeClass, 'query', sql, params) as Promise<SqliteQueryResult>;
  }

  all(routeClass: C, sql: string, params?: readonly SqliteParam[]): Promise<unknown[]> {
    return this.#once(routeClass, 'all', sql, params) as Promise<unknown[]>;
  }

  get(routeClass: C, sql: string, params?: readonly SqliteParam[]): Promise<unknown> {
    return this.#once(routeClass, 'get', sql, params);
  }

  run(routeClass: C, sql: string, params?: readonly SqliteParam[]): Promise<SqliteRunResult> {
    return this.#once(routeClass, 'run', sql, params) as Promise<SqliteRunResult>;
  }

  async exec(routeClass: C, sql: string): Promise<void> {
    await this.#once(routeClass, 'exec', sql, undefined);
  }

  /**
   * Takes a connection of `routeClass`'s share for several statements; each still gets the bounded
   * timeout. Release it in `finally`.
   *
   * @example
   * const client = await guard.connect('api');
   * try { await client.run('UPDATE carts SET n = n + 1 WHERE id = ?', [id]) } finally { client.release() }
   */
  async connect(routeClass: C): Promise<GuardedSqliteClient> {
    const lease = await this.#acquire(routeClass);
    const send = (
      op: Op,
      sql: string,
      params: readonly SqliteParam[] | undefined,
      options?: SqliteStatementOptions,
    ) =>
      lease.released
        ? Promise.reject(new Error('The guarded SQLite client was already released'))
        : this.#statement(routeClass, lease, op, sql, params, options);
    return {
      routeClass,
      query: (sql, params, options) => send('query', sql, params, options) as Promise<SqliteQueryResult>,
      all: (sql, params, options) => send('all', sql, params, options) as Promise<unknown[]>,
      get: (sql, params, options) => send('get', sql, params, options),
      run: (sql, params, options) => send('run', sql, params, options) as Promise<SqliteRunResult>,
      exec: async (sql, options) => {
        await send('exec', sql, undefined, options);
      },
      release: () => this.#giveBack(routeClass, lease),
    };
  }

  /**
   * Runs `fn` in one transaction on one connection of `routeClass`'s share: committed when `fn`
   * resolves, rolled back when it throws.
   *
   * @example
   * await guard.transaction('api', async (tx) => {
   *   await tx.run('INSERT INTO orders (id, total) VALUES (?, ?)', [id, total]);
   * });
   */
  async transaction<T>(
    routeClass: C,
    fn: (tx: SqliteAsyncQueryable) => Promise<T>,
    options?: SqliteTransactionOptions,
  ): Promise<T> {
    const client = await this.connect(routeClass);
    try {
      return await inSqliteTransaction(client, fn, options);
    } finally {
      client.release();
    }
  }

  /**
   * A queryable bound to one route class, to pass where a pool is expected.
   *
   * @example
   * const reports = guard.for('report');
   * await reports.all('SELECT day, sum(total) FROM orders GROUP BY day');
   */
  for(routeClass: C): SqliteAsyncQueryable {
    this.shares.indexOf(routeClass);
    let bound = this.#bound.get(routeClass);
    if (bound === undefined) {
      bound = {
        query: (sql, params) => this.query(routeClass, sql, params),
        all: (sql, params) => this.all(routeClass, sql, params),
        get: (sql, params) => this.get(routeClass, sql, params),
        run: (sql, params) => this.run(routeClass, sql, params),
        exec: (sql) => this.exec(routeClass, sql),
      };
      this.#bound.set(routeClass, bound);
    }
    return bound;
  }

  async #once(
    routeClass: C,
    op: Op,
    sql: string,
    params: readonly SqliteParam[] | undefined,
  ): Promise<unknown> {
    const lease = await this.#acquire(routeClass);
    try {
      return await this.#statement(routeClass, lease, op, sql, params, undefined);
    } finally {
      this.#giveBack(routeClass, lease);
    }
  }

  async #acquire(routeClass: C): Promise<Lease> {
    const client = await this.shares.take(
      routeClass,
      () => this.pool.connect(),
      (late) => late.release(),
    );
    return new Lease(client);
  }

  async #statement(
    routeClass: C,
    lease: Lease,
    op: Op,
    sql: string,
    params: readonly SqliteParam[] | undefined,
    options: SqliteStatementOptions | undefined,
  ): Promise<unknown> {
    const shares = this.shares;
    const startedAt = shares.clock.now();
    const left = currentDeadline() - startedAt;
    if (left <= 0) throw new DeadlineExceededError(left);
    const timeoutMs = Math.max(1, Math.min(this.statementTimeoutMs, left, options?.timeoutMs ?? Infinity));
    const bounded: SqliteStatementOptions = { timeoutMs, routeClass };
    try {
      const client = lease.client;
      const value = op === 'exec' ? await client.exec(sql, bounded) : await client[op](sql, params, bounded);
      this.#emit(startedAt, undefined);
      return value;
    } catch (error) {
      if (error instanceof StatementTimeoutError) {
        if (error.work !== undefined) lease.abandonedWork = error.work;
        if (shares.events.active) {
          const durationMs = shares.clock.now() - startedAt;
          shares.events.emit({ policy: 'bulkhead', name: shares.events.name, type: 'timeout', durationMs });
        }
      } else {
        this.#emit(startedAt, error);
      }
      throw error;
    }
  }

  #giveBack(routeClass: C, lease: Lease): void {
    if (lease.released) return;
    lease.released = true;
    lease.client.release();
    if (lease.abandonedWork !== undefined) this.shares.releaseAfter(routeClass, lease.abandonedWork);
    else this.shares.release(routeClass);
  }

  #emit(startedAt: number, error: unknown): void {
    const events = this.shares.events;
    if (!events.active) return;
    const durationMs = this.shares.clock.now() - startedAt;
    if (error === undefined)
      events.emit({ policy: 'bulkhead', name: events.name, type: 'success', durationMs });
    else events.emit({ policy: 'bulkhead', name: events.name, type: 'failure', durationMs, error });
  }
}

/**
 * Guards a `sqliteWorkerPool`: each route class gets its share of the workers, every acquire waits
 * at most `acquireTimeoutMs` (and never past the request's deadline), and every statement is
 * abandoned once it runs past the shorter of `statementTimeoutMs` and the remaining deadline.
 *
 * @example
 * const pool = sqliteWorkerPool({ path: 'app.db', size: 6 });
 * const db = guardSqlitePool(pool, {
 *   classes: { login: { reserved: 2 }, api: { reserved: 2 }, report: { max: 2 } },
 *   acquireTimeoutMs: 500,
 *   statementTimeoutMs: 5_000,
 * });
 * await db.get('login', 'SELECT id, hash FROM users WHERE email = ?', [email]);
 */
export function guardSqlitePool<C extends string>(
  pool: SqliteGuardablePool,
  options: SqlitePoolGuardOptions<C>,
): SqlitePoolGuard<C> {
  return new SqlitePoolGuard(pool, options);
}
