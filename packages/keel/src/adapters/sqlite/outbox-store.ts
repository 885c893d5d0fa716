/**
 * The transactional outbox in SQLite: events are rows written through the caller's handle inside
 * their `BEGIN`, so they commit or roll back with the state change, and one relay at a time publishes
 * them in append order. SQLite has one writer at a time, so relays on one file would only queue for
 * its write lock: the relay that holds the outbox's lease (one row beside the table, renewed as it
 * claims) is the only one that claims, and what it has claimed is kept in its store's memory rather
 * than written into each row. A claim is then a read, and each event is written once by the relay,
 * when it is marked published. The marks and releases are fenced by the lease, so a relay that lost
 * it (it stalled past the lease and another took over) changes nothing. Every write of the relay
 * finds rows by `seq` (the rowid), and the table carries only the indexes a claim, `find` and the
 * prune read, because each one is written again by every append and every publish.
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
  CLAIM_AGGREGATE_ID,
  CLAIM_AGGREGATE_TYPE,
  CLAIM_SEQ,
  checkClaim,
  checkIds,
  checkOutboxFilter,
  checkPrune,
  checkRelayId,
  claimedFromRow,
  claimedFromValues,
  OUTBOX_CLAIM_COLUMNS,
  OUTBOX_SELECT_COLUMNS,
  type OutboxRow,
  storedFromRow,
} from '../../outbox/sql-outbox.ts';
import type { OutboxGauges, OutboxTelemetry } from '../../outbox/telemetry.ts';
import { checkSqlIdentifier } from '../sql-identifier.ts';
import { EventsInFlight } from './events-in-flight.ts';
import type { SqliteDatabase, SqliteStatement, SqliteValue } from './idempotency-store.ts';
import { RelayWriteThread } from './relay-write-thread.ts';
import { WriteWithoutBlocking } from './write-without-blocking.ts';

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
  /**
   * Runs the relay's writes (its lease, marks, releases, relinquish and prunes) on a worker thread
   * with its own connection on `db`'s file, instead of on `db` in this thread. A mark rewrites every
   * row of its batch, and the commit that fills the WAL runs its checkpoint and `fsync`: on the
   * service's thread that is time no request runs, and on a thread of its own it runs beside the
   * relay's next batch. The thread waits for another connection's write lock by polling every
   * quarter of a millisecond, where the event loop's timers could not wait less than one, so a
   * writer that commits back to back does not keep the marks out.
   *
   * The thread is a second writer on the file, with what that asks of your transactions on `db`, as
   * with any other connection: begin those that write with `BEGIN IMMEDIATE` (a deferred one that
   * reads first fails with `SQLITE_BUSY_SNAPSHOT` when a mark commits in between), and expect a write
   * to wait for a mark now and then (about a millisecond for 500 events). The constructor checks that
   * `db` is a `node:sqlite` handle (the thread opens the file with `node:sqlite`, and two copies of
   * SQLite in one process do not see each other's locks) on a file in WAL mode, in normal locking
   * mode, with a busy timeout. The thread takes `db`'s `synchronous` setting, waits for the lock for
   * as long as `db`'s busy timeout, and never creates the file. Claims, finds and gauges still read
   * on `db`. After `relay.stop()`, call {@link SqliteOutboxStore.close} to end the thread; an idle
   * thread does not hold the process open.
   * @default false
   */
  writeThread?: boolean;
}

const DEFAULTS = Object.freeze({ table: 'keel_outbox' });

const MAX_TABLE_LENGTH = 48;

/**
 * One key for an aggregate. Aggregate types and ids never hold U+0000 (appends refuse it), so the
 * pair maps to one key and back.
 */
function aggregateKey(aggregateType: string, aggregateId: string): string {
  return `${aggregateType}\u0000${aggregateId}`;
}

/** Position of `available_at`, which the claim reads after {@link OUTBOX_CLAIM_COLUMNS}. */
const CLAIM_AVAILABLE_AT = 9;

/** How often a pending commit is looked for: from 1 ms, doubling to 50 ms while it stays open. */
const COMMIT_CHECK_FIRST_MS = 1;
const COMMIT_CHECK_MAX_MS = 50;
/**
 * A claim renews the lease only once less than this share of it is left, so most claims write
 * nothing. Every claim still returns with at least this share left: more than the 80 % a relay
 * publishes for, so its mark lands before another relay may take over.
 */
