/**
 * Invariants over data: a query that returns the entities breaking a rule (orders paid five minutes
 * ago with no payment row, payments without an invoice) and a flow check that matches published
 * events to consumed ones by event id and watches the oldest one nobody consumed. The query is the
 * application's own — SQL on its sqlite `DatabaseSync` or `pg` pool, through {@link sqliteFinding}
 * and {@link postgresFinding} — and its text travels in the alert, so the person paged can list
 * every offending row, not just the sample.
 *
 * @module
 */
import { InvalidOptionError } from '../errors/keel-error.ts';
import { checkFunction, checkInteger, checkNumber } from '../policy/options.ts';
import {
  breachedExpression,
  checkInvariantOptions,
  type Invariant,
  type InvariantOptions,
  promDuration,
} from './invariant.ts';

/** What a data query found. */
export interface DataFinding {
  /** A sample of the offending ids (the query should limit it). */
  readonly ids: readonly (string | number | bigint)[];
  /** How many entities are offending in total. */
  readonly total: number;
  /** Age of the oldest offending entity, when the query knows it. */
  readonly oldestAgeMs?: number | undefined;
}

/** Options of {@link dataCheck}. */
export interface DataCheckOptions extends InvariantOptions {
  /** The SQL (or other query text) that lists every offending entity, shown in the alert. */
  readonly sql: string;
  /** Runs the check; any `total` above zero is a breach. */
  readonly query: () => DataFinding | Promise<DataFinding>;
  /**
   * Offending ids carried in the alert.
   * @default 20
   */
  readonly sampleSize?: number;
}

function checkSql(sql: string): string {
  if (typeof sql !== 'string' || sql.trim() === '')
    throw new InvalidOptionError('sql', 'must be the query text');
  return sql;
}

function sample(ids: readonly (string | number | bigint)[], size: number): string[] {
  return ids.slice(0, size).map(String);
}

/**
 * A query that must return no rows: every row it returns is an entity breaking the rule.
 *
 * @example
 * const sql = `SELECT id, (unixepoch('subsec') * 1000 - paid_at) AS age_ms, count(*) OVER () AS total
 *   FROM orders o WHERE paid_at < unixepoch('subsec') * 1000 - 300000
 *   AND NOT EXISTS (SELECT 1 FROM payments p WHERE p.order_id = o.id) ORDER BY paid_at LIMIT 20`;
 * const paidOrdersHavePayments = dataCheck({
 *   name: 'paid_orders_have_payments', sql, query: sqliteFinding({ db, sql }),
 *   forMs: 60_000, alert: defineAlert({ what: 'Paid orders without a payment', ... }),
 * });
 */
export function dataCheck(options: DataCheckOptions): Invariant {
  const { name, forMs } = checkInvariantOptions(options);
  const sql = checkSql(options.sql);
  const query = checkFunction('query', options.query);
  const sampleSize = checkInteger('sampleSize', options.sampleSize ?? 20);
  return Object.freeze({
    name,
    kind: 'data',
    alert: options.alert,
    forMs,
    promql: breachedExpression(name),
    watchesMetrics: false,
    async evaluate() {
      const found = await query();
      const oldest =
        found.oldestAgeMs === undefined ? '' : `, oldest ${promDuration(Math.max(0, found.oldestAgeMs))} old`;
      return {
        ok: found.total <= 0,
        evidence: {
          ids: sample(found.ids, sampleSize),
          total: found.total,
          oldestAgeMs: found.oldestAgeMs,
          query: sql,
          value: found.total,
          detail: `${found.total} offending row${found.total === 1 ? '' : 's'}${oldest}`,
        },
      };
    },
  });
}

/** What a flow query found: events published, events consumed, and the unconsumed ones. */
export interface FlowFinding extends DataFinding {
  /** Events published in the period the query looks at. */
  readonly published: number;
  /** Of those, how many a consumer recorded (matched by event id). */
  readonly consumed: number;
}

/** Options of {@link flowCheck}. */
export interface FlowCheckOptions extends InvariantOptions {
  /** The SQL that lists every unconsumed event, shown in the alert. */
  readonly sql: string;
  /** Matches published to consumed events by id; `ids`, `total` and `oldestAgeMs` describe the unconsumed ones. */
  readonly query: () => FlowFinding | Promise<FlowFinding>;
  /** Breached when the oldest unconsumed event is older than this: consumers lag or lost it. */
  readonly maxAgeMs: number;
  /**
   * Breached when more events than this are unconsumed, however young.
   * @default Infinity
   */
  readonly maxPending?: number;
  /** @default 20 */
  readonly sampleSize?: number;
}

/**
 * Events published minus events consumed, matched by event id, with the oldest unconsumed event's
 * age: an event older than `maxAgeMs` that no consumer recorded was dropped or is stuck.
 *
 * @example
 * const invoicesConsumed = flowCheck({
 *   name: 'payment_events_consumed', sql, maxAgeMs: 2 * 60_000,
 *   query: async () => ({ published, consumed, ...(await sqliteFinding({ db, sql })()) }),
 *   alert: defineAlert({ what: 'payment.completed events not consumed', ... }),
 * });
 */
