/**
 * What the SQL outbox stores share: the columns they select, turning a row back into an event, and
 * the checks on the arguments of claim, find and prune, so every adapter accepts the same calls and
 * returns the same shapes. Internal to the stores.
 *
 * @module
 */
import { InvalidOptionError } from '../errors/keel-error.ts';
import { ClaimedEvent, type OutboxFilter, type StoredOutboxEvent } from './outbox-store.ts';

/** The columns every select of an event returns, in the stores' column names. */
export const OUTBOX_SELECT_COLUMNS =
  'seq, id, type, aggregate_type, aggregate_id, payload, headers, created_at, published_at, attempts, last_error';

/**
 * The columns a claim returns: what {@link claimedFromRow} reads, and `seq`. {@link claimedFromValues}
 * reads them by position, in this order.
 */
export const OUTBOX_CLAIM_COLUMNS =
  'seq, id, type, aggregate_type, aggregate_id, payload, headers, created_at, attempts';

/** A row as the drivers return it: Postgres `bigint` arrives as a string, JSON columns as text. */
export interface OutboxRow {
  seq: number | string | bigint;
  id: string;
  type: string;
  aggregate_type: string;
  aggregate_id: string;
  payload: string;
  headers: string;
  created_at: number | string | bigint;
  published_at: number | string | bigint | null;
  attempts: number | string | bigint;
  last_error: string | null;
}

/** Most events carry no headers: they share one frozen empty object instead of parsing `{}` each. */
const NO_HEADERS: Readonly<Record<string, string>> = Object.freeze({});

function headersFromJson(json: string): Readonly<Record<string, string>> {
  return json === '{}' ? NO_HEADERS : Object.freeze(JSON.parse(json) as Record<string, string>);
}

/** The row as the relay receives it from a claim. */
export function claimedFromRow(row: Omit<OutboxRow, 'published_at' | 'last_error'>): ClaimedEvent {
  return new ClaimedEvent(
    row.id,
    row.type,
    row.aggregate_type,
    row.aggregate_id,
    JSON.parse(row.payload) as unknown,
    headersFromJson(row.headers),
    Number(row.created_at),
    Number(row.attempts),
  );
}

/** Positions of the claim's columns in a row read as an array ({@link OUTBOX_CLAIM_COLUMNS}). */
export const CLAIM_SEQ = 0;
export const CLAIM_AGGREGATE_TYPE = 3;
export const CLAIM_AGGREGATE_ID = 4;

/**
 * The row as the relay receives it from a claim, from a driver that returns rows as arrays of
 * {@link OUTBOX_CLAIM_COLUMNS}: no object with the column names is built and thrown away per row.
 */
export function claimedFromValues(values: readonly unknown[]): ClaimedEvent {
  return new ClaimedEvent(
    values[1] as string,
    values[2] as string,
    values[3] as string,
    values[4] as string,
    JSON.parse(values[5] as string) as unknown,
    headersFromJson(values[6] as string),
    Number(values[7]),
    Number(values[8]),
  );
}

/** The row as `find` returns it. */
export function storedFromRow(row: OutboxRow): StoredOutboxEvent {
  return Object.freeze({
    id: row.id,
    type: row.type,
    aggregateType: row.aggregate_type,
    aggregateId: row.aggregate_id,
    payload: JSON.parse(row.payload) as unknown,
    headers: headersFromJson(row.headers),
    createdAt: Number(row.created_at),
    publishedAt: row.published_at === null ? null : Number(row.published_at),
    attempts: Number(row.attempts),
    lastError: row.last_error,
  });
}

/** Sorts rows by append order: `UPDATE … RETURNING` promises no order. */
export function byAppendOrder(a: OutboxRow, b: OutboxRow): number {
  return Number(a.seq) - Number(b.seq);
}

/** Default and largest `limit` of `find`. */
export const DEFAULT_FIND_LIMIT = 1_000;
export const MAX_FIND_LIMIT = 100_000;

/** A checked {@link OutboxFilter}: absent criteria are `null`. */
export interface CheckedOutboxFilter {
  readonly ids: readonly string[] | null;
  readonly since: number | null;
  readonly until: number | null;
  readonly type: string | null;
  readonly aggregateType: string | null;
  readonly aggregateId: string | null;
  readonly published: boolean | null;
  readonly limit: number;
}

