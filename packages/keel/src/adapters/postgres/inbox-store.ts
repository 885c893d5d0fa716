/**
 * The consumer inbox in Postgres: three tables (processed ids, failed attempts, dead letters) and a
 * transaction per event on a client from the user's pool, so a handler's writes and the inbox row
 * commit together and two deliveries of one event racing on two connections make one effect.
 *
 * @module
 */
import { InvalidOptionError } from '../../errors/keel-error.ts';
import type { WallClock } from '../../idempotency/store.ts';
import { wallClock } from '../../idempotency/store.ts';
import type { OutboxEvent } from '../../outbox/event.ts';
import {
  checkEventSelection,
  checkPruneLimit,
  type DeadLetter,
  type DeadLetterFilter,
  type DeadLetterOutcome,
  type FailedAttempts,
  type FailureSummary,
  type InboxResult,
  type InboxStore,
} from '../../outbox/inbox-store.ts';
import {
  type AttemptsRow,
  attemptsFromRow,
  DEAD_LETTER_COLUMNS,
  type DeadLetterRow,
  deadLetterFromRow,
} from '../../outbox/sql-inbox.ts';
import { checkSqlIdentifier } from '../sql-identifier.ts';
import type { PostgresQueryable } from './idempotency-store.ts';

/** The part of a `pg` `PoolClient` this store calls: queries, and handing the client back. */
export interface PostgresPoolClient extends PostgresQueryable {
  /** Returns the client to the pool; with an error, the pool discards it instead. */
  release(error?: Error | boolean): void;
}

/**
 * The part of a `pg` `Pool` this store calls. Keel never imports `pg`; pass your own pool.
 *
 * @example
 * import pg from 'pg';
 * const pool: PostgresPool<pg.PoolClient> = new pg.Pool({ connectionString: process.env.DATABASE_URL });
 */
export interface PostgresPool<C extends PostgresPoolClient = PostgresPoolClient> extends PostgresQueryable {
  connect(): Promise<C>;
}

/** Options of {@link postgresInbox}. */
export interface PostgresInboxOptions<C extends PostgresPoolClient = PostgresPoolClient> {
  /** The user's `pg.Pool`; each event's transaction runs on a client from it, which handlers receive. */
  pool: PostgresPool<C>;
  /**
   * Name of the inbox table; the attempts and dead letters live in `<table>_attempts` and
   * `<table>_dead_letters`. Letters, digits and `_`, not starting with a digit, at most 32 characters.
   * @default 'keel_inbox'
   */
  table?: string;
  /**
   * Schema of the tables, same rules as `table` (at most 63 characters).
   * @default the connection's `search_path`
   */
  schema?: string;
  /**
   * Wall time for `processed_at` and dead letters parked without a recorded failure.
   * @default wallClock
   */
  clock?: WallClock;
}

const DEFAULTS = Object.freeze({ table: 'keel_inbox' });

/** Room for `_dead_letters_aggregate_idx` within Postgres' 63-byte names. */
const MAX_TABLE_LENGTH = 32;

/**
 * The DDL of the inbox tables, for a migration tool. Idempotent (`IF NOT EXISTS`); times are
 * `bigint` epoch milliseconds, payload and headers `jsonb`.
 *
 * @example
 * await migrate.sql(postgresInboxDdl({ table: 'invoice_inbox', schema: 'billing' }));
 */
