/**
 * @module
 * The events the payments service emits, built in one place so producer and consumers agree on
 * their shape: `payment.completed` (a payment was recorded) and `invoice.sent` (an invoice was
 * written and is to be mailed). Each carries the request's context headers, so the consumer's log
 * lines name the request and the idempotency key that caused them.
 */

import { contextHeaders } from 'keel/observe';
import { type NewOutboxEvent, type OutboxEvent, uuidv7 } from 'keel/outbox';
import type { Invoice, Payment } from './payment-records.ts';

export const PAYMENT_COMPLETED = 'payment.completed';
export const INVOICE_SENT = 'invoice.sent';

export interface PaymentCompletedPayload {
  readonly paymentId: string;
  readonly orderId: string;
  readonly provider: string;
  readonly amount: number;
  readonly currency: string;
}

export interface InvoiceSentPayload {
  readonly invoiceId: string;
  readonly orderId: string;
  readonly email: string;
  readonly amount: number;
  readonly currency: string;
}

/** @example await outbox.append(tx, paymentCompleted(payment)); */
export function paymentCompleted(payment: Payment): NewOutboxEvent<PaymentCompletedPayload> {
  return {
    type: PAYMENT_COMPLETED,
    aggregateType: 'payment',
    aggregateId: payment.id,
    payload: {
      paymentId: payment.id,
      orderId: payment.orderId,
      provider: payment.provider,
      amount: payment.amount,
      currency: payment.currency,
    },
    headers: contextHeaders(),
  };
}

/** @example await outbox.append(tx, invoiceSent(invoice)); */
export function invoiceSent(invoice: Invoice): NewOutboxEvent<InvoiceSentPayload> {
  return {
    type: INVOICE_SENT,
    aggregateType: 'invoice',
    aggregateId: invoice.id,
    payload: {
      invoiceId: invoice.id,
      orderId: invoice.orderId,
      email: invoice.email,
      amount: invoice.amount,
      currency: invoice.currency,
    },
    headers: contextHeaders(),
  };
}

/**
 * An event as a naive producer publishes it straight to the transport, with no outbox to give it
 * an id and a time.
 */
export function publishable(event: NewOutboxEvent): OutboxEvent {
  return {
    id: event.id ?? uuidv7(),
    type: event.type,
    aggregateType: event.aggregateType,
    aggregateId: event.aggregateId,
    payload: event.payload,
    headers: event.headers ?? {},
    createdAt: Date.now(),
  };
}