function optionalString(name: string, value: unknown): string | null {
  if (value === undefined) return null;
  if (typeof value !== 'string' || value === '') {
    throw new InvalidOptionError(name, `must be a non-empty string, got ${JSON.stringify(value)}`);
  }
  return value;
}

function optionalTime(name: string, value: unknown): number | null {
  if (value === undefined) return null;
  if (typeof value !== 'number' || !Number.isFinite(value)) {
    throw new InvalidOptionError(name, `must be epoch milliseconds, got ${String(value)}`);
  }
  return value;
}

/** Validates a filter of `find`; a bad criterion throws `InvalidOptionError` naming it. */
export function checkOutboxFilter(filter: OutboxFilter): CheckedOutboxFilter {
  if (typeof filter !== 'object' || filter === null) {
    throw new InvalidOptionError('filter', 'must be an object');
  }
  let ids: readonly string[] | null = null;
  if (filter.ids !== undefined) {
    if (!Array.isArray(filter.ids) || filter.ids.some((id) => typeof id !== 'string')) {
      throw new InvalidOptionError('ids', 'must be an array of strings');
    }
    ids = filter.ids;
  }
  if (filter.published !== undefined && typeof filter.published !== 'boolean') {
    throw new InvalidOptionError('published', `must be a boolean, got ${String(filter.published)}`);
  }
  const limit = filter.limit ?? DEFAULT_FIND_LIMIT;
  if (!Number.isInteger(limit) || limit < 1 || limit > MAX_FIND_LIMIT) {
    throw new InvalidOptionError(
      'limit',
      `must be an integer from 1 to ${MAX_FIND_LIMIT}, got ${String(limit)}`,
    );
  }
  return {
    ids,
    since: optionalTime('since', filter.since),
    until: optionalTime('until', filter.until),
    type: optionalString('type', filter.type),
    aggregateType: optionalString('aggregateType', filter.aggregateType),
    aggregateId: optionalString('aggregateId', filter.aggregateId),
    published: filter.published ?? null,
    limit,
  };
}

/** Validates the arguments of `claim`. */
export function checkClaim(relayId: string, limit: number, leaseMs: number): void {
  checkRelayId(relayId);
  if (!Number.isInteger(limit) || limit < 1 || limit > MAX_FIND_LIMIT) {
    throw new InvalidOptionError(
      'limit',
      `must be an integer from 1 to ${MAX_FIND_LIMIT}, got ${String(limit)}`,
    );
  }
  if (!Number.isInteger(leaseMs) || leaseMs < 1) {
    throw new InvalidOptionError('leaseMs', `must be an integer ≥ 1, got ${String(leaseMs)}`);
  }
}

/** A relay id: a non-empty string of at most 255 characters. */
export function checkRelayId(relayId: unknown): string {
  if (typeof relayId !== 'string' || relayId === '' || relayId.length > 255) {
    throw new InvalidOptionError(
      'relayId',
      `must be a non-empty string of at most 255 characters, got ${JSON.stringify(relayId)}`,
    );
  }
  return relayId;
}

/** Validates the arguments of `prunePublished`; a limit of 0 prunes nothing. */
export function checkPrune(before: number, limit: number): void {
  if (typeof before !== 'number' || !Number.isFinite(before)) {
    throw new InvalidOptionError('before', `must be epoch milliseconds, got ${String(before)}`);
  }
  if (!Number.isInteger(limit) || limit < 0 || limit > MAX_FIND_LIMIT) {
    throw new InvalidOptionError(
      'limit',
      `must be an integer from 0 to ${MAX_FIND_LIMIT}, got ${String(limit)}`,
    );
  }
}

/** Validates a list of event ids (`markPublished`, `unclaim`, `requeue`). */
export function checkIds(ids: readonly string[]): readonly string[] {
  if (!Array.isArray(ids) || ids.some((id) => typeof id !== 'string')) {
    throw new InvalidOptionError('ids', 'must be an array of strings');
  }
  return ids;
}
