/**
 * The transactional outbox in SQLite: events are rows written through the caller's handle inside
 * their `BEGIN`, so they commit or roll back with the state change, and a relay claims them in
 * append order with a lease. SQLite has one writer at a time, so every claim is a single
 * `UPDATE … RETURNING` that reads and writes under the write lock; one relay per database file is the
 * intended set-up, and claims stay correct with more.
 *
 * @module
 */
import { InvalidOptionError } from '../../errors/keel-error.ts';
import type { TransactionHandle, WallClock } from '../../idempotency/store.ts';
import { wallClock } from '../../idempotency/store.ts';
import { AppendSignal } from '../../outbox/append-signal.ts';
import { OutboxTransactionError } from '../../outbox/errors.ts';
import type { NewOutboxEvent, OutboxEvent } from '../../outbox/event.ts';
import { prepareOutboxEvents } from '../../outbox/new-event.ts';
import type {
  ClaimedOutboxEvent,
  OutboxFilter,
  OutboxStore,
  StoredOutboxEvent,
} from '../../outbox/outbox-store.ts';
import {
  byAppendOrder,
  checkClaim,
  checkIds,
  checkOutboxFilter,
  checkPrune,
  checkRelayId,
  claimedFromRow,
  OUTBOX_SELECT_COLUMNS,
  type OutboxRow,
  storedFromRow,
} from '../../outbox/sql-outbox.ts';
import type { OutboxGauges, OutboxTelemetry } from '../../outbox/telemetry.ts';
import type { SqliteDatabase, SqliteStatement, SqliteValue } from './idempotency-store.ts';

/** Options of {@link sqliteOutbox}. */
export interface SqliteOutboxOptions {
  /**
   * The handle the relay's statements run on (claims, marks, finds, prunes). Appends run on the
   * handle passed to `append`, which may be this one.
   */
  db: SqliteDatabase;
  /**
   * Table name: letters, digits and `_`, not starting with a digit, at most 48 characters.
   * @default 'keel_outbox'
   */
  table?: string;
  /** Receives `appended` for each event written by `append`. */
  telemetry?: OutboxTelemetry;
  /**
   * Wall time for `createdAt`, leases, retry times and publication times.
   * @default wallClock
   */
  clock?: WallClock;
}

const DEFAULTS = Object.freeze({ table: 'keel_outbox' });

const MAX_TABLE_LENGTH = 48;
const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** How often a pending commit is looked for: from 1 ms, doubling to 50 ms while it stays open. */
const COMMIT_CHECK_FIRST_MS = 1;
const COMMIT_CHECK_MAX_MS = 50;
/** Wakes after an append on a driver that does not say whether its transaction is open. */
const BLIND_WAKES_MS: readonly number[] = [1, 10, 100];

function checkTable(value: unknown): string {
  if (typeof value !== 'string' || !IDENTIFIER.test(value) || value.length > MAX_TABLE_LENGTH) {
    throw new InvalidOptionError(
      'table',
      `must be 1 to ${MAX_TABLE_LENGTH} letters, digits or underscores, not starting with a digit, got ${JSON.stringify(value)}`,
    );
  }
  return value;
}

/**
 * The DDL of the outbox table, for a migration tool. Idempotent (`IF NOT EXISTS`). `seq` is the
 * append order (never reused, thanks to `AUTOINCREMENT`); times are `INTEGER` epoch milliseconds;
 * payload and headers are JSON text. Partial indexes over unpublished rows serve the claim, the
 * others serve `find` and the retention prune.
 *
 * @example
 * db.exec(sqliteOutboxDdl({ table: 'outbox' }));
 */
export function sqliteOutboxDdl(options: { table?: string } = {}): string {
  const table = checkTable(options.table ?? DEFAULTS.table);
  const t = `"${table}"`;
  return `CREATE TABLE IF NOT EXISTS ${t} (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT NOT NULL UNIQUE,
  type TEXT NOT NULL,
  aggregate_type TEXT NOT NULL,
  aggregate_id TEXT NOT NULL,
  payload TEXT NOT NULL,
  headers TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  available_at INTEGER NOT NULL,
  published_at INTEGER,
  attempts INTEGER NOT NULL DEFAULT 0,
  last_error TEXT,
  claimed_by TEXT,
  claimed_until INTEGER
);
CREATE INDEX IF NOT EXISTS "${table}_pending_idx" ON ${t} (seq) WHERE published_at IS NULL;
CREATE INDEX IF NOT EXISTS "${table}_pending_aggregate_idx" ON ${t} (aggregate_type, aggregate_id, seq)
  WHERE published_at IS NULL;
CREATE INDEX IF NOT EXISTS "${table}_aggregate_idx" ON ${t} (aggregate_type, aggregate_id, seq);
CREATE INDEX IF NOT EXISTS "${table}_created_idx" ON ${t} (created_at);
CREATE INDEX IF NOT EXISTS "${table}_type_idx" ON ${t} (type, created_at);
CREATE INDEX IF NOT EXISTS "${table}_published_idx" ON ${t} (published_at) WHERE published_at IS NOT NULL;
`;
}

