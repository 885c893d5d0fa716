/**
 * Backfill checkpoints in a Postgres table: each batch runs on one client from the user's pool in
 * one transaction with the save of its cursor, so a process killed at any point leaves the batch
 * and its checkpoint both committed or both absent. The save is a compare-and-set on the batch
 * count, so two runs of one backfill cannot both move the cursor. The table is created on the first
 * write, never by a read or a dry run (whose transactions are `READ ONLY` and roll back).
 *
 * @module
 */
import type { TransactionHandle } from '../../idempotency/store.ts';
import { BackfillConflictError } from '../../repair/backfill-errors.ts';
import type { BackfillCheckpoint, CheckpointStore } from '../../repair/checkpoint-store.ts';
import { checkSqlIdentifier } from '../sql-identifier.ts';
import type { PostgresQueryable } from './idempotency-store.ts';
import type { PostgresPool } from './inbox-store.ts';

/** Options of {@link postgresCheckpoints}. */
export interface PostgresCheckpointsOptions {
  /** The user's `pg.Pool`; each batch's transaction runs on a client from it, which `apply` receives. */
  readonly pool: PostgresPool;
  /**
   * Table name: letters, digits and `_`, not starting with a digit, at most 48 characters.
   * @default 'keel_backfill_checkpoints'
   */
  readonly table?: string;
}

const DEFAULTS = Object.freeze({ table: 'keel_backfill_checkpoints' });

/**
 * The DDL of the checkpoint table, for a migration tool. Idempotent (`IF NOT EXISTS`).
 *
 * @example
 * await pool.query(postgresCheckpointsDdl());
 */
export function postgresCheckpointsDdl(options: { table?: string } = {}): string {
  const table = checkSqlIdentifier('table', options.table ?? DEFAULTS.table, 48);
  return `CREATE TABLE IF NOT EXISTS "${table}" (
  name text PRIMARY KEY,
  cursor text,
  applied bigint NOT NULL,
  batches bigint NOT NULL,
  updated_at bigint NOT NULL
)`;
}

function fromRow(row: Record<string, unknown>): BackfillCheckpoint {
  return Object.freeze({
    name: String(row.name),
    cursor: row.cursor === null ? null : (JSON.parse(String(row.cursor)) as BackfillCheckpoint['cursor']),
    applied: Number(row.applied),
    batches: Number(row.batches),
    updatedAt: Number(row.updated_at),
  });
}

/**
 * A {@link CheckpointStore} in one Postgres table.
 *
 * @example
 * import pg from 'pg';
 * const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL });
 * const report = await backfill({ name: 'payment-events', checkpoints: postgresCheckpoints({ pool }), nextBatch, cursorOf, apply });
 */
export function postgresCheckpoints(options: PostgresCheckpointsOptions): CheckpointStore {
  const pool = options.pool;
  if (typeof pool?.connect !== 'function' || typeof pool.query !== 'function') {
    throw new TypeError('pool: must be a pg Pool (an object with connect and query methods)');
  }
  const table = checkSqlIdentifier('table', options.table ?? DEFAULTS.table, 48);
  const ddl = postgresCheckpointsDdl({ table });
  const t = `"${table}"`;
  return {
    atomic: true,
    async read(name) {
      const found = await pool.query('SELECT to_regclass($1) IS NOT NULL AS present', [t]);
      if ((found.rows[0] as { present: boolean } | undefined)?.present !== true) return undefined;
      const { rows } = await pool.query(`SELECT * FROM ${t} WHERE name = $1`, [name]);
      const row = rows[0] as Record<string, unknown> | undefined;
      return row === undefined ? undefined : fromRow(row);
    },
    async transaction<T>(fn: (tx: TransactionHandle) => Promise<T>, { readOnly = false } = {}) {
      const client = await pool.connect();
      try {
        await client.query(readOnly ? 'BEGIN READ ONLY' : 'BEGIN');
        if (!readOnly) await client.query(ddl);
        const value = await fn(client);
        await client.query(readOnly ? 'ROLLBACK' : 'COMMIT');
        client.release();
        return value;
      } catch (error) {
        try {
          await client.query('ROLLBACK');
          client.release();
        } catch (rollbackError) {
          client.release(rollbackError as Error);
        }
        throw error;
      }
    },
    async save(tx, next, previous) {
      const client = tx as PostgresQueryable;
      const cursor = next.cursor === null ? null : JSON.stringify(next.cursor);
      const result =
        previous === undefined
          ? await client.query(
              `INSERT INTO ${t} (name, cursor, applied, batches, updated_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO NOTHING`,
              [next.name, cursor, next.applied, next.batches, next.updatedAt],
            )
          : await client.query(
              `UPDATE ${t} SET cursor = $2, applied = $3, batches = $4, updated_at = $5 WHERE name = $1 AND batches = $6`,
              [next.name, cursor, next.applied, next.batches, next.updatedAt, previous.batches],
            );
      if (result.rowCount !== 1) throw new BackfillConflictError(next.name);
    },
  };
}
