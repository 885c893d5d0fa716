/**
 * The thread behind `sqliteOutbox({ writeThread: true })`: it opens its own `node:sqlite` connection
 * on the outbox's file and runs the relay's writes (its lease, marks, releases, relinquish and
 * prunes) one at a time. Each write waits here for another connection's write lock, polling every
 * {@link PAUSE_MS} rather than in SQLite's busy handler, whose sleeps grow to 100 ms: a writer that
 * commits back to back leaves the lock free only between its transactions, and a long sleep would
 * miss every one of those gaps. Waiting blocks this thread only, never the service's.
 *
 * It imports only Node's own modules and `worker-errors.ts`, which imports nothing, so it loads as
 * TypeScript source (type stripping) and as compiled JavaScript alike.
 *
 * @module
 */
import { DatabaseSync, type StatementSync } from 'node:sqlite';
import { pathToFileURL } from 'node:url';
import { parentPort, workerData } from 'node:worker_threads';
import { flattenError, isBusyError, type WorkerErrorData } from './worker-errors.ts';

/** A value bound to a statement parameter. */
export type RelayWriteParam = string | number | bigint | null;

/** What the store hands the thread at start. */
export interface RelayWriteInit {
  readonly path: string;
  /** Pragmas run once after opening, such as the store's handle's `synchronous`. */
  readonly setup: readonly string[];
  /**
   * A table the file must hold (the outbox's lease): a file that lacks it is not the outbox's, as
   * when the outbox's was moved away and another put in its place.
   */
  readonly table: string;
}

/** One write: `get` answers the first row (a write with `RETURNING`), `run` the changed-row count. */
export interface RelayWriteRequest {
  readonly id: number;
  readonly op: 'run' | 'get';
  readonly sql: string;
  readonly params: readonly RelayWriteParam[];
  /** How long the write may wait for the lock before it fails with `SQLITE_BUSY`. */
  readonly waitMs: number;
}

/** The thread's answer to one request. */
export type RelayWriteReply = { readonly id: number } & (
  | { readonly ok: true; readonly value: unknown }
  | { readonly ok: false; readonly error: WorkerErrorData }
);

/**
 * The pause between two tries for the lock. A write takes it within a quarter of a millisecond of
 * its release, where a timer on an event loop could not wait less than about one.
 */
const PAUSE_MS = 0.25;

/** Opens the outbox's file for reading and writing, never creating it: a missing file is an error. */
function openExisting(init: RelayWriteInit): DatabaseSync {
  const file = pathToFileURL(init.path);
  file.searchParams.set('mode', 'rw');
  const db = new DatabaseSync(file);
  try {
    const found = db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?").get(init.table);
    if (found === undefined)
      throw new Error(`${init.path} has no table "${init.table}": it is not the outbox's file`);
  } catch (error) {
    db.close();
    throw error;
  }
  return db;
}

function serve(port: NonNullable<typeof parentPort>, init: RelayWriteInit): void {
  const db = openExisting(init);
  // Never sleep in SQLite's busy handler: the loop below waits for the lock instead.
  db.exec('PRAGMA busy_timeout = 0');
  for (const statement of init.setup) db.exec(statement);
  const statements = new Map<string, StatementSync>();
  const pause = new Int32Array(new SharedArrayBuffer(4));

  const write = (request: RelayWriteRequest): unknown => {
    let statement = statements.get(request.sql);
    if (statement === undefined) {
      statement = db.prepare(request.sql);
      statements.set(request.sql, statement);
    }
    const params = request.params as RelayWriteParam[];
    const giveUpAt = performance.now() + request.waitMs;
    for (;;) {
      try {
        return request.op === 'get' ? statement.get(...params) : statement.run(...params).changes;
      } catch (error) {
        if (!isBusyError(error) || performance.now() >= giveUpAt) throw error;
        Atomics.wait(pause, 0, 0, PAUSE_MS);
      }
    }
  };

  port.on('message', (request: RelayWriteRequest | 'close') => {
    if (request === 'close') {
      db.close();
      port.close();
      return;
    }
    let reply: RelayWriteReply;
    try {
      reply = { id: request.id, ok: true, value: write(request) };
    } catch (error) {
      reply = { id: request.id, ok: false, error: flattenError(error) };
    }
    port.postMessage(reply);
  });
}

if (parentPort !== null) serve(parentPort, workerData as RelayWriteInit);