export function postgresInboxDdl(options: { table?: string; schema?: string } = {}): string {
  const table = checkSqlIdentifier('table', options.table ?? DEFAULTS.table, MAX_TABLE_LENGTH);
  const schema = options.schema === undefined ? undefined : checkSqlIdentifier('schema', options.schema, 63);
  const name = (suffix: string) =>
    schema === undefined ? `"${table}${suffix}"` : `"${schema}"."${table}${suffix}"`;
  return `CREATE TABLE IF NOT EXISTS ${name('')} (
  group_name text NOT NULL,
  event_id text NOT NULL,
  processed_at bigint NOT NULL,
  PRIMARY KEY (group_name, event_id)
);
CREATE INDEX IF NOT EXISTS "${table}_processed_idx" ON ${name('')} (processed_at);
CREATE TABLE IF NOT EXISTS ${name('_attempts')} (
  group_name text NOT NULL,
  event_id text NOT NULL,
  attempts integer NOT NULL,
  first_failed_at bigint NOT NULL,
  last_failed_at bigint NOT NULL,
  last_error text NOT NULL,
  last_error_stack text,
  PRIMARY KEY (group_name, event_id)
);
CREATE INDEX IF NOT EXISTS "${table}_attempts_failed_idx" ON ${name('_attempts')} (last_failed_at);
CREATE TABLE IF NOT EXISTS ${name('_dead_letters')} (
  group_name text NOT NULL,
  event_id text NOT NULL,
  type text NOT NULL,
  aggregate_type text NOT NULL,
  aggregate_id text NOT NULL,
  payload jsonb NOT NULL,
  headers jsonb NOT NULL,
  created_at bigint NOT NULL,
  attempts integer NOT NULL,
  first_failed_at bigint NOT NULL,
  last_failed_at bigint NOT NULL,
  last_error text,
  last_error_stack text,
  PRIMARY KEY (group_name, event_id)
);
CREATE INDEX IF NOT EXISTS "${table}_dead_letters_created_idx" ON ${name('_dead_letters')} (group_name, created_at);
CREATE INDEX IF NOT EXISTS "${table}_dead_letters_type_idx" ON ${name('_dead_letters')} (group_name, type);
CREATE INDEX IF NOT EXISTS "${table}_dead_letters_aggregate_idx" ON ${name('_dead_letters')} (group_name, aggregate_type, aggregate_id);
`;
}

type StatementName =
  | 'insert'
  | 'processed'
  | 'release'
  | 'settle'
  | 'recordFailure'
  | 'attempts'
  | 'takeAttempts'
  | 'upsertDeadLetter'
  | 'deadLetters'
  | 'removeDeadLetters'
  | 'count'
  | 'prune';

/**
 * An inbox in Postgres. Each `process` takes a client from the pool, runs `BEGIN`, and inserts the
 * `(group, id)` row with `ON CONFLICT DO NOTHING` before anything else. The primary key decides
 * between racing deliveries: a second transaction inserting the same id waits on the first one's
 * uncommitted row, then finds a conflict (a duplicate: the handler is not run) when the first
 * commits, or inserts it and runs the handler when the first rolls back. Never two effects, and the
 * loser is not an error.
 *
 * Payload and headers of dead letters are `jsonb`, which cannot hold the character U+0000.
 *
 * @example
 * const inbox = postgresInbox({ pool });
 * await inbox.ensureSchema();
 * const consumer = outboxConsumer({ transport, inbox, group: 'invoices', handlers: {
 *   'payment.completed': async (event, tx) => {
 *     await tx.query('INSERT INTO invoices (payment_id) VALUES ($1)', [event.aggregateId]);
 *   },
 * } });
 */
export class PostgresInboxStore<C extends PostgresPoolClient = PostgresPoolClient> implements InboxStore<C> {
  readonly pool: PostgresPool<C>;
  readonly table: string;
  readonly schema: string | undefined;
  /** The DDL {@link ensureSchema} runs, for a migration tool. */
  readonly ddl: string;
  readonly #clock: WallClock;
  readonly #sql: Readonly<Record<StatementName, string>>;