const LEASE_RENEW_BELOW = 0.9;
/** Wakes after an append on a driver that does not say whether its transaction is open. */
const BLIND_WAKES_MS: readonly number[] = [1, 10, 100];

/**
 * The DDL of the outbox table and its lease, for a migration tool. Idempotent (`IF NOT EXISTS`).
 * `seq` is the append order (never reused, thanks to `AUTOINCREMENT`); times are `INTEGER` epoch
 * milliseconds; payload and headers are JSON text. A partial index over unpublished rows gives the
 * claim its order, and the creation-time index serves `find` by time and the retention prune (an
 * event is published after it is created). It drops the indexes of earlier versions on type,
 * publication time and aggregates: each cost every append or publish a write, and those on
 * aggregates wrote into a page picked by the aggregate's id, so with ids as random as UUIDs an append
 * cost six times what it does without them. `find` by aggregate alone reads the whole table; give
 * it a time range (`since`, `until`) to read only that part.
 * The `<table>_lease` table holds at most one row: the relay that may publish, and until when.
 * Tables created by earlier versions keep their per-row `claimed_by` and `claimed_until` columns,
 * which are no longer read or written.
 *
 * @example
 * db.exec(sqliteOutboxDdl({ table: 'outbox' }));
 */
export function sqliteOutboxDdl(options: { table?: string } = {}): string {
  const table = checkSqlIdentifier('table', options.table ?? DEFAULTS.table, MAX_TABLE_LENGTH);
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
  last_error TEXT
);
CREATE TABLE IF NOT EXISTS "${table}_lease" (
  singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
  relay_id TEXT NOT NULL,
  until INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS "${table}_pending_idx" ON ${t} (seq) WHERE published_at IS NULL;
CREATE INDEX IF NOT EXISTS "${table}_created_idx" ON ${t} (created_at);
DROP INDEX IF EXISTS "${table}_aggregate_idx";
DROP INDEX IF EXISTS "${table}_pending_aggregate_idx";
DROP INDEX IF EXISTS "${table}_type_idx";
DROP INDEX IF EXISTS "${table}_published_idx";
`;
}

/** The relay's write statements. */
type WriteName =
  | 'lease'
  | 'relinquish'
  | 'markPublished'
  | 'markPublishedBySeq'
  | 'markPublishedBySeqRange'
  | 'release'
  | 'releaseBySeq'
  | 'prune';

type StatementName = WriteName | 'claim' | 'claimListed' | 'requeue' | 'gauges';

/** The switches of the drivers' statements that return rows as arrays instead of objects. */
interface ArrayRowSwitches {
  /** `node:sqlite` (Node 22.16, 24). */
  setReturnArrays?(enabled: boolean): void;
  /** better-sqlite3. */
  raw?(enabled?: boolean): unknown;
}

/**
 * Turns on array rows for `statement` if its driver has them, and says whether it did. A claim
 * reads every column of hundreds of rows: an array per row spares an object keyed by column name.
 */
function returnArrays(statement: SqliteStatement): boolean {
  const switches = statement as SqliteStatement & ArrayRowSwitches;
  if (typeof switches.setReturnArrays === 'function') {
    switches.setReturnArrays(true);
    return true;
  }
  if (typeof switches.raw === 'function') {
    switches.raw(true);
    return true;
  }
  return false;
}

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

/** The one value a `PRAGMA` read returns. */
function pragmaValue(db: SqliteDatabase, pragma: string): unknown {
  const row = db.prepare(`PRAGMA ${pragma}`).get() as Record<string, unknown> | undefined;
  return row === undefined ? undefined : Object.values(row)[0];
}

/**
 * The write thread for `db`, checked. The thread opens the file again with `node:sqlite`, so `db`
 * must be a `node:sqlite` handle on a file: another driver carries its own copy of SQLite, and two
 * copies in one process do not see each other's locks, so their writes could overwrite each other.
 * The file must be in WAL mode (in any other mode the thread's writes would lock `db`'s reads out)
 * and in normal locking mode (an exclusive one keeps the thread out). `db` needs a busy timeout:
 * the thread is a second writer, and without one a write on `db` that meets a mark fails at once.
 */
function writeThreadFor(db: SqliteDatabase, table: string, busyTimeoutMs: number): RelayWriteThread {
  const location = (db as { location?: () => string | null }).location;
  if (typeof location !== 'function') {
    throw new InvalidOptionError(
      'writeThread',
      "needs a node:sqlite DatabaseSync (Node 24 or later): the thread opens the file with node:sqlite, and another driver's copy of SQLite would not see its locks",
    );
  }
  const path = location.call(db);
  if (typeof path !== 'string' || path === '') {
    throw new InvalidOptionError(
      'writeThread',
      'needs db to be a database file the thread can open, not in memory',
    );
  }
  const mode = String(pragmaValue(db, 'journal_mode')).toLowerCase();
  if (mode !== 'wal') {
    throw new InvalidOptionError(
      'writeThread',
      `needs the file in WAL mode (run PRAGMA journal_mode = WAL on db first), got journal_mode ${mode}`,
    );
  }
  const locking = String(pragmaValue(db, 'locking_mode')).toLowerCase();
  if (locking !== 'normal') {
    throw new InvalidOptionError('writeThread', `needs locking_mode normal, got ${locking}`);
  }
  if (!(busyTimeoutMs > 0)) {
    throw new InvalidOptionError(
      'writeThread',
      'needs db to have a busy timeout (the DatabaseSync timeout option, or PRAGMA busy_timeout): the thread is a second writer on the file',
    );
  }
  const synchronous = Number(pragmaValue(db, 'synchronous'));
  return new RelayWriteThread({
    path,
    setup: Number.isInteger(synchronous) ? [`PRAGMA synchronous = ${synchronous}`] : [],
    table: `${table}_lease`,
  });
}

/**
 * An {@link OutboxStore} in one SQLite table.
 *
 * - **Append.** `append(db, events)` between your `BEGIN` and `COMMIT` writes the events with your
 *   state change; a handle outside a transaction is refused with {@link OutboxTransactionError}.
 *   Invalid events throw before anything is written.
 * - **One relay at a time.** A claim first takes the outbox's lease (a row in `<table>_lease`) for
 *   `leaseMs`, or renews it once less than 90 % is left; while another relay's lease is live it
 *   returns nothing. A relay that dies holding it leaves the outbox to the next one once it runs
 *   out; a relay that stops gives it up at once (`relinquish`).
 * - **Claim.** A read of unpublished events oldest first, less those in flight (kept in memory):
 *   it takes them in order but skips any waiting for its retry time and every later event of an
 *   aggregate that has one waiting or in flight. It reads on past skipped events until it has
 *   `limit` or none are left.
 *   `markPublished` finds the rows this store claimed by `seq`, and writes them only while the relay
 *   still holds the lease. While the store's own handle is inside a transaction, claims return
 *   nothing, so a relay never publishes events an open transaction could still roll back.
 * - **Wake-up.** An append in this process wakes `appended()` as soon as its transaction ends, so a
 *   relay publishes within milliseconds of the commit and polls only as a fallback (for appends made
 *   by other processes).
 * - **Other writers.** For several connections or processes on one file, use WAL mode and a
 *   `busy_timeout` as for `sqliteStore`. The relay's own writes (its lease, marks, releases and
 *   prunes) wait for another connection's write lock on a timer rather than in SQLite's busy
 *   handler, which would sleep on your thread: requests and timers keep running meanwhile, and the
 *   write still fails with `SQLITE_BUSY` once the handle's busy timeout has passed.
 * - **Writes on a thread.** With `writeThread: true` those writes run on a worker thread with its
 *   own connection, so marking a batch (a rewrite of each of its rows, and now and then a WAL
 *   checkpoint) runs beside the relay's next batch instead of before it.
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
  /** Whether the claim statement returns arrays (set when it is prepared). */
  #claimArrays = false;
  readonly #inserts = new WeakMap<object, SqliteStatement>();
  readonly #signal = new AppendSignal();
  readonly #pendingCommits = new Set<object>();
  /**
   * The events this store claimed for `#inFlightRelay` and has not yet seen marked, released or
   * unclaimed. The claim skips them and their aggregates' later events.
   */
  readonly #inFlight = new EventsInFlight();
  /** The relay's writes: they wait for another connection's write lock on timers, not in SQLite. */
  readonly #relayWrites: WriteWithoutBlocking;
  /** Where the relay's writes run instead, with `writeThread`. */
  readonly #writeThread: RelayWriteThread | undefined;
  /** The relay the events in flight were claimed for: the last one this store saw take the lease. */
  #inFlightRelay: string | undefined;
  /** Until when `#inFlightRelay` holds the lease, as of its last renewal here. */
  #leaseUntil = Number.NEGATIVE_INFINITY;
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
    this.table = checkSqlIdentifier('table', options.table ?? DEFAULTS.table, MAX_TABLE_LENGTH);
    this.ddl = sqliteOutboxDdl({ table: this.table });
    this.#clock = options.clock ?? wallClock;
    this.#telemetry = options.telemetry;
    this.#relayWrites = new WriteWithoutBlocking(this.db);
    if (options.writeThread !== undefined && typeof options.writeThread !== 'boolean') {
      throw new InvalidOptionError('writeThread', `must be a boolean, got ${String(options.writeThread)}`);
    }
    this.#writeThread =
      options.writeThread === true
        ? writeThreadFor(this.db, this.table, this.#relayWrites.busyTimeoutMs())
        : undefined;
    const t = `"${this.table}"`;
    const lease = `"${this.table}_lease"`;
    // Every write of the relay's goes through only while its relay (the last parameter) holds the
    // lease. Parameters are anonymous and in the order they appear: better-sqlite3 binds numbered
    // ones (`?1`) only by name, so an array of values would not reach them.
    const fenced = `EXISTS (SELECT 1 FROM ${lease} WHERE singleton = 1 AND relay_id = ?)`;
    const claimSql = (notInFlight: string) =>
      `SELECT ${OUTBOX_CLAIM_COLUMNS}, available_at FROM ${t} INDEXED BY "${this.table}_pending_idx"
        WHERE published_at IS NULL AND seq > ? AND ${notInFlight}
        ORDER BY seq LIMIT ?`;
    this.#sql = Object.freeze({
      insert: `INSERT INTO ${t} (id, type, aggregate_type, aggregate_id, payload, headers, created_at, available_at)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
      // Takes the lease when it is free or has run out, renews it for its holder, and returns a row
      // only when the relay holds it afterwards. The expiry is compared inside the statement, under
      // the write lock, so two relays can never both take it.
      // Parameters: the relay, the new expiry, now.
      lease: `INSERT INTO ${lease} (singleton, relay_id, until) VALUES (1, ?, ?)
        ON CONFLICT (singleton) DO UPDATE SET relay_id = excluded.relay_id, until = excluded.until
          WHERE relay_id = excluded.relay_id OR until <= ?
        RETURNING relay_id`,
      relinquish: `DELETE FROM ${lease} WHERE singleton = 1 AND relay_id = ?`,
      // The unpublished events after a `seq` in append order, up to a limit, less those in flight:
      // usually one run of `seq` (the batches of a backlog follow each other), which `claim` skips as
      // a range and `claimListed` as a JSON array. The claim decides in memory which of them it takes
      // (see `claim`). Parameters: after, the range or the array, the limit.
      claim: claimSql('seq NOT BETWEEN ? AND ?'),
      claimListed: claimSql('seq NOT IN (SELECT value FROM json_each(?))'),
      // Parameters of the marks: the time, the events (ids, seqs or a range of seqs), the relay.
      markPublished: `UPDATE ${t} SET published_at = ?
        WHERE published_at IS NULL AND id IN (SELECT value FROM json_each(?)) AND ${fenced}`,
      // The rowid finds a row without a probe of the id index: half the cost of a mark by id.
      markPublishedBySeq: `UPDATE ${t} SET published_at = ?
        WHERE published_at IS NULL AND seq IN (SELECT value FROM json_each(?)) AND ${fenced}`,
      // A batch claimed from a backlog is usually a run of consecutive `seq`: a range spares the JSON
      // list and its parse. Used only when every `seq` of the range is in the batch.
      markPublishedBySeqRange: `UPDATE ${t} SET published_at = ?
        WHERE seq BETWEEN ? AND ? AND published_at IS NULL AND ${fenced}`,
      // Parameters: the error, the retry time, the event (id or seq), the relay.
      release: `UPDATE ${t} SET attempts = attempts + 1, last_error = ?, available_at = ?
        WHERE id = ? AND published_at IS NULL AND ${fenced}`,
      releaseBySeq: `UPDATE ${t} SET attempts = attempts + 1, last_error = ?, available_at = ?
        WHERE seq = ? AND published_at IS NULL AND ${fenced}`,
      requeue: `UPDATE ${t} SET published_at = NULL, attempts = 0, last_error = NULL, available_at = ?
        WHERE published_at IS NOT NULL AND id IN (SELECT value FROM json_each(?))`,
      // An event is published after it is appended, so every prunable event has `created_at` before
      // the cut-off too: the scan walks the creation index over old events only.
      prune: `DELETE FROM ${t} WHERE seq IN (
        SELECT seq FROM ${t} WHERE created_at < ? AND published_at IS NOT NULL AND published_at < ?
        ORDER BY created_at LIMIT ?)`,
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
      if (name === 'claim' || name === 'claimListed') this.#claimArrays = returnArrays(statement);
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

  /**
   * Takes the outbox's lease for `relayId` (or renews it, once less than 90 % of it is left) and,
   * if it holds it, reads up to `limit` qualifying events oldest first. Another relay's live lease
   * yields nothing, as does an open transaction on the store's own handle.
   */
  async claim(relayId: string, limit: number, leaseMs: number): Promise<ClaimedOutboxEvent[]> {
    checkClaim(relayId, limit, leaseMs);
    // On a handle inside someone's transaction the claim would see rows that may still roll back.
    if (transactionOpen(this.db) === true) return [];
    const now = this.#clock.now();
    if (relayId !== this.#inFlightRelay || this.#leaseUntil - now < leaseMs * LEASE_RENEW_BELOW) {
      const held = await this.#writeGet('lease', [relayId, now + leaseMs, now]);
      if (held === undefined) return [];
      if (this.#inFlightRelay !== relayId) {
        // The lease changed hands within this store: what the previous relay had in flight is this
        // one's to publish now, and that relay's marks are fenced off.
        this.#inFlight.clear();
        this.#inFlightRelay = relayId;
      }
      this.#leaseUntil = now + leaseMs;
      // The lease may have waited for the write lock: look again for a transaction opened meanwhile.
      if (transactionOpen(this.db) === true) return [];
    }
    const inFlight = this.#inFlight;
    const span = inFlight.span();
    const statement = this.#statement(span.contiguous ? 'claim' : 'claimListed');
    const listed = span.contiguous ? undefined : JSON.stringify(inFlight.seqs());
    const claimed: ClaimedOutboxEvent[] = [];
    const claimedSeqs: number[] = [];
    // Aggregates whose earliest event met in this scan waits for its retry time (rare: a set only
    // once one is met).
    let waiting: Set<string> | undefined;
    let after = 0;
    // Unpublished events in append order, a page at a time: an event is taken unless its aggregate
    // has an event in flight or met one waiting here, which are its earlier events. Its earlier
    // events that are neither were taken before it in this scan, so a batch may carry several
    // events of one aggregate, in order. Usually the first page is the batch.
    scan: for (;;) {
      const rows =
        listed === undefined
          ? statement.all(after, span.lowest, span.highest, limit)
          : statement.all(after, listed, limit);
      for (const row of rows) {
        const values = this.#claimArrays ? (row as unknown as unknown[]) : undefined;
        const named = row as OutboxRow & { available_at: number | bigint };
        const seq = Number(values === undefined ? named.seq : values[CLAIM_SEQ]);
        after = seq;
        const type = (values === undefined ? named.aggregate_type : values[CLAIM_AGGREGATE_TYPE]) as string;
        const id = (values === undefined ? named.aggregate_id : values[CLAIM_AGGREGATE_ID]) as string;
        if (inFlight.holdsAggregate(type, id)) continue;
        if (waiting?.has(aggregateKey(type, id))) continue;
        if (Number(values === undefined ? named.available_at : values[CLAIM_AVAILABLE_AT]) > now) {
          waiting ??= new Set();
          waiting.add(aggregateKey(type, id));
          continue;
        }
        claimed.push(values === undefined ? claimedFromRow(named) : claimedFromValues(values));
        claimedSeqs.push(seq);
        if (claimed.length === limit) break scan;
      }
      if (rows.length < limit) break;
    }
    for (let i = 0; i < claimed.length; i++) {
      const event = claimed[i] as ClaimedOutboxEvent;
      inFlight.add(event.id, claimedSeqs[i] as number, event.aggregateType, event.aggregateId);
    }
    return claimed;
  }

  /**
   * Takes the `seq` of `id` off the events in flight, if `relayId` claimed it through this store.
   * Another relay's calls leave the list alone: its events are in flight for the lease holder.
   */
  #settle(relayId: string, id: string): number | undefined {
    if (relayId !== this.#inFlightRelay) return undefined;
    return this.#inFlight.settle(id);
  }

  /** The `seq` of `id` if `relayId` claimed it through this store and it is still in flight. */
  #seqInFlight(relayId: string, id: string): number | undefined {
    return relayId === this.#inFlightRelay ? this.#inFlight.seqOf(id) : undefined;
  }

  async markPublished(relayId: string, ids: readonly string[]): Promise<void> {
    checkRelayId(relayId);
    if (checkIds(ids).length === 0) return;
    const now = this.#clock.now();
    const seqs = new Set<number>();
    const unknown: string[] = [];
    let lowest = Number.POSITIVE_INFINITY;
    let highest = Number.NEGATIVE_INFINITY;
    for (const id of ids) {
      const seq = this.#seqInFlight(relayId, id);
      if (seq === undefined) unknown.push(id);
      else if (!seqs.has(seq)) {
        seqs.add(seq);
        if (seq < lowest) lowest = seq;
        if (seq > highest) highest = seq;
      }
    }
    try {
      // The lease fences both. The seqs are distinct, so as many as the range is wide fill it.
      if (seqs.size > 0 && highest - lowest + 1 === seqs.size) {
        await this.#write('markPublishedBySeqRange', [now, lowest, highest, relayId]);
      } else if (seqs.size > 0) {
        await this.#write('markPublishedBySeq', [now, JSON.stringify([...seqs]), relayId]);
      }
      if (unknown.length > 0) await this.#write('markPublished', [now, JSON.stringify(unknown), relayId]);
    } finally {
      // Taken off the events in flight only once written (or failed): while the write waits for
      // the lock, a claim beside it must not take these events again.
      for (const id of ids) this.#settle(relayId, id);
    }
  }

  async release(relayId: string, id: string, error: string, retryAt: number): Promise<void> {
    checkRelayId(relayId);
    const seq = this.#seqInFlight(relayId, id);
    try {
      await (seq === undefined
        ? this.#write('release', [String(error), retryAt, id, relayId])
        : this.#write('releaseBySeq', [String(error), retryAt, seq, relayId]));
    } finally {
      this.#settle(relayId, id);
    }
  }

  /** Puts the events back among the claimable ones: nothing was written for them, so nothing is. */
  async unclaim(relayId: string, ids: readonly string[]): Promise<void> {
    checkRelayId(relayId);
    if (checkIds(ids).length === 0) return;
    for (const id of ids) this.#settle(relayId, id);
  }

  /**
   * Gives up the lease if `relayId` holds it, so another relay takes over at its next claim instead
   * of when the lease runs out. The relay calls it when it stops.
   */
  async relinquish(relayId: string): Promise<void> {
    checkRelayId(relayId);
    await this.#write('relinquish', [relayId]);
    if (relayId === this.#inFlightRelay) {
      this.#inFlight.clear();
      this.#inFlightRelay = undefined;
      this.#leaseUntil = Number.NEGATIVE_INFINITY;
    }
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
    return this.#write('prune', [before, before, limit]);
  }

  /**
   * Ends the write thread of `writeThread`, once its writes are answered; later relay writes fail.
   * Without one it does nothing. The handle stays open: it is yours.
   *
   * @example
   * await relay.stop();
   * await outbox.close();
   */
  async close(): Promise<void> {
    await this.#writeThread?.close();
  }

  /**
   * Runs one of the relay's writes, on the write thread or on `db`, and resolves with the rows it
   * changed. On `db` it waits for another connection's lock on timers; either way it fails with
   * `SQLITE_BUSY` once `db`'s busy timeout has passed.
   */
  async #write(name: WriteName, params: SqliteValue[]): Promise<number> {
    const thread = this.#writeThread;
    if (thread !== undefined) return thread.run(this.#sql[name], params, this.#relayWrites.busyTimeoutMs());
    const statement = this.#statement(name);
    return Number((await this.#relayWrites.run(() => statement.run(...params))).changes);
  }

  /** {@link #write} for a write with `RETURNING`: resolves with its first row, or `undefined`. */
  #writeGet(name: WriteName, params: SqliteValue[]): Promise<unknown> {
    const thread = this.#writeThread;
    if (thread !== undefined) return thread.get(this.#sql[name], params, this.#relayWrites.busyTimeoutMs());
    const statement = this.#statement(name);
    return this.#relayWrites.run(() => statement.get(...params));
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

  /**
   * Wakes relays waiting in {@link appended} for events committed through a connection this store
   * does not see: a worker thread's own handle on the same file, say, that reports its commits.
   * Appends made with this store's `append` need no call; without one, other connections' appends
   * are found at the relay's next poll.
   *
   * @example
   * producerThread.on('message', () => outbox.notifyAppended());
   */
  notifyAppended(): void {
    this.#signal.notify();
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
