/**
 * @module
 * Everything `/metrics` shows: Keel's standard metrics (breaker state, retries, rejections,
 * idempotency replays, outbox lag), fed by the sinks passed as `telemetry` to every policy, the
 * idempotency engine, the pool guard and the outbox; and the payments domain's own counters,
 * declared once and zero from start-up so a missing event shows as a flat line, not as nothing.
 */
import {
  counter,
  defineDomainMetrics,
  INVARIANT_BREACHED_METRIC,
  type InvariantGauge,
  type KeelMetrics,
  keelMetrics,
  type MetricsFacade,
  prometheusMetrics,
} from 'keel/observe';
import * as promClient from 'prom-client';

/** Why a charge failed, as a bounded label. */
export const CHARGE_FAILURES = ['declined', 'unavailable', 'error'] as const;
export type ChargeFailure = (typeof CHARGE_FAILURES)[number];

/** What the completer sweep did with an abandoned charge, as a bounded label. */
export const SWEEP_OUTCOMES = ['completed', 'released', 'failed', 'skipped'] as const;
export type SweepOutcome = (typeof SWEEP_OUTCOMES)[number];

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
    chargesSwept: counter(
      'payments_sweep_abandoned_total',
      'Abandoned charges (lease expired, outcome unknown) the completer sweep found.',
    ),
    chargesSweptFinished: counter(
      'payments_sweep_finished_total',
      'Abandoned charges the completer sweep finished: completed (paid), released (not charged), failed or skipped.',
      { outcome: SWEEP_OUTCOMES },
    ),
  });
}

export type DomainMetrics = ReturnType<typeof declareDomainMetrics>;

export interface ServiceMetrics {
  readonly registry: promClient.Registry;
  readonly keel: KeelMetrics;
  readonly domain: DomainMetrics;
  /** The facade the metrics above are declared on, for the service's other gauges. */
  readonly facade: MetricsFacade;
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
  return { registry, keel: keelMetrics(facade), domain: declareDomainMetrics(facade), facade };
}

/**
 * `keel_invariant_breached{invariant}`, which the invariant evaluator sets to 1 while a check is
 * breached and the exported Prometheus rules watch.
 *
 * @example
 * invariants({ checks, breachedGauge: invariantBreachedGauge(metrics) });
 */
export function invariantBreachedGauge(metrics: ServiceMetrics): InvariantGauge {
  return metrics.facade.gauge({
    name: INVARIANT_BREACHED_METRIC,
    help: '1 while an invariant is breached, 0 while it holds.',
    labels: { invariant: { maxValues: 100 } },
  });
}
