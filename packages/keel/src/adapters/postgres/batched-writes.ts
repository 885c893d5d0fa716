/**
 * The idempotency store's writes of one event-loop turn — claims, completions, releases — as a
 * single statement: one data-modifying CTE per kind, each over arrays (`unnest`). One statement is
 * one round trip and one commit however many requests it serves. Operations in one statement touch
 * distinct keys (the batch guarantees it), so each key's result is unambiguous.
 *
 * @module
 */

import { RECORD_COLUMNS, recordValues } from '../../idempotency/sql-record.ts';
import type { IdempotencyRecord } from '../../idempotency/store.ts';

/** One write the store batches. */
export type WriteOp =
  | { readonly kind: 'insert'; readonly record: IdempotencyRecord }
  | { readonly kind: 'replace'; readonly expectedToken: string; readonly record: IdempotencyRecord }
  | { readonly kind: 'delete'; readonly key: string; readonly expectedToken: string };

/** The element type of each {@link RECORD_COLUMNS} column when it travels as an `unnest` array. */
const RECORD_ARRAY_TYPES = [
  'text',
  'text',
  'text',
  'text',
  'bigint',
  'bigint',
  'bigint',
  'text',
  'text',
  'text',
  'bigint',
  'bigint',
] as const;

/** `v.key, v.fingerprint, …` with the `jsonb` columns cast back from text. */
const SELECT_VALUES = RECORD_COLUMNS.split(', ')
  .map((c) => (c === 'response' || c === 'phases' ? `v.${c}::jsonb` : `v.${c}`))
  .join(', ');

/** The key an operation writes. */
export function keyOfWrite(op: WriteOp): string {
  return op.kind === 'delete' ? op.key : op.record.key;
}

/** Builds the statement for a batch of writes on one table, caching its text per mix of kinds. */
export class BatchedWrites {
  readonly #table: string;
  readonly #texts = new Map<number, string>();

  /** @param table the quoted, schema-qualified table name */
  constructor(table: string) {
    this.#table = table;
  }

  /** The statement and its values for `ops` (distinct keys). */
  statement(ops: readonly WriteOp[]): { text: string; values: unknown[] } {
    const inserts: IdempotencyRecord[] = [];
    const replaces: Array<Extract<WriteOp, { kind: 'replace' }>> = [];
    const deletes: Array<Extract<WriteOp, { kind: 'delete' }>> = [];
    for (const op of ops) {
      if (op.kind === 'insert') inserts.push(op.record);
      else if (op.kind === 'replace') replaces.push(op);
      else deletes.push(op);
    }
    const values: unknown[] = [];
    if (inserts.length > 0) values.push(...columnsOf(inserts));
    if (replaces.length > 0) {
      values.push(
        replaces.map((op) => op.expectedToken),
        ...columnsOf(replaces.map((op) => op.record)),
      );
    }
    if (deletes.length > 0) {
      values.push(
        deletes.map((op) => op.key),
        deletes.map((op) => op.expectedToken),
      );
    }
    const mask = (inserts.length > 0 ? 1 : 0) | (replaces.length > 0 ? 2 : 0) | (deletes.length > 0 ? 4 : 0);
    let text = this.#texts.get(mask);
    if (text === undefined) {
      text = this.#text(mask);
      this.#texts.set(mask, text);
    }
    return { text, values };
  }

  /** Whether each operation took effect, from the statement's `(kind, key)` rows. */
  results(ops: readonly WriteOp[], rows: readonly unknown[]): boolean[] {
    const touched = new Set((rows as Array<{ key: string }>).map((row) => row.key));
    return ops.map((op) => touched.has(keyOfWrite(op)));
  }

  #text(mask: number): string {
    const t = this.#table;
    let next = 1;
    const params = (types: readonly string[]) => types.map((type) => `$${next++}::${type}[]`).join(', ');
    const ctes: string[] = [];
    const selects: string[] = [];
    // A statement of claims alone commits without waiting for its WAL flush. Nothing is lost by it:
    // the log is sequential, so the handler's own commit — or a checkpoint, or the completion, all
    // synchronous — flushes the claim before anything durable can depend on it; a database crash
    // before that forgets a claim whose work left no durable trace here, and the client's retry
    // claims the key again (a downstream call made meanwhile carries the lease's derived key).
    const claimsOnly = mask === 1;
    if (claimsOnly) ctes.push(`relaxed AS (SELECT set_config('synchronous_commit', 'off', true))`);
    if (mask & 1) {
      ctes.push(`ins AS (INSERT INTO ${t} (${RECORD_COLUMNS})
        SELECT ${SELECT_VALUES} FROM unnest(${params(RECORD_ARRAY_TYPES)}) AS v(${RECORD_COLUMNS})
        ON CONFLICT (key) DO NOTHING RETURNING key)`);
      selects.push(claimsOnly ? 'SELECT key FROM ins, relaxed' : 'SELECT key FROM ins');
    }
    if (mask & 2) {
      ctes.push(`upd AS (UPDATE ${t} AS t SET fingerprint = v.fingerprint, state = v.state,
        token = v.token, lease_until = v.lease_until, expires_at = v.expires_at, sequence = v.sequence,
        response = v.response::jsonb, recovery_point = v.recovery_point, phases = v.phases::jsonb,
        created_at = v.created_at, updated_at = v.updated_at
        FROM unnest(${params(['text', ...RECORD_ARRAY_TYPES])}) AS v(expected, ${RECORD_COLUMNS})
        WHERE t.key = v.key AND t.token = v.expected RETURNING t.key)`);
      selects.push('SELECT key FROM upd');
    }
    if (mask & 4) {
      ctes.push(`del AS (DELETE FROM ${t} AS t USING unnest(${params(['text', 'text'])}) AS v(key, token)
        WHERE t.key = v.key AND t.token = v.token RETURNING t.key)`);
      selects.push('SELECT key FROM del');
    }
    return `WITH ${ctes.join(',\n')}\n${selects.join(' UNION ALL ')}`;
  }
}

/** Column-wise arrays of the records' values, key first, for `unnest`. */
function columnsOf(records: readonly IdempotencyRecord[]): unknown[][] {
  const columns: unknown[][] = RECORD_ARRAY_TYPES.map(() => new Array(records.length));
  for (let r = 0; r < records.length; r++) {
    const record = records[r] as IdempotencyRecord;
    const values = [record.key, ...recordValues(record)];
    for (let c = 0; c < values.length; c++) (columns[c] as unknown[])[r] = values[c];
  }
  return columns;
}
