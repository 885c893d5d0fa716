/**
 * @module
 * What must stay true of the payments data, as Keel invariants over the service's own tables:
 * every paid order has a payment; every payment has an invoice once the grace period has passed;
 * every `payment.completed` the outbox published was consumed by the invoices group (matched by
 * event id against its inbox); and no more than a handful of orders sit in `charging` past the
 * charge lease. Each query is written for SQLite and for Postgres, runs on the driver handle Keel's
 * stores use, and travels in the alert so the person paged can list every offending row. After its
 * first round each looks only at rows written since it last found them clean (`CheckedSince`).
 */
import {
  type DataFinding,
  dataCheck,
  flowCheck,
  type Invariant,
  postgresFinding,
  sqliteFinding,
} from 'keel/observe';
import { CheckedSince } from './checked-since.ts';
import type { DatabaseDriver } from './database.ts';
import { OUTBOX_TABLE } from './event-outbox.ts';
import { INBOX_TABLE, INVOICE_GROUP } from './invoice-consumer.ts';
import {
  abandonedPayments,
  paidOrdersWithoutPayment,
  paymentEventsNotConsumed,
  paymentsWithoutInvoice,
  replayAlerts,
} from './payment-alerts.ts';
import { PAYMENT_COMPLETED } from './payment-events.ts';

export interface PaymentInvariantsOptions {
  readonly driver: DatabaseDriver;
  /** How long a payment may wait for its invoice, and its event for the consumer, in ms. */
  readonly invoiceGraceMs: number;
  /** How long a charge owns its key; an order `charging` for longer was abandoned. */
  readonly chargeLeaseMs: number;
  /** Abandoned orders tolerated before the alert. */
  readonly abandonedLimit: number;
  /**
   * The database as `keel replay --db` names it, so the alerts' next step is the exact command.
   * @default the service's default database
   */
  readonly replayDb?: string | undefined;
}

/** Offending ids carried in an alert; the query in it lists the rest. */
const SAMPLE = 20;

/** How far back published events are matched against the inbox. */
const FLOW_WINDOW_MS = 86_400_000;

/** The database's own clock in epoch ms, so the checks agree with every instance writing rows. */
const NOW_MS = {
  sqlite: "CAST(unixepoch('subsec') * 1000 AS INTEGER)",
  postgres: '(extract(epoch FROM clock_timestamp()) * 1000)::bigint',
} as const;

type Dialect = keyof typeof NOW_MS;

/** The statement parameter each dialect's driver takes. */
const PARAMETER = { sqlite: '?', postgres: '$1' } as const;

// Each query below takes `since`, the placeholder of the time rows are looked at from, and without
// it is the whole check: that text travels in the alert, for listing every offending row.

function paidWithoutPaymentSql(now: string, since?: string): string {
  return `SELECT o.id, ${now} - o.updated_at AS age_ms, count(*) OVER () AS total
  FROM orders o
 WHERE o.status = 'paid'${since === undefined ? '' : ` AND o.updated_at >= ${since}`}
   AND NOT EXISTS (SELECT 1 FROM payments p WHERE p.order_id = o.id)
 ORDER BY o.updated_at LIMIT ${SAMPLE}`;
}

function paymentsWithoutInvoiceSql(now: string, graceMs: number, since?: string): string {
  return `SELECT p.id, ${now} - p.created_at AS age_ms, count(*) OVER () AS total
  FROM payments p
 WHERE p.created_at < ${now} - ${graceMs}${since === undefined ? '' : ` AND p.created_at >= ${since}`}
   AND NOT EXISTS (SELECT 1 FROM invoices i WHERE i.payment_id = p.id)
 ORDER BY p.created_at LIMIT ${SAMPLE}`;
}

// Every event appended in the window counts, sent or not: with a transport that confirms only once
// the consumer settled the event, a stopped consumer leaves its events unpublished in the outbox.
// The window's start is a subquery, computed once: Postgres evaluates `clock_timestamp()` afresh
// for every row otherwise, and cannot then use the `created_at` index to skip the older events the
// outbox keeps for replay (a 1-hour window over 28,000 events: 71 ms rather than 502 ms).
const paymentEvents = (now: string, since?: string) =>
  `e.type = '${PAYMENT_COMPLETED}' AND e.created_at >= (SELECT ${now}) - ${FLOW_WINDOW_MS}` +
  (since === undefined ? '' : ` AND e.created_at >= ${since}`);

// The inbox is probed per event through its primary key, as a scalar subquery the planner cannot
// turn into a join: as an anti-join, statistics that lag a fast-growing table (a load test's first
// minute) led Postgres to a nested loop over the whole inbox per event — 25 s for 10,000 events.
function unconsumedSql(now: string, since?: string): string {
  return `SELECT e.id, ${now} - e.created_at AS age_ms, count(*) OVER () AS total
  FROM ${OUTBOX_TABLE} e
 WHERE ${paymentEvents(now, since)}
   AND (SELECT 1 FROM ${INBOX_TABLE} i WHERE i.group_name = '${INVOICE_GROUP}' AND i.event_id = e.id LIMIT 1) IS NULL
 ORDER BY e.created_at LIMIT ${SAMPLE}`;
}

function flowCountsSql(now: string, since: string): string {
  return `SELECT count(*) AS published, count(i.event_id) AS consumed
  FROM ${OUTBOX_TABLE} e
  LEFT JOIN ${INBOX_TABLE} i ON i.group_name = '${INVOICE_GROUP}' AND i.event_id = e.id
 WHERE ${paymentEvents(now, since)}`;
}

