/**
 * @module
 * The guarded charge, as DESIGN.md's "A charge, guarded" has it. Keel's idempotency plugin has
 * already leased the request's `Idempotency-Key` (or replayed, or refused it); then `runPhases`:
 *
 * 1. `attempt` (one transaction): the order moves to `charging`, committed with the recovery point.
 * 2. `charge` (no transaction open): the providers, through deadline → breaker → retry budget →
 *    failover, with `lease.derivedKey('charge')` as the provider's `Idempotency-Key`. A timeout
 *    leaves the outcome unknown, and the next attempt looks the charge up by that key first.
 * 3. respond (one transaction): the payment row, the order `paid`, `payment.completed` in the
 *    outbox and the stored response commit together.
 */
import { isTransient } from 'keel';
import { idempotencyLease } from 'keel/fastify';
import { runPhases, type StoredResponse } from 'keel/idempotency';
import { bindEntity } from 'keel/observe';
import type { ChargeInput, ChargeStrategy } from './charge-strategy.ts';
import { paymentResponse } from './charge-strategy.ts';
import { pinnedIn } from './charge-targets.ts';
import type { Database, SqlTransaction } from './database.ts';
import {
  ChargeInProgressError,
  OrderAlreadyPaidError,
  PaymentDeclinedError,
  ProvidersUnavailableError,
} from './domain-errors.ts';
import type { EventOutbox } from './event-outbox.ts';
import { paymentCompleted } from './payment-events.ts';
import { findOrder, insertPayment, moveOrder, type Order } from './payment-records.ts';
import type { ProviderCharge } from './provider-client.ts';
import type { ProviderRouting } from './provider-routing.ts';
import type { DomainMetrics } from './service-metrics.ts';

export interface GuardedChargeOptions {
  readonly db: Database;
  readonly routing: ProviderRouting;
  readonly outbox: EventOutbox;
  readonly metrics: DomainMetrics;
}

/** The result of the `attempt` phase, kept with the recovery point so the completer can finish it. */
export interface ChargeAttempt {
  readonly orderId: string;
  readonly amount: number;
  readonly currency: string;
}

/** The phase whose derived key the providers receive, for reconciling by key. */
export const CHARGE_PHASE = 'charge';

/**
 * The last phase of a charge, in the caller's transaction: the payment row, the order `paid` and
 * `payment.completed` in the outbox; resolves with the response to store for replays.
 *
 * @example
 * const response = await recordPayment(db.join(handle), outbox, orderId, charge);
 */
export async function recordPayment(
  tx: SqlTransaction,
  outbox: EventOutbox,
  orderId: string,
  charge: ProviderCharge,
): Promise<StoredResponse> {
  const payment = await insertPayment(tx, orderId, charge);
  await moveOrder(tx, orderId, ['pending', 'charging'], 'paid');
  await outbox.append(tx, paymentCompleted(payment));
  return paymentResponse(payment);
}

/**
 * @example
 * const strategy = guardedCharge({ db, routing, outbox, metrics });
 * const response = await strategy.charge({ request, userId, orderId });
 */
export function guardedCharge(options: GuardedChargeOptions): ChargeStrategy {
  const { db, routing, outbox, metrics } = options;
  const transaction = <T>(fn: (handle: unknown) => Promise<T>) =>
    db.transaction('api', (tx) => fn(tx.handle));

  const refuse = (order: Order): never => {
    if (order.status === 'paid') throw new OrderAlreadyPaidError(order.id);
    throw new ChargeInProgressError(order.id);
  };

  return {
    async charge({ request, userId, orderId }: ChargeInput) {
      const lease = idempotencyLease(request);
      if (lease === undefined) throw new Error('the guarded charge runs under the idempotency plugin');
      bindEntity({ orderId });
      // A retry of our own attempt resumes it from its recovery points; a new attempt reads the order
      // in its own transaction, where anyone else finds it taken. (No read before it: on a busy pool
      // each connection taken is a wait, and the transaction must read the order again anyway.)
      if (Object.hasOwn(lease.phases, 'attempt')) metrics.chargesAttempted.inc({});
      // Where the provider key is pinned, when this request's own `attempt` read it (`null`: nowhere);
      // a resumed charge leaves it to the routing to read.
      let pinnedTo: string | null | undefined;
      try {
        return await runPhases(
          lease,
          [
            {
              name: 'attempt',
              run: async (_context, handle): Promise<ChargeAttempt> => {
                const tx = db.join(handle);
                const order = await findOrder(tx, userId, orderId);
                if (order.status !== 'pending') refuse(order);
                if (!(await moveOrder(tx, orderId, ['pending'], 'charging'))) {
                  refuse(await findOrder(tx, userId, orderId));
                }
                // A key released by the completer comes back here with its pin still in place.
                pinnedTo = (await pinnedIn(tx, lease.derivedKey(CHARGE_PHASE))) ?? null;
                metrics.chargesAttempted.inc({});
                return { orderId, amount: order.amount, currency: order.currency };
              },
            },
            {
              name: CHARGE_PHASE,
              kind: 'external',
              run: (context, key) => {
                const attempt = context.results.attempt as ChargeAttempt;
                return routing.charge(
                  { amount: attempt.amount, currency: attempt.currency, reference: orderId },
                  key,
                  pinnedTo === undefined ? {} : { pinnedTo },
                );
              },
              lookup: (_context, key) => routing.lookup(key),
            },
          ],
          {
            run: (context, handle) =>
              recordPayment(
                db.join(handle),
                outbox,
                orderId,
                context.results[CHARGE_PHASE] as ProviderCharge,
              ),
          },
          { transaction },
        ).then((response) => {
          const charge = JSON.parse(response.body ?? '{}') as { provider?: string };
          if (charge.provider === 'a' || charge.provider === 'b')
            metrics.chargesCompleted.inc({ provider: charge.provider });
          return response;
        });
      } catch (error) {
        if (error instanceof PaymentDeclinedError) {
          // A decline is final for this attempt: the order can be paid again, with another key.
          await db.transaction('api', (tx) => moveOrder(tx, orderId, ['charging'], 'pending'));
          metrics.chargesFailed.inc({ reason: 'declined' });
          throw error;
        }
        if (error instanceof OrderAlreadyPaidError || error instanceof ChargeInProgressError) throw error;
        if (isTransient(error) || (error as { code?: unknown })?.code === 'KEEL_ALL_TARGETS_FAILED') {
          // The order stays `charging` with its recovery points: a retry with this key resumes it.
          metrics.chargesAbandoned.inc({});
          metrics.chargesFailed.inc({ reason: 'unavailable' });
          throw new ProvidersUnavailableError(
            'No payment provider could take the charge now; retry with the same Idempotency-Key.',
            { cause: error },
          );
        }
        metrics.chargesFailed.inc({ reason: 'error' });
        throw error;
      }
    },
  };
}
