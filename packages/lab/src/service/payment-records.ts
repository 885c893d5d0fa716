/**
 * @module
 * Orders, payments and invoices as rows: the statements the routes, both charge strategies and the
 * invoice consumer share, written once for SQLite and Postgres. Reads are scoped to the user, so one
 * user can never read another's order by guessing its id.
 */
import { randomUUID } from 'node:crypto';
import type { FirstPin } from './charge-targets.ts';
import type { SqlParam, SqlRunner } from './database.ts';
import { OrderNotFoundError, PaymentNotFoundError } from './domain-errors.ts';
import type { ProviderCharge } from './provider-client.ts';

export type OrderStatus = 'pending' | 'charging' | 'paid';

export interface Order {
  readonly id: string;
  readonly userId: string;
  readonly amount: number;
  readonly currency: string;
  readonly description: string | null;
  readonly status: OrderStatus;
  readonly createdAt: number;
}

export interface Payment {
  readonly id: string;
  readonly orderId: string;
  readonly provider: string;
  readonly providerChargeId: string;
  readonly amount: number;
  readonly currency: string;
  readonly createdAt: number;
}

export interface Invoice {
  readonly id: string;
  readonly paymentId: string;
  readonly orderId: string;
  readonly email: string;
  readonly amount: number;
  readonly currency: string;
  readonly createdAt: number;
}

interface OrderRow {
  id: string;
  user_id: string;
  amount: number | string;
  currency: string;
  description: string | null;
  status: OrderStatus;
  created_at: number | string;
}

/** A `payments` row as both drivers return it. */
export interface PaymentRow {
  id: string;
  order_id: string;
  provider: string;
  provider_charge_id: string;
  amount: number | string;
  currency: string;
  created_at: number | string | bigint;
}

interface InvoiceRow {
  id: string;
  payment_id: string;
  order_id: string;
  email: string;
  amount: number | string;
  currency: string;
  created_at: number | string;
}

// Postgres returns BIGINT as a string; SQLite as a number. Either way the service speaks numbers.
const toOrder = (row: OrderRow): Order => ({
  id: row.id,
  userId: row.user_id,
  amount: Number(row.amount),
  currency: row.currency,
  description: row.description,
  status: row.status,
  createdAt: Number(row.created_at),
});

/**
 * @example
 * const payment = toPayment(row); // { id, orderId, provider, providerChargeId, amount, currency, createdAt }
 */
export const toPayment = (row: PaymentRow): Payment => ({
  id: row.id,
  orderId: row.order_id,
  provider: row.provider,
  providerChargeId: row.provider_charge_id,
  amount: Number(row.amount),
  currency: row.currency,
  createdAt: Number(row.created_at),
});

const toInvoice = (row: InvoiceRow): Invoice => ({
  id: row.id,
  paymentId: row.payment_id,
  orderId: row.order_id,
  email: row.email,
  amount: Number(row.amount),
  currency: row.currency,
  createdAt: Number(row.created_at),
});

const ORDER_COLUMNS = 'id, user_id, amount, currency, description, status, created_at';
const PAYMENT_COLUMNS =
  'p.id, p.order_id, p.provider, p.provider_charge_id, p.amount, p.currency, p.created_at';

/** @example const order = await insertOrder(tx, { userId, amount: 1999, currency: 'eur' }); */
export async function insertOrder(
  tx: SqlRunner,
  order: { userId: string; amount: number; currency: string; description: string | null },
): Promise<Order> {
  const now = Date.now();
  const id = `ord_${randomUUID()}`;
  await tx.run(`INSERT INTO orders (${ORDER_COLUMNS}, updated_at) VALUES (?, ?, ?, ?, ?, 'pending', ?, ?)`, [
    id,
    order.userId,
    order.amount,
    order.currency,
    order.description,
    now,
    now,
  ]);
  return { id, ...order, status: 'pending', createdAt: now };
}

