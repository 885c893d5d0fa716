/**
 * The transactional outbox in Postgres: events are rows written through the caller's client inside
 * their `BEGIN` (with a `pg_notify` that fires at commit), queued by a trigger in a narrow table of
 * unpublished events, and any number of relays claim them at once. A claim locks the first queued
 * event of each aggregate it takes with `FOR UPDATE SKIP LOCKED` and leases it with the events that
 * follow it, so two relays never hold events of one aggregate at the same time and each aggregate
 * is published in order.
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
import { checkInteger } from '../../policy/options.ts';
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
  /**
   * Vacuums the queue of unpublished events after every this many events marked published, or
   * never with `0`. A relay that drains a backlog deletes as many rows from the queue; until a
   * VACUUM removes them, every claim walks past their index entries, and autovacuum visits a table
   * at most once a minute (`autovacuum_naptime`): in the outbox benchmark, 170,000 dead rows were
   * still there when its lag phase began. The VACUUM runs beside the relay on a connection of the
   * pool, skips the table while another holds a conflicting lock, and is skipped with a warning
   * when the role does not own it.
   * @default 20_000
   */
  vacuumEvery?: number;
}

const DEFAULTS = Object.freeze({ table: 'keel_outbox', vacuumEvery: 20_000 });

/** Room for the longest name derived from the table's within Postgres' 63 bytes: `_pending_chain_idx`, `_pending_aggregate_idx` (an index of earlier versions that the DDL drops). */
const MAX_TABLE_LENGTH = 40;

/** Reconnecting the listener after an error: from 100 ms, doubling to 5 s. */
const RECONNECT_FIRST_MS = 100;
const RECONNECT_MAX_MS = 5_000;

const SELECT_COLUMNS = `o.seq, o.id, o.type, o.aggregate_type, o.aggregate_id, o.payload::text AS payload,
  o.headers::text AS headers, o.created_at, o.published_at, o.attempts, o.last_error`;

/** `name` quoted for SQL text, in `schema` when one is given. */
function quotedName(schema: string | undefined, name: string): string {
  return schema === undefined ? `"${name}"` : `"${schema}"."${name}"`;
}

/**
 * The DDL of the outbox, for a migration tool. Idempotent, and it upgrades tables of earlier
 * versions in place. Times are `bigint` epoch milliseconds; payload and headers are `json`, which
 * keeps the text exactly as appended.
 *
 * - **`<table>`** holds every event, published or not: `seq` is the append order, and
 *   `published_at` is set once an event is published. The aggregate index serves `find` by
 *   aggregate and the creation-time index serves `find` by time and the retention prune (an event is
 *   published after it is created). No index covers `published_at`, and pages are left half free
 *   (`fillfactor`), so marking an event published is a HOT update that adds no index entry: the
 *   new version of a row stays on its page only while the page has room, and a relay marks every
 *   event of a page in one statement. With pages a quarter free, two thirds of a batch's marks
 *   moved their row to another page and added an entry to each of its indexes (12.5 µs an event,
 *   where a page half free takes 6–7.5). The price is room: the table takes about twice the space of
 *   its rows.
 * - **`<table>_pending`** holds the unpublished events: their `seq`, aggregate, creation time and
 *   the relay's state — when an event may next be tried, and which relay holds it until when. Every
 *   claim, lease and retry is a write to this narrow table, never a rewrite of the event, and its
 *   pages are left half free too, for the leases. Triggers on `<table>` keep it: an insert queues
 *   the new events (so appends by any writer, including earlier versions, are queued), an update
 *   that sets `published_at` back to null queues the event again, and a delete or truncate removes
 *   theirs. Their function, `<table>_pending_sync()`, runs with its owner's rights and names the
 *   queue with its schema, so a role that may only insert into `<table>` appends, whatever its
 *   search path. Each run grants on the queue what is granted on `<table>`, for the relays' roles.
 *
 * Writes that bypass triggers (`session_replication_role = replica`, a restore without triggers)
 * can leave a queue row whose event is gone or published; a claim that meets one drops it. An event
 * inserted that way is not queued.
 *
 * On a table without the insert trigger — a new one, or one of an earlier version — or when the
 * queue is new, it adds what is missing, then queues every unpublished event, with the retry times
 * and leases an earlier version recorded on the row. That reads every unpublished event while the
 * table's inserts wait. Relays of an earlier version must be stopped first: they would neither see
 * the new leases nor dequeue what they publish, so an event could be published again. Writers of an
 * earlier version may go on appending. It also drops the indexes of earlier versions: the
 * unpublished-events index (the queue replaces it), and the type, publication-time and
 * unpublished-aggregate ones. Dropping `<table>` drops its triggers only: the outbox is gone with
 * `<table>_pending` and `<table>_pending_sync()` as well.
 *
 * @example
 * await migrate.sql(postgresOutboxDdl({ table: 'outbox', schema: 'billing' }));
 */
