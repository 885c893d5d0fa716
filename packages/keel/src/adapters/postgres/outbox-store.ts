/**
 * The transactional outbox in Postgres: events are rows written through the caller's client inside
 * their `BEGIN` (with a `pg_notify` that fires at commit), and any number of relays claim them at
 * once. A claim locks the first unpublished event of each aggregate it takes with
 * `FOR UPDATE SKIP LOCKED` and leases it with the events that follow it, so two relays never hold
 * events of one aggregate at the same time and each aggregate is published in order.
 *
 * @module
 */
import { InvalidOptionError } from '../../errors/keel-error.ts';
import type { TransactionHandle, WallClock } from '../../idempotency/store.ts';
import { wallClock } from '../../idempotency/store.ts';
import { AppendSignal } from '../../outbox/append-signal.ts';
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
  type OutboxRow,
  storedFromRow,
} from '../../outbox/sql-outbox.ts';
import type { OutboxGauges, OutboxTelemetry } from '../../outbox/telemetry.ts';
import { checkSqlIdentifier } from '../sql-identifier.ts';
import type { PostgresQueryable } from './idempotency-store.ts';

/** A notification as `pg` delivers it. */
export interface PostgresNotification {
  readonly channel: string;
  readonly payload?: string | undefined;
}

/** The part of a `pg` `PoolClient` the outbox's listener calls. */
export interface PostgresListenClient extends PostgresQueryable {
  on(event: 'notification', listener: (message: PostgresNotification) => void): unknown;
  on(event: 'error', listener: (error: Error) => void): unknown;
  removeListener(event: 'notification', listener: (message: PostgresNotification) => void): unknown;
  removeListener(event: 'error', listener: (error: Error) => void): unknown;
  /** Returns the client to the pool; with an error, the pool discards it instead. */
  release(error?: Error | boolean): void;
}

/**
 * The part of a `pg` `Pool` the outbox calls: queries, and one dedicated client for `LISTEN`.
 *
 * @example
 * import pg from 'pg';
 * const pool: PostgresOutboxPool = new pg.Pool({ connectionString: process.env.DATABASE_URL });
 */
export interface PostgresOutboxPool extends PostgresQueryable {
  connect(): Promise<PostgresListenClient>;
}

/** Options of {@link postgresOutbox}. */
export interface PostgresOutboxOptions {
  /** The user's `pg.Pool`: the relay's statements run on it, and the listener holds one client. */
  pool: PostgresOutboxPool;
  /**
   * Table name: letters, digits and `_`, not starting with a digit, at most 40 characters.
   * @default 'keel_outbox'
   */
  table?: string;
  /**
   * Schema of the table, same rules as `table` (at most 63 characters).
   * @default the connection's `search_path`
   */
  schema?: string;
  /**
   * The `NOTIFY` channel appends signal on and `appended()` listens to (same rules as `table`).
   * @default the table name
   */
  channel?: string;
  /** Receives `appended` for each event written by `append`. */
  telemetry?: OutboxTelemetry;
  /**
   * Wall time for `createdAt`, leases, retry times and publication times. Relays on several
   * machines compare leases, so their clocks should agree to well within `leaseMs`.
   * @default wallClock
   */
  clock?: WallClock;
}

const DEFAULTS = Object.freeze({ table: 'keel_outbox' });

/** Room for the longest index suffix within Postgres' 63-byte names, `_pending_aggregate_idx` (the index of earlier versions that `ensureSchema` drops). */
const MAX_TABLE_LENGTH = 40;

/** Reconnecting the listener after an error: from 100 ms, doubling to 5 s. */
const RECONNECT_FIRST_MS = 100;
const RECONNECT_MAX_MS = 5_000;

/** Opens a claim's transaction, with the plan its statement must get (see `claim`). */
const CLAIM_PLAN = 'BEGIN; SET LOCAL enable_bitmapscan = off';

const SELECT_COLUMNS = `o.seq, o.id, o.type, o.aggregate_type, o.aggregate_id, o.payload::text AS payload,
  o.headers::text AS headers, o.created_at, o.published_at, o.attempts, o.last_error`;

