/**
 * Group commit for SQLite writes. In WAL mode every commit appends each page it dirtied to the log,
 * so a hundred single-statement commits that touch the same index page write that page a hundred
 * times. Writes queued during one turn of the event loop run together in one `BEGIN IMMEDIATE` …
 * `COMMIT` instead; each caller's promise settles only after the commit, so nothing is acknowledged
 * before it is durable. While another connection holds the write lock, the group waits for it on a
 * timer (see `WriteWithoutBlocking`), not in SQLite's busy handler on the service's thread, and the
 * writes queued meanwhile join it.
 *
 * @module
 */
import type { SqliteDatabase } from './idempotency-store.ts';
import { WriteWithoutBlocking } from './write-without-blocking.ts';

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
  readonly #lock: WriteWithoutBlocking;
  #queue: PendingWrite[] = [];
  /** A flush is due: on the next turn, or on a timer while the lock is taken. */
  #scheduled = false;
  /** When the first group still waiting found the write lock taken (`performance.now()`). */
  #waitingSince: number | undefined;

  constructor(db: SqliteDatabase) {
    this.#db = db;
    this.#lock = new WriteWithoutBlocking(db);
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
    this.#scheduled = false;
    const batch = this.#queue.length > MAX_BATCH ? this.#queue.splice(0, MAX_BATCH) : this.#queue;
    if (batch === this.#queue) this.#queue = [];

    // A transaction the application left open across an await owns the handle: the writes join it,
    // exactly as single statements would.
    if (this.#inTransaction()) {
      this.#waitingSince = undefined;
      for (const pending of batch) settle(pending);
      this.#scheduleRest();
      return;
    }
    if (!this.#begin(batch)) return;
    this.#scheduleRest();
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

  /**
   * Opens the group's transaction. While another connection holds the write lock, puts the batch
   * back in front of the queue and tries again on a timer, until the handle's busy timeout has
   * passed: then, or on any other error, the batch fails. Returns whether the transaction is open.
   */
  #begin(batch: PendingWrite[]): boolean {
    const timeoutMs = this.#lock.busyTimeoutMs();
    let failure: unknown;
    try {
      if (timeoutMs <= 0) {
        this.#db.exec('BEGIN IMMEDIATE');
        this.#waitingSince = undefined;
        return true;
      }
      const attempt = this.#lock.tryOnce(this.#beginImmediate, timeoutMs);
      if (attempt.ok) {
        this.#waitingSince = undefined;
        return true;
      }
      const now = performance.now();
      this.#waitingSince ??= now;
      if (now - this.#waitingSince < timeoutMs) {
        this.#queue = batch.concat(this.#queue);
        this.#scheduled = true;
        setTimeout(this.#flush, WriteWithoutBlocking.PAUSE_MS);
        return false;
      }
      failure = attempt.busy;
    } catch (error) {
      failure = error;
    }
    this.#waitingSince = undefined;
    for (const pending of batch) pending.reject(failure);
    this.#scheduleRest();
    return false;
  }

  /** Flushes what is still queued on the next turn. */
  #scheduleRest(): void {
    if (this.#queue.length > 0 && !this.#scheduled) {
      this.#scheduled = true;
      setImmediate(this.#flush);
    }
  }

  readonly #beginImmediate = (): unknown => this.#db.exec('BEGIN IMMEDIATE');

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