  constructor(options: PostgresInboxOptions<C>) {
    if (typeof options?.pool?.query !== 'function' || typeof options.pool.connect !== 'function') {
      throw new InvalidOptionError('pool', 'must be a pg Pool (an object with query and connect methods)');
    }
    if (options.clock !== undefined && typeof options.clock?.now !== 'function') {
      throw new InvalidOptionError('clock', 'must have a now() method returning epoch milliseconds');
    }
    this.pool = options.pool;
    this.table = checkSqlIdentifier('table', options.table ?? DEFAULTS.table, MAX_TABLE_LENGTH);
    this.schema = options.schema === undefined ? undefined : checkSqlIdentifier('schema', options.schema, 63);
    this.#clock = options.clock ?? wallClock;
    this.ddl = postgresInboxDdl(
      this.schema === undefined ? { table: this.table } : { table: this.table, schema: this.schema },
    );
    const name = (suffix: string) =>
      this.schema === undefined ? `"${this.table}${suffix}"` : `"${this.schema}"."${this.table}${suffix}"`;
    const inbox = name('');
    const attempts = name('_attempts');
    const dead = name('_dead_letters');
    this.#sql = Object.freeze({
      insert: `INSERT INTO ${inbox} (group_name, event_id, processed_at) VALUES ($1, $2, $3)
        ON CONFLICT (group_name, event_id) DO NOTHING`,
      processed: `SELECT 1 FROM ${inbox} WHERE group_name = $1 AND event_id = $2`,
      release: `DELETE FROM ${inbox} WHERE group_name = $1 AND event_id = $2`,
      settle: `WITH cleared AS (DELETE FROM ${attempts} WHERE group_name = $1 AND event_id = $2)
        DELETE FROM ${dead} WHERE group_name = $1 AND event_id = $2`,
      recordFailure: `INSERT INTO ${attempts} AS a (group_name, event_id, attempts, first_failed_at,
          last_failed_at, last_error, last_error_stack) VALUES ($1, $2, 1, $3, $3, $4, $5)
        ON CONFLICT (group_name, event_id) DO UPDATE SET attempts = a.attempts + 1,
          last_failed_at = EXCLUDED.last_failed_at, last_error = EXCLUDED.last_error,
          last_error_stack = EXCLUDED.last_error_stack
        RETURNING attempts, first_failed_at, last_failed_at, last_error, last_error_stack`,
      attempts: `SELECT attempts, first_failed_at, last_failed_at, last_error, last_error_stack
        FROM ${attempts} WHERE group_name = $1 AND event_id = $2`,
      takeAttempts: `DELETE FROM ${attempts} WHERE group_name = $1 AND event_id = $2
        RETURNING attempts, first_failed_at, last_failed_at, last_error, last_error_stack`,
      // $9..$13 are the attempts being moved; with none ($9 = 0) an existing dead letter stays as is.
      upsertDeadLetter: `INSERT INTO ${dead} AS d (${DEAD_LETTER_COLUMNS})
        VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7::jsonb, $8, $9, $10, $11, $12, $13)
        ON CONFLICT (group_name, event_id) DO UPDATE SET attempts = d.attempts + EXCLUDED.attempts,
          first_failed_at = LEAST(d.first_failed_at, EXCLUDED.first_failed_at),
          last_failed_at = CASE WHEN EXCLUDED.attempts > 0 THEN EXCLUDED.last_failed_at ELSE d.last_failed_at END,
          last_error = CASE WHEN EXCLUDED.attempts > 0 THEN EXCLUDED.last_error ELSE d.last_error END,
          last_error_stack = CASE WHEN EXCLUDED.attempts > 0 THEN EXCLUDED.last_error_stack
            ELSE d.last_error_stack END`,
      deadLetters: `SELECT ${DEAD_LETTER_COLUMNS} FROM ${dead} WHERE group_name = $1
        AND ($2::text[] IS NULL OR event_id = ANY($2::text[]))
        AND ($3::text IS NULL OR type = $3)
        AND ($4::text IS NULL OR aggregate_type = $4)
        AND ($5::text IS NULL OR aggregate_id = $5)
        AND ($6::bigint IS NULL OR created_at >= $6)
        AND ($7::bigint IS NULL OR created_at < $7)
        ORDER BY created_at, event_id LIMIT $8`,
      removeDeadLetters: `DELETE FROM ${dead} WHERE group_name = $1 AND event_id = ANY($2::text[])`,
      count: `SELECT count(*)::int AS n FROM ${dead} WHERE $1::text IS NULL OR group_name = $1`,
      prune: `WITH inbox AS (
          DELETE FROM ${inbox} WHERE (group_name, event_id) IN (
            SELECT group_name, event_id FROM ${inbox} WHERE processed_at < $1
            ORDER BY processed_at LIMIT $2 FOR UPDATE SKIP LOCKED)
          RETURNING 1),
        attempts AS (
          DELETE FROM ${attempts} WHERE (group_name, event_id) IN (
            SELECT group_name, event_id FROM ${attempts} WHERE last_failed_at < $1
            ORDER BY last_failed_at LIMIT $2 FOR UPDATE SKIP LOCKED)
          RETURNING 1)
        SELECT (SELECT count(*) FROM inbox)::int + (SELECT count(*) FROM attempts)::int AS n`,
    });
  }

  /**
   * Creates the tables and indexes unless they exist. Safe to call from many processes at once: the
   * DDL runs under a transaction-scoped advisory lock on the table name.
   *
   * @example
   * await postgresInbox({ pool }).ensureSchema();
   */
  async ensureSchema(): Promise<void> {
    const lockName = this.schema === undefined ? this.table : `${this.schema}.${this.table}`;
    await this.pool.query(
      `DO $keel$ BEGIN
        PERFORM pg_advisory_xact_lock(hashtext('keel_inbox_ddl:${lockName}'));
        ${this.ddl}
      END $keel$;`,
    );
  }

  /** Runs `work` on a pooled client inside `BEGIN` … `COMMIT`, rolling back when it throws. */
  async #transaction<T>(work: (client: C) => Promise<T>): Promise<T> {
    const client = await this.pool.connect();
    let broken: Error | undefined;
    try {
      await client.query('BEGIN');
      try {
        const result = await work(client);
        await client.query('COMMIT');
        return result;
      } catch (error) {
        try {
          await client.query('ROLLBACK');
        } catch (rollbackError) {
          // A client that cannot roll back is in an unknown state: the pool must not reuse it.
          broken = rollbackError instanceof Error ? rollbackError : new Error(String(rollbackError));
        }
        throw error;
      }
    } finally {
      client.release(broken);
    }
  }

  async process<T>(group: string, eventId: string, work: (tx: C) => Promise<T>): Promise<InboxResult<T>> {
    const duplicate = Symbol('duplicate');
    try {
      return await this.#transaction(async (client) => {
        const inserted = await client.query(this.#sql.insert, [group, eventId, this.#clock.now()]);
        // Nothing was written; throwing the sentinel rolls the transaction back.
        if (inserted.rowCount !== 1) throw duplicate;
        const value = await work(client);
        await client.query(this.#sql.settle, [group, eventId]);
        return { duplicate: false, value } as const;
      });
    } catch (error) {
      if (error === duplicate) return { duplicate: true };
      throw error;
    }
  }

  async isProcessed(group: string, eventId: string): Promise<boolean> {
    const { rows } = await this.pool.query(this.#sql.processed, [group, eventId]);
    return rows.length > 0;
  }

  async recordFailure(
    group: string,
    eventId: string,
    failure: FailureSummary,
    at: number,
  ): Promise<FailedAttempts> {
    const { rows } = await this.pool.query(this.#sql.recordFailure, [
      group,
      eventId,
      at,
      failure.message,
      failure.stack,
    ]);
    return attemptsFromRow(rows[0] as AttemptsRow);
  }

  async failedAttempts(group: string, eventId: string): Promise<FailedAttempts | undefined> {
    const { rows } = await this.pool.query(this.#sql.attempts, [group, eventId]);
    const row = rows[0] as AttemptsRow | undefined;
    return row && attemptsFromRow(row);
  }

  /**
   * Takes the event's inbox key for the length of the transaction (inserting, then deleting, its
   * row), so a delivery of the same event being processed right now is waited for, and one arriving
   * meanwhile waits for this — either way the event ends up processed or parked, and a later success
   * removes the dead letter in its own transaction.
   */
  deadLetter(group: string, event: OutboxEvent): Promise<DeadLetterOutcome> {
    return this.#transaction(async (client): Promise<DeadLetterOutcome> => {
      const claimed = await client.query(this.#sql.insert, [group, event.id, this.#clock.now()]);
      const taken = await client.query(this.#sql.takeAttempts, [group, event.id]);
      if (claimed.rowCount !== 1) return 'duplicate';
      await client.query(this.#sql.release, [group, event.id]);
      const failed = taken.rows[0] === undefined ? undefined : attemptsFromRow(taken.rows[0] as AttemptsRow);
      const now = this.#clock.now();
      await client.query(this.#sql.upsertDeadLetter, [
        group,
        event.id,
        event.type,
        event.aggregateType,
        event.aggregateId,
        JSON.stringify(event.payload) ?? 'null',
        JSON.stringify(event.headers ?? {}),
        event.createdAt,
        failed?.attempts ?? 0,
        failed?.firstFailedAt ?? now,
        failed?.lastFailedAt ?? now,
        failed?.lastError.message ?? null,
        failed?.lastError.stack ?? null,
      ]);
      return 'dead-lettered';
    });
  }

  async deadLetters(group: string, filter: DeadLetterFilter): Promise<DeadLetter[]> {
    const checked = checkEventSelection(filter);
    const { rows } = await this.pool.query(this.#sql.deadLetters, [
      group,
      checked.ids,
      checked.type,
      checked.aggregateType,
      checked.aggregateId,
      checked.since,
      checked.until,
      checked.limit,
    ]);
    return (rows as DeadLetterRow[]).map((row) => deadLetterFromRow(row, 'parsed'));
  }

  async removeDeadLetters(group: string, eventIds: readonly string[]): Promise<number> {
    if (eventIds.length === 0) return 0;
    const result = await this.pool.query(this.#sql.removeDeadLetters, [group, [...eventIds]]);
    return result.rowCount ?? 0;
  }

  async countDeadLetters(group?: string): Promise<number> {
    const { rows } = await this.pool.query(this.#sql.count, [group ?? null]);
    return (rows[0] as { n: number }).n;
  }

  async prune(before: number, limit: number): Promise<number> {
    if (checkPruneLimit(limit) === 0) return 0;
    const { rows } = await this.pool.query(this.#sql.prune, [before, limit]);
    return (rows[0] as { n: number }).n;
  }
}

/**
 * Builds a {@link PostgresInboxStore} over the user's pool. Call `ensureSchema()` once at start-up,
 * or run {@link postgresInboxDdl} from your migrations. Handlers receive the pool's client typed as
 * `C`: name your driver's client type (`postgresInbox<pg.PoolClient>`) to use its full API there,
 * since TypeScript cannot infer it through `pg.Pool`'s overloaded `connect`.
 *
 * @example
 * import pg from 'pg';
 * const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL });
 * const inbox = postgresInbox<pg.PoolClient>({ pool, table: 'invoice_inbox' });
 * await inbox.ensureSchema();
 * await inbox.process('invoices', event.id, async (tx) => {
 *   await tx.query('INSERT INTO invoices (payment_id) VALUES ($1)', [event.aggregateId]);
 * });
 */
export function postgresInbox<C extends PostgresPoolClient = PostgresPoolClient>(
  options: PostgresInboxOptions<C>,
): PostgresInboxStore<C> {
  return new PostgresInboxStore(options);
}