/**
 * The DDL of the outbox table, for a migration tool. Idempotent (`IF NOT EXISTS`). `seq` is the
 * append order; times are `bigint` epoch milliseconds; payload and headers are `json`, which keeps
 * the text exactly as appended. A partial index over unpublished rows gives the claim its order; the
 * aggregate index serves the claim's chains and `find` by aggregate, and the creation-time index
 * serves `find` by time and the retention prune (an event is published after it is created). It
 * drops the type, publication-time and unpublished-aggregate indexes of earlier versions: a publish
 * rewrites the row, and a rewrite that changes `published_at` adds an entry to every index. Pages are left a quarter free
 * (`fillfactor`), so a claim's lease, which touches no indexed column, is a HOT update that adds
 * none.
 *
 * @example
 * await migrate.sql(postgresOutboxDdl({ table: 'outbox', schema: 'billing' }));
 */
export function postgresOutboxDdl(options: { table?: string; schema?: string } = {}): string {
  const table = checkSqlIdentifier('table', options.table ?? DEFAULTS.table, MAX_TABLE_LENGTH);
  const schema = options.schema === undefined ? undefined : checkSqlIdentifier('schema', options.schema, 63);
  const t = schema === undefined ? `"${table}"` : `"${schema}"."${table}"`;
  const index = (suffix: string) =>
    schema === undefined ? `"${table}_${suffix}"` : `"${schema}"."${table}_${suffix}"`;
  return `CREATE TABLE IF NOT EXISTS ${t} (
  seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  id text NOT NULL UNIQUE,
  type text NOT NULL,
  aggregate_type text NOT NULL,
  aggregate_id text NOT NULL,
  payload json NOT NULL,
  headers json NOT NULL,
  created_at bigint NOT NULL,
  available_at bigint NOT NULL,
  published_at bigint,
  attempts integer NOT NULL DEFAULT 0,
  last_error text,
  claimed_by text,
  claimed_until bigint
) WITH (fillfactor = 75);
CREATE INDEX IF NOT EXISTS "${table}_pending_idx" ON ${t} (seq) WHERE published_at IS NULL;
CREATE INDEX IF NOT EXISTS "${table}_aggregate_idx" ON ${t} (aggregate_type, aggregate_id, seq);
CREATE INDEX IF NOT EXISTS "${table}_created_idx" ON ${t} (created_at);
DROP INDEX IF EXISTS ${index('pending_aggregate_idx')};
DROP INDEX IF EXISTS ${index('type_idx')};
DROP INDEX IF EXISTS ${index('published_idx')};
`;
}

type StatementName =
  | 'insert'
  | 'claim'
  | 'markPublished'
  | 'release'
  | 'unclaim'
  | 'requeue'
  | 'prune'
  | 'gauges';

interface Listener {
  readonly client: PostgresListenClient;
  readonly onNotification: (message: PostgresNotification) => void;
  readonly onError: (error: Error) => void;
}

/**
 * An {@link OutboxStore} in one Postgres table, safe for many relays at once.
 *
 * - **Append.** `append(client, events)` with the client inside your `BEGIN` inserts every event in
 *   one statement together with `pg_notify(channel)`, which Postgres delivers only at commit. Appends
 *   of one aggregate should be serialised by your own transaction (the row lock of the entity they
 *   describe, typically), so their order of commit is their order of append.
 * - **Claim.** One statement: it locks, with `FOR UPDATE SKIP LOCKED`, the first unpublished event of
 *   each aggregate that is neither leased nor waiting for its retry time, then leases it together
 *   with the following events of that aggregate up to the first one that is. Whoever holds an
 *   aggregate's first event holds the aggregate, so two relays never publish one aggregate at once.
 *   Each lease names the relay (`claimed_by`) and ends at `claimed_until`; the relay's writes are
 *   fenced by it. The statement runs in a short transaction of its own that keeps its plan an
 *   ordered walk of the pending index even on a table Postgres has no statistics for yet.
 * - **Wake-up.** While anyone waits in `appended()`, one client from the pool `LISTEN`s on the
 *   channel; it goes back to the pool when every waiter's signal has aborted (or on `close()`), and
 *   is replaced, with back-off, when it errors. Relays poll as well, so a lost notification only
 *   costs latency.
 *
 * @example
 * const outbox = postgresOutbox({ pool });
 * await outbox.ensureSchema();
 * const client = await pool.connect();
 * await client.query('BEGIN');
 * await client.query('UPDATE payments SET state = $1 WHERE id = $2', ['completed', id]);
 * await outbox.append(client, { type: 'payment.completed', aggregateType: 'payment', aggregateId: id, payload });
 * await client.query('COMMIT');
 * client.release();
 */