/** The user's order, or {@link OrderNotFoundError}. */
export async function findOrder(runner: SqlRunner, userId: string, orderId: string): Promise<Order> {
  const row = await runner.get<OrderRow>(`SELECT ${ORDER_COLUMNS} FROM orders WHERE id = ? AND user_id = ?`, [
    orderId,
    userId,
  ]);
  if (row === undefined) throw new OrderNotFoundError(orderId);
  return toOrder(row);
}

/**
 * Moves the customer's order from `pending` to `charging` and answers it as it now is, in one
 * statement; undefined when the order is not the customer's or not pending (read it to say why).
 *
 * @example
 * const order = (await takeForCharge(tx, userId, orderId)) ?? refuse(await findOrder(tx, userId, orderId));
 */
export async function takeForCharge(
  tx: SqlRunner,
  userId: string,
  orderId: string,
): Promise<Order | undefined> {
  const row = await tx.get<OrderRow>(
    `UPDATE orders SET status = ?, updated_at = ? WHERE id = ? AND user_id = ? AND status = ?
     RETURNING ${ORDER_COLUMNS}`,
    ['charging', Date.now(), orderId, userId, 'pending'],
  );
  return row === undefined ? undefined : toOrder(row);
}

/**
 * Postgres only: {@link takeForCharge} and the provider key's first pin (see `pinFirstIn`) in one
 * statement, one round trip fewer inside the charge's first transaction. The pin is written only
 * when the order was taken; `pinned_before` reads the statement's snapshot, so it is the pin the key
 * had before (a key released by the completer), and `pinned_now` the one just written.
 */
const TAKE_AND_PIN_SQL = `WITH taken AS (
    UPDATE orders SET status = ?, updated_at = ? WHERE id = ? AND user_id = ? AND status = ?
    RETURNING ${ORDER_COLUMNS}
  ), pinned AS (
    INSERT INTO charge_targets (provider_key, provider, pinned_at) SELECT ?, ?, ? FROM taken
    ON CONFLICT (provider_key) DO NOTHING RETURNING provider
  )
  SELECT taken.*, (SELECT provider FROM pinned) AS pinned_now,
    (SELECT provider FROM charge_targets WHERE provider_key = ?) AS pinned_before
  FROM taken`;

/**
 * Postgres only: takes the customer's pending order for a charge and pins `key` to `provider`
 * unless it is pinned already, in one statement; undefined when the order was not taken (nothing
 * is pinned then).
 *
 * @example
 * const taken = await takeForChargeAndPin(tx, userId, orderId, lease.derivedKey('charge'), 'a');
 */
export async function takeForChargeAndPin(
  tx: SqlRunner,
  userId: string,
  orderId: string,
  key: string,
  provider: string,
): Promise<{ readonly order: Order; readonly pin: FirstPin } | undefined> {
  const now = Date.now();
  const row = await tx.get<OrderRow & { pinned_now: string | null; pinned_before: string | null }>(
    TAKE_AND_PIN_SQL,
    ['charging', now, orderId, userId, 'pending', key, provider, now, key],
  );
  if (row === undefined) return undefined;
  let pin: FirstPin;
  if (row.pinned_now !== null) pin = { pinnedNow: row.pinned_now };
  else if (row.pinned_before !== null) pin = { pinnedBefore: row.pinned_before };
  else throw new Error(`charge_targets: the pin of ${key} vanished`);
  return { order: toOrder(row), pin };
}

/**
 * Postgres only: the payment and the order's move to `paid` in one statement (see
 * {@link insertPayment}, {@link moveOrder}), one round trip fewer in the charge's last transaction.
 *
 * @example
 * const payment = await insertPaymentOfPaidOrder(db.join(handle), orderId, charge);
 */
export async function insertPaymentOfPaidOrder(
  tx: SqlRunner,
  orderId: string,
  charge: ProviderCharge,
): Promise<Payment> {
  const payment = newPayment(orderId, charge);
  await tx.run(
    `WITH paid AS (
       UPDATE orders SET status = ?, updated_at = ? WHERE id = ? AND status IN (?, ?) RETURNING id
     )
     INSERT INTO payments (id, order_id, provider, provider_charge_id, amount, currency, created_at)
     VALUES (?, ?, ?, ?, ?, ?, ?)`,
    ['paid', payment.createdAt, orderId, 'pending', 'charging', ...paymentValues(payment)],
  );
  return payment;
}

