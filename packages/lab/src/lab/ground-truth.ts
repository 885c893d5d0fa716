/**
 * @module
 * The lab's checker: what really happened, from the providers' ledgers and the service's database,
 * never from the service's answers about itself. In the spirit of Jepsen, each client operation is
 * known as acknowledged or not; the ledgers say how many times each order was charged; the rows say
 * what the service recorded. The differences are the failures a scenario counts — double charges,
 * acknowledged charges that are not there, orders left half-way, payments without their invoice.
 */
import { DatabaseSync } from 'node:sqlite';
import pg from 'pg';
import { GroundTruthError } from './lab-errors.ts';

/** A provider whose ledger is read through its listing endpoint. */
export interface LedgerSource {
  readonly name: string;
  readonly url: string;
}

export interface GroundTruthOptions {
  readonly providers: readonly LedgerSource[];
  /** The service's database: a sqlite file path or a `postgres://` URL. */
  readonly db: string;
  /** The orders of this run; everything else in the ledgers and the database is ignored. */
  readonly orderIds: readonly string[];
  /** Orders whose charge a client saw answered with a 2xx. */
  readonly acknowledged: readonly string[];
}

/** Counts over the run's orders; `examples` names a few order ids of each failure. */
export interface GroundTruth {
  readonly orders: number;
  /** Charges the providers made for these orders. */
  readonly providerCharges: number;
  /** Orders charged at least once. */
  readonly chargedOrders: number;
  /** Orders charged more than once (at one provider or across both). */
  readonly doubleCharges: number;
  /** Charges beyond the first, over all orders. */
  readonly extraCharges: number;
  readonly acknowledged: number;
  /** Acknowledged to the client, yet without a payment row or without a charge at any provider. */
  readonly acknowledgedButMissing: number;
  /** Charged at a provider, but the service holds no payment for the order. */
  readonly chargedButUnrecorded: number;
  /** Payment rows whose provider charge no ledger holds. */
  readonly paymentsWithoutCharge: number;
  /** Orders still `charging`. */
  readonly ordersInBetween: number;
  readonly payments: number;
  readonly paymentsWithoutInvoice: number;
  /** Orders with more than one invoice. */
  readonly duplicateInvoices: number;
  readonly maxInvoicesPerOrder: number;
  readonly examples: {
    readonly doubleCharged: readonly string[];
    /** The charges of the first double-charged orders, to tell a blind retry from a failover. */
    readonly doubleChargeDetails: readonly (readonly LedgerCharge[])[];
    readonly acknowledgedButMissing: readonly string[];
    readonly inBetween: readonly string[];
  };
}

interface ServiceRows {
  orders: Array<{ id: string; status: string }>;
  payments: Array<{ id: string; order_id: string; provider_charge_id: string }>;
  invoices: Array<{ payment_id: string; order_id: string }>;
}

/** A charge as the checker keeps it from a ledger. */
export interface LedgerCharge {
  readonly provider: string;
  readonly id: string;
  /** The order id the service sent as the charge's reference. */
  readonly reference: string;
  readonly idempotencyKey: string | null;
}

interface LedgerPage {
  data: Array<{ id: string; reference: string; idempotency_key: string | null }>;
  has_more: boolean;
  next_cursor: string | null;
}

const EXAMPLES = 5;

/**
 * Every charge in a provider's ledger, all pages.
 *
 * @example
 * const charges = await readLedger({ name: 'a', url: a.url });
 */
export async function readLedger(source: LedgerSource): Promise<LedgerCharge[]> {
  const charges: LedgerCharge[] = [];
  let cursor: string | null = null;
  do {
    const query: string = cursor === null ? 'limit=100' : `limit=100&cursor=${cursor}`;
    let page: LedgerPage;
    try {
      const response = await fetch(`${source.url}/charges?${query}`, { signal: AbortSignal.timeout(10_000) });
      if (!response.ok) throw new Error(`answered ${response.status}`);
      page = (await response.json()) as LedgerPage;
    } catch (error) {
      throw new GroundTruthError(`cannot read the ledger of provider ${source.name}`, { cause: error });
    }
    for (const charge of page.data) {
      charges.push({
        provider: source.name,
        id: charge.id,
        reference: charge.reference,
        idempotencyKey: charge.idempotency_key,
      });
    }
    cursor = page.has_more ? page.next_cursor : null;
  } while (cursor !== null);
  return charges;
}

