import {
  type DataPoint,
  type Histogram,
  MeterProvider,
  type MetricData,
  MetricReader,
} from '@opentelemetry/sdk-metrics';
import { afterEach, describe, expect, it } from 'vitest';
import { CardinalityError, keelMetrics, observeOutbox, otelMetrics } from '../../src/observe/index.ts';

/** A pull reader: metrics are read only when the test calls `collect()`. */
class InMemoryReader extends MetricReader {
  protected async onForceFlush(): Promise<void> {}
  protected async onShutdown(): Promise<void> {}
}

const providers: MeterProvider[] = [];
afterEach(async () => {
  for (const provider of providers.splice(0)) await provider.shutdown();
});

function setup() {
  const reader = new InMemoryReader();
  const provider = new MeterProvider({ readers: [reader] });
  providers.push(provider);
  const metrics = otelMetrics(provider.getMeter('keel-test'), { onRefused: 'throw' });
  const read = async (): Promise<Map<string, MetricData>> => {
    const { resourceMetrics, errors } = await reader.collect();
    expect(errors).toEqual([]);
    const byName = new Map<string, MetricData>();
    for (const scope of resourceMetrics.scopeMetrics)
      for (const metric of scope.metrics) byName.set(metric.descriptor.name, metric);
    return byName;
  };
  return { metrics, read };
}

function points(metric: MetricData | undefined): { attributes: Record<string, unknown>; value: unknown }[] {
  return ((metric?.dataPoints ?? []) as DataPoint<unknown>[]).map((p) => ({
    attributes: { ...p.attributes },
    value: p.value,
  }));
}

describe('otelMetrics', () => {
  it('zero-initialises counters and records counters, gauges and histograms', async () => {
    const { metrics, read } = setup();
    const orders = metrics.counter({
      name: 'orders_created_total',
      help: 'Orders accepted.',
      labels: { status: ['ok', 'failed'] },
    });
    const limit = metrics.gauge({ name: 'limit', help: 'h', labels: { pool: ['db'] } });
    const latency = metrics.histogram({ name: 'latency_seconds', help: 'h', buckets: [0.1, 1] });
    orders.inc({ status: 'ok' }, 2);
    limit.set({ pool: 'db' }, 12);
    latency.observe({}, 0.5);
    const data = await read();
    expect(data.get('orders_created_total')?.descriptor.description).toBe('Orders accepted.');
    expect(points(data.get('orders_created_total'))).toEqual(
      expect.arrayContaining([
        { attributes: { status: 'ok' }, value: 2 },
        { attributes: { status: 'failed' }, value: 0 },
      ]),
    );
    expect(points(data.get('limit'))).toEqual([{ attributes: { pool: 'db' }, value: 12 }]);
    const histogram = data.get('latency_seconds')?.dataPoints[0]?.value as Histogram;
    expect(histogram.buckets.boundaries).toEqual([0.1, 1]);
    expect(histogram.buckets.counts).toEqual([0, 1, 0]);
  });

  it('guards cardinality the same way as the Prometheus adapter', () => {
    const { metrics } = setup();
    const calls = metrics.counter({ name: 'calls_total', help: 'h', labels: { route: { maxValues: 1 } } });
    calls.inc({ route: '/a' });
    expect(() => calls.inc({ route: '/b' })).toThrow(CardinalityError);
  });

  it('reads observable gauges at collection time', async () => {
    const { metrics, read } = setup();
    let unpublished = 3;
    observeOutbox(metrics, {
      gauges: () => ({ unpublished, oldestUnpublishedAgeMs: 1_500 }),
      deadLetters: async () => 2,
    });
    expect(points((await read()).get('keel_outbox_unpublished'))).toEqual([{ attributes: {}, value: 3 }]);
    unpublished = 0;
    const data = await read();
    expect(points(data.get('keel_outbox_unpublished'))).toEqual([{ attributes: {}, value: 0 }]);
    expect(points(data.get('keel_outbox_oldest_unpublished_age_seconds'))).toEqual([
      { attributes: {}, value: 1.5 },
    ]);
    expect(points(data.get('keel_outbox_dead_letters'))).toEqual([{ attributes: {}, value: 2 }]);
  });

  it('turns policy events into standard metrics through the OpenTelemetry meter', async () => {
    const { metrics, read } = setup();
    const keel = keelMetrics(metrics);
    keel.policy.emit({
      policy: 'breaker',
      name: 'provider-a',
      type: 'state-change',
      from: 'closed',
      to: 'open',
    });
    keel.policy.emit({ policy: 'limiter', name: 'db', type: 'limit-change', limit: 20, inflight: 4 });
    const data = await read();
    expect(points(data.get('keel_breaker_state'))).toEqual([
      { attributes: { name: 'provider-a' }, value: 2 },
    ]);
    expect(points(data.get('keel_limiter_limit'))).toEqual([{ attributes: { name: 'db' }, value: 20 }]);
    expect(points(data.get('keel_rejections_total'))).toContainEqual({
      attributes: { policy: 'breaker', name: 'provider-a', reason: 'breaker-open' },
      value: 0,
    });
  });
});
