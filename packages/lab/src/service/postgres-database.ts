/**
 * @module
 * The service on Postgres, for several instances sharing one database. Naive mode is a plain
 * `pg.Pool` whose callers wait for a connection without limit. Guarded mode puts Keel's `guardPool`
 * in front: connection shares per route class, an acquire timeout, and a `statement_timeout`
 * bounded by the request's deadline — so a report can never take the connections login needs.
 */
import type { Telemetry } from 'keel';
import { guardPool, type PostgresPoolGuard, type PostgresQueryable } from 'keel/postgres';
import pg from 'pg';
import type { ServiceMode } from './config.ts';
import type { Database, RouteClass, SqlParam, SqlRunner, SqlTransaction } from './database.ts';

export interface PostgresDatabaseOptions {
  url: string;
  mode: ServiceMode;
  poolSize: number;
  /** Receives the pool guard's events (guarded mode). */
  telemetry?: Telemetry;
}

/** `?` placeholders (the service writes its SQL once) become Postgres' `$1, $2, …`. */
function numbered(sql: string): string {
  let n = 0;
  return sql.replace(/\?/g, () => `$${++n}`);
}

function runnerOn(queryable: PostgresQueryable): SqlTransaction {
  const query = (sql: string, params: readonly SqlParam[] = []) =>
    queryable.query(
      numbered(sql),
      params.map((p) => (typeof p === 'bigint' ? p.toString() : p)),
    );
  return {
    handle: queryable,
    all: async <T>(sql: string, params?: readonly SqlParam[]) => (await query(sql, params)).rows as T[],
    get: async <T>(sql: string, params?: readonly SqlParam[]) =>
      (await query(sql, params)).rows[0] as T | undefined,
    run: async (sql: string, params?: readonly SqlParam[]) => (await query(sql, params)).rowCount ?? 0,
  };
}

function poolClasses(size: number) {
  return {
    login: { reserved: size >= 3 ? 1 : 0 },
    api: { reserved: size >= 4 ? 1 : 0 },
    report: { max: Math.max(1, Math.floor(size / 3)) },
  };
}

/**
 * Connections the pool keeps beyond the guarded share, in guarded mode, for Keel's own stores —
 * idempotency records, the outbox relay, the inbox — which take the pool itself. Without them those
 * statements draw on the very connections the guard hands out, and the guard, believing them free,
 * admits requests that then wait in the driver's queue until their acquire timeout. As many as the
 * share: every charge's claim and recovery points go through them, beside the relay, the inbox and
 * retries waiting on a held key, and half as many left charges at the provider waiting in the
 * driver's queue to save their recovery point.
 */
function storeHeadroom(poolSize: number): number {
  return Math.max(2, poolSize);
}

/** A connection for one transaction, whichever pool hands it out. */
interface TransactionClient extends PostgresQueryable {
  release(err?: Error): unknown;
}

/**
 * Connects a `pg.Pool` to `url`, guarded or not.
 *
 * @example
 * const db = postgresDatabase({ url: process.env.DATABASE_URL, mode: 'guarded', poolSize: 10 });
 */
export function postgresDatabase(options: PostgresDatabaseOptions): Database {
  // Naive: `connectionTimeoutMillis: 0` is pg's default, and means waiting for a connection forever.
  const guarded = options.mode === 'guarded';
  const pool = new pg.Pool({
    connectionString: options.url,
    max: options.poolSize + (guarded ? storeHeadroom(options.poolSize) : 0),
    connectionTimeoutMillis: 0,
  });
  const guard: PostgresPoolGuard<RouteClass> | undefined = guarded
    ? guardPool<RouteClass>(pool, {
        size: options.poolSize,
        classes: poolClasses(options.poolSize),
        acquireTimeoutMs: 1_000,
        statementTimeoutMs: 15_000,
        name: 'postgres-pool',
        ...(options.telemetry !== undefined && { telemetry: options.telemetry }),
      })
    : undefined;
  const readers = new Map<RouteClass, SqlRunner>();
  return {
    driver: { dialect: 'postgres', pool },
    reader(routeClass) {
      let runner = readers.get(routeClass);
      if (runner === undefined) {
        runner = runnerOn(guard === undefined ? pool : guard.for(routeClass));
        readers.set(routeClass, runner);
      }
      return runner;
    },
    async transaction(routeClass, fn) {
      const client: TransactionClient =
        guard === undefined ? await pool.connect() : await guard.connect(routeClass);
      let failure: Error | undefined;
      try {
        await client.query('BEGIN');
        const value = await fn(runnerOn(client));
        await client.query('COMMIT');
        return value;
      } catch (error) {
        await client.query('ROLLBACK').catch((rollbackError: unknown) => {
          failure = rollbackError instanceof Error ? rollbackError : new Error(String(rollbackError));
        });
        throw error;
      } finally {
        await client.release(failure);
      }
    },
    join(handle) {
      if (typeof (handle as PostgresQueryable | null)?.query !== 'function') {
        throw new TypeError('join: not a pg client');
      }
      return runnerOn(handle as PostgresQueryable);
    },
    poolStats() {
      return { busy: pool.totalCount - pool.idleCount, waiting: pool.waitingCount };
    },
    async close() {
      await pool.end();
    },
  };
}
