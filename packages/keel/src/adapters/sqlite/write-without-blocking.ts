/**
 * Writes that a background task (the outbox relay) makes on a SQLite handle it shares with the
 * application, without stalling the application's thread. SQLite waits for another connection's
 * write lock inside the call: its busy handler sleeps 1 ms, then 2, 5, 10 … up to the handle's
 * `busy_timeout`, on the thread that made the call. For the relay that thread is the service's
 * own: with a busy writer on another connection, its marks slept for up to a third of a second at a
 * time, and requests, timers and deliveries waited with them. Here the write runs with the busy
 * timeout at 0; while the lock is taken it is tried again a millisecond later, on a timer, so the
 * thread goes on serving meanwhile, and it still fails with `SQLITE_BUSY` once the handle's own busy
 * timeout has passed.
 *
 * @module
 */
import type { SqliteDatabase, SqliteStatement } from './idempotency-store.ts';

/**
 * The pause between two tries. Short and fixed: a try costs microseconds, and another writer's
 * transaction holds the lock for about a millisecond, so a longer pause, or one that grows as
 * SQLite's own does, mostly leaves the lock idle while the relay's batch waits behind it (marks
 * that paused 1, 2, 4, then 8 ms took 15 ms at p90 under a steady writer; with 1 ms, 6–9 ms).
 */
const PAUSE_MS = 1;

/** One try of a write: its result, or the busy error that said another connection holds the lock. */
export type WriteAttempt<T> =
  | { readonly ok: true; readonly value: T }
  | { readonly ok: false; readonly busy: unknown };

/**
 * @example
 * const writes = new WriteWithoutBlocking(db);
 * await writes.run(() => markStatement.run(now, relayId, lowest, highest));
 */
export class WriteWithoutBlocking {
  /** The pause between two tries, for callers that schedule their own ({@link tryOnce}). */
  static readonly PAUSE_MS = PAUSE_MS;
  readonly #db: SqliteDatabase;
  #readTimeout: SqliteStatement | undefined;

  constructor(db: SqliteDatabase) {
    this.#db = db;
  }

  /**
   * Runs `write` (synchronous, one statement or a transaction of its own) once the write lock is
   * free, waiting for it on timers for up to the handle's busy timeout.
   */
  async run<T>(write: () => T): Promise<T> {
    const timeoutMs = this.busyTimeoutMs();
    // A handle without a busy timeout fails at once when the lock is taken: nothing to wait for.
    if (timeoutMs <= 0) return write();
    const giveUpAt = performance.now() + timeoutMs;
    for (;;) {
      const attempt = this.tryOnce(write, timeoutMs);
      if (attempt.ok) return attempt.value;
      if (performance.now() >= giveUpAt) throw attempt.busy;
      await new Promise((resolve) => setTimeout(resolve, PAUSE_MS));
    }
  }

  /**
   * Runs `write` once without waiting for the lock: with the busy timeout at 0, restored to
   * `timeoutMs` (the handle's, from {@link busyTimeoutMs}) before it returns. Errors other than
   * `SQLITE_BUSY` and `SQLITE_LOCKED` are thrown.
   */
  tryOnce<T>(write: () => T, timeoutMs: number): WriteAttempt<T> {
    // Set and restored within one synchronous stretch: no other code runs on the handle meanwhile.
    this.#db.exec('PRAGMA busy_timeout = 0');
    try {
      return { ok: true, value: write() };
    } catch (error) {
      if (!isBusy(error)) throw error;
      return { ok: false, busy: error };
    } finally {
      this.#db.exec(`PRAGMA busy_timeout = ${timeoutMs}`);
    }
  }

  /** The handle's busy timeout, read at every write: the application may change it. */
  busyTimeoutMs(): number {
    this.#readTimeout ??= this.#db.prepare('PRAGMA busy_timeout');
    const row = this.#readTimeout.get() as Record<string, unknown> | undefined;
    const value = row === undefined ? 0 : Number(Object.values(row)[0]);
    return Number.isFinite(value) ? value : 0;
  }
}

/**
 * SQLITE_BUSY and SQLITE_LOCKED with any extended code: `node:sqlite` gives the number as
 * `errcode`, better-sqlite3 the name as `code`.
 */
function isBusy(error: unknown): boolean {
  const { errcode, code } = (error ?? {}) as { errcode?: unknown; code?: unknown };
  if (typeof errcode === 'number') return (errcode & 0xff) === 5 || (errcode & 0xff) === 6;
  return typeof code === 'string' && (code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED'));
}
