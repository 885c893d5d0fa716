/**
 * @module
 * The guarded charge, as DESIGN.md's "A charge, guarded" has it. Keel's idempotency plugin has
 * already leased the request's `Idempotency-Key` (or replayed, or refused it); then, once the charge
 * gets its turn among the instance's {@link MAX_CONCURRENT_CHARGES}, `runPhases`:
 *
 * 1. `attempt` (one transaction): the order moves to `charging` and the provider key is pinned to
 *    the first provider the routing will try, committed with the recovery point.
 * 2. `charge` (no transaction open): the providers, through deadline → breaker → retry budget →
 *    failover, with `lease.derivedKey('charge')` as the provider's `Idempotency-Key`. A timeout
 *    leaves the outcome unknown, and the next attempt looks the charge up by that key first.
 * 3. respond (one transaction): the payment row, the order `paid`, `payment.completed` in the
 *    outbox and the stored response commit together.
 */
import { bulkhead, isTransient } from 'keel';

import { idempotencyLease } from 'keel/fastify';
import { runPhases, type StoredResponse } from 'keel/idempotency';
import { bindEntity } from 'keel/observe';
import type { ChargeInput, ChargeStrategy } from './charge-strategy.ts';
import { paymentResponse } from './charge-strategy.ts';
import { type FirstPin, pinFirstIn } from './charge-targets.ts';
import type { Database, SqlTransaction } from './database.ts';
import {
  ChargeInProgressError,
  OrderAlreadyPaidError,
  PaymentDeclinedError,
  ProvidersUnavailableError,
} from './domain-errors.ts';
import type { EventOutbox } from './event-outbox.ts';
import { paymentCompleted } from './payment-events.ts';
import {
  findOrder,
  insertPayment,
  insertPaymentOfPaidOrder,
  moveOrder,
  type Order,
  type Payment,
  takeForCharge,
  takeForChargeAndPin,
} from './payment-records.ts';
import type { ProviderCharge } from './provider-client.ts';
import type { ProviderRouting } from './provider-routing.ts';
import type { DomainMetrics } from './service-metrics.ts';

export interface GuardedChargeOptions {
  readonly db: Database;
  readonly routing: ProviderRouting;
  readonly outbox: EventOutbox;
  readonly metrics: DomainMetrics;
  /**
   * Charges one instance runs at once; the others wait their turn (see {@link MAX_CONCURRENT_CHARGES}).
   * @default MAX_CONCURRENT_CHARGES
   */
  readonly maxConcurrentCharges?: number;
}

/**
 * Charges one instance runs at once. A charge holds a pooled connection twice, for its first and its
 * last transaction, and none during the provider call, so about twice as many charges as the pool's
 * share of connections keep that share busy. Admitting every request instead lets new charges take
 * the connections that charges already made at the provider need to record their payment: on a busy
 * machine each round trip slows, the share's queue grows, and charges the provider made miss their
 * deadline waiting behind charges that have not started, which the completer must then finish.
 */
export const MAX_CONCURRENT_CHARGES = 16;

/** Charges that may wait for their turn; the request's deadline bounds each wait. */
const MAX_QUEUED_CHARGES = 10_000;

/**
 * Longest wait for a turn, in ms: a charge admitted later than this has too little of a request's
 * budget left to finish, so it is refused (503) before it changes anything, and its client retries.
 */
const CHARGE_QUEUE_TIMEOUT_MS = 1_000;

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
 * const response = await recordPayment(db.join(handle), outbox, orderId, charge, db.driver.dialect);
 */
export async function recordPayment(
  tx: SqlTransaction,
  outbox: EventOutbox,
  orderId: string,
  charge: ProviderCharge,
  dialect?: Database['driver']['dialect'],
): Promise<StoredResponse> {
  let payment: Payment;
  if (dialect === 'postgres') payment = await insertPaymentOfPaidOrder(tx, orderId, charge);
  else {
    payment = await insertPayment(tx, orderId, charge);
    await moveOrder(tx, orderId, ['pending', 'charging'], 'paid');
  }
  await outbox.append(tx, paymentCompleted(payment));
  return paymentResponse(payment);
}

