/**
 * @module
 * The one small database interface the routes, the charge and the invoice consumer use, so the same
 * code runs on the embedded SQLite file and on Postgres, naive or guarded. Statements are written
 * once with `?` placeholders; each implementation adapts them to its driver. Reads name their route
 * class (`login`, `api`, `report`), which is what the guarded implementation needs to keep a heavy
 * report from taking the connections login needs; the naive one ignores it and lets everyone queue.
 */
import type { DatabaseSync } from 'node:sqlite';
import type { Pool } from 'pg';

/** Route classes that share the connection pool in guarded mode. */
export type RouteClass = 'login' | 'api' | 'report';

/** A value bound to a `?` placeholder. */
export type SqlParam = string | number | bigint | null;

/** Statements, answered by promises whatever the driver. */
export interface SqlRunner {
  all<T>(sql: string, params?: readonly SqlParam[]): Promise<T[]>;
  get<T>(sql: string, params?: readonly SqlParam[]): Promise<T | undefined>;
  /** Runs a write; resolves with the number of rows it changed. */
  run(sql: string, params?: readonly SqlParam[]): Promise<number>;
}

/** Statements inside one open transaction. */
export interface SqlTransaction extends SqlRunner {
  /**
   * The driver's own transaction handle (the `node:sqlite` database inside `BEGIN`, a `pg` client
   * inside `BEGIN`), for Keel's stores to join: `lease.complete(response, { tx: tx.handle })`.
   */
  readonly handle: unknown;
}

/** The drivers underneath, for Keel's stores, which take the user's own handle. */
export type DatabaseDriver =
  | { readonly dialect: 'sqlite'; readonly db: DatabaseSync }
  | { readonly dialect: 'postgres'; readonly pool: Pool };

export interface Database {
  readonly driver: DatabaseDriver;
  /** Runs statements for one route class, each on a pooled connection. */
  reader(routeClass: RouteClass): SqlRunner;
  /** Runs `fn` in one transaction: committed when it resolves, rolled back when it throws. */
  transaction<T>(routeClass: RouteClass, fn: (tx: SqlTransaction) => Promise<T>): Promise<T>;
  /** Wraps a transaction handle Keel opened (an inbox's) so the service's statements can join it. */
  join(handle: unknown): SqlTransaction;
  /** Connections busy, idle and waiting, for the pool gauges. */
  poolStats(): { readonly busy: number; readonly waiting: number };
  close(): Promise<void>;
}