/** Moves the order to `status`, only from one of `from`; resolves with whether it moved. */
export async function moveOrder(
  tx: SqlRunner,
  orderId: string,
  from: readonly OrderStatus[],
  status: OrderStatus,
): Promise<boolean> {
  const placeholders = from.map(() => '?').join(', ');
  const changed = await tx.run(
    `UPDATE orders SET status = ?, updated_at = ? WHERE id = ? AND status IN (${placeholders})`,
    [status, Date.now(), orderId, ...from],
  );
  return changed === 1;
}

/** Records the provider's charge as the order's payment. */
export async function insertPayment(
  tx: SqlRunner,
  orderId: string,
  charge: ProviderCharge,
): Promise<Payment> {
  const payment = newPayment(orderId, charge);
  await tx.run(
    'INSERT INTO payments (id, order_id, provider, provider_charge_id, amount, currency, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)',
    paymentValues(payment),
  );
  return payment;
}

function newPayment(orderId: string, charge: ProviderCharge): Payment {
  return {
    id: `pay_${randomUUID()}`,
    orderId,
    provider: charge.provider,
    providerChargeId: charge.id,
    amount: charge.amount,
    currency: charge.currency,
    createdAt: Date.now(),
  };
}

/** A payment's values in the column order of the `INSERT INTO payments` statements. */
function paymentValues(payment: Payment): SqlParam[] {
  return [
    payment.id,
    payment.orderId,
    payment.provider,
    payment.providerChargeId,
    payment.amount,
    payment.currency,
    payment.createdAt,
  ];
}

/** The user's payment, or {@link PaymentNotFoundError}. */
export async function findPayment(runner: SqlRunner, userId: string, paymentId: string): Promise<Payment> {
  const row = await runner.get<PaymentRow>(
    `SELECT ${PAYMENT_COLUMNS} FROM payments p JOIN orders o ON o.id = p.order_id WHERE p.id = ? AND o.user_id = ?`,
    [paymentId, userId],
  );
  if (row === undefined) throw new PaymentNotFoundError(paymentId);
  return toPayment(row);
}

/** The order's payment, if it has one. */
export async function findPaymentOfOrder(runner: SqlRunner, orderId: string): Promise<Payment | undefined> {
  const row = await runner.get<PaymentRow>(`SELECT ${PAYMENT_COLUMNS} FROM payments p WHERE p.order_id = ?`, [
    orderId,
  ]);
  return row === undefined ? undefined : toPayment(row);
}

/** Writes the invoice of a payment, addressed to the order's user. */
export async function insertInvoice(
  tx: SqlRunner,
  invoice: { paymentId: string; orderId: string; amount: number; currency: string },
): Promise<Invoice> {
  const user = await tx.get<{ email: string }>(
    'SELECT u.email FROM orders o JOIN users u ON u.id = o.user_id WHERE o.id = ?',
    [invoice.orderId],
  );
  const written: Invoice = {
    id: `inv_${randomUUID()}`,
    ...invoice,
    email: user?.email ?? 'unknown@invalid',
    createdAt: Date.now(),
  };
  await tx.run(
    'INSERT INTO invoices (id, payment_id, order_id, email, amount, currency, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)',
    [
      written.id,
      written.paymentId,
      written.orderId,
      written.email,
      written.amount,
      written.currency,
      written.createdAt,
    ],
  );
  return written;
}

/** The invoices of the user's order (checks the order is the user's first). */
export async function listInvoices(runner: SqlRunner, userId: string, orderId: string): Promise<Invoice[]> {
  await findOrder(runner, userId, orderId);
  const rows = await runner.all<InvoiceRow>(
    'SELECT id, payment_id, order_id, email, amount, currency, created_at FROM invoices WHERE order_id = ? ORDER BY created_at',
    [orderId],
  );
  return rows.map(toInvoice);
}
