import { createHash } from 'node:crypto';
import { InvalidOptionError } from '../../errors/keel-error.ts';
import {
  checkSweepLimit,
  RECORD_COLUMNS,
  type RecordRow,
  recordFromRow,
  recordValues,
} from '../../idempotency/sql-record.ts';
import type { IdempotencyRecord, IdempotencyStore, TransactionHandle } from '../../idempotency/store.ts';
import { checkSqlIdentifier } from '../sql-identifier.ts';
import { BatchedWrites, keyOfWrite, type WriteOp } from './batched-writes.ts';
import { StatementBatch } from './statement-batch.ts';

/**
 * The part of a `pg` `Pool`, `PoolClient` or `Client` this store calls. Keel never imports `pg`;
 * pass your own pool (or any driver with the same `query` shape).
 *
 * @example
 * import pg from 'pg';
 * const pool: PostgresQueryable = new pg.Pool({ connectionString: process.env.DATABASE_URL });
 */
export interface PostgresQueryable {
  query(text: string, values?: unknown[]): Promise<{ rows: unknown[]; rowCount: number | null }>;
}

/** Options of {@link postgresStore}. */
export interface PostgresIdempotencyStoreOptions {
  /** The user's `pg.Pool` (or a `Client`); every write without a `tx` runs on it. */
  pool: PostgresQueryable;
  /**
   * Table name: letters, digits and `_`, starting with a letter or `_`, at most 48 characters.
   * @default 'keel_idempotency'
   */
  table?: string;
  /**
   * Schema of the table, same rules as `table`.
   * @default the connection's `search_path`
   */
  schema?: string;
  /**
   * Whether claims run as named (prepared) statements, which Postgres parses and plans once per
   * connection instead of at every claim: a claim's statement has no plan to choose, so the cached
   * one never goes stale as the table grows. The pool must then accept pg's query objects
   * (`{ name, text, values }`), as `pg.Pool` and `pg.Client` do. Set `false` behind a pooler that
   * does not keep prepared statements between transactions (PgBouncer in transaction mode before
   * 1.21).
   * @default true
   */
  namedStatements?: boolean;
}

const DEFAULTS = Object.freeze({ table: 'keel_idempotency', namedStatements: true });

/** Most operations one batched statement carries. */
const MAX_BATCH = 200;

/** Most batched statements of one kind in flight; later operations wait for the next batch. */
const MAX_IN_FLIGHT = 1;

/** Room left for the index suffixes (`_lease_idx`, `_expires_idx`) within Postgres' 63-byte names. */
const MAX_TABLE_LENGTH = 48;

/**
 * The DDL of the idempotency table, for a migration tool. Idempotent (`IF NOT EXISTS`). Times are
 * `bigint` epoch milliseconds; the response and phases are `jsonb`.
 *
 * @example
 * await migrate.sql(postgresIdempotencyDdl({ table: 'idempotency', schema: 'billing' }));
 */
export function postgresIdempotencyDdl(options: { table?: string; schema?: string } = {}): string {
  const table = checkSqlIdentifier('table', options.table ?? DEFAULTS.table, MAX_TABLE_LENGTH);
  const schema = options.schema === undefined ? undefined : checkSqlIdentifier('schema', options.schema, 63);
  const qualified = schema === undefined ? `"${table}"` : `"${schema}"."${table}"`;
  return `CREATE TABLE IF NOT EXISTS ${qualified} (
  key text PRIMARY KEY,
  fingerprint text NOT NULL,
  state text NOT NULL CHECK (state IN ('in-flight', 'completed')),
  token text NOT NULL,
  lease_until bigint NOT NULL,
  expires_at bigint NOT NULL,
  sequence bigint,
  response jsonb,
  recovery_point text,
  phases jsonb NOT NULL DEFAULT '{}'::jsonb,
  created_at bigint NOT NULL,
  updated_at bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS "${table}_lease_idx" ON ${qualified} (state, lease_until);
CREATE INDEX IF NOT EXISTS "${table}_expires_idx" ON ${qualified} (expires_at);
`;
}

