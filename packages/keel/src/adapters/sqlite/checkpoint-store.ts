/**
 * Backfill checkpoints in a SQLite table, on the same handle as the backfill's writes: each batch
 * runs in one `BEGIN IMMEDIATE` transaction with the save of its cursor, so a process killed at any
 * point leaves the batch and its checkpoint both committed or both absent. The table is created on
 * the first write, never by a read or a dry run.
 *
 * @module
 */
import type { TransactionHandle } from '../../idempotency/store.ts';
import { BackfillConflictError } from '../../repair/backfill-errors.ts';
import type { BackfillCheckpoint, CheckpointStore } from '../../repair/checkpoint-store.ts';
import { checkSqlIdentifier } from '../sql-identifier.ts';
import type { SqliteDatabase } from './idempotency-store.ts';

/** Options of {@link sqliteCheckpoints}. */
export interface SqliteCheckpointsOptions {
  /** The handle the backfill reads and writes through; its transactions run on it. */
  readonly db: SqliteDatabase;
  /**
   * Table name: letters, digits and `_`, not starting with a digit, at most 48 characters.
   * @default 'keel_backfill_checkpoints'
   */
  readonly table?: string;
}

const DEFAULTS = Object.freeze({ table: 'keel_backfill_checkpoints' });

interface CheckpointRow {
  name: string;
  cursor: string | null;
  applied: number | bigint;
  batches: number | bigint;
  updated_at: number | bigint;
}

function checkpointFromRow(r: CheckpointRow): BackfillCheckpoint {
  return Object.freeze({
    name: r.name,
    cursor: r.cursor === null ? null : (JSON.parse(r.cursor) as BackfillCheckpoint['cursor']),
    applied: Number(r.applied),
    batches: Number(r.batches),
    updatedAt: Number(r.updated_at),
  });
}

/**
 * The DDL of the checkpoint table, for a migration tool. Idempotent (`IF NOT EXISTS`).
 *
 * @example
 * db.exec(sqliteCheckpointsDdl({ table: 'repair_checkpoints' }));
 */
export function sqliteCheckpointsDdl(options: { table?: string } = {}): string {
  const table = checkSqlIdentifier('table', options.table ?? DEFAULTS.table, 48);
  return `CREATE TABLE IF NOT EXISTS "${table}" (
  name TEXT PRIMARY KEY,
  cursor TEXT,
  applied INTEGER NOT NULL,
  batches INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
)`;
}

/**
 * A {@link CheckpointStore} in one SQLite table; `transaction` runs `BEGIN IMMEDIATE` on `db` (a
 * read-only one `BEGIN` … `ROLLBACK`), so the handle must not be inside a transaction already.
 *
 * @example
 * import { DatabaseSync } from 'node:sqlite';
 * const db = new DatabaseSync('app.db');
 * const report = await backfill({ name: 'payment-events', checkpoints: sqliteCheckpoints({ db }), nextBatch, cursorOf, apply });
 */
export function sqliteCheckpoints(options: SqliteCheckpointsOptions): CheckpointStore {
  const db = options.db;
  if (typeof db?.prepare !== 'function' || typeof db.exec !== 'function') {
    throw new TypeError('db: must be a SQLite handle (an object with prepare and exec methods)');
  }
  const table = checkSqlIdentifier('table', options.table ?? DEFAULTS.table, 48);
  const ddl = sqliteCheckpointsDdl({ table });
  const t = `"${table}"`;
  return {
    atomic: true,
    async read(name) {
      const exists = db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?").get(table);
      if (exists === undefined) return undefined;
      const row = db.prepare(`SELECT * FROM ${t} WHERE name = ?`).get(name) as CheckpointRow | undefined;
      return row === undefined ? undefined : checkpointFromRow(row);
    },
    async transaction<T>(fn: (tx: TransactionHandle) => Promise<T>, { readOnly = false } = {}) {
      db.exec(readOnly ? 'BEGIN' : 'BEGIN IMMEDIATE');
      try {
        if (!readOnly) db.exec(ddl);
        const value = await fn(db);
        db.exec(readOnly ? 'ROLLBACK' : 'COMMIT');
        return value;
      } catch (error) {
        try {
          db.exec('ROLLBACK');
        } catch {
          // Already rolled back by SQLite itself (a failed COMMIT, a busy timeout).
        }
        throw error;
      }
    },
    async save(tx, next, previous) {
      const handle = tx as SqliteDatabase;
      const cursor = next.cursor === null ? null : JSON.stringify(next.cursor);
      const changes =
        previous === undefined
          ? handle
              .prepare(
                `INSERT INTO ${t} (name, cursor, applied, batches, updated_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (name) DO NOTHING`,
              )
              .run(next.name, cursor, next.applied, next.batches, next.updatedAt).changes
          : handle
              .prepare(
                `UPDATE ${t} SET cursor = ?, applied = ?, batches = ?, updated_at = ? WHERE name = ? AND batches = ?`,
              )
              .run(cursor, next.applied, next.batches, next.updatedAt, next.name, previous.batches).changes;
      if (Number(changes) !== 1) throw new BackfillConflictError(next.name);
    },
  };
}
