/**
 * A pool of SQLite connections, each in its own worker thread: statements run off the event loop,
 * so a heavy report does not stall every other request of the service, and the pool has a real
 * number of connections that can run out — exactly like a Postgres pool. Every connection opens the
 * same file in WAL mode with a `busy_timeout`, so readers never block the writer.
 *
 * Without a guard the pool is deliberately plain: callers queue for a free worker without bound,
 * first come first served. `guardSqlitePool` adds shares per route class, an acquire timeout and
 * deadline-bounded statement timeouts on top.
 *
 * Statement timeouts: `node:sqlite` offers no way to interrupt a running statement from another
 * thread (no `sqlite3_interrupt`, no progress handler), and `worker.terminate()` takes effect only
 * once the native statement returns. So a statement past its timeout is *abandoned*: its caller
 * gets a {@link StatementTimeoutError} at once, the worker is told to terminate, and a fresh worker
 * with a fresh connection takes its place. The abandoned thread finishes the statement and exits
 * without ever answering (an open transaction on it never commits); the error's `work` settles
 * then, and `stats().abandoned` counts such threads meanwhile.
 *
 * @module
 */
import { Worker } from 'node:worker_threads';
import { InvalidOptionError } from '../../errors/keel-error.ts';
import { PoolClosedError, PoolConnectionLostError, StatementTimeoutError } from '../../errors/pool-errors.ts';
import { checkInteger, checkNumber, checkOneOf } from '../../policy/options.ts';
import { sharedTimerWheel, TimerEntry, type TimerWheel } from '../../policy/timer-wheel.ts';
import type {
  SqliteParam,
  SqliteWorkerInit,
  SqliteWorkerOp,
  SqliteWorkerReady,
  SqliteWorkerReply,
} from './sqlite-worker.ts';
import { rebuildError } from './worker-errors.ts';
import { workerScript } from './worker-script.ts';

export type { SqliteParam } from './sqlite-worker.ts';

/** Per-statement options. */
export interface SqliteStatementOptions {
  /**
   * Abandon the statement after this many milliseconds.
   * @default the pool's `statementTimeoutMs`
   */
  timeoutMs?: number;
  /**
   * Names the caller in a {@link StatementTimeoutError}; the guard passes the route class.
   * @default 'default'
   */
  routeClass?: string;
}

/** What `query` answers: rows for a statement with result columns, the changed-row count otherwise. */
export interface SqliteQueryResult {
  readonly rows: unknown[];
  readonly rowCount: number;
  readonly lastInsertRowid?: number | bigint;
}

/** What `run` answers, as `node:sqlite` reports it. */
export interface SqliteRunResult {
  readonly changes: number | bigint;
  readonly lastInsertRowid: number | bigint;
}

/** Statements on a pooled SQLite connection, each answered by a promise. */
export interface SqliteAsyncQueryable {
  query(
    sql: string,
    params?: readonly SqliteParam[],
    options?: SqliteStatementOptions,
  ): Promise<SqliteQueryResult>;
  all(sql: string, params?: readonly SqliteParam[], options?: SqliteStatementOptions): Promise<unknown[]>;
  get(sql: string, params?: readonly SqliteParam[], options?: SqliteStatementOptions): Promise<unknown>;
  run(
    sql: string,
    params?: readonly SqliteParam[],
    options?: SqliteStatementOptions,
  ): Promise<SqliteRunResult>;
  /** Runs one or more statements without parameters (DDL, `BEGIN`, `COMMIT`). */
  exec(sql: string, options?: SqliteStatementOptions): Promise<void>;
}

/** One connection taken from the pool. Release it exactly once; later statements are refused. */
export interface SqliteWorkerClient extends SqliteAsyncQueryable {
  release(): void;
}

/** Options of {@link sqliteWorkerPool}. */
export interface SqliteWorkerPoolOptions {
  /** The database file. Every worker opens it, so it cannot be `:memory:`. */
  path: string;
  /**
   * Worker threads, each with its own connection.
   * @default 4
   */
  size?: number;
  /**
   * How long a connection waits for another's write lock before failing with `SQLITE_BUSY`.
   * @default 5000
   */
  busyTimeoutMs?: number;
  /**
   * Extra pragmas set on every connection after `journal_mode = WAL`, e.g. `{ synchronous: 'NORMAL' }`.
   * @default {}
   */
  pragmas?: Readonly<Record<string, string | number>>;
  /**
   * Abandons a statement running longer than this (see the module comment for how).
   * @default Infinity
   */
  statementTimeoutMs?: number;
  /**
   * Names the pool in errors and stats.
   * @default 'sqlite'
   */
  name?: string;
  /**
   * The timer wheel that serves statement timeouts.
   * @default the shared wheel
   */
  timers?: TimerWheel;
}

