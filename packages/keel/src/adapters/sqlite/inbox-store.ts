/**
 * The consumer inbox in SQLite: three tables (processed ids, failed attempts, dead letters) over the
 * user's own handle, so an event handler's writes and the inbox row commit in one transaction.
 *
 * @module
 */
import { InvalidOptionError } from '../../errors/keel-error.ts';
import type { WallClock } from '../../idempotency/store.ts';
import { wallClock } from '../../idempotency/store.ts';
import type { OutboxEvent } from '../../outbox/event.ts';
import {
  checkEventSelection,
  checkPruneLimit,
  type DeadLetter,
  type DeadLetterFilter,
  type DeadLetterOutcome,
  type FailedAttempts,
  type FailureSummary,
  type InboxResult,
  type InboxStore,
} from '../../outbox/inbox-store.ts';
import {
  type AttemptsRow,
  attemptsFromRow,
  DEAD_LETTER_COLUMNS,
  type DeadLetterRow,
  deadLetterFromRow,
} from '../../outbox/sql-inbox.ts';
import { checkSqlIdentifier } from '../sql-identifier.ts';
import type { SqliteDatabase, SqliteStatement } from './idempotency-store.ts';

/** Options of {@link sqliteInbox}. */
export interface SqliteInboxOptions<D extends SqliteDatabase = SqliteDatabase> {
  /** The user's open handle; every statement and transaction runs on it, and handlers receive it. */
  db: D;
  /**
   * Name of the inbox table; the attempts and dead letters live in `<table>_attempts` and
   * `<table>_dead_letters`. Letters, digits and `_`, not starting with a digit, at most 32 characters.
   * @default 'keel_inbox'
   */
  table?: string;
  /**
   * Wall time for `processed_at`.
   * @default wallClock
   */
  clock?: WallClock;
}

const DEFAULTS = Object.freeze({ table: 'keel_inbox' });

const MAX_TABLE_LENGTH = 32;

/**
 * The DDL of the inbox tables, for a migration tool. Idempotent (`IF NOT EXISTS`); times are
 * `INTEGER` epoch milliseconds, payload and headers JSON text.
 *
 * @example
 * db.exec(sqliteInboxDdl({ table: 'invoice_inbox' }));
 */
export function sqliteInboxDdl(options: { table?: string } = {}): string {
  const table = checkSqlIdentifier('table', options.table ?? DEFAULTS.table, MAX_TABLE_LENGTH);
  return `CREATE TABLE IF NOT EXISTS "${table}" (
  group_name TEXT NOT NULL,
  event_id TEXT NOT NULL,
  processed_at INTEGER NOT NULL,
  PRIMARY KEY (group_name, event_id)
);
CREATE INDEX IF NOT EXISTS "${table}_processed_idx" ON "${table}" (processed_at);
CREATE TABLE IF NOT EXISTS "${table}_attempts" (
  group_name TEXT NOT NULL,
  event_id TEXT NOT NULL,
  attempts INTEGER NOT NULL,
  first_failed_at INTEGER NOT NULL,
  last_failed_at INTEGER NOT NULL,
  last_error TEXT NOT NULL,
  last_error_stack TEXT,
  PRIMARY KEY (group_name, event_id)
);
CREATE INDEX IF NOT EXISTS "${table}_attempts_failed_idx" ON "${table}_attempts" (last_failed_at);
CREATE TABLE IF NOT EXISTS "${table}_dead_letters" (
  group_name TEXT NOT NULL,
  event_id TEXT NOT NULL,
  type TEXT NOT NULL,
  aggregate_type TEXT NOT NULL,
  aggregate_id TEXT NOT NULL,
  payload TEXT NOT NULL,
  headers TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  attempts INTEGER NOT NULL,
  first_failed_at INTEGER NOT NULL,
  last_failed_at INTEGER NOT NULL,
  last_error TEXT,
  last_error_stack TEXT,
  PRIMARY KEY (group_name, event_id)
);
CREATE INDEX IF NOT EXISTS "${table}_dead_letters_created_idx" ON "${table}_dead_letters" (group_name, created_at);
CREATE INDEX IF NOT EXISTS "${table}_dead_letters_type_idx" ON "${table}_dead_letters" (group_name, type);
CREATE INDEX IF NOT EXISTS "${table}_dead_letters_aggregate_idx" ON "${table}_dead_letters" (group_name, aggregate_type, aggregate_id);
`;
}