/**
 * The DDL for the default table `keel_idempotency` in the connection's `search_path`.
 *
 * @example
 * await pool.query(POSTGRES_IDEMPOTENCY_DDL);
 */
export const POSTGRES_IDEMPOTENCY_DDL: string = postgresIdempotencyDdl();

/**
 * An idempotency store in one Postgres table. Every primitive is a single statement: insert is
 * `INSERT … ON CONFLICT DO NOTHING`, replace and delete are fenced by `WHERE token = $n`, and the
 * purge deletes a bounded batch with `FOR UPDATE SKIP LOCKED` so several sweepers never block each
 * other. Reads, claims, completions and releases issued during the same event-loop turn by
 * concurrent requests travel together as one statement over arrays, so a busy service pays one
 * round trip and one commit for many keys; an operation alone in its turn runs a plain single-row
 * statement instead, which Postgres plans in a fraction of the time. Claims run as named
 * statements, parsed and planned once per connection (`namedStatements`). `replace` runs on the
 * caller's transaction client when one is passed as `tx`, so the business write and the stored
 * response commit — or roll back — together.
 *
 * The response and phases are `jsonb`, which cannot hold the character U+0000: encode binary bodies
 * (base64, say) in `beforeStore`.
 *
 * @example
 * const store = postgresStore({ pool });
 * await store.ensureSchema();
 * const engine = idempotency({ store });
 */
