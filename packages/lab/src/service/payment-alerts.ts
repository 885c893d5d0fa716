/**
 * @module
 * The alerts of the payments service's invariants and heartbeats, each with the four parts a person
 * paged at night needs: what broke, where to look, why it matters to the business, and the next step
 * — a command to run where one exists. The ids of the offending rows and the query that lists them
 * all are added by the check when it fires. The alerts that `keel replay` repairs are built for the
 * service's own database ({@link replayAlerts}), so their next step is the exact command to paste,
 * between backticks.
 */
import { isAbsolute, resolve } from 'node:path';
import { type AlertDefinition, defineAlert } from 'keel/observe';
import type { DatabaseConfig } from './config.ts';

const GROUP = 'payments';

/**
 * The service's database as `keel replay --db` takes it: a sqlite path made absolute (the command
 * runs from anywhere), or the Postgres URL without its password, which alerts must not carry —
 * `pg` reads it from `PGPASSWORD` or `~/.pgpass`.
 *
 * @example
 * replayDatabase({ kind: 'sqlite', path: 'payments.db', poolSize: 6 }); // '/srv/payments/payments.db'
 */
export function replayDatabase(db: DatabaseConfig): string {
  if (db.kind === 'sqlite') return isAbsolute(db.path) ? db.path : resolve(db.path);
  const url = new URL(db.url);
  url.password = '';
  return url.toString();
}

/**
 * One word for a POSIX shell: as it is when it needs no quoting, single-quoted otherwise.
 *
 * @example
 * shellWord('/tmp/my lab/payments.db'); // "'/tmp/my lab/payments.db'"
 */
export function shellWord(word: string): string {
  return /^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replaceAll("'", `'\\''`)}'`;
}

/**
 * The command that re-sends `payment.completed` for every payment without an invoice, under the
 * events' original ids.
 *
 * @example
 * replayMissingInvoicesCommand('/srv/payments.db'); // 'keel replay --db /srv/payments.db --missing-invoices'
 */
export function replayMissingInvoicesCommand(db: string): string {
  return `keel replay --db ${shellWord(db)} --missing-invoices`;
}

/** The alerts whose next step is `keel replay` against one database. */
export interface ReplayAlerts {
  readonly paymentsWithoutInvoice: AlertDefinition;
  readonly paymentEventsNotConsumed: AlertDefinition;
  readonly invoiceConsumerHeartbeat: AlertDefinition;
}

/**
 * The alerts `keel replay` repairs, their next step naming `db` (see {@link replayDatabase}).
 *
 * @example
 * const alerts = replayAlerts(replayDatabase(config.db));
 * alerts.paymentsWithoutInvoice.next; // '… then run `keel replay --db /srv/payments.db --missing-invoices`: …'
 */
export function replayAlerts(db: string): ReplayAlerts {
  const replay = `\`${replayMissingInvoicesCommand(db)}\``;
  const inbox =
    'it re-sends each payment.completed under its original event id, and the inbox skips any already handled';
  const backfill = `payments whose event was consumed and still lack an invoice it lists: for those, run \`keel backfill invoices --db ${shellWord(db)} --since 24h\``;
  return {
    paymentsWithoutInvoice: defineAlert({
      what: 'Payments without an invoice',
      where: 'table payments left join invoices; logs: paymentId=<id>, consumer group invoices',
      impact: 'Customers were charged and never got their invoice (a legal and support problem)',
      next: `Check the invoice consumer runs (heartbeat invoice_consumer), then run ${replay}: ${inbox}; ${backfill}`,
      severity: 'warning',
      group: GROUP,
    }),
    paymentEventsNotConsumed: defineAlert({
      what: 'payment.completed events not consumed',
      where:
        'table keel_outbox (published_at null: not sent yet) not in keel_inbox (group invoices); the invoice consumer logs',
      impact: 'Invoices stop going out while payments keep succeeding: every response is still a 200',
      next: `Check the invoice consumer runs (heartbeat invoice_consumer), then run ${replay}: ${inbox}`,
      severity: 'critical',
      group: GROUP,
    }),
    invoiceConsumerHeartbeat: defineAlert({
      what: 'The invoice consumer is not running properly',
      where: 'logs of the invoice consumer (group invoices); metric payments_invoices_sent_total',
      impact: 'Payments go through but no invoice is written or mailed until it runs again',
      next: `Restart the service instance that runs the consumer, then run ${replay}: ${inbox}`,
      severity: 'critical',
      group: GROUP,
    }),
  };
}

/** The replay alerts for the service's default database, for code that does not know its own. */
const defaultReplayAlerts = replayAlerts('payments.db');

/** Paid orders without a payment row. */
export const paidOrdersWithoutPayment: AlertDefinition = defineAlert({
  what: 'Paid orders without a payment',
  where: 'table orders (status paid) left join payments; logs: orderId=<id>',
  impact: 'Orders were marked paid with no record of the money: they ship unpaid or are refunded blind',
  next: 'Look the order up at the providers (GET /charges?reference=<orderId>), then keel backfill payments --since 1h',
  severity: 'critical',
  group: GROUP,
});

/** Payments without an invoice after the grace period. */
export const paymentsWithoutInvoice: AlertDefinition = defaultReplayAlerts.paymentsWithoutInvoice;

/** `payment.completed` events published and never consumed by the invoices group. */
export const paymentEventsNotConsumed: AlertDefinition = defaultReplayAlerts.paymentEventsNotConsumed;

/** Charges at a provider that the service has no payment row for. */
export const providerChargesWithoutPayment: AlertDefinition = defineAlert({
  what: 'Provider charges without a payment',
  where: "providers' GET /charges?created_gte=<window> against table payments; logs: orderId=<reference>",
  impact:
    'Customers were charged and the service does not know: no order paid, no invoice, a likely second charge',
  next: 'Let the completer sweep finish abandoned charges; if the charge stays, keel backfill payments --from-providers --since 1h',
  severity: 'critical',
  group: GROUP,
});

/** Orders stuck in `charging` past the lease, above the tolerated number. */
export const abandonedPayments: AlertDefinition = defineAlert({
  what: 'Abandoned payments above the limit',
  where:
    "table orders (status charging, updated before the lease); metric payments_sweep_finished_total{outcome='failed'}",
  impact: 'Customers wait on charges nobody finishes; they retry, or give up and buy elsewhere',
  next: 'Check the completer sweep and the providers (GET /__stats, breaker state in /metrics); each order id here has its key in keel_idempotency',
  severity: 'warning',
  group: GROUP,
});

/** The invoice consumer stopped checking in, or cannot keep up. */
export const invoiceConsumerHeartbeat: AlertDefinition = defaultReplayAlerts.invoiceConsumerHeartbeat;

/** The sales report job did not run, failed, or produced nothing. */
export const salesReportHeartbeat: AlertDefinition = defineAlert({
  what: 'The sales report job did not produce a report',
  where: 'logs: job=sales_report; table sales',
  impact: 'Finance works from a stale or empty sales report',
  next: 'Run the report by hand (GET /reports/sales) and check the sales table has rows in range',
  severity: 'warning',
  group: GROUP,
});
