/**
 * The application's own business metrics — orders created, payments completed, invoices sent —
 * declared in one place with their labels, so every call site is type-checked against the
 * declaration (`ordersCreated.inc({ channel: 'fax' })` does not compile when `fax` was never
 * declared) and every declared label combination exists at zero from start-up. A business metric
 * that is missing until its first event is how a silent failure hides: `increase()` over a series
 * that does not exist yet is nothing, not zero.
 *
 * @module
 */
import type {
  Counter,
  Gauge,
  GaugeDeclaration,
  Histogram,
  LabelSpec,
  MetricsFacade,
  NoLabels,
} from './metrics.ts';

/** A counter to be declared by {@link defineDomainMetrics}. */
export interface CounterSpec<L extends LabelSpec> {
  readonly kind: 'counter';
  readonly name: string;
  readonly help: string;
  readonly labels: L | undefined;
}

/** A gauge to be declared by {@link defineDomainMetrics}. */
export interface GaugeSpec<L extends LabelSpec> {
  readonly kind: 'gauge';
  readonly name: string;
  readonly help: string;
  readonly labels: L | undefined;
  readonly collect: GaugeDeclaration<L>['collect'];
}

/** A histogram to be declared by {@link defineDomainMetrics}. */
export interface HistogramSpec<L extends LabelSpec> {
  readonly kind: 'histogram';
  readonly name: string;
  readonly help: string;
  readonly labels: L | undefined;
  readonly buckets: readonly number[];
}

/** Any metric spec. */
export type DomainMetricSpec = CounterSpec<LabelSpec> | GaugeSpec<LabelSpec> | HistogramSpec<LabelSpec>;

/** The metrics {@link defineDomainMetrics} returns, one per spec, typed by its labels. */
export type DomainMetrics<S extends Readonly<Record<string, DomainMetricSpec>>> = {
  readonly [K in keyof S]: S[K] extends CounterSpec<infer L>
    ? Counter<L>
    : S[K] extends GaugeSpec<infer L>
      ? Gauge<L>
      : S[K] extends HistogramSpec<infer L>
        ? Histogram<L>
        : never;
};

/**
 * A counter spec.
 *
 * @example
 * counter('orders_created_total', 'Orders accepted.', { channel: ['web', 'api'] })
 */
export function counter<const L extends LabelSpec = NoLabels>(
  name: string,
  help: string,
  labels?: L,
): CounterSpec<NoInfer<L>> {
  return { kind: 'counter', name, help, labels };
}

/**
 * A gauge spec; `collect` reads it on each scrape.
 *
 * @example
 * gauge('orders_pending', 'Orders waiting for payment.', undefined, async (g) => g.set({}, await countPending()))
 */
export function gauge<const L extends LabelSpec = NoLabels>(
  name: string,
  help: string,
  labels?: L,
  collect?: GaugeDeclaration<L>['collect'],
): GaugeSpec<NoInfer<L>> {
  return { kind: 'gauge', name, help, labels, collect };
}

/**
 * A histogram spec.
 *
 * @example
 * histogram('payment_amount_euros', 'Amounts charged.', [1, 10, 100, 1000], { provider: ['a', 'b'] })
 */
export function histogram<const L extends LabelSpec = NoLabels>(
  name: string,
  help: string,
  buckets: readonly number[],
  labels?: L,
): HistogramSpec<NoInfer<L>> {
  return { kind: 'histogram', name, help, labels, buckets };
}

/**
 * Declares the application's metrics on `facade`; each is zero-initialised for every declared
 * label combination.
 *
 * @example
 * const metrics = defineDomainMetrics(facade, {
 *   ordersCreated: counter('orders_created_total', 'Orders accepted.', { channel: ['web', 'api'] }),
 *   paymentsCompleted: counter('payments_completed_total', 'Payments settled.', { provider: ['a', 'b'], status: ['ok', 'failed'] }),
 * });
 * metrics.ordersCreated.inc({ channel: 'web' });
 */
export function defineDomainMetrics<const S extends Readonly<Record<string, DomainMetricSpec>>>(
  facade: MetricsFacade,
  specs: S,
): DomainMetrics<S> {
  const metrics: Record<string, unknown> = {};
  for (const key of Object.keys(specs)) {
    const spec = specs[key] as DomainMetricSpec;
    const base = {
      name: spec.name,
      help: spec.help,
      ...(spec.labels !== undefined && { labels: spec.labels }),
    };
    if (spec.kind === 'counter') metrics[key] = facade.counter(base);
    else if (spec.kind === 'gauge') {
      metrics[key] = facade.gauge({ ...base, ...(spec.collect !== undefined && { collect: spec.collect }) });
    } else metrics[key] = facade.histogram({ ...base, buckets: spec.buckets });
  }
  return metrics as DomainMetrics<S>;
}
