/**
 * @module
 * The `invoices` backfill: appends `payment.completed` to the outbox for every payment that has no
 * invoice and no such event waiting for the invoice consumer — payments the naive configuration
 * recorded and announced fire-and-forget (a lost publish left no trace) or recorded before the
 * outbox existed, and payments whose event was consumed and whose invoice is gone — so the guarded
 * service's relay publishes them and the invoice consumer writes one invoice each. Two kinds are
 * left alone: a payment that has an invoice (a new event would carry a new id past the inbox and
 * write a second one), and a payment whose event is still waiting for the consumer (`keel replay`
 * re-sends it under its own id). The walk is Keel's `backfill()` over the payments' primary key, a
 * batch and its checkpoint per transaction, so a run killed at any point resumes where it stopped.
 */
import type { DatabaseSync } from 'node:sqlite';
import type { PostgresQueryable } from 'keel/postgres';
import { postgresCheckpoints, postgresOutbox } from 'keel/postgres';
import { type BackfillProgress, type BackfillReport, backfill } from 'keel/repair';
import { sqliteCheckpoints, sqliteOutbox } from 'keel/sqlite';
import type { DatabaseDriver } from '../service/database.ts';
import { OUTBOX_TABLE } from '../service/event-outbox.ts';
import { INBOX_TABLE, INVOICE_GROUP } from '../service/invoice-consumer.ts';
import { PAYMENT_COMPLETED, paymentCompleted } from '../service/payment-events.ts';
import { type PaymentRow, toPayment } from '../service/payment-records.ts';
import type { ServiceDatabase } from './service-database.ts';

/** The backfill's name: its checkpoint's key and the `keel-backfill` header of its events. */
export const INVOICE_BACKFILL = 'invoices';

export interface InvoiceBackfillOptions {
  readonly database: ServiceDatabase;
  /** Count and list, write nothing. */
  readonly dryRun: boolean;
  /** Payments per transaction. */
  readonly batchSize: number;
  /** Only payments created at or after this epoch ms. */
  readonly createdSince?: number | undefined;
  /** Pause between batches, in ms. */
  readonly pauseMs?: number;
  /** Walk from the first payment rather than from the checkpoint. */
  readonly restart?: boolean;
  readonly signal?: AbortSignal;
  readonly onProgress?: (progress: BackfillProgress) => void;
}

export interface InvoiceBackfillReport extends BackfillReport<string> {
  /** Payments in range with an invoice and no event (naive ones): left alone. */
  readonly alreadyInvoiced: number;
  /** Payments in range without an invoice whose event waits for the consumer: left to `keel replay`. */
  readonly awaitingConsumer: number;
}

/** The payment has a `payment.completed` event; with `unconsumed`, one the invoices group has not consumed. */
function hasEvent(unconsumed: 'unconsumed' | 'any', inboxKnown: boolean): string {
  const consumed = `EXISTS (SELECT 1 FROM ${INBOX_TABLE} i WHERE i.group_name = '${INVOICE_GROUP}' AND i.event_id = e.id)`;
  return `EXISTS (SELECT 1 FROM ${OUTBOX_TABLE} e
     WHERE e.aggregate_type = 'payment' AND e.aggregate_id = p.id AND e.type = '${PAYMENT_COMPLETED}'
     ${unconsumed === 'unconsumed' && inboxKnown ? `AND NOT ${consumed}` : ''})`;
}
const HAS_INVOICE = 'EXISTS (SELECT 1 FROM invoices i WHERE i.payment_id = p.id)';

/** Runs `sql` (with `?` placeholders) on the handle inside the batch's transaction. */
async function rowsOn<T>(driver: DatabaseDriver, tx: unknown, sql: string, params: (string | number)[]) {
  if (driver.dialect === 'sqlite') return (tx as DatabaseSync).prepare(sql).all(...params) as T[];
  let n = 0;
  const numbered = sql.replace(/\?/g, () => `$${++n}`);
  return (await (tx as PostgresQueryable).query(numbered, params)).rows as T[];
}