type StatementName = 'claim' | 'markPublished' | 'release' | 'unclaim' | 'requeue' | 'prune' | 'gauges';

/** Whether a handle is inside `BEGIN`: `node:sqlite` says `isTransaction`, better-sqlite3 `inTransaction`. */
function transactionOpen(handle: object): boolean | undefined {
  const flags = handle as { isTransaction?: unknown; inTransaction?: unknown };
  try {
    if (typeof flags.isTransaction === 'boolean') return flags.isTransaction;
    if (typeof flags.inTransaction === 'boolean') return flags.inTransaction;
  } catch {
    // node:sqlite throws for a closed handle: it has no transaction left to wait for.
    return false;
  }
  return undefined;
}

/**
 * An {@link OutboxStore} in one SQLite table.
 *
 * - **Append.** `append(db, events)` between your `BEGIN` and `COMMIT` writes the events with your
 *   state change; a handle outside a transaction is refused with {@link OutboxTransactionError}.
 *   Invalid events throw before anything is written.
 * - **Claim.** One statement picks unpublished events oldest first, skipping any whose aggregate
 *   has an earlier event that is leased by another relay or waiting for its retry time, and leases
 *   them. While the store's own handle is inside a transaction, claims return nothing, so a relay
 *   never publishes events an open transaction could still roll back.
 * - **Wake-up.** An append in this process wakes `appended()` as soon as its transaction ends, so a
 *   relay publishes within milliseconds of the commit and polls only as a fallback (for appends made
 *   by other processes).
 *
 * For several processes on one file, use WAL mode and a `busy_timeout` as for `sqliteStore`.
 *
 * @example
 * import { DatabaseSync } from 'node:sqlite';
 * const db = new DatabaseSync('app.db', { timeout: 5000 });
 * const outbox = sqliteOutbox({ db });
 * db.exec('BEGIN IMMEDIATE');
 * db.prepare('UPDATE payments SET state = ? WHERE id = ?').run('completed', id);
 * await outbox.append(db, { type: 'payment.completed', aggregateType: 'payment', aggregateId: id, payload });
 * db.exec('COMMIT');
 */
export class SqliteOutboxStore implements OutboxStore {
  readonly db: SqliteDatabase;
  readonly table: string;
  /** The DDL {@link ensureSchema} runs, for a migration tool. */
  readonly ddl: string;
  readonly #clock: WallClock;
  readonly #telemetry: OutboxTelemetry | undefined;
  readonly #sql: Readonly<Record<StatementName | 'insert', string>>;
  readonly #statements = new Map<StatementName, SqliteStatement>();
  readonly #inserts = new WeakMap<object, SqliteStatement>();
  readonly #signal = new AppendSignal();
  readonly #pendingCommits = new Set<object>();
  #commitTimer: ReturnType<typeof setTimeout> | undefined;
  #commitCheckMs = COMMIT_CHECK_FIRST_MS;

