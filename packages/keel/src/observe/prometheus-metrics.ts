/**
 * The Prometheus adapter of the metrics facade, on the user's own `prom-client`. Keel never imports
 * prom-client: the caller passes its registry and the module's `Counter`, `Gauge` and `Histogram`
 * classes, and Keel declares the few members it calls. With an OpenMetrics registry, counters and
 * histograms carry the current context's entity ids as exemplars.
 *
 * @module
 */
import {
  type BackendCounter,
  type BackendGauge,
  type BackendHistogram,
  createMetrics,
  type GaugeCollector,
  type Labels,
  type MetricDefinition,
  type MetricsBackend,
  type MetricsFacade,
  type MetricsOptions,
} from './metrics.ts';

/** The part of a prom-client `Registry` Keel reads. */
export interface PromRegistry {
  readonly contentType: string;
}

/** The configuration Keel gives prom-client's metric constructors. */
export interface PromMetricConfig<R extends PromRegistry = PromRegistry> {
  name: string;
  help: string;
  labelNames: readonly string[];
  registers: R[];
  enableExemplars?: boolean;
  buckets?: number[];
  collect?: () => void | Promise<void>;
}

/** The exemplar form of prom-client's `inc()` / `observe()`, the only form once exemplars are on. */
export interface PromExemplarData {
  value: number;
  labels: Labels;
  exemplarLabels?: Labels;
}

/** The members of prom-client's `Counter` Keel calls. */
export interface PromCounter {
  inc(labels: Labels, value?: number): void;
  inc(data: PromExemplarData): void;
}

/** The members of prom-client's `Gauge` Keel calls. */
export interface PromGauge {
  set(labels: Labels, value: number): void;
  reset(): void;
}

/** The members of prom-client's `Histogram` Keel calls. */
export interface PromHistogram {
  observe(labels: Labels, value: number): void;
  observe(data: PromExemplarData): void;
  zero(labels: Labels): void;
}

/** The prom-client classes Keel constructs: pass `import * as promClient from 'prom-client'`. */
export interface PromClient<R extends PromRegistry = PromRegistry> {
  Counter: new (config: PromMetricConfig<R>) => PromCounter;
  Gauge: new (config: PromMetricConfig<R>) => PromGauge;
  Histogram: new (config: PromMetricConfig<R>) => PromHistogram;
}

const OPENMETRICS = 'application/openmetrics-text';

/**
 * A metrics facade that registers its metrics in `registry`.
 *
 * @example
 * import * as promClient from 'prom-client';
 * const registry = new promClient.Registry();
 * const metrics = prometheusMetrics(registry, promClient);
 * app.get('/metrics', async () => registry.metrics());
 */
export function prometheusMetrics<R extends PromRegistry>(
  registry: R,
  client: PromClient<R>,
  options: MetricsOptions = {},
): MetricsFacade {
  return createMetrics(prometheusBackend(registry, client), options);
}

/** The {@link MetricsBackend} behind {@link prometheusMetrics}. */
export function prometheusBackend<R extends PromRegistry>(
  registry: R,
  client: PromClient<R>,
): MetricsBackend {
  const exemplars = String(registry.contentType).startsWith(OPENMETRICS);
  const config = (definition: MetricDefinition): PromMetricConfig<R> => ({
    name: definition.name,
    help: definition.help,
    labelNames: definition.labelNames,
    registers: [registry],
  });
  return {
    exemplars,
    counter(definition): BackendCounter {
      const counter = new client.Counter({ ...config(definition), enableExemplars: exemplars });
      return {
        add(labels, value, exemplar) {
          // With exemplars on, prom-client reads its first argument as `{ labels, value }`.
          if (!exemplars) counter.inc(labels, value);
          else if (exemplar === undefined || value === 0) counter.inc({ labels, value });
          else counter.inc({ labels, value, exemplarLabels: exemplar });
        },
      };
    },
    gauge(definition, collect: GaugeCollector | undefined): BackendGauge {
      const gaugeConfig = config(definition);
      if (collect !== undefined) {
        gaugeConfig.collect = async function (this: PromGauge) {
          // Only the series the reader sets this time are exported: a drained queue disappears.
          this.reset();
          await collect((labels, value) => this.set(labels, value));
        };
      }
      const gauge = new client.Gauge(gaugeConfig);
      return { set: (labels, value) => gauge.set(labels, value) };
    },
    histogram(definition): BackendHistogram {
      const histogram = new client.Histogram({
        ...config(definition),
        buckets: [...definition.buckets],
        enableExemplars: exemplars,
      });
      return {
        record(labels, value, exemplar) {
          if (!exemplars) histogram.observe(labels, value);
          else if (exemplar === undefined) histogram.observe({ labels, value });
          else histogram.observe({ labels, value, exemplarLabels: exemplar });
        },
        zero: (labels) => histogram.zero(labels),
      };
    },
  };
}