/** How a transaction begins. */
export interface SqliteTransactionOptions {
  /**
   * `immediate` takes the write lock at `BEGIN`, so a transaction that writes never fails with
   * `SQLITE_BUSY` half-way when it upgrades from reading.
   * @default 'immediate'
   */
  behavior?: 'deferred' | 'immediate' | 'exclusive';
}

/** Usage of a {@link SqliteWorkerPool}. */
export interface SqliteWorkerPoolStats {
  readonly size: number;
  /** Connections taken by a caller. */
  readonly busy: number;
  readonly idle: number;
  /** Callers queued for a connection. */
  readonly waiting: number;
  /** Threads still finishing a statement that was abandoned by its timeout. */
  readonly abandoned: number;
}

const DEFAULTS = Object.freeze({
  size: 4,
  busyTimeoutMs: 5_000,
  statementTimeoutMs: Number.POSITIVE_INFINITY,
  name: 'sqlite',
  behavior: 'immediate' as const,
});

const PRAGMA_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const PRAGMA_VALUE = /^[A-Za-z0-9_.-]+$/;

function noop(): void {}

/** A statement sent to a worker and not answered yet; also its timeout on the wheel. */
class PendingStatement extends TimerEntry {
  readonly connection: WorkerConnection;
  readonly timeoutMs: number;
  readonly routeClass: string;
  resolve!: (value: unknown) => void;
  reject!: (reason: unknown) => void;
  readonly promise: Promise<unknown>;
  constructor(connection: WorkerConnection, timeoutMs: number, routeClass: string) {
    super();
    this.connection = connection;
    this.timeoutMs = timeoutMs;
    this.routeClass = routeClass;
    this.promise = new Promise((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
  }
  expire(): void {
    this.connection.abandon(this);
  }
}

/** One worker thread and its connection. */
class WorkerConnection {
  readonly #pool: SqliteWorkerPool;
  readonly #worker: Worker;
  /** Statements sent and not answered, in the order the worker runs them. */
  readonly #pending = new Map<number, PendingStatement>();
  #nextId = 1;
  /** True once the worker has opened its connection; no statement's clock runs before that. */
  #ready = false;
  /** The statement whose timeout is armed: the one the worker is running now. */
  #armed: PendingStatement | undefined = undefined;
  /** Set once the connection can run nothing more. */
  lost: Error | undefined = undefined;
  /** What the last answer said; undefined when the worker cannot tell. */
  inTransaction: boolean | undefined = false;
  /** Settles when the thread has exited. */
  readonly exited: Promise<void>;
  /** Resolves once the connection is open; rejects with the reason it could not be opened. */
  readonly opened: Promise<void>;
  #markOpened!: (error?: Error) => void;

  constructor(pool: SqliteWorkerPool, script: URL, init: SqliteWorkerInit) {
    this.#pool = pool;
    this.#worker = new Worker(script, { workerData: init });
    this.exited = new Promise((resolve) => this.#worker.once('exit', () => resolve()));
    this.opened = new Promise<void>((resolve, reject) => {
      this.#markOpened = (error) => (error === undefined ? resolve() : reject(error));
    });
    this.opened.catch(noop);
    this.#worker.on('message', (message: SqliteWorkerReply | SqliteWorkerReady) => {
      if ('ready' in message) {
        this.#ready = true;
        this.#markOpened(message.error && rebuildError(message.error));
        this.#armHead();
      } else {
        this.#settle(message);
      }
    });
    this.#worker.on('error', (error) =>
      this.#lose(new PoolConnectionLostError('its worker failed', { cause: error })),
    );
    this.#worker.once('exit', (code) =>
      this.#lose(new PoolConnectionLostError(`its worker exited with code ${code}`)),
    );
  }

  send(
    op: SqliteWorkerOp,
    sql: string,
    params: readonly SqliteParam[],
    options: SqliteStatementOptions | undefined,
  ): Promise<unknown> {
    if (this.lost) return Promise.reject(this.lost);
    if (typeof sql !== 'string') return Promise.reject(new TypeError('sql: must be a string'));
    const timeoutMs = options?.timeoutMs ?? this.#pool.statementTimeoutMs;
    if (!(timeoutMs > 0)) {
      return Promise.reject(
        new InvalidOptionError('timeoutMs', `must be a number > 0, got ${String(timeoutMs)}`),
      );
    }
    const pending = new PendingStatement(this, timeoutMs, options?.routeClass ?? 'default');
    const id = this.#nextId++;
    this.#pending.set(id, pending);
    this.#worker.postMessage({ id, op, sql, params });
    this.#armHead();
    return pending.promise;
  }

  /**
   * Starts the timeout of the statement the worker is running now. The worker runs statements one
   * at a time, so a statement's clock starts when the one before it is answered, not when it was
   * sent: time spent queued behind its own client's statements is not its running time.
   */
  #armHead(): void {
    if (!this.#ready || this.#armed !== undefined) return;
    const head = this.#pending.values().next().value;
    if (head === undefined) return;
    this.#armed = head;
    if (head.timeoutMs !== Number.POSITIVE_INFINITY) {
      const timers = this.#pool.timers;
      timers.schedule(head, timers.clock.now() + head.timeoutMs);
    }
  }

  /** A statement ran past its timeout: give up on this thread and put a fresh one in its place. */
  abandon(timedOut: PendingStatement): void {
    if (this.lost) return;
    const work = this.exited;
    this.#worker.unref();
    this.#worker.terminate().then(noop, noop);
    this.#lose(
      new PoolConnectionLostError('a statement ran past its timeout, so its worker was abandoned'),
      timedOut,
      new StatementTimeoutError(timedOut.routeClass, timedOut.timeoutMs, { work }),
    );
  }

  /** Ends the thread (pool shutdown). */
  terminate(): Promise<void> {
    this.#lose(new PoolClosedError(this.#pool.name));
    this.#worker.terminate().then(noop, noop);
    return this.exited;
  }

  #settle(reply: SqliteWorkerReply): void {
    const pending = this.#pending.get(reply.id);
    if (pending === undefined) return;
    this.#pending.delete(reply.id);
    this.#pool.timers.cancel(pending);
    if (this.#armed === pending) this.#armed = undefined;
    this.#armHead();
    this.inTransaction = reply.inTransaction;
    if (reply.ok) pending.resolve(reply.value);
    else pending.reject(rebuildError(reply.error));
  }

  #lose(reason: Error, timedOut?: PendingStatement, timeout?: StatementTimeoutError): void {
    if (this.lost) return;
    this.lost = reason;
    this.#markOpened(reason);
    for (const pending of this.#pending.values()) {
      this.#pool.timers.cancel(pending);
      pending.reject(pending === timedOut ? timeout : reason);
    }
    this.#pending.clear();
    this.#pool.replace(this);
  }
}