type StatementName =
  | 'insert'
  | 'processed'
  | 'clearAttempts'
  | 'clearDeadLetter'
  | 'recordFailure'
  | 'attempts'
  | 'deadLetter'
  | 'upsertDeadLetter'
  | 'deadLetters'
  | 'removeDeadLetters'
  | 'count'
  | 'pruneInbox'
  | 'pruneAttempts';

/**
 * An inbox in SQLite. Each `process` runs `BEGIN IMMEDIATE`, inserts the `(group, id)` row with
 * `ON CONFLICT DO NOTHING` — no row inserted means a duplicate, and nothing else runs — then awaits
 * the handler with the handle itself as `tx` and commits.
 *
 * A SQLite handle holds one transaction at a time, and any statement run on it while a transaction
 * is open belongs to that transaction. So this store runs everything it does on its handle one at a
 * time, in order, even while a handler awaits: deliveries on one handle are handled serially (SQLite
 * serialises writers anyway). Other code that opens a transaction on the same handle while a handler
 * is awaiting would fail with "cannot start a transaction within a transaction"; give the inbox its
 * own handle, or do those writes inside the handlers. Several processes may share the file in WAL
 * mode with a `busy_timeout`: `BEGIN IMMEDIATE` makes them take turns.
 *
 * @example
 * const inbox = sqliteInbox({ db });
 * const consumer = outboxConsumer({ transport, inbox, group: 'invoices', handlers: {
 *   'payment.completed': async (event, tx) => {
 *     tx.prepare('INSERT INTO invoices (payment_id) VALUES (?)').run(event.aggregateId);
 *   },
 * } });
 */
export class SqliteInboxStore<D extends SqliteDatabase = SqliteDatabase> implements InboxStore<D> {
  readonly db: D;
  readonly table: string;
  /** The DDL {@link ensureSchema} runs, for a migration tool. */
  readonly ddl: string;
  readonly #clock: WallClock;
  readonly #sql: Readonly<Record<StatementName, string>>;
  readonly #statements = new Map<StatementName, SqliteStatement>();
  /** The end of the queue of work on the handle; see the class comment. */
  #tail: Promise<unknown> = Promise.resolve();

