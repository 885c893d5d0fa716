/**
 * What the SQL inbox stores share: the rows of failed attempts and dead letters, and turning them
 * back into `FailedAttempts` and `DeadLetter`, so every adapter returns the same shapes. Internal to
 * the stores.
 *
 * @module
 */
import type { DeadLetter, FailedAttempts } from './inbox-store.ts';

type Integer = number | string | bigint;

/** A failed-attempts row as the drivers return it (Postgres `bigint` arrives as a string). */
export interface AttemptsRow {
  attempts: Integer;
  first_failed_at: Integer;
  last_failed_at: Integer;
  last_error: string;
  last_error_stack: string | null;
}

/** A dead-letter row. `payload` and `headers` are JSON text or, from Postgres `jsonb`, parsed. */
export interface DeadLetterRow {
  group_name: string;
  event_id: string;
  type: string;
  aggregate_type: string;
  aggregate_id: string;
  payload: unknown;
  headers: unknown;
  created_at: Integer;
  attempts: Integer;
  first_failed_at: Integer;
  last_failed_at: Integer;
  last_error: string | null;
  last_error_stack: string | null;
}

/** The columns a dead-letter select returns, in {@link DeadLetterRow}'s names. */
export const DEAD_LETTER_COLUMNS = `group_name, event_id, type, aggregate_type, aggregate_id, payload, headers,
  created_at, attempts, first_failed_at, last_failed_at, last_error, last_error_stack`;

export function attemptsFromRow(row: AttemptsRow): FailedAttempts {
  return {
    attempts: Number(row.attempts),
    firstFailedAt: Number(row.first_failed_at),
    lastFailedAt: Number(row.last_failed_at),
    lastError: { message: row.last_error, stack: row.last_error_stack },
  };
}

/**
 * The dead letter a row holds. `jsonColumns` says how the store keeps `payload` and `headers`:
 * `'text'` (parsed here) or `'parsed'` (the driver already did, as `pg` does for `jsonb`).
 */
export function deadLetterFromRow(row: DeadLetterRow, jsonColumns: 'text' | 'parsed'): DeadLetter {
  const decode = (value: unknown) => (jsonColumns === 'text' ? JSON.parse(value as string) : value);
  return {
    group: row.group_name,
    event: {
      id: row.event_id,
      type: row.type,
      aggregateType: row.aggregate_type,
      aggregateId: row.aggregate_id,
      payload: decode(row.payload) as unknown,
      headers: decode(row.headers) as Record<string, string>,
      createdAt: Number(row.created_at),
    },
    attempts: Number(row.attempts),
    firstFailedAt: Number(row.first_failed_at),
    lastFailedAt: Number(row.last_failed_at),
    lastError: row.last_error === null ? null : { message: row.last_error, stack: row.last_error_stack },
  };
}
