/**
 * @module
 * The charge as a reasonable team ships it first — kept to show what Keel changes. It reads the
 * order, opens a transaction, marks the order, calls the providers *inside* the open transaction
 * (holding a pooled connection and the order's write lock for as long as the provider takes), with
 * no timeout, three immediate retries per provider and no idempotency key, commits, and then
 * publishes `payment.completed` straight to the transport without waiting: if that publish fails,
 * nobody ever hears of the payment. `Idempotency-Key` is ignored.
 */
import type { Transport } from 'keel/outbox';
import type { ChargeInput, ChargeStrategy } from './charge-strategy.ts';
import { paymentResponse } from './charge-strategy.ts';
import type { Database } from './database.ts';
import { OrderAlreadyPaidError, PaymentDeclinedError } from './domain-errors.ts';
import { paymentCompleted, publishable } from './payment-events.ts';
import { findOrder, insertPayment, moveOrder } from './payment-records.ts';
import type { ChargeRequest, ProviderCharge, ProviderClient } from './provider-client.ts';
import type { DomainMetrics } from './service-metrics.ts';

export interface NaiveChargeOptions {
  readonly db: Database;
  readonly providers: readonly ProviderClient[];
  readonly transport: Transport;
  readonly metrics: DomainMetrics;
}

const ATTEMPTS_PER_PROVIDER = 3;

async function chargeBlindly(
  providers: readonly ProviderClient[],
  request: ChargeRequest,
): Promise<ProviderCharge> {
  let last: unknown;
  for (const provider of providers) {
    for (let attempt = 0; attempt < ATTEMPTS_PER_PROVIDER; attempt++) {
      try {
        return await provider.charge(request);
      } catch (error) {
        if (error instanceof PaymentDeclinedError) throw error;
        last = error;
      }
    }
  }
  throw last;
}

/**
 * @example
 * const strategy = naiveCharge({ db, providers: [a, b], transport, metrics });
 */
export function naiveCharge(options: NaiveChargeOptions): ChargeStrategy {
  const { db, providers, transport, metrics } = options;
  return {
    async charge({ userId, orderId }: ChargeInput) {
      const order = await findOrder(db.reader('api'), userId, orderId);
      if (order.status === 'paid') throw new OrderAlreadyPaidError(orderId);
      metrics.chargesAttempted.inc({});
      let payment: Awaited<ReturnType<typeof insertPayment>>;
      try {
        payment = await db.transaction('api', async (tx) => {
          await moveOrder(tx, orderId, ['pending', 'charging'], 'charging');
          const charge = await chargeBlindly(providers, {
            amount: order.amount,
            currency: order.currency,
            reference: orderId,
          });
          const recorded = await insertPayment(tx, orderId, charge);
          await moveOrder(tx, orderId, ['charging'], 'paid');
          return recorded;
        });
      } catch (error) {
        metrics.chargesFailed.inc({ reason: error instanceof PaymentDeclinedError ? 'declined' : 'error' });
        throw error;
      }
      if (payment.provider === 'a' || payment.provider === 'b')
        metrics.chargesCompleted.inc({ provider: payment.provider });
      transport.publish(publishable(paymentCompleted(payment))).catch(() => undefined);
      return paymentResponse(payment);
    },
  };
}
