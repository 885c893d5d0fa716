/**
 * The event the outbox benchmark appends, on its own thread and on the producer's: each is about
 * another payment, named by a random UUID as a service names its payments. Ids that follow each
 * other (`p-1`, `p-2` …) would land every write into an index by aggregate on the same last page,
 * which no real outbox sees.
 *
 * @module
 */
import { randomUUID } from 'node:crypto';
import type { NewOutboxEvent } from 'keel/outbox';

/**
 * The `i`th event of a phase; the lag phase finds its number in `payload.n`.
 *
 * @example
 * paymentEvent(7).payload; // { amount: 1500, n: 7 }
 */
export function paymentEvent(i: number): NewOutboxEvent {
  return {
    type: 'payment.completed',
    aggregateType: 'payment',
    aggregateId: randomUUID(),
    payload: { amount: 1_500, n: i },
  };
}
