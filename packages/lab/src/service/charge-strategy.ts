/**
 * @module
 * The seam between the one charge route and the two ways of charging: `guarded` (recovery points,
 * the provider call outside any transaction under deadline, breaker, retry budget and failover, and
 * an outbox) and `naive` (the provider called inside the open transaction, blind retries, events
 * fired after commit). The route does the same thing in both modes; only the strategy differs.
 */
import type { FastifyRequest } from 'fastify';
import type { StoredResponse } from 'keel/idempotency';

export interface ChargeInput {
  readonly request: FastifyRequest;
  readonly userId: string;
  readonly orderId: string;
}

export interface ChargeStrategy {
  /** Charges the user's order and answers with the response to send (201 and the payment). */
  charge(input: ChargeInput): Promise<StoredResponse>;
}

/** The answer of a successful charge. */
export function paymentResponse(payment: unknown): StoredResponse {
  return {
    status: 201,
    headers: { 'content-type': 'application/json; charset=utf-8' },
    body: JSON.stringify(payment),
  };
}