export class PostgresIdempotencyStore implements IdempotencyStore {
  readonly pool: PostgresQueryable;
  readonly table: string;
  readonly schema: string | undefined;
  /** The schema-qualified, quoted table name used in every statement. */
  readonly qualifiedName: string;
  /** The DDL {@link ensureSchema} runs, for a migration tool. */
  readonly ddl: string;
  readonly #sql: Readonly<
    Record<'get' | 'getMany' | 'claim' | 'replace' | 'delete' | 'leases' | 'purge', string>
  >;
  readonly #gets: StatementBatch<string, IdempotencyRecord | undefined>;
  /** Claims travel apart from the other writes so their statement can skip the flush wait. */
  readonly #claims: StatementBatch<WriteOp, boolean>;
  readonly #writes: StatementBatch<WriteOp, boolean>;
  /** Runs a claim's statement: named when {@link PostgresIdempotencyStoreOptions.namedStatements}. */
  readonly #runClaim: (
    text: string,
    values: unknown[],
  ) => Promise<{ rows: unknown[]; rowCount: number | null }>;

  constructor(options: PostgresIdempotencyStoreOptions) {
    if (typeof options?.pool?.query !== 'function') {
      throw new InvalidOptionError('pool', 'must be a pg Pool or Client (an object with a query method)');
    }
    if (options.namedStatements !== undefined && typeof options.namedStatements !== 'boolean') {
      throw new InvalidOptionError('namedStatements', 'must be a boolean');
    }
    this.pool = options.pool;
    this.table = checkSqlIdentifier('table', options.table ?? DEFAULTS.table, MAX_TABLE_LENGTH);
    this.schema = options.schema === undefined ? undefined : checkSqlIdentifier('schema', options.schema, 63);
    this.qualifiedName = this.schema === undefined ? `"${this.table}"` : `"${this.schema}"."${this.table}"`;
    this.ddl = postgresIdempotencyDdl(
      this.schema === undefined ? { table: this.table } : { table: this.table, schema: this.schema },
    );
    const t = this.qualifiedName;
    this.#sql = Object.freeze({
      get: `SELECT ${RECORD_COLUMNS} FROM ${t} WHERE key = $1`,
      getMany: `SELECT ${RECORD_COLUMNS} FROM ${t} WHERE key = ANY($1::text[])`,
      // A claim alone commits without waiting for its WAL flush, as a batch of claims does (see
      // BatchedWrites for why nothing durable can depend on it before a later commit flushes it).
      claim: `WITH relaxed AS (SELECT set_config('synchronous_commit', 'off', true))
        INSERT INTO ${t} (${RECORD_COLUMNS})
        SELECT $1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9, $10::jsonb, $11, $12 FROM relaxed
        ON CONFLICT (key) DO NOTHING`,
      replace: `UPDATE ${t} SET fingerprint = $3, state = $4, token = $5, lease_until = $6,
        expires_at = $7, sequence = $8, response = $9::jsonb, recovery_point = $10, phases = $11::jsonb,
        created_at = $12, updated_at = $13
        WHERE key = $1 AND token = $2`,
      delete: `DELETE FROM ${t} WHERE key = $1 AND token = $2`,
      leases: `SELECT ${RECORD_COLUMNS} FROM ${t} WHERE state = 'in-flight' AND lease_until < $1
        ORDER BY lease_until LIMIT $2`,
      purge: `DELETE FROM ${t} WHERE key IN (
        SELECT key FROM ${t} WHERE expires_at < $1 ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED)`,
    });
    this.#gets = new StatementBatch({
      many: async (keys) => {
        const { rows } = await this.pool.query(this.#sql.getMany, [keys]);
        const found = new Map((rows as RecordRow[]).map((row) => [row.key, row]));
        return keys.map((key) => {
          const row = found.get(key);
          return row && recordFromRow(row);
        });
      },
      one: async (key) => {
        const { rows } = await this.pool.query(this.#sql.get, [key]);
        const row = rows[0] as RecordRow | undefined;
        return row && recordFromRow(row);
      },
      keyOf: (key) => key,
      distinctKeys: false,
      maxBatch: MAX_BATCH,
      maxInFlight: MAX_IN_FLIGHT,
    });
    // Reads, completions and releases go unnamed, so Postgres plans each with its actual values.
    // Named (prepared) ones would skip the parse, but their generic plan, cached while the table is
    // still small, finds rows by a sequential scan that grows with the table. Claims are named: an
    // insert from arrays that conflicts on the primary key has no scan or join to choose, so its
    // generic plan cannot go stale, and a named batch of claims costs Postgres half the CPU.
    const batched = new BatchedWrites(t);
    const unnamed = (text: string, values: unknown[]) => this.pool.query(text, values);
    this.#runClaim = (options.namedStatements ?? DEFAULTS.namedStatements) ? namedRunner(this.pool) : unnamed;
    const many = async (ops: readonly WriteOp[]) => {
      const { text, values } = batched.statement(ops);
      const run = ops.every(isClaim) ? this.#runClaim : unnamed;
      return batched.results(ops, (await run(text, values)).rows);
    };
    // A batch of one runs a plain single-row statement: Postgres plans it in a fraction of the
    // time it takes for the statement over arrays, which pays off only from two rows on.
    const one = async (op: WriteOp) => {
      if (op.kind === 'delete')
        return this.#changedOne(this.pool, this.#sql.delete, [op.key, op.expectedToken]);
      if (op.kind === 'replace') return this.#replaceOn(this.pool, op.expectedToken, op.record);
      const claimed = await this.#runClaim(this.#sql.claim, [op.record.key, ...recordValues(op.record)]);
      return claimed.rowCount === 1;
    };
    const writeBatch = () =>
      new StatementBatch<WriteOp, boolean>({
        many,
        one,
        keyOf: keyOfWrite,
        distinctKeys: true,
        maxBatch: MAX_BATCH,
        maxInFlight: MAX_IN_FLIGHT,
      });
    this.#claims = writeBatch();
    this.#writes = writeBatch();
  }

  /**
   * Creates the table and its indexes unless they exist. Safe to call from many processes at once:
   * the DDL runs under a transaction-scoped advisory lock on the table name.
   *
   * @example
   * await postgresStore({ pool }).ensureSchema();
   */
  async ensureSchema(): Promise<void> {
    const lockName = this.schema === undefined ? this.table : `${this.schema}.${this.table}`;
    await this.pool.query(
      `DO $keel$ BEGIN
        PERFORM pg_advisory_xact_lock(hashtext('keel_idempotency_ddl:${lockName}'));
        ${this.ddl}
      END $keel$;`,
    );
  }

  get(key: string): Promise<IdempotencyRecord | undefined> {
    return this.#gets.run(key);
  }

  insertIfAbsent(record: IdempotencyRecord): Promise<boolean> {
    return this.#claims.run({ kind: 'insert', record });
  }

  /**
   * Compare-and-swap on the token. With `tx` (a client inside the caller's `BEGIN`), the update
   * joins that transaction: it takes the row lock there and becomes visible only on `COMMIT`.
   */
  async replace(expectedToken: string, record: IdempotencyRecord, tx?: TransactionHandle): Promise<boolean> {
    if (tx === undefined || tx === null) return this.#writes.run({ kind: 'replace', expectedToken, record });
    return this.#replaceOn(asQueryable(tx), expectedToken, record);
  }

  #replaceOn(runner: PostgresQueryable, expectedToken: string, record: IdempotencyRecord) {
    return this.#changedOne(runner, this.#sql.replace, [record.key, expectedToken, ...recordValues(record)]);
  }

  /** True when the single-row statement changed its row. */
  async #changedOne(runner: PostgresQueryable, text: string, values: unknown[]): Promise<boolean> {
    return (await runner.query(text, values)).rowCount === 1;
  }

  delete(key: string, expectedToken: string): Promise<boolean> {
    return this.#writes.run({ kind: 'delete', key, expectedToken });
  }

  async expiredLeases(now: number, limit: number): Promise<IdempotencyRecord[]> {
    if (checkSweepLimit(limit) === 0) return [];
    const { rows } = await this.pool.query(this.#sql.leases, [now, limit]);
    return (rows as RecordRow[]).map(recordFromRow);
  }

  async purgeExpired(now: number, limit: number): Promise<number> {
    if (checkSweepLimit(limit) === 0) return 0;
    const result = await this.pool.query(this.#sql.purge, [now, limit]);
    return result.rowCount ?? 0;
  }
}

function isClaim(op: WriteOp): boolean {
  return op.kind === 'insert';
}

/** The part of pg's query API that runs a named statement. */
interface NamedQueryable {
  query(config: { name: string; text: string; values: unknown[] }): Promise<{
    rows: unknown[];
    rowCount: number | null;
  }>;
}

/**
 * Runs statements named after a hash of their text: each connection of the pool parses and plans a
 * text once, and two stores on other tables never share a name.
 */
function namedRunner(
  pool: PostgresQueryable,
): (text: string, values: unknown[]) => Promise<{ rows: unknown[]; rowCount: number | null }> {
  const names = new Map<string, string>();
  return (text, values) => {
    let name = names.get(text);
    if (name === undefined) {
      name = `keel_${createHash('sha256').update(text).digest('hex').slice(0, 24)}`;
      names.set(text, name);
    }
    return (pool as unknown as NamedQueryable).query({ name, text, values });
  };
}

function asQueryable(tx: TransactionHandle): PostgresQueryable {
  if (typeof (tx as Partial<PostgresQueryable>)?.query !== 'function') {
    throw new TypeError('tx: must be the pg client that ran BEGIN (an object with a query method)');
  }
  return tx as PostgresQueryable;
}

/**
 * Builds a {@link PostgresIdempotencyStore} over the user's pool. Call `ensureSchema()` once at
 * start-up, or run {@link postgresIdempotencyDdl} from your migrations.
 *
 * @example
 * import pg from 'pg';
 * const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL });
 * const store = postgresStore({ pool, table: 'idempotency' });
 * await store.ensureSchema();
 *
 * // The stored response commits with the business write:
 * const client = await pool.connect();
 * await client.query('BEGIN');
 * await client.query('INSERT INTO charges (id, amount) VALUES ($1, $2)', [id, amount]);
 * await lease.complete(response, { tx: client });
 * await client.query('COMMIT');
 */
export function postgresStore(options: PostgresIdempotencyStoreOptions): PostgresIdempotencyStore {
  return new PostgresIdempotencyStore(options);
}