/** See {@link sqliteWorkerPool}. */
export class SqliteWorkerPool implements SqliteAsyncQueryable {
  readonly path: string;
  readonly size: number;
  readonly name: string;
  readonly statementTimeoutMs: number;
  readonly timers: TimerWheel;
  readonly #script = workerScript('sqlite-worker', import.meta.url);
  readonly #init: SqliteWorkerInit;
  readonly #connections = new Set<WorkerConnection>();
  #idle: WorkerConnection[] = [];
  #waiters: { resolve: (connection: WorkerConnection) => void; reject: (reason: unknown) => void }[] = [];
  #abandoned = 0;
  #closed = false;

  constructor(options: SqliteWorkerPoolOptions) {
    const path = options?.path;
    if (typeof path !== 'string' || path === '' || path === ':memory:' || path.startsWith('file::memory:')) {
      throw new InvalidOptionError(
        'path',
        `must be a database file every worker can open (not ':memory:'), got ${JSON.stringify(path)}`,
      );
    }
    this.path = path;
    this.size = checkInteger('size', options.size ?? DEFAULTS.size);
    const busyTimeoutMs = checkInteger('busyTimeoutMs', options.busyTimeoutMs ?? DEFAULTS.busyTimeoutMs, 0);
    this.statementTimeoutMs = checkNumber(
      'statementTimeoutMs',
      options.statementTimeoutMs ?? DEFAULTS.statementTimeoutMs,
      1,
      true,
    );
    this.name = options.name ?? DEFAULTS.name;
    this.timers = options.timers ?? sharedTimerWheel();
    // The busy timeout first, so every later statement waits for locks rather than failing.
    const setup = [`PRAGMA busy_timeout = ${busyTimeoutMs}`, 'PRAGMA journal_mode = WAL'];
    for (const [pragma, value] of Object.entries(options.pragmas ?? {})) {
      if (!PRAGMA_NAME.test(pragma) || !PRAGMA_VALUE.test(String(value))) {
        throw new InvalidOptionError(
          `pragmas.${pragma}`,
          `must be a pragma name with a plain value (letters, digits, '_', '.', '-'), got ${JSON.stringify(value)}`,
        );
      }
      setup.push(`PRAGMA ${pragma} = ${value}`);
    }
    this.#init = Object.freeze({ path, setup: Object.freeze(setup), patienceMs: busyTimeoutMs });
    for (let i = 0; i < this.size; i++) this.#idle.push(this.#spawn());
  }

