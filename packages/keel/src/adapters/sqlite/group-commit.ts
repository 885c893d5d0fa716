/**
 * Group commit for SQLite writes. In WAL mode every commit appends each page it dirtied to the log,
 * so a hundred single-statement commits that touch the same index page write that page a hundred
 * times. Writes queued during one turn of the event loop run together in one `BEGIN IMMEDIATE` …
 * `COMMIT` instead; each caller's promise settles only after the commit, so nothing is acknowledged
 * before it is durable.
 *
 * @module
 */
import type { SqliteDatabase } from './idempotency-store.ts';

interface PendingWrite {
  readonly write: () => unknown;
  readonly resolve: (value: unknown) => void;
  readonly reject: (error: unknown) => void;
}

/** The transaction flags `node:sqlite` (`isTransaction`) and `better-sqlite3` (`inTransaction`) expose. */
interface TransactionFlags {
  readonly isTransaction?: boolean;
  readonly inTransaction?: boolean;
}

/** Most writes one commit carries, so a burst cannot hold the write lock for long. */
const MAX_BATCH = 256;

/**
 * Queues synchronous writes on one handle and commits them together at the end of the current
 * event-loop turn.
 */
export class GroupCommit {
  readonly #db: SqliteDatabase;
  #queue: PendingWrite[] = [];
  #scheduled = false;

  constructor(db: SqliteDatabase) {
    this.#db = db;
  }

  /** Runs `write` in the next group commit; resolves with its result once committed. */
  run<T>(write: () => T): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.#queue.push({ write, resolve: resolve as (value: unknown) => void, reject });
      if (!this.#scheduled) {
        this.#scheduled = true;
        setImmediate(this.#flush);
      }
    });
  }

  readonly #flush = (): void => {
    const batch = this.#queue.length > MAX_BATCH ? this.#queue.splice(0, MAX_BATCH) : this.#queue;
    if (batch === this.#queue) this.#queue = [];
    if (this.#queue.length > 0) setImmediate(this.#flush);
    else this.#scheduled = false;

    // A transaction the application left open across an await owns the handle: the writes join it,
    // exactly as single statements would.
    if (this.#inTransaction()) {
      for (const pending of batch) settle(pending);
      return;
    }
    try {
      this.#db.exec('BEGIN IMMEDIATE');
    } catch (error) {
      for (const pending of batch) pending.reject(error);
      return;
    }
    const results: unknown[] = [];
    try {
      for (const pending of batch) results.push(pending.write());
      this.#db.exec('COMMIT');
    } catch {
      // One write failed (or the commit did): undo the group and give every write its own commit,
      // so one caller's error never becomes another's.
      this.#rollback();
      for (const pending of batch) settle(pending);
      return;
    }
    for (let i = 0; i < batch.length; i++) (batch[i] as PendingWrite).resolve(results[i]);
  };

  #inTransaction(): boolean {
    const flags = this.#db as SqliteDatabase & TransactionFlags;
    return flags.isTransaction === true || flags.inTransaction === true;
  }

  #rollback(): void {
    try {
      this.#db.exec('ROLLBACK');
    } catch {
      // SQLite already rolled back (a failed COMMIT can end the transaction itself).
    }
  }
}

function settle(pending: PendingWrite): void {
  try {
    pending.resolve(pending.write());
  } catch (error) {
    pending.reject(error);
  }
}
