import * as promClient from 'prom-client';
import { describe, expect, it, vi } from 'vitest';
import { InvalidOptionError } from '../../src/index.ts';
import {
  CardinalityError,
  counter,
  defineDomainMetrics,
  gauge,
  histogram,
  isCardinalityError,
  prometheusMetrics,
  runInContext,
} from '../../src/observe/index.ts';

function setup(onRefused: 'throw' | 'count' = 'throw') {
  const registry = new promClient.Registry();
  return { registry, metrics: prometheusMetrics(registry, promClient, { onRefused }) };
}

describe('prometheusMetrics', () => {
  it('zero-initialises every declared label combination', async () => {
    const { registry, metrics } = setup();
    metrics.counter({
      name: 'orders_created_total',
      help: 'Orders accepted.',
      labels: { status: ['ok', 'failed'], channel: ['web', 'api'] },
    });
    const text = await registry.metrics();
    for (const status of ['ok', 'failed'])
      for (const channel of ['web', 'api'])
        expect(text).toContain(`orders_created_total{status="${status}",channel="${channel}"} 0`);
  });

  it('counts, sets and observes with the declared labels', async () => {
    const { registry, metrics } = setup();
    const created = metrics.counter({
      name: 'created_total',
      help: 'h',
      labels: { status: ['ok', 'failed'] },
    });
    const queued = metrics.gauge({ name: 'queued', help: 'h', labels: { queue: ['a', 'b'] } });
    const latency = metrics.histogram({ name: 'latency_seconds', help: 'h', buckets: [0.1, 1] });
    const total = metrics.counter({ name: 'plain_total', help: 'h' });
    created.inc({ status: 'ok' });
    created.inc({ status: 'ok' }, 2);
    queued.set({ queue: 'b' }, 7);
    latency.observe({}, 0.5);
    total.inc();
    const text = await registry.metrics();
    expect(text).toContain('created_total{status="ok"} 3');
    expect(text).toContain('created_total{status="failed"} 0');
    expect(text).toContain('queued{queue="b"} 7');
    expect(text).not.toContain('queued{queue="a"}');
    expect(text).toContain('latency_seconds_bucket{le="0.1"} 0');
    expect(text).toContain('latency_seconds_bucket{le="1"} 1');
    expect(text).toContain('plain_total 1');
  });

  it('refuses an undeclared value with a typed error in throw mode', () => {
    const { metrics } = setup('throw');
    const created = metrics.counter({
      name: 'created_total',
      help: 'h',
      labels: { status: ['ok', 'failed'] },
    });
    // @ts-expect-error 'o-42' is not a declared status
    const undeclared = () => created.inc({ status: 'o-42' });
    expect(undeclared).toThrow(CardinalityError);
    try {
      undeclared();
    } catch (err) {
      expect(isCardinalityError(err)).toBe(true);
      expect(err).toMatchObject({
        code: 'KEEL_METRIC_CARDINALITY',
        metric: 'created_total',
        label: 'status',
        value: 'o-42',
      });
    }
    // @ts-expect-error a label that was not declared
    expect(() => created.inc({ status: 'ok', orderId: 'o-1' })).toThrow(/'orderId' was not declared/);
    // @ts-expect-error a missing label
    expect(() => created.inc({})).toThrow(/'status' is missing/);
    expect(() => created.inc({ status: 'ok' }, -1)).toThrow(InvalidOptionError);
  });

  it('accepts a bounded label up to its maximum of distinct values, then refuses new ones', async () => {
    const { registry, metrics } = setup('throw');
    const calls = metrics.counter({
      name: 'calls_total',
      help: 'h',
      labels: { route: { maxValues: 2 }, outcome: ['ok', 'error'] },
    });
    calls.inc({ route: '/a', outcome: 'ok' });
    calls.inc({ route: '/b', outcome: 'ok' });
    calls.inc({ route: '/a', outcome: 'error' });
    expect(() => calls.inc({ route: '/c', outcome: 'ok' })).toThrow(/maximum of 2 distinct values/);
    const text = await registry.metrics();
    // Each new bounded value zero-initialises its enumerated combinations.
    expect(text).toContain('calls_total{route="/b",outcome="error"} 0');
    expect(text).not.toContain('/c');
  });

  it('in production counts refused values instead of throwing, and warns once per metric', async () => {
    const { registry, metrics } = setup('count');
    const warnings = vi.spyOn(process, 'emitWarning').mockImplementation(() => {});
    try {
      const calls = metrics.counter({ name: 'calls_total', help: 'h', labels: { route: { maxValues: 3 } } });
      for (let i = 0; i < 10_000; i++) calls.inc({ route: `/orders/${i}` });
      expect(metrics.refused).toBe(9_997);
      expect(warnings).toHaveBeenCalledTimes(1);
      expect(String(warnings.mock.calls[0]?.[0])).toMatch(/calls_total/);
      const text = await registry.metrics();
      expect(text).toContain('keel_metrics_refused_total{metric="calls_total"} 9997');
      expect(text.match(/^calls_total\{/gm)).toHaveLength(3);
    } finally {
      warnings.mockRestore();
    }
  });

  it('rejects declarations that would put ids into labels or allow too many series', () => {
    const { metrics } = setup();
    for (const label of ['order_id', 'orderId', 'paymentID', 'id', 'idempotency_key', 'key']) {
      expect(() =>
        metrics.counter({ name: 'x_total', help: 'h', labels: { [label]: { maxValues: 5 } } }),
      ).toThrow(/ids go to logs and exemplars/);
    }
    expect(() =>
      metrics.counter({
        name: 'y_total',
        help: 'h',
        labels: { a: { maxValues: 1000 }, b: { maxValues: 1000 } },
      }),
    ).toThrow(/maxSeriesPerMetric/);
    expect(() => metrics.counter({ name: 'bad name', help: 'h' })).toThrow(InvalidOptionError);
    expect(() => metrics.counter({ name: 'z_total', help: ' ' })).toThrow(/help/);
    expect(() => metrics.counter({ name: 'z_total', help: 'h', labels: { s: [] } })).toThrow(/at least one/);
    expect(() => metrics.histogram({ name: 'h_seconds', help: 'h', buckets: [1, 1] })).toThrow(
      /strictly increasing/,
    );
    expect(() => prometheusMetrics(new promClient.Registry(), promClient, { maxSeriesPerMetric: 0 })).toThrow(
      InvalidOptionError,
    );
  });

  it('returns the same metric for a repeated identical declaration and refuses a conflicting one', () => {
    const { metrics } = setup();
    const first = metrics.counter({ name: 'a_total', help: 'h', labels: { s: ['x'] } });
    expect(metrics.counter({ name: 'a_total', help: 'h', labels: { s: ['x'] } })).toBe(first);
    expect(() => metrics.counter({ name: 'a_total', help: 'h', labels: { s: ['y'] } })).toThrow(
      /already declared/,
    );
    expect(() => metrics.gauge({ name: 'a_total', help: 'h', labels: { s: ['x'] } })).toThrow(
      /already declared/,
    );
  });

  it('reads a collected gauge on scrape, and a throwing reader skips only that gauge', async () => {
    const { registry, metrics } = setup();
    let depth = 3;
    metrics.gauge({ name: 'depth', help: 'h', collect: (g) => g.set({}, depth) });
    metrics.gauge({
      name: 'broken',
      help: 'h',
      collect: () => {
        throw new Error('store down');
      },
    });
    const warnings = vi.spyOn(process, 'emitWarning').mockImplementation(() => {});
    try {
      expect(await registry.metrics()).toContain('depth 3');
      depth = 5;
      expect(await registry.metrics()).toContain('depth 5');
      expect(warnings).toHaveBeenCalledWith(expect.stringMatching(/broken/), {
        code: 'KEEL_METRIC_COLLECT_FAILED',
      });
    } finally {
      warnings.mockRestore();
    }
  });

  it('puts the context entity ids into exemplars with an OpenMetrics registry, never into labels', async () => {
    const registry = new promClient.Registry<promClient.OpenMetricsContentType>();
    registry.setContentType(promClient.Registry.OPENMETRICS_CONTENT_TYPE);
    const metrics = prometheusMetrics(registry, promClient, { onRefused: 'throw' });
    const charged = metrics.counter({
      name: 'charges_total',
      help: 'h',
      labels: { status: ['ok', 'failed'] },
    });
    const latency = metrics.histogram({ name: 'charge_seconds', help: 'h', buckets: [1] });
    runInContext({ requestId: 'r-1', entities: { orderId: 'o-42' } }, () => {
      charged.inc({ status: 'ok' });
      latency.observe({}, 0.2);
    });
    const text = await registry.metrics();
    expect(text).toMatch(/charges_total\{status="ok"\} 1 # \{orderId="o-42",requestId="r-1"\} 1/);
    expect(text).toMatch(/charge_seconds_bucket\{le="1"\} 1 # \{orderId="o-42",requestId="r-1"\} 0.2/);
    expect(text).toContain('charges_total{status="failed"} 0');
    expect(text).toContain('keel_metrics_refused_total{metric="charges_total"} 0');
    expect(text).not.toMatch(/^\w+\{[^}]*orderId/m);
  });
});

describe('defineDomainMetrics', () => {
  it('declares typed, zero-initialised business metrics', async () => {
    const { registry, metrics: facade } = setup();
    let pending = 4;
    const metrics = defineDomainMetrics(facade, {
      ordersCreated: counter('orders_created_total', 'Orders accepted.', { channel: ['web', 'api'] }),
      paymentsCompleted: counter('payments_completed_total', 'Payments settled.', {
        provider: ['a', 'b'],
        status: ['ok', 'failed'],
      }),
      ordersPending: gauge('orders_pending', 'Orders waiting for payment.', undefined, (g) =>
        g.set({}, pending),
      ),
      chargeAmount: histogram('charge_amount_euros', 'Amounts charged.', [10, 100], { provider: ['a', 'b'] }),
    });
    metrics.ordersCreated.inc({ channel: 'web' });
    metrics.paymentsCompleted.inc({ provider: 'a', status: 'ok' });
    metrics.chargeAmount.observe({ provider: 'b' }, 42);
    // @ts-expect-error 'fax' is not a declared channel
    expect(() => metrics.ordersCreated.inc({ channel: 'fax' })).toThrow(CardinalityError);
    pending = 6;
    const text = await registry.metrics();
    expect(text).toContain('orders_created_total{channel="web"} 1');
    expect(text).toContain('orders_created_total{channel="api"} 0');
    expect(text).toContain('payments_completed_total{provider="b",status="failed"} 0');
    expect(text).toContain('orders_pending 6');
    expect(text).toContain('charge_amount_euros_count{provider="a"} 0');
    expect(text).toContain('charge_amount_euros_bucket{le="100",provider="b"} 1');
  });
});
