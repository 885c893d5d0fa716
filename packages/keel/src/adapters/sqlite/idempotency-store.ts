import { InvalidOptionError } from '../../errors/keel-error.ts';
import {
  checkSweepLimit,
  RECORD_COLUMNS,
  type RecordRow,
  recordFromRow,
  recordValues,
} from '../../idempotency/sql-record.ts';
import type { IdempotencyRecord, IdempotencyStore, TransactionHandle } from '../../idempotency/store.ts';
import { checkSqlIdentifier } from '../sql-identifier.ts';
import { GroupCommit } from './group-commit.ts';
import { WriteWithoutBlocking } from './write-without-blocking.ts';

/** A value bound to a statement parameter. */
export type SqliteValue = string | number | bigint | null;

/**
 * The part of a prepared statement this store calls; `node:sqlite` `StatementSync` and
 * `better-sqlite3` `Statement` both have it.
 */
export interface SqliteStatement {
  run(...params: SqliteValue[]): { changes: number | bigint };
  get(...params: SqliteValue[]): unknown;
  all(...params: SqliteValue[]): unknown[];
}

/**
 * The part of a SQLite handle this store calls. Keel never imports a driver; pass a `node:sqlite`
 * `DatabaseSync` or a `better-sqlite3` `Database`.
 *
 * @example
 * import { DatabaseSync } from 'node:sqlite';
 * const db: SqliteDatabase = new DatabaseSync('app.db');
 */
export interface SqliteDatabase {
  prepare(sql: string): SqliteStatement;
  exec(sql: string): unknown;
}

/** Options of {@link sqliteStore}. */
export interface SqliteIdempotencyStoreOptions {
  /** The user's open handle; every statement runs on it. */
  db: SqliteDatabase;
  /**
   * Table name: letters, digits and `_`, starting with a letter or `_`, at most 48 characters.
   * @default 'keel_idempotency'
   */
  table?: string;
}

const DEFAULTS = Object.freeze({ table: 'keel_idempotency' });

const MAX_TABLE_LENGTH = 48;

/**
 * The DDL of the idempotency table, for a migration tool. Idempotent (`IF NOT EXISTS`). Times are
 * `INTEGER` epoch milliseconds; the response and phases are JSON text. A partial index serves the
 * expired-lease sweep and another the retention purge. Rows live in rowid order, not key order:
 * keys are hashes, so a table clustered on them would dirty a random page on every claim and again on
 * every completion, while recent rows share the last pages and a group commit writes them once.
 *
 * @example
 * db.exec(sqliteIdempotencyDdl({ table: 'idempotency' }));
 */
export function sqliteIdempotencyDdl(options: { table?: string } = {}): string {
  const table = checkSqlIdentifier('table', options.table ?? DEFAULTS.table, MAX_TABLE_LENGTH);
  return `CREATE TABLE IF NOT EXISTS "${table}" (
  id INTEGER PRIMARY KEY,
  key TEXT NOT NULL UNIQUE,
  fingerprint TEXT NOT NULL,
  state TEXT NOT NULL CHECK (state IN ('in-flight', 'completed')),
  token TEXT NOT NULL,
  lease_until INTEGER NOT NULL,
  expires_at INTEGER NOT NULL,
  sequence INTEGER,
  response TEXT,
  recovery_point TEXT,
  phases TEXT NOT NULL DEFAULT '{}',
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS "${table}_lease_idx" ON "${table}" (lease_until) WHERE state = 'in-flight';
CREATE INDEX IF NOT EXISTS "${table}_expires_idx" ON "${table}" (expires_at);
`;
}

type StatementName = 'get' | 'insert' | 'replace' | 'delete' | 'leases' | 'purge';

