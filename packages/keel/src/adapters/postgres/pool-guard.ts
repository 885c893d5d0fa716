/**
 * A guard in front of a `pg` pool: connection shares per route class, an acquire timeout, and a
 * statement timeout bounded by the request's deadline. Reports can never take the connections login
 * needs, no request waits forever for a connection, and no statement outlives the request that
 * sent it.
 *
 * Every statement runs under a `statement_timeout` no longer than the ceiling and the request's
 * remaining deadline: a server-side backstop, so that a statement left running by a request that
 * has given up does not keep holding its connection and its locks. The guard tracks the value the
 * session has and changes it only when it must, since each change is a round trip of its own:
 *
 * - when the session's value would cancel the statement before its budget ends (never earlier
 *   than the caller allowed), or
 * - when it would let the statement run past the deadline by more than a slack of
 *   {@link statementTimeoutSlackMs}: 5 % of the remaining budget, at least 10 ms and at most
 *   100 ms. The budget shrinks by a few ms with every statement; setting it again each time made
 *   a quarter of a busy request's round trips, to move the backstop by less than the jitter of
 *   one of them. A statement that does reach the backstop overruns its deadline by at most the
 *   slack: 5 % keeps that small next to the budget, 10 ms is below the cost of the round trip a
 *   `SET` would spend near the deadline, where the budget shrinks fastest in relative terms, and
 *   100 ms bounds the overrun of long budgets.
 *
 * Inside a transaction the value is set with `SET LOCAL`, which Postgres reverts at `COMMIT` or
 * `ROLLBACK`, and the first one rides on the `BEGIN` (`BEGIN; SET LOCAL …` in one simple-protocol
 * message): a transaction costs no round trip for its timeout, and nothing needs resetting after
 * it. Outside a transaction the value is set on the session with `SET`, and reset with `RESET
 * statement_timeout` before the connection goes back to the pool, so code that uses the pool
 * directly never inherits a guard's value. A statement Postgres cancels (SQLSTATE 57014) becomes a
 * {@link StatementTimeoutError}; the connection stays usable. A connection released in an unknown
 * state — inside an open transaction, or after a driver or network error — is destroyed
 * (`release(err)`) instead of reused.
 *
 * Answers: resource exhaustion — a heavy report exhausts the connection pool and even login waits.
 *
 * @module
 */
import { InvalidOptionError } from '../../errors/keel-error.ts';
import { DeadlineExceededError } from '../../errors/policy-errors.ts';
import { StatementTimeoutError } from '../../errors/pool-errors.ts';
import { currentDeadline } from '../../policy/deadline.ts';
import { type CommonOptions, checkInteger } from '../../policy/options.ts';
import { type PoolClasses, PoolShares, type PoolSharesStats } from '../../policy/pool-shares.ts';
import type { Disposable, PolicyListener } from '../../policy/telemetry.ts';
import type { PostgresQueryable } from './idempotency-store.ts';

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

/** What a statement returns: the part of a `pg` `QueryResult` Keel reads. */
export type PostgresQueryResult = Awaited<ReturnType<PostgresQueryable['query']>>;

/** The part of a `pg` `PoolClient` the guard calls. */
export interface GuardablePostgresClient extends PostgresQueryable {
  /** Gives the connection back; with an error (or `true`) the pool destroys it instead. */
  release(err?: Error | boolean): void;
}

/**
 * The part of a `pg` `Pool` the guard calls. Keel never imports `pg`.
 *
 * @example
 * import pg from 'pg';
 * const pool: GuardablePostgresPool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 10 });
 */
export interface GuardablePostgresPool {
  connect(): Promise<GuardablePostgresClient>;
  /** `pg.Pool` keeps its configuration here; `max` is its size. */
  readonly options?: { readonly max?: number | undefined } | undefined;
}