/**
 * The provider the routing will try first: the first, in its order, whose breaker lets calls in.
 *
 * @example
 * const provider = firstChoice(routing); // 'a', or 'b' while A's breaker is open
 */
export function firstChoice(routing: ProviderRouting): string {
  const names = [...routing.breakers.keys()];
  const open = (name: string) => {
    const state = routing.breakers.get(name)?.state;
    return state === 'open' || state === 'isolated';
  };
  const first = names.find((name) => !open(name)) ?? names[0];
  if (first === undefined) throw new Error('the routing has no provider');
  return first;
}

/**
 * @example
 * const strategy = guardedCharge({ db, routing, outbox, metrics });
 * const response = await strategy.charge({ request, userId, orderId });
 */
export function guardedCharge(options: GuardedChargeOptions): ChargeStrategy {
  const { db, routing, outbox, metrics } = options;
  const admission = bulkhead({
    name: 'charges',
    maxConcurrent: options.maxConcurrentCharges ?? MAX_CONCURRENT_CHARGES,
    maxQueued: MAX_QUEUED_CHARGES,
    queueTimeoutMs: CHARGE_QUEUE_TIMEOUT_MS,
  });
  const transaction = <T>(fn: (handle: unknown) => Promise<T>) =>
    db.transaction('api', (tx) => fn(tx.handle));

  const refuse = (order: Order): never => {
    if (order.status === 'paid') throw new OrderAlreadyPaidError(order.id);
    throw new ChargeInProgressError(order.id);
  };

  return {
    async charge({ request, userId, orderId }: ChargeInput) {
      return admission.execute(() => chargeOnce(request, userId, orderId));
    },
  };

  async function chargeOnce(request: ChargeInput['request'], userId: string, orderId: string) {
    const lease = idempotencyLease(request);
    if (lease === undefined) throw new Error('the guarded charge runs under the idempotency plugin');
    bindEntity({ orderId });
    // A retry of our own attempt resumes it from its recovery points; a new attempt reads the order
    // in its own transaction, where anyone else finds it taken. (No read before it: on a busy pool
    // each connection taken is a wait, and the transaction must read the order again anyway.)
    if (Object.hasOwn(lease.phases, 'attempt')) metrics.chargesAttempted.inc({});
    // Where the provider key is pinned, when this request's own `attempt` wrote or read it; a resumed
    // charge leaves it to the routing to read.
    let pin: FirstPin | undefined;
    try {
      return await runPhases(
        lease,
        [
          {
            name: 'attempt',
            run: async (_context, handle): Promise<ChargeAttempt> => {
              const tx = db.join(handle);
              // The order is taken (only a refusal reads it, to say why) and the provider key pinned
              // to the routing's first choice, so the provider call writes nothing first; a key
              // released by the completer comes back here with its pin still in place. On Postgres
              // both are one statement.
              const key = lease.derivedKey(CHARGE_PHASE);
              const provider = firstChoice(routing);
              let order: Order;
              if (db.driver.dialect === 'postgres') {
                const taken = await takeForChargeAndPin(tx, userId, orderId, key, provider);
                if (taken === undefined) return refuse(await findOrder(tx, userId, orderId));
                ({ order, pin } = taken);
              } else {
                order =
                  (await takeForCharge(tx, userId, orderId)) ?? refuse(await findOrder(tx, userId, orderId));
                pin = await pinFirstIn(tx, key, provider);
              }
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
                pin === undefined
                  ? {}
                  : 'pinnedBefore' in pin
                    ? { pinnedTo: pin.pinnedBefore }
                    : { pinnedTo: null, pinnedUnsent: pin.pinnedNow },
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
              db.driver.dialect,
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
  }
}