  /**
   * Takes a connection for several statements (a transaction, a batch). Waits, without bound, for
   * one to be free.
   *
   * @example
   * const client = await pool.connect();
   * try { await client.run('UPDATE stock SET n = n - 1 WHERE id = ?', [id]) } finally { client.release() }
   */
  async connect(): Promise<SqliteWorkerClient> {
    return this.#client(await this.#checkout());
  }

  query(
    sql: string,
    params?: readonly SqliteParam[],
    options?: SqliteStatementOptions,
  ): Promise<SqliteQueryResult> {
    return this.#once('query', sql, params, options) as Promise<SqliteQueryResult>;
  }

  all(sql: string, params?: readonly SqliteParam[], options?: SqliteStatementOptions): Promise<unknown[]> {
    return this.#once('all', sql, params, options) as Promise<unknown[]>;
  }

  get(sql: string, params?: readonly SqliteParam[], options?: SqliteStatementOptions): Promise<unknown> {
    return this.#once('get', sql, params, options);
  }

  run(
    sql: string,
    params?: readonly SqliteParam[],
    options?: SqliteStatementOptions,
  ): Promise<SqliteRunResult> {
    return this.#once('run', sql, params, options) as Promise<SqliteRunResult>;
  }

  async exec(sql: string, options?: SqliteStatementOptions): Promise<void> {
    await this.#once('exec', sql, undefined, options);
  }

  /**
   * Runs `fn` inside one transaction on one connection: committed when `fn` resolves, rolled back
   * when it throws.
   *
   * @example
   * await pool.transaction(async (tx) => {
   *   await tx.run('INSERT INTO orders (id, total) VALUES (?, ?)', [id, total]);
   *   await tx.run('UPDATE stock SET n = n - 1 WHERE sku = ?', [sku]);
   * });
   */
  async transaction<T>(
    fn: (tx: SqliteAsyncQueryable) => Promise<T>,
    options?: SqliteTransactionOptions,
  ): Promise<T> {
    const client = await this.connect();
    try {
      return await inSqliteTransaction(client, fn, options);
    } finally {
      client.release();
    }
  }