/** Options of {@link guardPool}. */
export interface PostgresPoolGuardOptions<C extends string> extends CommonOptions {
  /** Route classes and their shares of the pool's connections. */
  classes: PoolClasses<C>;
  /**
   * Connections the pool holds; the guard never admits more at once.
   * @default pool.options.max
   */
  size?: number;
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
export interface GuardedPostgresClient extends PostgresQueryable {
  readonly routeClass: string;
  /**
   * Gives the connection back. Pass the error that broke a transaction to have the connection
   * destroyed; a connection released inside an open transaction is destroyed as well.
   */
  release(err?: Error): Promise<void>;
}

const DEFAULTS = Object.freeze({ statementTimeoutMs: 30_000 });

/** Postgres' `statement_timeout` is an int of milliseconds. */
const MAX_STATEMENT_TIMEOUT_MS = 2_147_483_647;

/** SQLSTATE `query_canceled`: what Postgres answers when `statement_timeout` fires. */
const QUERY_CANCELED = '57014';

/** Statements that open a transaction. */
const OPENS_TRANSACTION = /^\s*(BEGIN|START\s+TRANSACTION)\b/i;
/** A lone `BEGIN` (no second statement in the text), which a `SET LOCAL` can follow in one message. */
const LONE_BEGIN = /^\s*(BEGIN|START\s+TRANSACTION)\b[^;]*$/i;
/** Statements that end a transaction. */
const ENDS_TRANSACTION = /^\s*(COMMIT|END|ROLLBACK|ABORT)\b(?![^;]*\b(TO|PREPARED)\b)/i;
/**
 * Transaction control runs without a `SET` in front: `ROLLBACK` must work in an aborted
 * transaction, where every other statement fails.
 */
const TRANSACTION_CONTROL =
  /^\s*(BEGIN|START\s+TRANSACTION|COMMIT|END|ROLLBACK|ABORT|SAVEPOINT|RELEASE|PREPARE\s+TRANSACTION)\b/i;
/** `ROLLBACK` (to a savepoint, too) undoes a `SET` made inside the transaction. */
const UNDOES_SETTINGS = /^\s*(ROLLBACK|ABORT)\b/i;

/** The least slack of a statement timeout over the deadline, in ms. */
const MIN_SLACK_MS = 10;
/** The most slack of a statement timeout over the deadline, in ms. */
const MAX_SLACK_MS = 100;
/** The slack's share of the remaining budget. */
const SLACK_SHARE = 0.05;

/**
 * How far past the request's deadline a session's `statement_timeout` may reach before the guard
 * sets it again: 5 % of `budgetMs` (the milliseconds the next statement may run), at least 10 ms
 * and at most 100 ms. See the module's documentation for why.
 *
 * @example
 * statementTimeoutSlackMs(1_400); // 70: a session at 1 450 ms keeps its value for a 1 400 ms budget
 * statementTimeoutSlackMs(90); // 10
 */
export function statementTimeoutSlackMs(budgetMs: number): number {
  return Math.max(MIN_SLACK_MS, Math.min(MAX_SLACK_MS, budgetMs * SLACK_SHARE));
}

/** Whether a session at `currentMs` may run a statement whose budget is `budgetMs` as it is. */
function covers(currentMs: number | undefined, budgetMs: number): boolean {
  return (
    currentMs !== undefined &&
    currentMs >= budgetMs &&
    currentMs - budgetMs <= statementTimeoutSlackMs(budgetMs)
  );
}

/** The SQLSTATE of a Postgres error; undefined for a driver or network error. */
function sqlState(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) ? code : undefined;
}

/** One lease of a pooled connection and what the guard knows about its session. */
class Lease {
  readonly client: GuardablePostgresClient;
  /** The `statement_timeout` in effect now, or undefined when unknown. */
  timeoutMs: number | undefined = undefined;
  /**
   * The session-level value the guard set, which a transaction's `SET LOCAL` reverts to; undefined
   * when the session still has the pool's own value.
   */
  sessionTimeoutMs: number | undefined = undefined;
  /** True once the guard changed the session-level `statement_timeout`, so the release must reset it. */
  touched = false;
  inTransaction = false;
  /** A driver or network error: the connection's state is unknown. */
  broken: unknown = undefined;
  constructor(client: GuardablePostgresClient) {
    this.client = client;
  }
}

/** See {@link guardPool}. */
export class PostgresPoolGuard<C extends string> {
  readonly pool: GuardablePostgresPool;
  readonly shares: PoolShares<C>;
  readonly statementTimeoutMs: number;
  readonly #bound = new Map<C, PostgresQueryable>();