  constructor(options: SqliteInboxOptions<D>) {
    if (typeof options?.db?.prepare !== 'function' || typeof options.db.exec !== 'function') {
      throw new InvalidOptionError(
        'db',
        'must be a node:sqlite DatabaseSync or better-sqlite3 Database (prepare and exec methods)',
      );
    }
    if (options.clock !== undefined && typeof options.clock?.now !== 'function') {
      throw new InvalidOptionError('clock', 'must have a now() method returning epoch milliseconds');
    }
    this.db = options.db;
    this.table = checkSqlIdentifier('table', options.table ?? DEFAULTS.table, MAX_TABLE_LENGTH);
    this.#clock = options.clock ?? wallClock;
    this.ddl = sqliteInboxDdl({ table: this.table });
    const inbox = `"${this.table}"`;
    const attempts = `"${this.table}_attempts"`;
    const dead = `"${this.table}_dead_letters"`;
    this.#sql = Object.freeze({
      insert: `INSERT INTO ${inbox} (group_name, event_id, processed_at) VALUES (?, ?, ?)
        ON CONFLICT (group_name, event_id) DO NOTHING`,
      processed: `SELECT 1 AS found FROM ${inbox} WHERE group_name = ? AND event_id = ?`,
      clearAttempts: `DELETE FROM ${attempts} WHERE group_name = ? AND event_id = ?`,
      clearDeadLetter: `DELETE FROM ${dead} WHERE group_name = ? AND event_id = ?`,
      recordFailure: `INSERT INTO ${attempts} (group_name, event_id, attempts, first_failed_at, last_failed_at,
          last_error, last_error_stack) VALUES (?, ?, 1, ?, ?, ?, ?)
        ON CONFLICT (group_name, event_id) DO UPDATE SET attempts = attempts + 1,
          last_failed_at = excluded.last_failed_at, last_error = excluded.last_error,
          last_error_stack = excluded.last_error_stack
        RETURNING attempts, first_failed_at, last_failed_at, last_error, last_error_stack`,
      attempts: `SELECT attempts, first_failed_at, last_failed_at, last_error, last_error_stack
        FROM ${attempts} WHERE group_name = ? AND event_id = ?`,
      deadLetter: `SELECT ${DEAD_LETTER_COLUMNS} FROM ${dead} WHERE group_name = ? AND event_id = ?`,
      upsertDeadLetter: `INSERT INTO ${dead} (${DEAD_LETTER_COLUMNS})
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
        ON CONFLICT (group_name, event_id) DO UPDATE SET attempts = excluded.attempts,
          first_failed_at = excluded.first_failed_at, last_failed_at = excluded.last_failed_at,
          last_error = excluded.last_error, last_error_stack = excluded.last_error_stack`,
      // Anonymous parameters only, each criterion bound twice: better-sqlite3 binds numbered ones
      // (`?1`) only by name, so an array of values would not reach them.
      deadLetters: `SELECT ${DEAD_LETTER_COLUMNS} FROM ${dead} WHERE group_name = ?
        AND (? IS NULL OR event_id IN (SELECT value FROM json_each(?)))
        AND (? IS NULL OR type = ?)
        AND (? IS NULL OR aggregate_type = ?)
        AND (? IS NULL OR aggregate_id = ?)
        AND (? IS NULL OR created_at >= ?)
        AND (? IS NULL OR created_at < ?)
        ORDER BY created_at, event_id LIMIT ?`,
      removeDeadLetters: `DELETE FROM ${dead} WHERE group_name = ?
        AND event_id IN (SELECT value FROM json_each(?))`,
      count: `SELECT count(*) AS n FROM ${dead} WHERE ? IS NULL OR group_name = ?`,
      pruneInbox: `DELETE FROM ${inbox} WHERE rowid IN (
        SELECT rowid FROM ${inbox} WHERE processed_at < ? ORDER BY processed_at LIMIT ?)`,
      pruneAttempts: `DELETE FROM ${attempts} WHERE rowid IN (
        SELECT rowid FROM ${attempts} WHERE last_failed_at < ? ORDER BY last_failed_at LIMIT ?)`,
    });
    this.ensureSchema();
  }

  /**
   * Creates the tables and indexes unless they exist. The constructor calls it; it is public for a
   * handle whose database was swapped or wiped.
   *
   * @example
   * sqliteInbox({ db }).ensureSchema();
   */
  ensureSchema(): void {
    this.db.exec(this.ddl);
    this.#statements.clear();
  }

  #statement(name: StatementName): SqliteStatement {
    let statement = this.#statements.get(name);
    if (statement === undefined) {
      statement = this.db.prepare(this.#sql[name]);
      this.#statements.set(name, statement);
    }
    return statement;
  }

  /** Runs `work` after everything queued before it on this handle has finished. */
  #exclusive<T>(work: () => T | Promise<T>): Promise<T> {
    const result = this.#tail.then(work);
    this.#tail = result.catch(() => undefined);
    return result;
  }

  /** Runs `work` inside `BEGIN IMMEDIATE` … `COMMIT`, rolling back when it throws. */
  #transaction<T>(work: () => T | Promise<T>): Promise<T> {
    return this.#exclusive(async () => {
      this.db.exec('BEGIN IMMEDIATE');
      try {
        const result = await work();
        this.db.exec('COMMIT');
        return result;
      } catch (error) {
        // A failed COMMIT (SQLITE_BUSY) leaves the transaction open: roll it back too.
        this.#rollback();
        throw error;
      }
    });
  }

  #rollback(): void {
    try {
      this.db.exec('ROLLBACK');
    } catch {
      // The handler ended the transaction itself, or SQLite already rolled it back (a failed COMMIT
      // under SQLITE_FULL, say): there is nothing left to undo.
    }
  }

  process<T>(group: string, eventId: string, work: (tx: D) => Promise<T>): Promise<InboxResult<T>> {
    const duplicate = Symbol('duplicate');
    return this.#transaction(async () => {
      const inserted = this.#statement('insert').run(group, eventId, this.#clock.now());
      // Nothing was written; throwing the sentinel rolls the empty transaction back.
      if (Number(inserted.changes) !== 1) throw duplicate;
      const value = await work(this.db);
      this.#statement('clearAttempts').run(group, eventId);
      this.#statement('clearDeadLetter').run(group, eventId);
      return { duplicate: false, value } as const;
    }).catch((error: unknown) => {
      if (error === duplicate) return { duplicate: true } as const;
      throw error;
    });
  }

  isProcessed(group: string, eventId: string): Promise<boolean> {
    return this.#exclusive(() => this.#statement('processed').get(group, eventId) !== undefined);
  }

  recordFailure(
    group: string,
    eventId: string,
    failure: FailureSummary,
    at: number,
  ): Promise<FailedAttempts> {
    return this.#exclusive(() => {
      const row = this.#statement('recordFailure').get(
        group,
        eventId,
        at,
        at,
        failure.message,
        failure.stack,
      );
      return attemptsFromRow(row as AttemptsRow);
    });
  }

  failedAttempts(group: string, eventId: string): Promise<FailedAttempts | undefined> {
    return this.#exclusive(() => {
      const row = this.#statement('attempts').get(group, eventId) as AttemptsRow | undefined;
      return row && attemptsFromRow(row);
    });
  }

  deadLetter(group: string, event: OutboxEvent): Promise<DeadLetterOutcome> {
    return this.#transaction((): DeadLetterOutcome => {
      const row = this.#statement('attempts').get(group, event.id) as AttemptsRow | undefined;
      const failed = row && attemptsFromRow(row);
      this.#statement('clearAttempts').run(group, event.id);
      if (this.#statement('processed').get(group, event.id) !== undefined) return 'duplicate';
      const existingRow = this.#statement('deadLetter').get(group, event.id) as DeadLetterRow | undefined;
      const existing = existingRow && deadLetterFromRow(existingRow, 'text');
      if (failed === undefined && existing !== undefined) return 'dead-lettered';
      const now = this.#clock.now();
      const lastError = failed?.lastError ?? existing?.lastError ?? null;
      this.#statement('upsertDeadLetter').run(
        group,
        event.id,
        event.type,
        event.aggregateType,
        event.aggregateId,
        JSON.stringify(event.payload) ?? 'null',
        JSON.stringify(event.headers ?? {}),
        event.createdAt,
        (existing?.attempts ?? 0) + (failed?.attempts ?? 0),
        Math.min(existing?.firstFailedAt ?? Infinity, failed?.firstFailedAt ?? now),
        failed?.lastFailedAt ?? existing?.lastFailedAt ?? now,
        lastError?.message ?? null,
        lastError?.stack ?? null,
      );
      return 'dead-lettered';
    });
  }

  async deadLetters(group: string, filter: DeadLetterFilter): Promise<DeadLetter[]> {
    const checked = checkEventSelection(filter);
    return this.#exclusive(() => {
      const ids = checked.ids === null ? null : JSON.stringify(checked.ids);
      const rows = this.#statement('deadLetters').all(
        group,
        ids,
        ids,
        checked.type,
        checked.type,
        checked.aggregateType,
        checked.aggregateType,
        checked.aggregateId,
        checked.aggregateId,
        checked.since,
        checked.since,
        checked.until,
        checked.until,
        checked.limit,
      ) as DeadLetterRow[];
      return rows.map((row) => deadLetterFromRow(row, 'text'));
    });
  }

  async removeDeadLetters(group: string, eventIds: readonly string[]): Promise<number> {
    if (eventIds.length === 0) return 0;
    return this.#exclusive(() =>
      Number(this.#statement('removeDeadLetters').run(group, JSON.stringify(eventIds)).changes),
    );
  }

  countDeadLetters(group?: string): Promise<number> {
    return this.#exclusive(() => {
      const row = this.#statement('count').get(group ?? null, group ?? null) as { n: number | bigint };
      return Number(row.n);
    });
  }

  async prune(before: number, limit: number): Promise<number> {
    if (checkPruneLimit(limit) === 0) return 0;
    return this.#exclusive(
      () =>
        Number(this.#statement('pruneInbox').run(before, limit).changes) +
        Number(this.#statement('pruneAttempts').run(before, limit).changes),
    );
  }
}

/**
 * Builds a {@link SqliteInboxStore} over the user's handle, creating its tables if absent.
 *
 * @example
 * import { DatabaseSync } from 'node:sqlite';
 * const db = new DatabaseSync('app.db', { timeout: 5000 });
 * db.exec('PRAGMA journal_mode = WAL');
 * const inbox = sqliteInbox({ db, table: 'invoice_inbox' });
 * await inbox.process('invoices', event.id, async (tx) => {
 *   tx.prepare('INSERT INTO invoices (payment_id) VALUES (?)').run(event.aggregateId);
 * });
 */
export function sqliteInbox<D extends SqliteDatabase>(options: SqliteInboxOptions<D>): SqliteInboxStore<D> {
  return new SqliteInboxStore(options);
}
