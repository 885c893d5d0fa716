/**
 * @module
 * Everything `/metrics` shows: Keel's standard metrics (breaker state, retries, rejections,
 * idempotency replays, outbox lag), fed by the sinks passed as `telemetry` to every policy, the
 * idempotency engine, the pool guard and the outbox; and the payments domain's own counters,
 * declared once and zero from start-up so a missing event shows as a flat line, not as nothing.
 */
import { counter, defineDomainMetrics, type KeelMetrics, keelMetrics, prometheusMetrics } from 'keel/observe';
import * as promClient from 'prom-client';

/** Why a charge failed, as a bounded label. */
export const CHARGE_FAILURES = ['declined', 'unavailable', 'error'] as const;
export type ChargeFailure = (typeof CHARGE_FAILURES)[number];

export function declareDomainMetrics(facade: ReturnType<typeof prometheusMetrics>) {
  return defineDomainMetrics(facade, {
    ordersCreated: counter('payments_orders_created_total', 'Orders accepted.'),
    chargesAttempted: counter('payments_charges_attempted_total', 'Charge requests that ran the charge.'),
    chargesCompleted: counter('payments_charges_completed_total', 'Charges recorded as paid, by provider.', {
      provider: ['a', 'b'],
    }),
    chargesFailed: counter('payments_charges_failed_total', 'Charges that ended without a payment.', {
      reason: CHARGE_FAILURES,
    }),
    chargesAbandoned: counter(
      'payments_charges_abandoned_total',
      'Charges left in charging with their outcome unknown, for a retry or the sweep to finish.',
    ),
    invoicesSent: counter('payments_invoices_sent_total', 'Invoices handed to the mail provider.'),
  });
}

export type DomainMetrics = ReturnType<typeof declareDomainMetrics>;

export interface ServiceMetrics {
  readonly registry: promClient.Registry;
  readonly keel: KeelMetrics;
  readonly domain: DomainMetrics;
}

/**
 * A fresh registry per service instance, so two instances in one test process never share series.
 *
 * @example
 * const metrics = serviceMetrics();
 * circuitBreaker({ name: 'provider-a', telemetry: metrics.keel.policy });
 * metrics.domain.ordersCreated.inc();
 */
export function serviceMetrics(): ServiceMetrics {
  const registry = new promClient.Registry();
  const facade = prometheusMetrics(registry, promClient);
  return { registry, keel: keelMetrics(facade), domain: declareDomainMetrics(facade) };
}