  constructor(pool: GuardablePostgresPool, options: PostgresPoolGuardOptions<C>) {
    if (typeof pool?.connect !== 'function') {
      throw new InvalidOptionError('pool', 'must be a pg Pool (an object with a connect method)');
    }
    const poolMax = pool.options?.max;
    const size = options?.size ?? poolMax;
    if (size === undefined) {
      throw new InvalidOptionError('size', 'is required when the pool does not expose options.max');
    }
    if (poolMax !== undefined && options.size !== undefined) {
      checkInteger('size', options.size, 1, poolMax);
    }
    this.pool = pool;
    this.shares = new PoolShares({ ...options, name: options.name ?? 'postgres', size });
    this.statementTimeoutMs = checkInteger(
      'statementTimeoutMs',
      options.statementTimeoutMs ?? DEFAULTS.statementTimeoutMs,
      1,
      MAX_STATEMENT_TIMEOUT_MS,
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
   * const { rows } = await guard.query('login', 'SELECT id FROM users WHERE email = $1', [email]);
   */
  async query(routeClass: C, text: string, values?: unknown[]): Promise<PostgresQueryResult> {
    const lease = await this.#acquire(routeClass);
    try {
      return await this.#statement(routeClass, lease, text, values);
    } finally {
      await this.#giveBack(routeClass, lease, undefined);
    }
  }

  /**
   * Takes a connection of `routeClass`'s share for several statements, such as a transaction.
   * Every statement still gets the bounded timeout. Release it in `finally`.
   *
   * @example
   * const client = await guard.connect('api');
   * try {
   *   await client.query('BEGIN');
   *   await client.query('UPDATE accounts SET balance = balance - $1 WHERE id = $2', [amount, from]);
   *   await client.query('COMMIT');
   * } catch (err) {
   *   await client.query('ROLLBACK').catch(() => {});
   *   throw err;
   * } finally {
   *   await client.release();
   * }
   */
  async connect(routeClass: C): Promise<GuardedPostgresClient> {
    const lease = await this.#acquire(routeClass);
    let released = false;
    return {
      routeClass,
      query: (text: string, values?: unknown[]) => {
        if (released) return Promise.reject(new Error('The guarded client was already released'));
        return this.#statement(routeClass, lease, text, values);
      },
      release: async (err?: Error) => {
        if (released) return;
        released = true;
        await this.#giveBack(routeClass, lease, err);
      },
    };
  }

  /**
   * A queryable bound to one route class, to pass where a pool is expected (stores, repositories).
   *
   * @example
   * const store = postgresStore({ pool: guard.for('api') });
   */
  for(routeClass: C): PostgresQueryable {
    this.shares.indexOf(routeClass);
    let bound = this.#bound.get(routeClass);
    if (bound === undefined) {
      bound = { query: (text: string, values?: unknown[]) => this.query(routeClass, text, values) };
      this.#bound.set(routeClass, bound);
    }
    return bound;
  }

  async #acquire(routeClass: C): Promise<Lease> {
    const client = await this.shares.take(
      routeClass,
      () => this.pool.connect(),
      (late) => late.release(),
    );
    return new Lease(client);
  }

  /**
   * Runs one statement under a timeout bounded by the ceiling and the deadline, changing the
   * session's value only when it does not cover the statement (see {@link statementTimeoutSlackMs}).
   */
  async #statement(
    routeClass: C,
    lease: Lease,
    text: string,
    values: unknown[] | undefined,
  ): Promise<PostgresQueryResult> {
    const shares = this.shares;
    let timeoutMs = lease.timeoutMs;
    /** The `SET LOCAL` sent with a `BEGIN`, in the same message. */
    let withBegin: number | undefined;
    const startedAt = shares.clock.now();
    try {
      if (!TRANSACTION_CONTROL.test(text)) {
        timeoutMs = this.#budget(startedAt);
        if (!covers(lease.timeoutMs, timeoutMs)) await this.#setTimeout(lease, timeoutMs);
      } else if (values === undefined && !lease.inTransaction && LONE_BEGIN.test(text)) {
        // A deadline already passed is left to the transaction's first statement to refuse.
        const left = currentDeadline() - startedAt;
        const budget = left > 0 ? this.#budget(startedAt) : undefined;
        if (budget !== undefined && !covers(lease.timeoutMs, budget)) withBegin = budget;
      }
      let result: PostgresQueryResult;
      if (withBegin !== undefined) {
        result = await this.#beginWithTimeout(lease, text, withBegin);
      } else {
        result =
          values === undefined ? await lease.client.query(text) : await lease.client.query(text, values);
      }
      if (OPENS_TRANSACTION.test(text)) lease.inTransaction = true;
      else if (ENDS_TRANSACTION.test(text)) {
        lease.inTransaction = false;
        // `SET LOCAL` ends with the transaction: the session's own value is back.
        lease.timeoutMs = lease.sessionTimeoutMs;
      } else if (UNDOES_SETTINGS.test(text)) lease.timeoutMs = undefined;
      this.#emit('success', startedAt, undefined);
      return result;
    } catch (error) {
      const state = sqlState(error);
      if (state === undefined && !(error instanceof DeadlineExceededError)) lease.broken = error;
      // A failed statement may have rolled back a `SET` made in the same transaction.
      if (lease.inTransaction) lease.timeoutMs = undefined;
      if (state === QUERY_CANCELED && timeoutMs !== undefined) {
        const timeout = new StatementTimeoutError(routeClass, timeoutMs, { cause: error });
        if (shares.events.active) {
          const durationMs = shares.clock.now() - startedAt;
          shares.events.emit({ policy: 'bulkhead', name: shares.events.name, type: 'timeout', durationMs });
        }
        throw timeout;
      }
      this.#emit('failure', startedAt, error);
      throw error;
    }
  }