export function flowCheck(options: FlowCheckOptions): Invariant {
  const { name, forMs } = checkInvariantOptions(options);
  const sql = checkSql(options.sql);
  const query = checkFunction('query', options.query);
  const maxAgeMs = checkNumber('maxAgeMs', options.maxAgeMs);
  const maxPending = checkNumber('maxPending', options.maxPending ?? Number.POSITIVE_INFINITY, 0, true);
  const sampleSize = checkInteger('sampleSize', options.sampleSize ?? 20);
  return Object.freeze({
    name,
    kind: 'flow',
    alert: options.alert,
    forMs,
    promql: breachedExpression(name),
    watchesMetrics: false,
    async evaluate() {
      const found = await query();
      const oldestAgeMs = found.total > 0 ? (found.oldestAgeMs ?? 0) : 0;
      const stale = found.total > 0 && oldestAgeMs > maxAgeMs;
      return {
        ok: !stale && found.total <= maxPending,
        evidence: {
          ids: sample(found.ids, sampleSize),
          total: found.total,
          oldestAgeMs,
          query: sql,
          value: oldestAgeMs,
          detail:
            `${found.published} published, ${found.consumed} consumed, ${found.total} unconsumed` +
            (found.total > 0
              ? `, oldest ${promDuration(Math.max(0, oldestAgeMs))} old (limit ${promDuration(maxAgeMs)})`
              : ''),
        },
      };
    },
  });
}

/** The part of a `node:sqlite` `DatabaseSync` (or better-sqlite3 handle) a finding query uses. */
export interface SqliteQueryable {
  prepare(sql: string): { all(...params: never[]): unknown[] };
}

/** The part of a `pg` `Pool` or `Client` a finding query uses. */
export interface PostgresQueryable {
  query(text: string, values?: unknown[]): Promise<{ rows: unknown[] }>;
}

/**
 * Turns rows into a finding. Rows carry `id`, optionally `age_ms` (the oldest first, or any order)
 * and `total` (`count(*) OVER ()`, so a `LIMIT`ed query still reports the full count).
 */
function rowsToFinding(rows: readonly unknown[]): DataFinding {
  const ids: (string | number | bigint)[] = [];
  let oldestAgeMs: number | undefined;
  let total = rows.length;
  for (const row of rows as readonly Record<string, unknown>[]) {
    const id = row.id;
    if (typeof id !== 'string' && typeof id !== 'number' && typeof id !== 'bigint') {
      throw new InvalidOptionError('sql', 'each row must have an `id` column');
    }
    ids.push(id);
    if (row.age_ms !== undefined && row.age_ms !== null) {
      const age = Number(row.age_ms);
      if (oldestAgeMs === undefined || age > oldestAgeMs) oldestAgeMs = age;
    }
    if (row.total !== undefined && row.total !== null) total = Math.max(total, Number(row.total));
  }
  return { ids, total, oldestAgeMs };
}

/**
 * Statement parameters, fixed or computed at each evaluation — a cut-off such as "paid before now
 * minus five minutes" taken from the application's clock rather than the database's.
 */
export type FindingParams = readonly unknown[] | (() => readonly unknown[]);

function paramsOf(params: FindingParams | undefined): () => unknown[] {
  if (params === undefined) return () => [];
  if (typeof params === 'function') return () => [...params()];
  if (!Array.isArray(params)) {
    throw new InvalidOptionError('params', 'must be an array of values or a function returning one');
  }
  const fixed = [...params];
  return () => fixed;
}

/**
 * A finding query on a sqlite database: rows with `id`, optional `age_ms` and optional `total`.
 *
 * @example
 * const query = sqliteFinding({ db, sql: 'SELECT id, age_ms, count(*) OVER () AS total FROM ... LIMIT 20' });
 * const late = sqliteFinding({ db, sql: 'SELECT id FROM orders WHERE paid_at < ?', params: () => [clock.now() - 300_000] });
 */
export function sqliteFinding(options: {
  readonly db: SqliteQueryable;
  readonly sql: string;
  readonly params?: FindingParams;
}): () => DataFinding {
  const sql = checkSql(options.sql);
  const params = paramsOf(options.params);
  return () => rowsToFinding(options.db.prepare(sql).all(...(params() as never[])));
}

/**
 * A finding query on PostgreSQL: rows with `id`, optional `age_ms` and optional `total`.
 *
 * @example
 * const query = postgresFinding({ pool, sql: 'SELECT id, extract(epoch FROM now() - paid_at) * 1000 AS age_ms ...' });
 */
export function postgresFinding(options: {
  readonly pool: PostgresQueryable;
  readonly sql: string;
  readonly params?: FindingParams;
}): () => Promise<DataFinding> {
  const sql = checkSql(options.sql);
  const params = paramsOf(options.params);
  return async () => rowsToFinding((await options.pool.query(sql, params())).rows);
}
