/**
 * How an idempotency record maps to SQL columns, shared by the SQL stores so each keeps only its
 * dialect: the column list, the row → record conversion, and the values of an insert or update.
 *
 * @module
 */
import type { IdempotencyRecord, RecordState, StoredResponse } from './store.ts';

/** Every column, `key` first, in the order {@link recordValues} follows after the key. */
export const RECORD_COLUMNS =
  'key, fingerprint, state, token, lease_until, expires_at, sequence, response, recovery_point, phases, created_at, updated_at';

/**
 * A row as drivers return it: integers as numbers, bigints or strings (`pg` returns `bigint` as a
 * string), JSON either parsed (`jsonb`) or as text.
 */
export interface RecordRow {
  key: string;
  fingerprint: string;
  state: RecordState;
  token: string;
  lease_until: string | number | bigint;
  expires_at: string | number | bigint;
  sequence: string | number | bigint | null;
  response: StoredResponse | string | null;
  recovery_point: string | null;
  phases: Record<string, unknown> | string;
  created_at: string | number | bigint;
  updated_at: string | number | bigint;
}

/** The record a row holds. */
export function recordFromRow(row: RecordRow): IdempotencyRecord {
  return {
    key: row.key,
    fingerprint: row.fingerprint,
    state: row.state,
    token: row.token,
    leaseUntil: Number(row.lease_until),
    expiresAt: Number(row.expires_at),
    sequence: row.sequence === null ? null : Number(row.sequence),
    response: typeof row.response === 'string' ? (JSON.parse(row.response) as StoredResponse) : row.response,
    recoveryPoint: row.recovery_point,
    phases: typeof row.phases === 'string' ? (JSON.parse(row.phases) as Record<string, unknown>) : row.phases,
    createdAt: Number(row.created_at),
    updatedAt: Number(row.updated_at),
  };
}

/** The record's columns after `key`, in {@link RECORD_COLUMNS} order, as query values. */
export function recordValues(record: IdempotencyRecord): Array<string | number | null> {
  return [
    record.fingerprint,
    record.state,
    record.token,
    record.leaseUntil,
    record.expiresAt,
    record.sequence,
    record.response === null ? null : JSON.stringify(record.response),
    record.recoveryPoint,
    JSON.stringify(record.phases),
    record.createdAt,
    record.updatedAt,
  ];
}

/** A sweep's `limit`: a whole number ≥ 0. */
export function checkSweepLimit(limit: number): number {
  if (!Number.isInteger(limit) || limit < 0) {
    throw new RangeError(`limit: must be an integer ≥ 0, got ${String(limit)}`);
  }
  return limit;
}