/**
 * An idempotency store in one SQLite table. Every primitive is a single statement, so it is atomic
 * without an explicit transaction: insert is `INSERT … ON CONFLICT DO NOTHING`, replace and delete
 * are fenced by `WHERE key = ? AND token = ?` and succeed only when a row `changes`. Statements are
 * prepared once and reused.
 *
 * SQLite drivers are synchronous, and in WAL mode each commit appends every page it dirtied to the
 * log, so the writes made without a `tx` — claiming a key, storing a response, releasing a key — are
 * group-committed: those queued during one event-loop turn run in one `BEGIN IMMEDIATE` … `COMMIT`,
 * and each promise resolves only after that commit. Reads, sweeps and writes given a `tx` run at
 * once. Consequences:
 *
 * - **Transactions.** A statement on a handle with an open `BEGIN` belongs to that transaction, so
 *   `lease.complete(response, { tx: db })` between your `BEGIN` and `COMMIT` commits the stored
 *   response with the business write (and a `ROLLBACK` undoes both) — joining is implicit. Passing
 *   another handle as `tx` runs the write on that handle instead. While a transaction stays open
 *   across an `await`, every other request's idempotency write on the same handle joins it too; give
 *   the store its own handle if your transactions span awaits.
 * - **Several processes.** Put the database in WAL mode (`PRAGMA journal_mode = WAL`) and set a
 *   `busy_timeout` (`PRAGMA busy_timeout = 5000`, or `new DatabaseSync(path, { timeout: 5000 })`) on
 *   every handle: then any number of processes can share one file, a writer waits for the lock instead
 *   of failing with `SQLITE_BUSY`, and the fenced statements keep each key's handler to one run.
 *   The store's own writes (group commits and purges) wait for the lock on a timer, not in SQLite's
 *   busy handler, which would sleep on your thread; they still fail with `SQLITE_BUSY` once the
 *   handle's busy timeout has passed.
 *   SQLite serialises writers, so this suits one machine, not a fleet on a network file system.
 *
 * @example
 * import { DatabaseSync } from 'node:sqlite';
 * const db = new DatabaseSync('app.db', { timeout: 5000 });
 * db.exec('PRAGMA journal_mode = WAL');
 * const engine = idempotency({ store: sqliteStore({ db }) });
 */
export class SqliteIdempotencyStore implements IdempotencyStore {
  readonly db: SqliteDatabase;
  readonly table: string;
  /** The DDL {@link ensureSchema} runs, for a migration tool. */
  readonly ddl: string;
  readonly #sql: Readonly<Record<StatementName, string>>;
  readonly #statements = new Map<StatementName, SqliteStatement>();
  /** `replace` statements prepared on other handles passed as `tx`. */
  readonly #txStatements = new WeakMap<object, SqliteStatement>();
  readonly #group: GroupCommit;
  /** The purge's deletes, which wait for another connection's write lock on a timer. */
  readonly #sweeps: WriteWithoutBlocking;

