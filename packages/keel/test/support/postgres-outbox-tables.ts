/**
 * A Postgres outbox is three objects: the events' table, its queue of unpublished events and the
 * trigger function that keeps the queue. Dropping the events' table drops its triggers only.
 */
import type pg from 'pg';

export async function dropPostgresOutbox(pool: pg.Pool, table: string): Promise<void> {
  await pool.query(
    `DROP TABLE IF EXISTS "${table}", "${table}_pending"; DROP FUNCTION IF EXISTS "${table}_pending_sync"()`,
  );
}
