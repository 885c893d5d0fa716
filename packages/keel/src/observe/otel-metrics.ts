/**
 * The OpenTelemetry adapter of the metrics facade, on the user's own `Meter` (from
 * `@opentelemetry/api`'s `metrics.getMeter()` or an SDK `MeterProvider`). Keel never imports the
 * API: it declares the few instrument factories it calls. Counters are zero-initialised with
 * `add(0)`; histograms cannot be without recording a false observation, so they are not. Exemplars
 * are the SDK's business (it samples them from the active span), so none are passed.
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
  type MetricsBackend,
  type MetricsFacade,
  type MetricsOptions,
} from './metrics.ts';

/** Instrument options Keel passes. */
export interface OtelInstrumentOptions {
  description?: string;
  advice?: { explicitBucketBoundaries?: number[] };
}

/** What an observable callback receives. */
export interface OtelObservableResult {
  observe(value: number, attributes?: Labels): void;
}

/** The members of an OpenTelemetry `Meter` Keel calls. */
export interface OtelMeter {
  createCounter(
    name: string,
    options?: OtelInstrumentOptions,
  ): { add(value: number, attributes?: Labels): void };
  createGauge(
    name: string,
    options?: OtelInstrumentOptions,
  ): { record(value: number, attributes?: Labels): void };
  createHistogram(
    name: string,
    options?: OtelInstrumentOptions,
  ): { record(value: number, attributes?: Labels): void };
  createObservableGauge(
    name: string,
    options?: OtelInstrumentOptions,
  ): { addCallback(callback: (result: OtelObservableResult) => void | Promise<void>): void };
}

/**
 * A metrics facade that creates its instruments on `meter`.
 *
 * @example
 * const metrics = otelMetrics(otel.metrics.getMeter('payments'));
 * const orders = metrics.counter({ name: 'orders_created_total', help: 'Orders created.', labels: { channel: ['web', 'api'] } });
 */
export function otelMetrics(meter: OtelMeter, options: MetricsOptions = {}): MetricsFacade {
  return createMetrics(otelBackend(meter), options);
}

/** The {@link MetricsBackend} behind {@link otelMetrics}. */
export function otelBackend(meter: OtelMeter): MetricsBackend {
  return {
    exemplars: false,
    counter(definition): BackendCounter {
      const counter = meter.createCounter(definition.name, { description: definition.help });
      return { add: (labels, value) => counter.add(value, labels) };
    },
    gauge(definition, collect: GaugeCollector | undefined): BackendGauge {
      if (collect === undefined) {
        const gauge = meter.createGauge(definition.name, { description: definition.help });
        return { set: (labels, value) => gauge.record(value, labels) };
      }
      const observable = meter.createObservableGauge(definition.name, { description: definition.help });
      observable.addCallback((result) => collect((labels, value) => result.observe(value, labels)));
      return {
        set() {
          // An observable gauge is only ever set by its reader, during collection.
        },
      };
    },
    histogram(definition): BackendHistogram {
      const histogram = meter.createHistogram(definition.name, {
        description: definition.help,
        advice: { explicitBucketBoundaries: [...definition.buckets] },
      });
      return {
        record: (labels, value) => histogram.record(value, labels),
        zero() {
          // A histogram series cannot exist in OpenTelemetry without an observation.
        },
      };
    },
  };
}
