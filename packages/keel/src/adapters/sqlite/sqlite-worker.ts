/**
 * The thread behind one connection of `sqliteWorkerPool`: it opens its own `node:sqlite`
 * `DatabaseSync` on the pool's file and answers statements one at a time. Statements run here,
 * synchronously, so a heavy report blocks this thread and never the service's event loop.
 *
 * It imports only Node's own modules and `worker-errors.ts`, which imports nothing, so it loads as
 * TypeScript source (type stripping) and as compiled JavaScript alike.
 *
 * @module
 */
import { DatabaseSync, type StatementSync } from 'node:sqlite';
import { parentPort, workerData } from 'node:worker_threads';
import { flattenError, isBusyError, type WorkerErrorData } from './worker-errors.ts';

/** A value bound to a statement parameter. */
export type SqliteParam = string | number | bigint | null | Uint8Array;

/** What the pool hands the worker at start. */
export interface SqliteWorkerInit {
  readonly path: string;
  /** Statements run once after opening, such as `PRAGMA journal_mode = WAL`. */
  readonly setup: readonly string[];
  /** How long setup retries while another connection holds the lock it needs. */
  readonly patienceMs: number;
}

/** The ways a statement can be run. */
export type SqliteWorkerOp = 'query' | 'all' | 'get' | 'run' | 'exec';

/** A statement for the worker. */
export interface SqliteWorkerRequest {
  readonly id: number;
  readonly op: SqliteWorkerOp;
  readonly sql: string;
  readonly params: readonly SqliteParam[];
}

/** A SQLite error, flattened: structured clone would drop `code`, `errcode` and `errstr`. */
export type SqliteWorkerErrorData = WorkerErrorData;

/**
 * The worker's answer to one request. `inTransaction` says whether the connection is left inside a
 * transaction (undefined where `DatabaseSync` cannot tell), so the pool never hands an open
 * transaction to the next caller.
 */
export type SqliteWorkerReply = { readonly id: number; readonly inTransaction: boolean | undefined } & (
  | { readonly ok: true; readonly value: unknown }
  | { readonly ok: false; readonly error: SqliteWorkerErrorData }
);

/** Sent once, when the connection is open (or failed to open) and statements can be answered. */
export interface SqliteWorkerReady {
  readonly ready: true;
  /** Why the connection could not be opened; every statement will fail with it. */
  readonly error?: SqliteWorkerErrorData;
}

/** Prepared statements kept per connection; the oldest is dropped beyond this. */
const STATEMENT_CACHE_SIZE = 128;

/**
 * Runs a setup statement, retrying while the file is locked. Switching a new file to WAL takes a
 * lock that SQLite does not wait for through `busy_timeout` when several connections open the
 * file at once, so the workers of one pool would otherwise race each other at start.
 */
function execPatiently(db: DatabaseSync, sql: string, patienceMs: number): void {
  const until = Date.now() + patienceMs;
  const pause = new Int32Array(new SharedArrayBuffer(4));
  for (;;) {
    try {
      db.exec(sql);
      return;
    } catch (error) {
      if (!isBusyError(error) || Date.now() >= until) throw error;
      Atomics.wait(pause, 0, 0, 5);
    }
  }
}

function serve(port: NonNullable<typeof parentPort>, init: SqliteWorkerInit): void {
  let db: DatabaseSync | undefined;
  let openError: SqliteWorkerErrorData | undefined;
  try {
    const opened = new DatabaseSync(init.path);
    try {
      for (const statement of init.setup) execPatiently(opened, statement, init.patienceMs);
    } catch (error) {
      opened.close();
      throw error;
    }
    db = opened;
  } catch (error) {
    openError = flattenError(error);
  }
  const statements = new Map<string, StatementSync>();

  const prepare = (open: DatabaseSync, sql: string): StatementSync => {
    let statement = statements.get(sql);
    if (statement === undefined) {
      statement = open.prepare(sql);
      if (statements.size >= STATEMENT_CACHE_SIZE) {
        const oldest = statements.keys().next().value;
        if (oldest !== undefined) statements.delete(oldest);
      }
      statements.set(sql, statement);
    }
    return statement;
  };

  const run = (open: DatabaseSync, request: SqliteWorkerRequest): unknown => {
    if (request.op === 'exec') {
      open.exec(request.sql);
      return undefined;
    }
    const statement = prepare(open, request.sql);
    const params = request.params as SqliteParam[];
    switch (request.op) {
      case 'all':
        return statement.all(...params);
      case 'get':
        return statement.get(...params);
      case 'run':
        return statement.run(...params);
      case 'query': {
        // A statement with result columns (a SELECT, or a write with RETURNING) answers rows; any
        // other answers how many rows it changed.
        const returnsRows = typeof statement.columns === 'function' ? statement.columns().length > 0 : true;
        if (returnsRows) {
          const rows = statement.all(...params);
          return { rows, rowCount: rows.length };
        }
        const { changes, lastInsertRowid } = statement.run(...params);
        return { rows: [], rowCount: Number(changes), lastInsertRowid };
      }
    }
  };

  // Statement timeouts count from here: opening the thread and the file is not the statement's time.
  const ready: SqliteWorkerReady =
    openError === undefined ? { ready: true } : { ready: true, error: openError };
  port.postMessage(ready);
  port.on('message', (request: SqliteWorkerRequest) => {
    let reply: SqliteWorkerReply;
    if (db === undefined) {
      const error = openError ?? { name: 'Error', message: 'The database is not open' };
      reply = { id: request.id, inTransaction: false, ok: false, error };
    } else {
      const open = db;
      const inTransaction = (): boolean | undefined => (open as { isTransaction?: boolean }).isTransaction;
      try {
        const value = run(open, request);
        reply = { id: request.id, inTransaction: inTransaction(), ok: true, value };
      } catch (error) {
        reply = { id: request.id, inTransaction: inTransaction(), ok: false, error: flattenError(error) };
      }
    }
    port.postMessage(reply);
  });
}

if (parentPort !== null) serve(parentPort, workerData as SqliteWorkerInit);