/** Reads orders, payments and invoices, from a sqlite file (read-only) or Postgres. */
async function readServiceRows(db: string, orderIds: readonly string[]): Promise<ServiceRows> {
  const statements = {
    orders: 'SELECT id, status FROM orders',
    payments: 'SELECT id, order_id, provider_charge_id FROM payments',
    invoices: 'SELECT payment_id, order_id FROM invoices',
  };
  try {
    if (/^postgres(ql)?:\/\//.test(db)) {
      // A Postgres database outlives runs and holds every earlier run's rows: read this run's only.
      const client = new pg.Client({ connectionString: db });
      await client.connect();
      try {
        const ids = [orderIds];
        const [orders, payments, invoices] = [
          await client.query(`${statements.orders} WHERE id = ANY($1::text[])`, ids),
          await client.query(`${statements.payments} WHERE order_id = ANY($1::text[])`, ids),
          await client.query(`${statements.invoices} WHERE order_id = ANY($1::text[])`, ids),
        ];
        return {
          orders: orders.rows,
          payments: payments.rows,
          invoices: invoices.rows,
        } as ServiceRows;
      } finally {
        await client.end();
      }
    }
    const handle = new DatabaseSync(db, { readOnly: true, timeout: 5_000 });
    try {
      return {
        orders: handle.prepare(statements.orders).all(),
        payments: handle.prepare(statements.payments).all(),
        invoices: handle.prepare(statements.invoices).all(),
      } as unknown as ServiceRows;
    } finally {
      handle.close();
    }
  } catch (error) {
    throw new GroundTruthError(`cannot read the service database ${redact(db)}`, { cause: error });
  }
}

function redact(db: string): string {
  return db.replace(/\/\/[^@/]*@/, '//…@');
}

function countBy<T>(items: readonly T[], key: (item: T) => string): Map<string, number> {
  const counts = new Map<string, number>();
  for (const item of items) counts.set(key(item), (counts.get(key(item)) ?? 0) + 1);
  return counts;
}

/** The largest of `values`, 0 for none; a loop, since a spread of 100,000 arguments overflows the stack. */
function largest(values: Iterable<number>): number {
  let max = 0;
  for (const value of values) if (value > max) max = value;
  return max;
}

/**
 * Reads the ledgers and the database and counts what went wrong for the run's orders.
 *
 * @example
 * const truth = await checkGroundTruth({
 *   providers: [{ name: 'a', url: a.url }, { name: 'b', url: b.url }],
 *   db: '/tmp/lab/payments.db',
 *   orderIds,
 *   acknowledged,
 * });
 * truth.doubleCharges; // orders the providers charged more than once
 */
export async function checkGroundTruth(options: GroundTruthOptions): Promise<GroundTruth> {
  const ours = new Set(options.orderIds);
  const [ledgers, rows] = await Promise.all([
    Promise.all(options.providers.map(readLedger)),
    readServiceRows(options.db, options.orderIds),
  ]);
  const charges = ledgers.flat().filter((charge) => ours.has(charge.reference));
  const chargeIds = new Set(charges.map((charge) => charge.id));
  const chargesPerOrder = countBy(charges, (charge) => charge.reference);
  const orders = rows.orders.filter((order) => ours.has(order.id));
  const payments = rows.payments.filter((payment) => ours.has(payment.order_id));
  const paidOrders = new Set(payments.map((payment) => payment.order_id));
  const invoices = rows.invoices.filter((invoice) => ours.has(invoice.order_id));
  const invoicedPayments = new Set(invoices.map((invoice) => invoice.payment_id));
  const invoicesPerOrder = countBy(invoices, (invoice) => invoice.order_id);

  const doubleCharged = [...chargesPerOrder].filter(([, count]) => count > 1).map(([order]) => order);
  const acknowledged = new Set(options.acknowledged.filter((order) => ours.has(order)));
  const missing = [...acknowledged].filter(
    (order) => !paidOrders.has(order) || (chargesPerOrder.get(order) ?? 0) === 0,
  );
  const inBetween = orders.filter((order) => order.status === 'charging').map((order) => order.id);
  return {
    orders: orders.length,
    providerCharges: charges.length,
    chargedOrders: chargesPerOrder.size,
    doubleCharges: doubleCharged.length,
    extraCharges: charges.length - chargesPerOrder.size,
    acknowledged: acknowledged.size,
    acknowledgedButMissing: missing.length,
    chargedButUnrecorded: [...chargesPerOrder.keys()].filter((order) => !paidOrders.has(order)).length,
    paymentsWithoutCharge: payments.filter((payment) => !chargeIds.has(payment.provider_charge_id)).length,
    ordersInBetween: inBetween.length,
    payments: payments.length,
    paymentsWithoutInvoice: payments.filter((payment) => !invoicedPayments.has(payment.id)).length,
    duplicateInvoices: [...invoicesPerOrder.values()].filter((count) => count > 1).length,
    maxInvoicesPerOrder: largest(invoicesPerOrder.values()),
    examples: {
      doubleCharged: doubleCharged.slice(0, EXAMPLES),
      doubleChargeDetails: doubleCharged
        .slice(0, EXAMPLES)
        .map((order) => charges.filter((charge) => charge.reference === order)),
      acknowledgedButMissing: missing.slice(0, EXAMPLES),
      inBetween: inBetween.slice(0, EXAMPLES),
    },
  };
}
