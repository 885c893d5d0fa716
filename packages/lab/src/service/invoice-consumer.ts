/**
 * @module
 * Invoices from events. The `invoices` group consumes `payment.completed`, writes the invoice and
 * emits `invoice.sent`; the `mail` group consumes `invoice.sent` and hands the invoice to the mail
 * provider. Guarded, both run through Keel's `outboxConsumer` over an inbox, so a redelivered event
 * is skipped and the invoice, its inbox row and its `invoice.sent` commit together. Naive, they
 * subscribe straight to the transport: a redelivery writes a second invoice and sends a second mail.
 */
import {
  type InboxStore,
  type NewOutboxEvent,
  type OutboxEvent,
  type OutboxTelemetry,
  outboxConsumer,
  type Transport,
} from 'keel/outbox';
import { postgresInbox } from 'keel/postgres';
import { sqliteInbox } from 'keel/sqlite';
import type { ServiceMode } from './config.ts';
import type { Database, SqlTransaction } from './database.ts';
import type { EventOutbox } from './event-outbox.ts';
import type { MailStub } from './mail-stub.ts';
import {
  INVOICE_SENT,
  type InvoiceSentPayload,
  invoiceSent,
  PAYMENT_COMPLETED,
  type PaymentCompletedPayload,
  publishable,
} from './payment-events.ts';
import { insertInvoice } from './payment-records.ts';
import type { DomainMetrics } from './service-metrics.ts';

/** The inbox table (Keel's default name), which the published-vs-consumed invariant reads. */
export const INBOX_TABLE = 'keel_inbox';

/** The consumer group that turns `payment.completed` into invoices. */
export const INVOICE_GROUP = 'invoices';

export interface InvoiceConsumersOptions {
  readonly mode: ServiceMode;
  readonly db: Database;
  readonly transport: Transport;
  readonly outbox: EventOutbox;
  readonly mail: MailStub;
  readonly metrics: DomainMetrics;
  readonly telemetry?: OutboxTelemetry | undefined;
  /** Told of every invoice written, after its transaction (the consumer's heartbeat counts them). */
  readonly onInvoice?: (() => void) | undefined;
}

export interface InvoiceConsumers {
  stop(): Promise<void>;
}

function inboxOf(db: Database): InboxStore<unknown> {
  const driver = db.driver;
  return (
    driver.dialect === 'sqlite'
      ? sqliteInbox({ db: driver.db, table: INBOX_TABLE })
      : postgresInbox({ pool: driver.pool, table: INBOX_TABLE })
  ) as InboxStore<unknown>;
}

/**
 * Subscribes both groups; resolves once they receive events.
 *
 * @example
 * const consumers = await startInvoiceConsumers({ mode, db, transport, outbox, mail, metrics });
 * await consumers.stop();
 */
export async function startInvoiceConsumers(options: InvoiceConsumersOptions): Promise<InvoiceConsumers> {
  const { db, transport, outbox, mail, metrics } = options;

  const writeInvoice = async (
    tx: SqlTransaction,
    event: OutboxEvent,
    emit: (e: NewOutboxEvent) => Promise<void>,
  ) => {
    const payment = event.payload as PaymentCompletedPayload;
    const invoice = await insertInvoice(tx, {
      paymentId: payment.paymentId,
      orderId: payment.orderId,
      amount: payment.amount,
      currency: payment.currency,
    });
    await emit(invoiceSent(invoice));
  };
  const sendMail = (event: OutboxEvent) => {
    const invoice = event.payload as InvoiceSentPayload;
    mail.send({
      to: invoice.email,
      subject: `Your invoice for order ${invoice.orderId}`,
      invoiceId: invoice.invoiceId,
    });
    metrics.invoicesSent.inc({});
  };

  if (options.mode === 'naive') {
    const subscriptions = [
      await transport.subscribe({ group: INVOICE_GROUP, types: [PAYMENT_COMPLETED] }, async (delivery) => {
        const sent: NewOutboxEvent[] = [];
        await db.transaction('api', (tx) => writeInvoice(tx, delivery.event, async (e) => void sent.push(e)));
        options.onInvoice?.();
        for (const event of sent) transport.publish(publishable(event)).catch(() => undefined);
        await delivery.ack();
      }),
      await transport.subscribe({ group: 'mail', types: [INVOICE_SENT] }, async (delivery) => {
        sendMail(delivery.event);
        await delivery.ack();
      }),
    ];
    return { stop: async () => void (await Promise.all(subscriptions.map((s) => s.close()))) };
  }

  const inbox = inboxOf(db);
  if ('ensureSchema' in inbox && typeof inbox.ensureSchema === 'function') await inbox.ensureSchema();
  const telemetry = options.telemetry === undefined ? {} : { telemetry: options.telemetry };
  const invoices = outboxConsumer({
    transport,
    inbox,
    group: INVOICE_GROUP,
    handlers: {
      [PAYMENT_COMPLETED]: async (event, handle) => {
        const tx = db.join(handle);
        await writeInvoice(tx, event, async (e) => void (await outbox.append(tx, e)));
        // Counted before the inbox commits; a rollback after this is retried and counted again.
        options.onInvoice?.();
      },
    },
    onUnknown: 'skip',
    ...telemetry,
  });
  const mailer = outboxConsumer({
    transport,
    inbox,
    group: 'mail',
    handlers: { [INVOICE_SENT]: async (event) => sendMail(event) },
    onUnknown: 'skip',
    ...telemetry,
  });
  await invoices.start();
  await mailer.start();
  return {
    stop: async () => {
      await invoices.stop();
      await mailer.stop();
    },
  };
}