export class PostgresOutboxStore implements OutboxStore {
  readonly pool: PostgresOutboxPool;
  readonly table: string;
  readonly schema: string | undefined;
  readonly channel: string;
  /** The schema-qualified, quoted table name used in every statement. */
  readonly qualifiedName: string;
  /** The DDL {@link ensureSchema} runs, for a migration tool. */
  readonly ddl: string;
  readonly #clock: WallClock;
  readonly #telemetry: OutboxTelemetry | undefined;
  readonly #sql: Readonly<Record<StatementName, string>>;
  readonly #signal = new AppendSignal();
  readonly #waiters = new Set<AbortSignal>();
  #listener: Listener | undefined;
  #connecting = false;
  #reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  #reconnectDelayMs = RECONNECT_FIRST_MS;
  #closed = false;

  constructor(options: PostgresOutboxOptions) {
    if (typeof options?.pool?.query !== 'function' || typeof options.pool.connect !== 'function') {
      throw new InvalidOptionError('pool', 'must be a pg Pool (query and connect methods)');
    }
    if (options.telemetry !== undefined && typeof options.telemetry?.emit !== 'function') {
      throw new InvalidOptionError('telemetry', 'must have an emit(event) method');
    }
    if (options.clock !== undefined && typeof options.clock?.now !== 'function') {
      throw new InvalidOptionError('clock', 'must have a now() method returning epoch milliseconds');
    }
    this.pool = options.pool;
    this.table = checkSqlIdentifier('table', options.table ?? DEFAULTS.table, MAX_TABLE_LENGTH);
    this.schema = options.schema === undefined ? undefined : checkSqlIdentifier('schema', options.schema, 63);
    this.channel = checkSqlIdentifier('channel', options.channel ?? this.table, 63);
    this.qualifiedName = this.schema === undefined ? `"${this.table}"` : `"${this.schema}"."${this.table}"`;
    this.ddl = postgresOutboxDdl(
      this.schema === undefined ? { table: this.table } : { table: this.table, schema: this.schema },
    );
    this.#clock = options.clock ?? wallClock;
    this.#telemetry = options.telemetry;
    const t = this.qualifiedName;
    this.#sql = Object.freeze({
      insert: `WITH inserted AS (
          INSERT INTO ${t} (id, type, aggregate_type, aggregate_id, payload, headers, created_at, available_at)
          SELECT u.id, u.type, u.aggregate_type, u.aggregate_id, u.payload::json, u.headers::json, $7, $7
          FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[]) WITH ORDINALITY
            AS u(id, type, aggregate_type, aggregate_id, payload, headers, ord)
          ORDER BY u.ord
          RETURNING 1)
        SELECT (SELECT count(*) FROM inserted) AS inserted, pg_notify($8, '') AS notified`,
      // heads: the first unpublished event of each aggregate, claimable now, locked so no other
      // relay can take the aggregate in the meantime (SKIP LOCKED: it takes other aggregates).
      // Its own claimability is tested on the row itself, so the lock's re-check sees a claim that
      // committed after this statement began. chain: each head and the events after it, up to the
      // first one leased or waiting for its retry time, oldest first. The chain is read per head
      // (LATERAL, through the aggregate index), so a claim costs what it takes, not a scan of the
      // whole backlog; a head's earlier events are looked for only from the oldest unpublished
      // event on, so an aggregate's published history is not read. No partial index is keyed by
      // aggregate: after a VACUUM that found every event published, Postgres counts such an index
      // as empty and read all of it to find a batch's rows by `seq` (400 ms a claim over 35,000
      // unpublished events, where the primary key takes 5 ms).
      claim: `WITH heads AS (
          SELECT h.seq, h.aggregate_type, h.aggregate_id FROM ${t} h
          WHERE h.published_at IS NULL
            AND h.available_at <= $2
            AND (h.claimed_until IS NULL OR h.claimed_until <= $2)
            AND NOT EXISTS (
              SELECT 1 FROM ${t} p
              WHERE p.aggregate_type = h.aggregate_type AND p.aggregate_id = h.aggregate_id
                AND p.seq >= (SELECT min(f.seq) FROM ${t} f WHERE f.published_at IS NULL)
                AND p.seq < h.seq AND p.published_at IS NULL)
          ORDER BY h.seq
          LIMIT $4
          FOR UPDATE SKIP LOCKED),
        chain AS (
          SELECT e.seq FROM heads h
          CROSS JOIN LATERAL (
            SELECT min(d.seq) AS seq FROM ${t} d
            WHERE d.aggregate_type = h.aggregate_type AND d.aggregate_id = h.aggregate_id
              AND d.published_at IS NULL AND d.seq > h.seq
              AND (d.available_at > $2 OR d.claimed_until > $2)) stop
          CROSS JOIN LATERAL (
            SELECT e.seq FROM ${t} e
            WHERE e.aggregate_type = h.aggregate_type AND e.aggregate_id = h.aggregate_id
              AND e.published_at IS NULL AND e.seq >= h.seq AND (stop.seq IS NULL OR e.seq < stop.seq)
            ORDER BY e.seq
            LIMIT $4) e
          ORDER BY e.seq
          LIMIT $4)
        UPDATE ${t} o SET claimed_by = $1, claimed_until = $3
        WHERE o.seq = ANY(ARRAY(SELECT seq FROM chain)) AND o.published_at IS NULL
          AND (o.claimed_until IS NULL OR o.claimed_until <= $2)
        RETURNING ${SELECT_COLUMNS}`,
      markPublished: `UPDATE ${t} SET published_at = $1, claimed_by = NULL, claimed_until = NULL
        WHERE id = ANY($3::text[]) AND claimed_by = $2 AND published_at IS NULL`,
      release: `UPDATE ${t} SET attempts = attempts + 1, last_error = $3, available_at = $4,
        claimed_by = NULL, claimed_until = NULL
        WHERE id = $1 AND claimed_by = $2 AND published_at IS NULL`,
      unclaim: `UPDATE ${t} SET claimed_by = NULL, claimed_until = NULL
        WHERE id = ANY($2::text[]) AND claimed_by = $1 AND published_at IS NULL`,
      requeue: `WITH requeued AS (
          UPDATE ${t} SET published_at = NULL, attempts = 0, last_error = NULL, available_at = $1,
            claimed_by = NULL, claimed_until = NULL
          WHERE id = ANY($2::text[]) AND published_at IS NOT NULL
          RETURNING 1)
        SELECT (SELECT count(*) FROM requeued)::int AS requeued, pg_notify($3, '') AS notified`,
      // An event is published after it is appended, so every prunable event has `created_at` before
      // the cut-off too: the creation index bounds the scan to old events.
      prune: `DELETE FROM ${t} WHERE seq IN (
        SELECT seq FROM ${t} WHERE created_at < $1 AND published_at IS NOT NULL AND published_at < $1
        ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED)`,
      gauges: `SELECT count(*)::int AS unpublished, min(created_at) AS oldest FROM ${t} WHERE published_at IS NULL`,
    });
  }

  /**
   * Creates the table and its indexes unless they exist. Safe to call from many processes at once:
   * the DDL runs under a transaction-scoped advisory lock on the table name.
   *
   * @example
   * await postgresOutbox({ pool }).ensureSchema();
   */
  async ensureSchema(): Promise<void> {
    const lockName = this.schema === undefined ? this.table : `${this.schema}.${this.table}`;
    await this.pool.query(
      `DO $keel$ BEGIN
        PERFORM pg_advisory_xact_lock(hashtext('keel_outbox_ddl:${lockName}'));
        ${this.ddl}
      END $keel$;`,
    );
  }

  /**
   * Writes the events through `tx`, the client inside your `BEGIN`, in one statement that also
   * notifies the channel (delivered at commit). All are validated first; an invalid one throws and
   * nothing is written.
   */
  async append(
    tx: TransactionHandle,
    events: NewOutboxEvent | readonly NewOutboxEvent[],
  ): Promise<OutboxEvent[]> {
    if (typeof (tx as Partial<PostgresQueryable>)?.query !== 'function') {
      throw new TypeError('tx: must be the pg client that ran BEGIN (an object with a query method)');
    }
    const now = this.#clock.now();
    const prepared = prepareOutboxEvents(events, now);
    if (prepared.length === 0) return [];
    await (tx as PostgresQueryable).query(this.#sql.insert, [
      prepared.map(({ event }) => event.id),
      prepared.map(({ event }) => event.type),
      prepared.map(({ event }) => event.aggregateType),
      prepared.map(({ event }) => event.aggregateId),
      prepared.map(({ payloadJson }) => payloadJson),
      prepared.map(({ headersJson }) => headersJson),
      now,
      this.channel,
    ]);
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

  /**
   * Runs the claim in a transaction of its own with bitmap scans turned off for it. Without
   * statistics on the table — a new table, or a backlog that grew faster than autovacuum analyses —
   * Postgres assumes a handful of unpublished events, reads every one of them through a bitmap of
   * the pending index, checks each for an earlier event of its aggregate, and sorts them all to take
   * the first `limit`: 150–180 ms a claim over an 80,000-event backlog, where walking the index in
   * order and stopping at `limit` takes 9–11 ms. Two more round trips a batch are the price.
   */
  async claim(relayId: string, limit: number, leaseMs: number): Promise<ClaimedOutboxEvent[]> {
    checkClaim(relayId, limit, leaseMs);
    const client = await this.pool.connect();
    let rows: OutboxRow[];
    try {
      await client.query(CLAIM_PLAN);
      const now = this.#clock.now();
      rows = (await client.query(this.#sql.claim, [relayId, now, now + leaseMs, limit])).rows as OutboxRow[];
      await client.query('COMMIT');
    } catch (error) {
      // A client whose transaction may still be open goes back to the pool discarded.
      client.release(error instanceof Error ? error : true);
      throw error;
    }
    client.release();
    return rows.sort(byAppendOrder).map(claimedFromRow);
  }

  async markPublished(relayId: string, ids: readonly string[]): Promise<void> {
    checkRelayId(relayId);
    if (checkIds(ids).length === 0) return;
    await this.pool.query(this.#sql.markPublished, [this.#clock.now(), relayId, ids]);
  }

  async release(relayId: string, id: string, error: string, retryAt: number): Promise<void> {
    checkRelayId(relayId);
    await this.pool.query(this.#sql.release, [id, relayId, String(error), Math.round(retryAt)]);
  }

  async unclaim(relayId: string, ids: readonly string[]): Promise<void> {
    checkRelayId(relayId);
    if (checkIds(ids).length === 0) return;
    await this.pool.query(this.#sql.unclaim, [relayId, ids]);
  }

  async find(filter: OutboxFilter): Promise<StoredOutboxEvent[]> {
    const checked = checkOutboxFilter(filter);
    const where: string[] = [];
    const values: unknown[] = [];
    const add = (condition: (placeholder: string) => string, value: unknown) => {
      values.push(value);
      where.push(condition(`$${values.length}`));
    };
    if (checked.ids !== null) add((p) => `o.id = ANY(${p}::text[])`, checked.ids);
    if (checked.since !== null) add((p) => `o.created_at >= ${p}`, checked.since);
    if (checked.until !== null) add((p) => `o.created_at < ${p}`, checked.until);
    if (checked.type !== null) add((p) => `o.type = ${p}`, checked.type);
    if (checked.aggregateType !== null) add((p) => `o.aggregate_type = ${p}`, checked.aggregateType);
    if (checked.aggregateId !== null) add((p) => `o.aggregate_id = ${p}`, checked.aggregateId);
    if (checked.published !== null) {
      where.push(checked.published ? 'o.published_at IS NOT NULL' : 'o.published_at IS NULL');
    }
    values.push(checked.limit);
    const { rows } = await this.pool.query(
      `SELECT ${SELECT_COLUMNS} FROM ${this.qualifiedName} o
        ${where.length > 0 ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY o.seq LIMIT $${values.length}`,
      values,
    );
    return (rows as OutboxRow[]).map(storedFromRow);
  }

  async requeue(ids: readonly string[]): Promise<number> {
    if (checkIds(ids).length === 0) return 0;
    const { rows } = await this.pool.query(this.#sql.requeue, [this.#clock.now(), ids, this.channel]);
    return Number((rows[0] as { requeued: number | string }).requeued);
  }

  async prunePublished(before: number, limit: number): Promise<number> {
    checkPrune(before, limit);
    if (limit === 0) return 0;
    const result = await this.pool.query(this.#sql.prune, [Math.round(before), limit]);
    return result.rowCount ?? 0;
  }

  async gauges(): Promise<OutboxGauges> {
    const { rows } = await this.pool.query(this.#sql.gauges);
    const row = rows[0] as { unpublished: number; oldest: string | number | null };
    return {
      unpublished: Number(row.unpublished),
      oldestUnpublishedAgeMs: row.oldest === null ? 0 : Math.max(0, this.#clock.now() - Number(row.oldest)),
    };
  }

  /**
   * Resolves at the next notification on the channel, or when `signal` aborts. The first waiter
   * opens the listening client; it is released once every waiting signal has aborted.
   */
  appended(signal: AbortSignal): Promise<void> {
    if (signal.aborted || this.#closed) return Promise.resolve();
    if (!this.#waiters.has(signal)) {
      this.#waiters.add(signal);
      signal.addEventListener(
        'abort',
        () => {
          this.#waiters.delete(signal);
          if (this.#waiters.size === 0) this.#stopListening();
        },
        { once: true },
      );
    }
    this.#listen();
    return this.#signal.wait(signal);
  }

  /** True while a client is listening on the channel. */
  get listening(): boolean {
    return this.#listener !== undefined;
  }

  /**
   * Releases the listening client and wakes every waiter. The store stays usable for everything
   * but `appended`, which then resolves at once.
   *
   * @example
   * await relay.stop();
   * await outbox.close();
   */
  async close(): Promise<void> {
    this.#closed = true;
    this.#waiters.clear();
    clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = undefined;
    await this.#unlisten();
    this.#signal.notify();
  }

  #listen(): void {
    if (
      this.#listener !== undefined ||
      this.#connecting ||
      this.#closed ||
      this.#reconnectTimer !== undefined
    ) {
      return;
    }
    this.#connecting = true;
    void this.#connect().finally(() => {
      this.#connecting = false;
    });
  }

  async #connect(): Promise<void> {
    let client: PostgresListenClient | undefined;
    try {
      client = await this.pool.connect();
      const listening = client;
      const listener: Listener = {
        client: listening,
        onNotification: (message) => {
          if (message.channel === this.channel) this.#signal.notify();
        },
        onError: (error) => this.#lost(listening, error),
      };
      listening.on('notification', listener.onNotification);
      listening.on('error', listener.onError);
      await listening.query(`LISTEN "${this.channel}"`);
      this.#listener = listener;
      this.#reconnectDelayMs = RECONNECT_FIRST_MS;
      // Appends committed while nobody listened have no notification left to come.
      this.#signal.notify();
      if (this.#waiters.size === 0 || this.#closed) await this.#unlisten();
    } catch (error) {
      if (client !== undefined && this.#listener?.client !== client) {
        client.release(error instanceof Error ? error : true);
      }
      this.#scheduleReconnect();
    }
  }

  #lost(client: PostgresListenClient, error: Error): void {
    const listener = this.#listener;
    if (listener === undefined || listener.client !== client) return;
    this.#listener = undefined;
    client.removeListener('notification', listener.onNotification);
    client.removeListener('error', listener.onError);
    // A dying connection can emit again; an 'error' without a listener would crash the process.
    client.on('error', ignoreError);
    // The pool discards a client released with an error.
    client.release(error);
    this.#signal.notify();
    this.#scheduleReconnect();
  }

  #scheduleReconnect(): void {
    if (this.#closed || this.#waiters.size === 0 || this.#reconnectTimer !== undefined) return;
    const delay = this.#reconnectDelayMs;
    this.#reconnectDelayMs = Math.min(RECONNECT_MAX_MS, delay * 2);
    this.#reconnectTimer = setTimeout(() => {
      this.#reconnectTimer = undefined;
      if (this.#waiters.size > 0) this.#listen();
    }, delay);
    this.#reconnectTimer.unref?.();
  }

  #stopListening(): void {
    clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = undefined;
    void this.#unlisten();
  }

  async #unlisten(): Promise<void> {
    const listener = this.#listener;
    if (listener === undefined) return;
    this.#listener = undefined;
    const { client } = listener;
    try {
      await client.query(`UNLISTEN "${this.channel}"`);
      client.removeListener('notification', listener.onNotification);
      client.removeListener('error', listener.onError);
      client.release();
    } catch (error) {
      client.removeListener('notification', listener.onNotification);
      client.removeListener('error', listener.onError);
      client.on('error', ignoreError);
      client.release(error instanceof Error ? error : true);
    }
  }
}

function ignoreError(): void {}

/**
 * Builds a {@link PostgresOutboxStore} over the user's pool. Call `ensureSchema()` once at
 * start-up, or run {@link postgresOutboxDdl} from your migrations.
 *
 * @example
 * import pg from 'pg';
 * const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL });
 * const outbox = postgresOutbox({ pool });
 * await outbox.ensureSchema();
 * const relay = outboxRelay({ store: outbox, transport });
 * relay.start();
 */
export function postgresOutbox(options: PostgresOutboxOptions): PostgresOutboxStore {
  return new PostgresOutboxStore(options);
}