export function postgresOutboxDdl(options: { table?: string; schema?: string } = {}): string {
  const table = checkSqlIdentifier('table', options.table ?? DEFAULTS.table, MAX_TABLE_LENGTH);
  const schema = options.schema === undefined ? undefined : checkSqlIdentifier('schema', options.schema, 63);
  const events = quotedName(schema, table);
  const index = (suffix: string) => quotedName(schema, `${table}_${suffix}`);
  const hasColumn = (column: string) =>
    `EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = '${events}'::regclass AND attname = '${column}' AND NOT attisdropped)`;
  return `CREATE TABLE IF NOT EXISTS ${events} (
  seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  id text NOT NULL UNIQUE,
  type text NOT NULL,
  aggregate_type text NOT NULL,
  aggregate_id text NOT NULL,
  payload json NOT NULL,
  headers json NOT NULL,
  created_at bigint NOT NULL,
  published_at bigint,
  attempts integer NOT NULL DEFAULT 0,
  last_error text
) WITH (fillfactor = 50);
CREATE INDEX IF NOT EXISTS "${table}_aggregate_idx" ON ${events} (aggregate_type, aggregate_id, seq);
CREATE INDEX IF NOT EXISTS "${table}_created_idx" ON ${events} (created_at);
DROP INDEX IF EXISTS ${index('pending_idx')};
DROP INDEX IF EXISTS ${index('pending_aggregate_idx')};
DROP INDEX IF EXISTS ${index('type_idx')};
DROP INDEX IF EXISTS ${index('published_idx')};
DO $keel_outbox$
DECLARE
  events regclass := '${events}'::regclass;
  -- The queue and its function live beside the events, wherever the search path put them; the
  -- function names them qualified, so whoever fires it, with whatever search path, reaches them.
  home text := (SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = events);
  pending text := format('%I.%I', home, '${table}_pending');
  sync text := format('%I.%I', home, '${table}_pending_sync');
  fresh boolean := to_regclass(pending) IS NULL;
  missing boolean;
  upgrading boolean := ${hasColumn('claimed_until')};
  trigger record;
  granted record;
BEGIN
  IF fresh THEN
    EXECUTE format('CREATE TABLE %s (
        seq bigint PRIMARY KEY,
        aggregate_type text NOT NULL,
        aggregate_id text NOT NULL,
        created_at bigint NOT NULL,
        available_at bigint NOT NULL,
        claimed_by text,
        claimed_until bigint
      ) WITH (fillfactor = 50)', pending);
    EXECUTE format('CREATE INDEX %I ON %s (aggregate_type, aggregate_id, seq)', '${table}_pending_chain_idx', pending);
  END IF;
  -- SECURITY DEFINER: a role that may append to the outbox queues its events without rights of its
  -- own on the queue.
  EXECUTE format($keel_function$CREATE OR REPLACE FUNCTION %1$s() RETURNS trigger LANGUAGE plpgsql
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $keel_sync$
    BEGIN
      IF TG_OP = 'INSERT' THEN
        INSERT INTO %2$s (seq, aggregate_type, aggregate_id, created_at, available_at)
        SELECT seq, aggregate_type, aggregate_id, created_at, created_at FROM keel_inserted
        WHERE published_at IS NULL;
      ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO %2$s (seq, aggregate_type, aggregate_id, created_at, available_at)
        VALUES (NEW.seq, NEW.aggregate_type, NEW.aggregate_id, NEW.created_at, NEW.created_at)
        ON CONFLICT (seq) DO NOTHING;
      ELSIF TG_OP = 'DELETE' THEN
        DELETE FROM %2$s WHERE seq = ANY(ARRAY(SELECT seq FROM keel_deleted));
      ELSE
        TRUNCATE %2$s;
      END IF;
      RETURN NULL;
    END $keel_sync$$keel_function$, sync, pending);
  missing := NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = events AND tgname = '${table}_pending_insert');
  -- The insert and delete triggers see their rows as transition tables, one statement at a time.
  -- An event made unpublished again by hand is queued again; a mark sets published_at the other
  -- way, and the condition, evaluated without calling the function, spares every mark a call.
  FOR trigger IN
    SELECT * FROM (VALUES
      ('insert', 'INSERT', 'REFERENCING NEW TABLE AS keel_inserted FOR EACH STATEMENT'),
      ('delete', 'DELETE', 'REFERENCING OLD TABLE AS keel_deleted FOR EACH STATEMENT'),
      ('truncate', 'TRUNCATE', 'FOR EACH STATEMENT'),
      ('requeue', 'UPDATE OF published_at',
        'FOR EACH ROW WHEN (OLD.published_at IS NOT NULL AND NEW.published_at IS NULL)')
    ) AS t(suffix, event, fires)
  LOOP
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = events AND tgname = '${table}_pending_' || trigger.suffix) THEN
      EXECUTE format('CREATE TRIGGER %I AFTER %s ON %s %s EXECUTE FUNCTION %s()',
        '${table}_pending_' || trigger.suffix, trigger.event, events, trigger.fires, sync);
    END IF;
  END LOOP;
  -- A queue made anew, or events appended while no trigger queued them (a table of an earlier
  -- version, or one made again under the same name): queue every unpublished event. The insert
  -- trigger holds the table's insert lock from its creation to commit, so no append falls between.
  IF fresh OR missing THEN
    EXECUTE format('TRUNCATE %s', pending);
    IF upgrading THEN
      -- An earlier version recorded retry times and leases on the row; appends of this version
      -- leave available_at out, those of earlier versions still set it.
      EXECUTE format('INSERT INTO %s (seq, aggregate_type, aggregate_id, created_at, available_at, claimed_by, claimed_until)
        SELECT seq, aggregate_type, aggregate_id, created_at, coalesce(available_at, created_at), claimed_by, claimed_until
        FROM %s WHERE published_at IS NULL', pending, events);
      EXECUTE format('ALTER TABLE %s ALTER COLUMN available_at DROP NOT NULL', events);
    ELSE
      EXECUTE format('INSERT INTO %s (seq, aggregate_type, aggregate_id, created_at, available_at)
        SELECT seq, aggregate_type, aggregate_id, created_at, created_at FROM %s WHERE published_at IS NULL',
        pending, events);
    END IF;
    EXECUTE format('ALTER TABLE %s SET (fillfactor = 50)', events);
  END IF;
  -- Whoever may read, write or delete the events may do the same to their queue: a relay's role
  -- leases and dequeues there.
  FOR granted IN
    SELECT a.grantee, a.privilege_type FROM pg_class c, aclexplode(c.relacl) a
    WHERE c.oid = events AND a.grantee <> c.relowner
  LOOP
    EXECUTE format('GRANT %s ON %s TO %s', granted.privilege_type, pending,
      CASE WHEN granted.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(granted.grantee)) END);
  END LOOP;
END $keel_outbox$;
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
  | 'gauges'
  | 'dequeueStale';

/** A claimed queue row with its event's columns, all null when the event is gone. */
type QueuedRow = { readonly queued: string | number } & {
  readonly [column in keyof OutboxRow]: OutboxRow[column] | null;
};

interface Listener {
  readonly client: PostgresListenClient;
  readonly onNotification: (message: PostgresNotification) => void;
  readonly onError: (error: Error) => void;
}

/**
 * An {@link OutboxStore} in Postgres, safe for many relays at once: the events' table, and a narrow
 * queue of the unpublished ones that the relays' claims, leases and marks write to (see
 * {@link postgresOutboxDdl}).
 *
 * - **Append.** `append(client, events)` with the client inside your `BEGIN` inserts every event in
 *   one statement together with `pg_notify(channel)`, which Postgres delivers only at commit; the
 *   table's insert trigger queues them in the same transaction. Appends of one aggregate should be
 *   serialised by your own transaction (the row lock of the entity they describe, typically), so
 *   their order of commit is their order of append.
 * - **Claim.** One statement: it locks, with `FOR UPDATE SKIP LOCKED`, the first queued event of
 *   each aggregate that is neither leased nor waiting for its retry time, then leases it together
 *   with the following events of that aggregate up to the first one that is. Whoever holds an
 *   aggregate's first event holds the aggregate, so two relays never publish one aggregate at once.
 *   Each lease names the relay (`claimed_by`) and ends at `claimed_until`; the relay's writes are
 *   fenced by it.
 * - **Mark.** One statement dequeues the events the relay still holds and sets their
 *   `published_at`: an update that touches no indexed column, on pages left room for it.
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
  /** The pending table, quoted and qualified as the events' table is. */
  readonly #pending: string;
  readonly #vacuumEvery: number;
  /** Events marked published since the queue's last vacuum began. */
  #dequeued = 0;
  #vacuuming: Promise<void> | undefined;
  #vacuums = 0;
  #vacuumFailures = 0;
  #lastVacuumError: unknown;
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
    this.qualifiedName = quotedName(this.schema, this.table);
    this.ddl = postgresOutboxDdl(
      this.schema === undefined ? { table: this.table } : { table: this.table, schema: this.schema },
    );
    this.#clock = options.clock ?? wallClock;
    this.#vacuumEvery = checkInteger('vacuumEvery', options.vacuumEvery ?? DEFAULTS.vacuumEvery, 0);
    this.#telemetry = options.telemetry;
    const t = this.qualifiedName;
    const q = quotedName(this.schema, `${this.table}_pending`);
    this.#pending = q;
    // Every statement reaches rows of either table by `= ANY(ARRAY(subquery))`: an index lookup per
    // key, which is what a batch costs, where a join left to the planner could choose to read a
    // whole table whose statistics lag its growth.
    this.#sql = Object.freeze({
      // The insert trigger queues the events in the pending table.
      insert: `WITH inserted AS (
          INSERT INTO ${t} (id, type, aggregate_type, aggregate_id, payload, headers, created_at)
          SELECT u.id, u.type, u.aggregate_type, u.aggregate_id, u.payload::json, u.headers::json, $7
          FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[]) WITH ORDINALITY
            AS u(id, type, aggregate_type, aggregate_id, payload, headers, ord)
          ORDER BY u.ord
          RETURNING 1)
        SELECT (SELECT count(*) FROM inserted) AS inserted, pg_notify($8, '') AS notified`,
      // heads: the first queued event of each aggregate, claimable now, locked so no other relay
      // can take the aggregate in the meantime (SKIP LOCKED: it takes other aggregates). Its own
      // claimability is tested on the row itself, so the lock's re-check sees a claim that
      // committed after this statement began. chain: each head and the events after it, up to the
      // first one leased or waiting for its retry time, oldest first. The chain is read per head
      // (LATERAL, through the queue's aggregate index), so a claim costs what it takes, not a scan
      // of the whole backlog. The lease is written to the queue; the events are read once, by key.
      claim: `WITH heads AS (
          SELECT h.seq, h.aggregate_type, h.aggregate_id FROM ${q} h
          WHERE h.available_at <= $2
            AND (h.claimed_until IS NULL OR h.claimed_until <= $2)
            AND NOT EXISTS (
              SELECT 1 FROM ${q} p
              WHERE p.aggregate_type = h.aggregate_type AND p.aggregate_id = h.aggregate_id AND p.seq < h.seq)
          ORDER BY h.seq
          LIMIT $4
          FOR UPDATE SKIP LOCKED),
        chain AS (
          SELECT e.seq FROM heads h
          CROSS JOIN LATERAL (
            SELECT min(d.seq) AS seq FROM ${q} d
            WHERE d.aggregate_type = h.aggregate_type AND d.aggregate_id = h.aggregate_id
              AND d.seq > h.seq AND (d.available_at > $2 OR d.claimed_until > $2)) stop
          CROSS JOIN LATERAL (
            SELECT e.seq FROM ${q} e
            WHERE e.aggregate_type = h.aggregate_type AND e.aggregate_id = h.aggregate_id
              AND e.seq >= h.seq AND (stop.seq IS NULL OR e.seq < stop.seq)
            ORDER BY e.seq
            LIMIT $4) e
          ORDER BY e.seq
          LIMIT $4),
        leased AS (
          UPDATE ${q} l SET claimed_by = $1, claimed_until = $3
          WHERE l.seq = ANY(ARRAY(SELECT seq FROM chain))
            AND (l.claimed_until IS NULL OR l.claimed_until <= $2)
          RETURNING l.seq)
        SELECT l.seq AS queued, e.* FROM unnest(ARRAY(SELECT seq FROM leased)) AS l(seq)
        LEFT JOIN LATERAL (SELECT ${SELECT_COLUMNS} FROM ${t} o WHERE o.seq = l.seq) e ON true`,
      // Queue rows whose event is gone or published: left by writes that bypassed the triggers.
      dequeueStale: `DELETE FROM ${q} WHERE seq = ANY($1::bigint[]) AND claimed_by = $2`,
      // Dequeued and marked in one statement, fenced by the lease: the mark is a HOT update.
      markPublished: `WITH dequeued AS (
          DELETE FROM ${q}
          WHERE seq = ANY(ARRAY(SELECT o.seq FROM ${t} o WHERE o.id = ANY($3::text[]))) AND claimed_by = $2
          RETURNING seq)
        UPDATE ${t} SET published_at = $1 WHERE seq = ANY(ARRAY(SELECT seq FROM dequeued))`,
      release: `WITH released AS (
          UPDATE ${q} SET available_at = $4, claimed_by = NULL, claimed_until = NULL
          WHERE seq = (SELECT o.seq FROM ${t} o WHERE o.id = $1) AND claimed_by = $2
          RETURNING seq)
        UPDATE ${t} SET attempts = attempts + 1, last_error = $3 WHERE seq = (SELECT seq FROM released)`,
      unclaim: `UPDATE ${q} SET claimed_by = NULL, claimed_until = NULL
        WHERE seq = ANY(ARRAY(SELECT o.seq FROM ${t} o WHERE o.id = ANY($2::text[]))) AND claimed_by = $1`,
      // The requeue trigger queues the events again.
      requeue: `WITH requeued AS (
          UPDATE ${t} SET published_at = NULL, attempts = 0, last_error = NULL
          WHERE id = ANY($1::text[]) AND published_at IS NOT NULL
          RETURNING 1)
        SELECT (SELECT count(*) FROM requeued)::int AS requeued, pg_notify($2, '') AS notified`,
      // An event is published after it is appended, so every prunable event has `created_at` before
      // the cut-off too: the creation index bounds the scan to old events. The delete trigger
      // dequeues nothing here, as published events are not queued.
      prune: `DELETE FROM ${t} WHERE seq IN (
        SELECT seq FROM ${t} WHERE created_at < $1 AND published_at IS NOT NULL AND published_at < $1
        ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED)`,
      gauges: `SELECT count(*)::int AS unpublished, min(created_at) AS oldest FROM ${q}`,
    });
  }

  /**
   * Creates the tables, indexes and triggers unless they exist, and upgrades a table of an earlier
   * version (see {@link postgresOutboxDdl}). Safe to call from many processes at once: the DDL runs
   * under a transaction-scoped advisory lock on the table name.
   *
   * @example
   * await postgresOutbox({ pool }).ensureSchema();
   */
  async ensureSchema(): Promise<void> {
    // Keyed by the schema the tables land in, however the options spell it.
    const schema = this.schema === undefined ? 'current_schema()' : `'${this.schema}'`;
    // One simple query: its statements run as one transaction, which holds the lock to the end.
    await this.pool.query(
      `SELECT pg_advisory_xact_lock(hashtext('keel_outbox_ddl:' || ${schema} || '.${this.table}'));