  /**
   * Resolves once every worker has opened its connection; rejects with the first reason one could
   * not (a missing directory, a file that is not a database). Await it at start-up so the first
   * requests do not pay for starting threads, and so a bad path fails the start, not a request.
   *
   * @example
   * const pool = sqliteWorkerPool({ path: 'app.db' });
   * await pool.ready();
   */
  async ready(): Promise<void> {
    await Promise.all([...this.#connections].map((connection) => connection.opened));
  }

  /** Connections busy and idle, callers waiting, abandoned threads still running. */
  stats(): SqliteWorkerPoolStats {
    const idle = this.#idle.length;
    return {
      size: this.size,
      busy: this.#connections.size - idle,
      idle,
      waiting: this.#waiters.length,
      abandoned: this.#abandoned,
    };
  }

  /** Stops every worker; queued callers are refused. Abandoned threads are not waited for. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const error = new PoolClosedError(this.name);
    for (const waiter of this.#waiters) waiter.reject(error);
    this.#waiters = [];
    this.#idle = [];
    await Promise.all([...this.#connections].map((connection) => connection.terminate()));
    this.#connections.clear();
  }

  /** @internal A connection was lost: count its thread until it exits, and start one in its place. */
  replace(lost: WorkerConnection): void {
    if (!this.#connections.delete(lost)) return;
    this.#idle = this.#idle.filter((connection) => connection !== lost);
    if (this.#closed) return;
    this.#abandoned++;
    lost.exited.then(() => this.#abandoned--, noop);
    this.#checkin(this.#spawn());
  }

  #spawn(): WorkerConnection {
    const connection = new WorkerConnection(this, this.#script, this.#init);
    this.#connections.add(connection);
    return connection;
  }

  #checkout(): Promise<WorkerConnection> {
    if (this.#closed) return Promise.reject(new PoolClosedError(this.name));
    const connection = this.#idle.pop();
    if (connection !== undefined) return Promise.resolve(connection);
    return new Promise((resolve, reject) => this.#waiters.push({ resolve, reject }));
  }

  #checkin(connection: WorkerConnection): void {
    if (connection.lost || this.#closed) return;
    // Never hand an open transaction to the next caller. The worker answers in order, so the
    // next caller's statements run after this rollback.
    if (connection.inTransaction !== false) {
      connection.send('exec', 'ROLLBACK', [], undefined).catch(noop);
      connection.inTransaction = false;
    }
    const waiter = this.#waiters.shift();
    if (waiter) waiter.resolve(connection);
    else this.#idle.push(connection);
  }

  async #once(
    op: SqliteWorkerOp,
    sql: string,
    params: readonly SqliteParam[] | undefined,
    options: SqliteStatementOptions | undefined,
  ): Promise<unknown> {
    const connection = await this.#checkout();
    try {
      return await connection.send(op, sql, params ?? [], options);
    } finally {
      this.#checkin(connection);
    }
  }

  #client(connection: WorkerConnection): SqliteWorkerClient {
    let released = false;
    const send = (
      op: SqliteWorkerOp,
      sql: string,
      params: readonly SqliteParam[] | undefined,
      options: SqliteStatementOptions | undefined,
    ) =>
      released
        ? Promise.reject(new Error('The SQLite client was already released'))
        : connection.send(op, sql, params ?? [], options);
    return {
      query: (sql, params, options) => send('query', sql, params, options) as Promise<SqliteQueryResult>,
      all: (sql, params, options) => send('all', sql, params, options) as Promise<unknown[]>,
      get: (sql, params, options) => send('get', sql, params, options),
      run: (sql, params, options) => send('run', sql, params, options) as Promise<SqliteRunResult>,
      exec: async (sql, options) => {
        await send('exec', sql, undefined, options);
      },
      release: () => {
        if (released) return;
        released = true;
        this.#checkin(connection);
      },
    };
  }
}

/**
 * Runs `fn` between `BEGIN` and `COMMIT` on a connection the caller holds; rolls back when `fn`
 * throws or the commit fails. The pool's and the guard's `transaction` are built on it.
 *
 * @example
 * const client = await pool.connect();
 * try { await inSqliteTransaction(client, (tx) => tx.run('DELETE FROM carts WHERE id = ?', [id])) }
 * finally { client.release() }
 */
export async function inSqliteTransaction<T>(
  client: SqliteAsyncQueryable,
  fn: (tx: SqliteAsyncQueryable) => Promise<T>,
  options: SqliteTransactionOptions = {},
): Promise<T> {
  const behavior = checkOneOf('behavior', options.behavior ?? DEFAULTS.behavior, [
    'deferred',
    'immediate',
    'exclusive',
  ]);
  const tx: SqliteAsyncQueryable = {
    query: (sql, params, o) => client.query(sql, params, o),
    all: (sql, params, o) => client.all(sql, params, o),
    get: (sql, params, o) => client.get(sql, params, o),
    run: (sql, params, o) => client.run(sql, params, o),
    exec: (sql, o) => client.exec(sql, o),
  };
  await client.exec(`BEGIN ${behavior.toUpperCase()}`);
  let value: T;
  try {
    value = await fn(tx);
    await client.exec('COMMIT');
  } catch (error) {
    // After a lost connection the rollback fails too; the transaction died with it.
    await client.exec('ROLLBACK').catch(noop);
    throw error;
  }
  return value;
}

/**
 * Opens `size` worker threads on one SQLite file, each with its own connection in WAL mode, and
 * answers statements with promises. A naive pool: callers wait in line for a free worker without
 * bound. Put `guardSqlitePool` in front for shares per route class and bounded waits. Call
 * `close()` at shutdown.
 *
 * @example
 * const pool = sqliteWorkerPool({ path: 'app.db', size: 4 });
 * await pool.exec('CREATE TABLE IF NOT EXISTS users (id INTEGER PRIMARY KEY, email TEXT UNIQUE)');
 * const user = await pool.get('SELECT id FROM users WHERE email = ?', [email]);
 */
export function sqliteWorkerPool(options: SqliteWorkerPoolOptions): SqliteWorkerPool {
  return new SqliteWorkerPool(options);
}