  constructor(options: SqliteOutboxOptions) {
    if (typeof options?.db?.prepare !== 'function' || typeof options.db.exec !== 'function') {
      throw new InvalidOptionError(
        'db',
        'must be a node:sqlite DatabaseSync or better-sqlite3 Database (prepare and exec methods)',
      );
    }
    if (options.telemetry !== undefined && typeof options.telemetry?.emit !== 'function') {
      throw new InvalidOptionError('telemetry', 'must have an emit(event) method');
    }
    if (options.clock !== undefined && typeof options.clock?.now !== 'function') {
      throw new InvalidOptionError('clock', 'must have a now() method returning epoch milliseconds');
    }
    this.db = options.db;
    this.table = checkTable(options.table ?? DEFAULTS.table);
    this.ddl = sqliteOutboxDdl({ table: this.table });
    this.#clock = options.clock ?? wallClock;
    this.#telemetry = options.telemetry;
    const t = `"${this.table}"`;
    this.#sql = Object.freeze({
      insert: `INSERT INTO ${t} (id, type, aggregate_type, aggregate_id, payload, headers, created_at, available_at)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
      // An event qualifies when no unpublished event of its aggregate up to and including itself is
      // leased or waiting for its retry time; taking the first `limit` of those in append order then
      // never takes an event without every earlier unpublished event of its aggregate.
      claim: `UPDATE ${t} SET claimed_by = ?, claimed_until = ?
        WHERE seq IN (
          SELECT e.seq FROM ${t} e
          WHERE e.published_at IS NULL
            AND NOT EXISTS (
              SELECT 1 FROM ${t} d
              WHERE d.aggregate_type = e.aggregate_type AND d.aggregate_id = e.aggregate_id
                AND d.published_at IS NULL AND d.seq <= e.seq
                AND (d.available_at > ? OR (d.claimed_until IS NOT NULL AND d.claimed_until > ?)))
          ORDER BY e.seq LIMIT ?)
        RETURNING ${OUTBOX_SELECT_COLUMNS}`,
      markPublished: `UPDATE ${t} SET published_at = ?, claimed_by = NULL, claimed_until = NULL
        WHERE claimed_by = ? AND published_at IS NULL AND id IN (SELECT value FROM json_each(?))`,
      release: `UPDATE ${t} SET attempts = attempts + 1, last_error = ?, available_at = ?,
        claimed_by = NULL, claimed_until = NULL
        WHERE id = ? AND claimed_by = ? AND published_at IS NULL`,
      unclaim: `UPDATE ${t} SET claimed_by = NULL, claimed_until = NULL
        WHERE claimed_by = ? AND published_at IS NULL AND id IN (SELECT value FROM json_each(?))`,
      requeue: `UPDATE ${t} SET published_at = NULL, attempts = 0, last_error = NULL, available_at = ?,
        claimed_by = NULL, claimed_until = NULL
        WHERE published_at IS NOT NULL AND id IN (SELECT value FROM json_each(?))`,
      prune: `DELETE FROM ${t} WHERE seq IN (
        SELECT seq FROM ${t} WHERE published_at IS NOT NULL AND published_at < ?
        ORDER BY published_at LIMIT ?)`,
      gauges: `SELECT count(*) AS unpublished, min(created_at) AS oldest FROM ${t} WHERE published_at IS NULL`,
    });
    this.ensureSchema();
  }

  /**
   * Creates the table and its indexes unless they exist. The constructor calls it.
   *
   * @example
   * sqliteOutbox({ db }).ensureSchema();
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

  #insertOn(handle: SqliteDatabase): SqliteStatement {
    let statement = this.#inserts.get(handle);
    if (statement === undefined) {
      statement = handle.prepare(this.#sql.insert);
      this.#inserts.set(handle, statement);
    }
    return statement;
  }

  /**
   * Writes the events through `tx`, the handle inside your `BEGIN`. All are validated first; an
   * invalid one throws and nothing is written.
   */
  async append(
    tx: TransactionHandle,
    events: NewOutboxEvent | readonly NewOutboxEvent[],
  ): Promise<OutboxEvent[]> {
    if (typeof (tx as Partial<SqliteDatabase>)?.prepare !== 'function') {
      throw new TypeError('tx: must be the SQLite handle that ran BEGIN (an object with a prepare method)');
    }
    const handle = tx as SqliteDatabase;
    const open = transactionOpen(handle);
    if (open === false) {
      throw new OutboxTransactionError(
        'append needs the handle inside an open transaction: run BEGIN before it and COMMIT after',
      );
    }
    const now = this.#clock.now();
    const prepared = prepareOutboxEvents(events, now);
    const insert = this.#insertOn(handle);
    for (const { event, payloadJson, headersJson } of prepared) {
      insert.run(
        event.id,
        event.type,
        event.aggregateType,
        event.aggregateId,
        payloadJson,
        headersJson,
        now,
        now,
      );
    }
    this.#wakeAfterCommit(handle, open);
    const telemetry = this.#telemetry;
    if (telemetry !== undefined) {
      for (const { event } of prepared) {
        try {
          telemetry.emit({
            type: 'appended',
            eventId: event.id,
            eventType: event.type,
            aggregateType: event.aggregateType,
            aggregateId: event.aggregateId,
          });
        } catch {
          // A broken metrics sink must not fail the caller's transaction.
        }
      }
    }
    return prepared.map(({ event }) => event);
  }

  /** Wakes waiters once `handle`'s transaction has ended, when the relay can see the rows. */
  #wakeAfterCommit(handle: SqliteDatabase, open: boolean | undefined): void {
    if (open === undefined) {
      for (const delay of BLIND_WAKES_MS) setTimeout(() => this.#signal.notify(), delay).unref?.();
      return;
    }
    this.#pendingCommits.add(handle);
    if (this.#commitTimer === undefined) {
      this.#commitCheckMs = COMMIT_CHECK_FIRST_MS;
      this.#scheduleCommitCheck();
    }
  }

  #scheduleCommitCheck(): void {
    this.#commitTimer = setTimeout(() => {
      this.#commitTimer = undefined;
      let ended = false;
      for (const handle of this.#pendingCommits) {
        if (transactionOpen(handle) !== true) {
          this.#pendingCommits.delete(handle);
          ended = true;
        }
      }
      if (ended) this.#signal.notify();
      if (this.#pendingCommits.size > 0) {
        this.#commitCheckMs = ended
          ? COMMIT_CHECK_FIRST_MS
          : Math.min(COMMIT_CHECK_MAX_MS, this.#commitCheckMs * 2);
        this.#scheduleCommitCheck();
      }
    }, this.#commitCheckMs);
    // A pending wake-up must not keep the process alive.
    this.#commitTimer.unref?.();
  }

  async claim(relayId: string, limit: number, leaseMs: number): Promise<ClaimedOutboxEvent[]> {
    checkClaim(relayId, limit, leaseMs);
    // On a handle inside someone's transaction the claim would see rows that may still roll back.
    if (transactionOpen(this.db) === true) return [];
    const now = this.#clock.now();
    const rows = this.#statement('claim').all(relayId, now + leaseMs, now, now, limit) as OutboxRow[];
    return rows.sort(byAppendOrder).map(claimedFromRow);
  }

  async markPublished(relayId: string, ids: readonly string[]): Promise<void> {
    checkRelayId(relayId);
    if (checkIds(ids).length === 0) return;
    this.#statement('markPublished').run(this.#clock.now(), relayId, JSON.stringify(ids));
  }

  async release(relayId: string, id: string, error: string, retryAt: number): Promise<void> {
    checkRelayId(relayId);
    this.#statement('release').run(String(error), retryAt, id, relayId);
  }

  async unclaim(relayId: string, ids: readonly string[]): Promise<void> {
    checkRelayId(relayId);
    if (checkIds(ids).length === 0) return;
    this.#statement('unclaim').run(relayId, JSON.stringify(ids));
  }

  async find(filter: OutboxFilter): Promise<StoredOutboxEvent[]> {
    const checked = checkOutboxFilter(filter);
    const where: string[] = [];
    const values: SqliteValue[] = [];
    if (checked.ids !== null) {
      where.push('id IN (SELECT value FROM json_each(?))');
      values.push(JSON.stringify(checked.ids));
    }
    if (checked.since !== null) {
      where.push('created_at >= ?');
      values.push(checked.since);
    }
    if (checked.until !== null) {
      where.push('created_at < ?');
      values.push(checked.until);
    }
    if (checked.type !== null) {
      where.push('type = ?');
      values.push(checked.type);
    }
    if (checked.aggregateType !== null) {
      where.push('aggregate_type = ?');
      values.push(checked.aggregateType);
    }
    if (checked.aggregateId !== null) {
      where.push('aggregate_id = ?');
      values.push(checked.aggregateId);
    }
    if (checked.published !== null) {
      where.push(checked.published ? 'published_at IS NOT NULL' : 'published_at IS NULL');
    }
    values.push(checked.limit);
    const sql = `SELECT ${OUTBOX_SELECT_COLUMNS} FROM "${this.table}"
      ${where.length > 0 ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY seq LIMIT ?`;
    return (this.db.prepare(sql).all(...values) as OutboxRow[]).map(storedFromRow);
  }

  async requeue(ids: readonly string[]): Promise<number> {
    if (checkIds(ids).length === 0) return 0;
    const changes = Number(this.#statement('requeue').run(this.#clock.now(), JSON.stringify(ids)).changes);
    if (changes > 0) this.#signal.notify();
    return changes;
  }

  async prunePublished(before: number, limit: number): Promise<number> {
    checkPrune(before, limit);
    if (limit === 0) return 0;
    return Number(this.#statement('prune').run(before, limit).changes);
  }

  async gauges(): Promise<OutboxGauges> {
    const row = this.#statement('gauges').get() as { unpublished: number; oldest: number | null };
    const oldest = row.oldest === null ? null : Number(row.oldest);
    return {
      unpublished: Number(row.unpublished),
      oldestUnpublishedAgeMs: oldest === null ? 0 : Math.max(0, this.#clock.now() - oldest),
    };
  }

  appended(signal: AbortSignal): Promise<void> {
    return this.#signal.wait(signal);
  }
}

/**
 * Builds a {@link SqliteOutboxStore} over the user's handle, creating its table if absent.
 *
 * @example
 * import { DatabaseSync } from 'node:sqlite';
 * const db = new DatabaseSync('app.db', { timeout: 5000 });
 * db.exec('PRAGMA journal_mode = WAL');
 * const outbox = sqliteOutbox({ db });
 * const relay = outboxRelay({ store: outbox, transport: inProcessTransport() });
 * relay.start();
 */
export function sqliteOutbox(options: SqliteOutboxOptions): SqliteOutboxStore {
  return new SqliteOutboxStore(options);
}