  constructor(options: SqliteIdempotencyStoreOptions) {
    if (typeof options?.db?.prepare !== 'function' || typeof options.db.exec !== 'function') {
      throw new InvalidOptionError(
        'db',
        'must be a node:sqlite DatabaseSync or better-sqlite3 Database (prepare and exec methods)',
      );
    }
    this.db = options.db;
    this.table = checkSqlIdentifier('table', options.table ?? DEFAULTS.table, MAX_TABLE_LENGTH);
    this.ddl = sqliteIdempotencyDdl({ table: this.table });
    this.#group = new GroupCommit(this.db);
    this.#sweeps = new WriteWithoutBlocking(this.db);
    const t = `"${this.table}"`;
    this.#sql = Object.freeze({
      get: `SELECT ${RECORD_COLUMNS} FROM ${t} WHERE key = ?`,
      insert: `INSERT INTO ${t} (${RECORD_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
        ON CONFLICT (key) DO NOTHING`,
      replace: `UPDATE ${t} SET fingerprint = ?, state = ?, token = ?, lease_until = ?, expires_at = ?,
        sequence = ?, response = ?, recovery_point = ?, phases = ?, created_at = ?, updated_at = ?
        WHERE key = ? AND token = ?`,
      delete: `DELETE FROM ${t} WHERE key = ? AND token = ?`,
      leases: `SELECT ${RECORD_COLUMNS} FROM ${t} WHERE state = 'in-flight' AND lease_until < ?
        ORDER BY lease_until LIMIT ?`,
      purge: `DELETE FROM ${t} WHERE key IN (
        SELECT key FROM ${t} WHERE expires_at < ? ORDER BY expires_at LIMIT ?)`,
    });
    this.ensureSchema();
  }

  /**
   * Creates the table and its indexes unless they exist. The constructor calls it; it is public for
   * a handle whose database was swapped or wiped.
   *
   * @example
   * sqliteStore({ db }).ensureSchema();
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

  async get(key: string): Promise<IdempotencyRecord | undefined> {
    const row = this.#statement('get').get(key) as RecordRow | undefined;
    return row && recordFromRow(row);
  }

  insertIfAbsent(record: IdempotencyRecord): Promise<boolean> {
    const insert = this.#statement('insert');
    return this.#group.run(() => Number(insert.run(record.key, ...recordValues(record)).changes) === 1);
  }

  /**
   * Compare-and-swap on the token. Runs on the store's handle — inside its open transaction, if any —
   * or on `tx` when that is another SQLite handle.
   */
  async replace(expectedToken: string, record: IdempotencyRecord, tx?: TransactionHandle): Promise<boolean> {
    const statement = this.#replaceOn(tx);
    const run = () => Number(statement.run(...recordValues(record), record.key, expectedToken).changes) === 1;
    // Inside the caller's transaction the write must happen now, before their COMMIT.
    return tx === undefined ? this.#group.run(run) : run();
  }

  #replaceOn(tx: TransactionHandle): SqliteStatement {
    if (tx === undefined || tx === null || tx === this.db) return this.#statement('replace');
    if (typeof (tx as Partial<SqliteDatabase>).prepare !== 'function') {
      throw new TypeError('tx: must be a SQLite handle (an object with a prepare method)');
    }
    const handle = tx as SqliteDatabase;
    let statement = this.#txStatements.get(handle);
    if (statement === undefined) {
      statement = handle.prepare(this.#sql.replace);
      this.#txStatements.set(handle, statement);
    }
    return statement;
  }

  delete(key: string, expectedToken: string): Promise<boolean> {
    const statement = this.#statement('delete');
    return this.#group.run(() => Number(statement.run(key, expectedToken).changes) === 1);
  }

  async expiredLeases(now: number, limit: number): Promise<IdempotencyRecord[]> {
    if (checkSweepLimit(limit) === 0) return [];
    return (this.#statement('leases').all(now, limit) as RecordRow[]).map(recordFromRow);
  }

  async purgeExpired(now: number, limit: number): Promise<number> {
    if (checkSweepLimit(limit) === 0) return 0;
    const purge = this.#statement('purge');
    return Number((await this.#sweeps.run(() => purge.run(now, limit))).changes);
  }
}

/**
 * Builds a {@link SqliteIdempotencyStore} over the user's handle, creating its table if absent.
 *
 * @example
 * import { DatabaseSync } from 'node:sqlite';
 * const db = new DatabaseSync('app.db', { timeout: 5000 }); // busy_timeout for other processes
 * db.exec('PRAGMA journal_mode = WAL');
 * const store = sqliteStore({ db, table: 'idempotency' });
 *
 * // The stored response commits with the business write:
 * db.exec('BEGIN IMMEDIATE');
 * db.prepare('INSERT INTO charges (id, amount) VALUES (?, ?)').run(id, amount);
 * await lease.complete(response, { tx: db });
 * db.exec('COMMIT');
 */
export function sqliteStore(options: SqliteIdempotencyStoreOptions): SqliteIdempotencyStore {
  return new SqliteIdempotencyStore(options);
}