${this.ddl}`,
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
   * One statement, in a transaction of its own. Its plan walks the queue's primary key in order
   * and stops at `limit` even on a queue Postgres has no statistics for yet (a new table, or a
   * backlog that grew faster than autovacuum analyses): the queue has no partial index whose bitmap
   * could tempt the planner into reading and sorting every unpublished event, as the events' table
   * of earlier versions did.
   */
  async claim(relayId: string, limit: number, leaseMs: number): Promise<ClaimedOutboxEvent[]> {
    checkClaim(relayId, limit, leaseMs);
    const now = this.#clock.now();
    const { rows } = await this.pool.query(this.#sql.claim, [relayId, now, now + leaseMs, limit]);
    const claimed: OutboxRow[] = [];
    const stale: string[] = [];
    for (const row of rows as QueuedRow[]) {
      if (row.id !== null && row.published_at === null) claimed.push(row as OutboxRow);
      else stale.push(String(row.queued));
    }
    // An event deleted, or marked published, while the triggers were bypassed (a replica's
    // session, a restore without triggers) left its queue row, which would hold its aggregate's
    // later events back at every lease.
    if (stale.length > 0) await this.pool.query(this.#sql.dequeueStale, [stale, relayId]);
    return claimed.sort(byAppendOrder).map(claimedFromRow);
  }

  async markPublished(relayId: string, ids: readonly string[]): Promise<void> {
    checkRelayId(relayId);
    if (checkIds(ids).length === 0) return;
    await this.pool.query(this.#sql.markPublished, [this.#clock.now(), relayId, ids]);
    this.#dequeued += ids.length;
    if (this.#vacuumEvery > 0 && this.#dequeued >= this.#vacuumEvery && this.#vacuuming === undefined) {
      this.#dequeued = 0;
      this.#vacuuming = this.#vacuum();
    }
  }

  /** What the queue's own vacuums did: how many ran, how many failed, and the last failure. */
  queueMaintenance(): { vacuums: number; failures: number; lastError: unknown } {
    return { vacuums: this.#vacuums, failures: this.#vacuumFailures, lastError: this.#lastVacuumError };
  }

  async #vacuum(): Promise<void> {
    try {
      await this.pool.query(`VACUUM (SKIP_LOCKED) ${this.#pending}`);
      this.#vacuums++;
    } catch (error) {
      // Autovacuum still comes; the failure shows in queueMaintenance().
      this.#vacuumFailures++;
      this.#lastVacuumError = error;
    } finally {
      this.#vacuuming = undefined;
    }
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
      // Unpublished events are found through the queue, which no index of the events' table covers.
      where.push(
        checked.published ? 'o.published_at IS NOT NULL' : `o.seq IN (SELECT seq FROM ${this.#pending})`,
      );
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
    const { rows } = await this.pool.query(this.#sql.requeue, [ids, this.channel]);
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
   * Releases the listening client, wakes every waiter and waits for the queue's vacuum under way.
   * The store stays usable for everything but `appended`, which then resolves at once.
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
    await this.#vacuuming;
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