function abandonedSql(now: string, leaseMs: number): string {
  return `SELECT o.id, ${now} - o.updated_at AS age_ms, count(*) OVER () AS total
  FROM orders o
 WHERE o.status = 'charging' AND o.updated_at < ${now} - ${leaseMs}
 ORDER BY o.updated_at LIMIT ${SAMPLE}`;
}

/**
 * A finding query on whichever database the service runs on. With `since`, it reads from the time
 * that holds and moves it on after each round; `unseenMs`: the youngest rows the query leaves out (a
 * grace period).
 */
function finding(
  driver: DatabaseDriver,
  sql: string,
  since?: CheckedSince,
  unseenMs = 0,
): () => Promise<DataFinding> {
  const params = since === undefined ? [] : () => [since.since];
  let read: () => Promise<DataFinding>;
  if (driver.dialect === 'sqlite') {
    const find = sqliteFinding({ db: driver.db, sql, params });
    read = async () => find();
  } else read = postgresFinding({ pool: driver.pool, sql, params });
  if (since === undefined) return read;
  return async () => {
    const startedAt = Date.now();
    const found = await read();
    since.advance(startedAt, found, unseenMs);
    return found;
  };
}

function counts(
  driver: DatabaseDriver,
  sql: string,
  since: CheckedSince,
): () => Promise<{ published: number; consumed: number }> {
  return async () => {
    const row = (
      driver.dialect === 'sqlite'
        ? driver.db.prepare(sql).get(since.since)
        : (await driver.pool.query(sql, [since.since])).rows[0]
    ) as { published: number | string; consumed: number | string } | undefined;
    return { published: Number(row?.published ?? 0), consumed: Number(row?.consumed ?? 0) };
  };
}

/**
 * Counts the `payment.completed` events appended more than `olderThanMs` ago that the invoices
 * group has not consumed: the work the invoice consumer's heartbeat expects it to be doing.
 *
 * @example
 * const backlog = paymentEventBacklog(db.driver);
 * if ((await backlog(60_000)) > 0) consumerHeartbeat.fail(new Error('events waiting'));
 */
export function paymentEventBacklog(driver: DatabaseDriver): (olderThanMs: number) => Promise<number> {
  const now = NOW_MS[driver.dialect];
  const sql = `SELECT count(*) AS waiting
  FROM ${OUTBOX_TABLE} e
 WHERE ${paymentEvents(now)} AND e.created_at < ${now} - ?
   AND NOT EXISTS (SELECT 1 FROM ${INBOX_TABLE} i WHERE i.group_name = '${INVOICE_GROUP}' AND i.event_id = e.id)`;
  return async (olderThanMs) => {
    const row = (
      driver.dialect === 'sqlite'
        ? driver.db.prepare(sql).get(olderThanMs)
        : (await driver.pool.query(sql.replace('?', '$1'), [olderThanMs])).rows[0]
    ) as { waiting: number | string } | undefined;
    return Number(row?.waiting ?? 0);
  };
}

/**
 * The four data invariants: `paid_orders_without_payment`, `payments_without_invoice`,
 * `payment_events_consumed` and `abandoned_payments`.
 *
 * @example
 * const checks = paymentInvariants({ driver: db.driver, invoiceGraceMs: 300_000, chargeLeaseMs: 30_000, abandonedLimit: 10 });
 * invariants({ checks, intervalMs: 30_000, sinks }).start();
 */
export function paymentInvariants(options: PaymentInvariantsOptions): Invariant[] {
  const { driver } = options;
  const dialect: Dialect = driver.dialect;
  const now = NOW_MS[dialect];

  const parameter = PARAMETER[dialect];
  const paidSql = paidWithoutPaymentSql(now);
  const readPaid = finding(driver, paidWithoutPaymentSql(now, parameter), new CheckedSince());
  const invoiceSql = paymentsWithoutInvoiceSql(now, options.invoiceGraceMs);
  const readInvoiced = finding(
    driver,
    paymentsWithoutInvoiceSql(now, options.invoiceGraceMs, parameter),
    new CheckedSince(),
    options.invoiceGraceMs,
  );
  const flowSql = unconsumedSql(now);
  const flowSince = new CheckedSince();
  // Counted over the same rows as the unconsumed ones are listed from, before the listing moves
  // the mark on.
  const readCounts = counts(driver, flowCountsSql(now, parameter), flowSince);
  const readUnconsumed = finding(driver, unconsumedSql(now, parameter), flowSince);
  // Orders still `charging` are few, and the status index finds them: this one looks at them all.
  const stuckSql = abandonedSql(now, options.chargeLeaseMs);
  const readStuck = finding(driver, stuckSql);
  const replay =
    options.replayDb === undefined
      ? { paymentsWithoutInvoice, paymentEventsNotConsumed }
      : replayAlerts(options.replayDb);

  return [
    dataCheck({
      name: 'paid_orders_without_payment',
      sql: paidSql,
      query: readPaid,
      alert: paidOrdersWithoutPayment,
    }),
    dataCheck({
      name: 'payments_without_invoice',
      sql: invoiceSql,
      query: readInvoiced,
      alert: replay.paymentsWithoutInvoice,
    }),
    flowCheck({
      name: 'payment_events_consumed',
      sql: flowSql,
      maxAgeMs: options.invoiceGraceMs,
      query: async () => ({ ...(await readCounts()), ...(await readUnconsumed()) }),
      alert: replay.paymentEventsNotConsumed,
    }),
    // A threshold that names its orders: below the limit it reports nothing, above it every id.
    dataCheck({
      name: 'abandoned_payments',
      sql: stuckSql,
      query: async () => {
        const stuck = await readStuck();
        return stuck.total > options.abandonedLimit ? stuck : { ids: [], total: 0 };
      },
      alert: abandonedPayments,
    }),
  ];
}