/**
 * Walks the payments from the checkpoint and appends the missing events (or, dry, counts them).
 *
 * @example
 * const database = await openServiceDatabase('payments.db', { readOnly: false });
 * const report = await backfillInvoices({ database, dryRun: false, batchSize: 100 });
 */
export async function backfillInvoices(options: InvoiceBackfillOptions): Promise<InvoiceBackfillReport> {
  const { database, dryRun } = options;
  const driver = database.driver;
  // The outbox table is created by the first real run; a dry run on a database without one judges
  // every payment by its invoice alone.
  const outboxKnown = database.has(OUTBOX_TABLE) || !dryRun;
  // Without an inbox table nothing was consumed through one: every event counts as waiting.
  const inboxKnown = database.has(INBOX_TABLE);
  const inRange = options.createdSince === undefined ? '' : 'AND p.created_at >= ?';
  const range = options.createdSince === undefined ? [] : [options.createdSince];
  const waiting = outboxKnown ? hasEvent('unconsumed', inboxKnown) : 'FALSE';
  const anyEvent = outboxKnown ? hasEvent('any', inboxKnown) : 'FALSE';
  const selection = `SELECT p.id, p.order_id, p.provider, p.provider_charge_id, p.amount, p.currency, p.created_at
  FROM payments p
 WHERE p.id > ? ${inRange}
   AND NOT ${HAS_INVOICE}
   AND NOT ${waiting}
 ORDER BY p.id LIMIT ?`;
  const leftAloneSql = `SELECT
  count(CASE WHEN ${HAS_INVOICE} AND NOT ${anyEvent} THEN 1 END) AS invoiced,
  count(CASE WHEN NOT ${HAS_INVOICE} AND ${waiting} THEN 1 END) AS waiting
  FROM payments p WHERE 1 = 1 ${inRange}`;

  let append: (tx: unknown, rows: readonly PaymentRow[]) => Promise<unknown>;
  let close = async () => {};
  const events = (rows: readonly PaymentRow[]) =>
    rows.map((row) => {
      const event = paymentCompleted(toPayment(row));
      return { ...event, headers: { ...event.headers, 'keel-backfill': INVOICE_BACKFILL } };
    });
  if (dryRun) {
    append = async () => {
      throw new Error('a dry run appends nothing');
    };
  } else if (driver.dialect === 'sqlite') {
    const outbox = sqliteOutbox({ db: driver.db, table: OUTBOX_TABLE });
    append = (tx, rows) => outbox.append(tx, events(rows));
  } else {
    const outbox = postgresOutbox({ pool: driver.pool, table: OUTBOX_TABLE });
    await outbox.ensureSchema();
    append = (tx, rows) => outbox.append(tx, events(rows));
    close = () => outbox.close();
  }
  const checkpoints =
    driver.dialect === 'sqlite'
      ? sqliteCheckpoints({ db: driver.db })
      : postgresCheckpoints({ pool: driver.pool });

  try {
    const [leftAlone] = await checkpoints.transaction(
      (tx) =>
        rowsOn<{ invoiced: number | string; waiting: number | string }>(driver, tx, leftAloneSql, range),
      { readOnly: true },
    );
    const report = await backfill<PaymentRow, string>({
      name: INVOICE_BACKFILL,
      checkpoints,
      batchSize: options.batchSize,
      dryRun,
      restart: options.restart ?? false,
      pauseMs: options.pauseMs ?? 0,
      nextBatch: (after, { tx, limit }) =>
        rowsOn<PaymentRow>(driver, tx, selection, [after ?? '', ...range, limit]),
      cursorOf: (row) => row.id,
      idOf: (row) => row.id,
      apply: async (rows, { tx }) => void (await append(tx, rows)),
      ...(options.signal !== undefined && { signal: options.signal }),
      ...(options.onProgress !== undefined && { onProgress: options.onProgress }),
    });
    return {
      ...report,
      alreadyInvoiced: Number(leftAlone?.invoiced ?? 0),
      awaitingConsumer: Number(leftAlone?.waiting ?? 0),
    };
  } finally {
    await close();
  }
}
