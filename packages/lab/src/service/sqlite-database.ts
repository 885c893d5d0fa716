/**
 * @module
 * The embedded default: one SQLite file in WAL mode. Reads run on Keel's `sqliteWorkerPool` — a few
 * worker threads, each with its own connection — so a heavy report never blocks the event loop and
 * the pool can really run out. Naive mode uses the pool as it is: everyone queues without bound, and
 * transactions hold a worker connection (and the write lock) for as long as their code awaits.
 * Guarded mode puts Keel's `guardSqlitePool` in front of the reads (shares per route class, bounded
 * waits, deadline-bounded statements), and runs its short transactions on one main-thread
 * connection — the handle Keel's SQLite stores (idempotency, inbox, outbox) take, so a payment row,
 * its outbox event and the stored response commit in one transaction.
 */
import { DatabaseSync, type StatementSync } from 'node:sqlite';
import type { Telemetry } from 'keel';
import {
  guardSqlitePool,
  type SqliteAsyncQueryable,
  type SqlitePoolGuard,
  type SqliteWorkerPool,
  sqliteWorkerPool,
} from 'keel/sqlite';
import type { ServiceMode } from './config.ts';
import type { Database, RouteClass, SqlParam, SqlRunner, SqlTransaction } from './database.ts';

export interface SqliteDatabaseOptions {
  path: string;
  mode: ServiceMode;
  /** Worker threads (connections) in the pool. */
  poolSize: number;
  /** Receives the pool guard's events (guarded mode). */
  telemetry?: Telemetry;
}

/** How long a connection waits for another's write lock before failing with SQLITE_BUSY. */
const BUSY_TIMEOUT_MS = 5_000;

/** Statements on a main-thread handle, prepared once each. */
function syncRunner(db: DatabaseSync): SqlTransaction {
  const statements = new Map<string, StatementSync>();
  const prepared = (sql: string): StatementSync => {
    let statement = statements.get(sql);
    if (statement === undefined) {
      statement = db.prepare(sql);
      statements.set(sql, statement);
    }
    return statement;
  };
  return {
    handle: db,
    all: async <T>(sql: string, params: readonly SqlParam[] = []) => prepared(sql).all(...params) as T[],
    get: async <T>(sql: string, params: readonly SqlParam[] = []) =>
      prepared(sql).get(...params) as T | undefined,
    run: async (sql: string, params: readonly SqlParam[] = []) =>
      Number(prepared(sql).run(...params).changes),
  };
}

function pooledRunner(queryable: SqliteAsyncQueryable): SqlTransaction {
  return {
    handle: queryable,
    all: <T>(sql: string, params: readonly SqlParam[] = []) => queryable.all(sql, params) as Promise<T[]>,
    get: async <T>(sql: string, params: readonly SqlParam[] = []) =>
      ((await queryable.get(sql, params)) ?? undefined) as T | undefined,
    run: async (sql: string, params: readonly SqlParam[] = []) =>
      Number((await queryable.run(sql, params)).changes),
  };
}

/** The route classes' shares of `size` workers: login and api keep some, reports never take all. */
function poolClasses(size: number) {
  return {
    login: { reserved: size >= 3 ? 1 : 0 },
    api: { reserved: size >= 4 ? 1 : 0 },
    report: { max: Math.max(1, Math.floor(size / 3)) },
  };
}

/**
 * Opens the file (creating it), switches it to WAL, and starts the worker pool.
 *
 * @example
 * const db = sqliteDatabase({ path: 'payments.db', mode: 'guarded', poolSize: 6 });
 */
export function sqliteDatabase(options: SqliteDatabaseOptions): Database {
  const writer = new DatabaseSync(options.path, { timeout: BUSY_TIMEOUT_MS });
  writer.exec('PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON');
  const pool: SqliteWorkerPool = sqliteWorkerPool({
    path: options.path,
    size: options.poolSize,
    busyTimeoutMs: BUSY_TIMEOUT_MS,
    pragmas: { synchronous: 'NORMAL', foreign_keys: 'ON' },
    name: 'sqlite',
  });
  const guard: SqlitePoolGuard<RouteClass> | undefined =
    options.mode === 'guarded'
      ? guardSqlitePool<RouteClass>(pool, {
          classes: poolClasses(options.poolSize),
          acquireTimeoutMs: 1_000,
          statementTimeoutMs: 15_000,
          name: 'sqlite-pool',
          ...(options.telemetry !== undefined && { telemetry: options.telemetry }),
        })
      : undefined;
  const writes = syncRunner(writer);
  const readers = new Map<RouteClass, SqlRunner>();
  let queue: Promise<unknown> = Promise.resolve();

  // Guarded transactions share one main-thread handle with Keel's stores. They never await I/O,
  // but an inbox transaction of Keel's may be open on the handle between two microtasks: wait it
  // out rather than nest a BEGIN inside it.
  const onWriter = async <T>(fn: (tx: SqlTransaction) => Promise<T>): Promise<T> => {
    while (writer.isTransaction) await new Promise((resolve) => setImmediate(resolve));
    writer.exec('BEGIN IMMEDIATE');
    try {
      const value = await fn(writes);
      writer.exec('COMMIT');
      return value;
    } catch (error) {
      if (writer.isTransaction) writer.exec('ROLLBACK');
      throw error;
    }
  };

  return {
    driver: { dialect: 'sqlite', db: writer },
    reader(routeClass) {
      let runner = readers.get(routeClass);
      if (runner === undefined) {
        runner = pooledRunner(guard === undefined ? pool : guard.for(routeClass));
        readers.set(routeClass, runner);
      }
      return runner;
    },
    transaction(_routeClass, fn) {
      if (guard === undefined) return pool.transaction((tx) => fn(pooledRunner(tx)));
      const next = queue.then(() => onWriter(fn));
      queue = next.catch(() => undefined);
      return next;
    },
    join(handle) {
      if (handle !== writer) throw new TypeError('join: not this database’s handle');
      return writes;
    },
    poolStats() {
      const stats = pool.stats();
      return { busy: stats.busy, waiting: stats.waiting };
    },
    async close() {
      await queue;
      await pool.close();
      writer.close();
    },
  };
}