  /** Sets `statement_timeout`: for the transaction when one is open, otherwise for the session. */
  async #setTimeout(lease: Lease, timeoutMs: number): Promise<void> {
    lease.timeoutMs = undefined;
    if (lease.inTransaction) {
      await lease.client.query(`SET LOCAL statement_timeout = ${timeoutMs}`);
    } else {
      lease.touched = true;
      lease.sessionTimeoutMs = undefined;
      await lease.client.query(`SET statement_timeout = ${timeoutMs}`);
      lease.sessionTimeoutMs = timeoutMs;
    }
    lease.timeoutMs = timeoutMs;
  }

  /** Opens a transaction and sets its timeout in one message; answers the `BEGIN`'s result. */
  async #beginWithTimeout(lease: Lease, text: string, timeoutMs: number): Promise<PostgresQueryResult> {
    let answered: unknown;
    try {
      // The line break ends a trailing `--` comment of the caller's text.
      answered = await lease.client.query(`${text}\n;SET LOCAL statement_timeout = ${timeoutMs}`);
    } catch (error) {
      // Whether the `BEGIN` took effect is unknown: the connection must not be reused.
      lease.broken = error;
      throw error;
    }
    lease.timeoutMs = timeoutMs;
    // Several statements in one message answer one result each.
    return (Array.isArray(answered) ? answered[0] : answered) as PostgresQueryResult;
  }

  /** Milliseconds the next statement may run; refuses to start one when the deadline has passed. */
  #budget(now: number): number {
    const left = currentDeadline() - now;
    if (left <= 0) throw new DeadlineExceededError(left);
    // `statement_timeout = 0` would mean no timeout at all, so never round below 1 ms.
    return Math.max(1, Math.min(this.statementTimeoutMs, Math.floor(left)));
  }

  async #giveBack(routeClass: C, lease: Lease, err: Error | undefined): Promise<void> {
    try {
      const broken = err ?? lease.broken ?? (lease.inTransaction ? openTransaction() : undefined);
      if (broken !== undefined) {
        lease.client.release(broken instanceof Error ? broken : true);
        return;
      }
      if (lease.touched) {
        try {
          await lease.client.query('RESET statement_timeout');
        } catch (resetError) {
          lease.client.release(resetError instanceof Error ? resetError : true);
          return;
        }
      }
      lease.client.release();
    } finally {
      this.shares.release(routeClass);
    }
  }

  #emit(type: 'success' | 'failure', startedAt: number, error: unknown): void {
    const events = this.shares.events;
    if (!events.active) return;
    const durationMs = this.shares.clock.now() - startedAt;
    if (type === 'success') events.emit({ policy: 'bulkhead', name: events.name, type, durationMs });
    else events.emit({ policy: 'bulkhead', name: events.name, type, durationMs, error });
  }
}

function openTransaction(): Error {
  return new Error('The connection was released inside an open transaction');
}

/**
 * Guards a `pg` pool: each route class gets its share of the connections, every acquire waits at
 * most `acquireTimeoutMs` (and never past the request's deadline), and every statement runs with a
 * `statement_timeout` bounded by the request's remaining deadline.
 *
 * @example
 * import pg from 'pg';
 * const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 10 });
 * const db = guardPool(pool, {
 *   classes: { login: { reserved: 2 }, api: { reserved: 4 }, report: { max: 2 } },
 *   acquireTimeoutMs: 500,
 *   statementTimeoutMs: 5_000,
 * });
 * await db.query('login', 'SELECT id, hash FROM users WHERE email = $1', [email]);
 * const reports = db.for('report'); // a PostgresQueryable for stores and repositories
 */
export function guardPool<C extends string>(
  pool: GuardablePostgresPool,
  options: PostgresPoolGuardOptions<C>,
): PostgresPoolGuard<C> {
  return new PostgresPoolGuard(pool, options);
}
