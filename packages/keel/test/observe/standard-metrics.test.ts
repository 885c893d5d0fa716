import * as promClient from 'prom-client';
import { describe, expect, it } from 'vitest';
import {
  BrokenCircuitError,
  circuitBreaker,
  FakeClock,
  HttpStatusError,
  InvalidOptionError,
  retry,
  retryBudget,
} from '../../src/index.ts';
import { keelMetrics, observeOutbox, prometheusMetrics } from '../../src/observe/index.ts';
import type { OutboxTelemetryEvent } from '../../src/outbox/index.ts';

function setup() {
  const registry = new promClient.Registry();
  const metrics = prometheusMetrics(registry, promClient, { onRefused: 'throw' });
  return { registry, metrics, keel: keelMetrics(metrics) };
}

const unavailable = () => Promise.reject(new HttpStatusError(503));

describe('keelMetrics', () => {
  it('turns a real circuit breaker’s events into calls, state, transitions and rejections', async () => {
    const { registry, keel } = setup();
    const clock = new FakeClock();
    const breaker = circuitBreaker({
      name: 'provider-a',
      telemetry: keel.policy,
      clock,
      window: { kind: 'consecutive', size: 2 },
      openMs: 1_000,
    });
    await breaker.execute(() => Promise.resolve('ok'));
    await expect(breaker.execute(unavailable)).rejects.toThrow(HttpStatusError);
    await expect(breaker.execute(unavailable)).rejects.toThrow(HttpStatusError);
    await expect(breaker.execute(unavailable)).rejects.toThrow(BrokenCircuitError);

    const open = await registry.metrics();
    expect(open).toContain('keel_policy_calls_total{policy="breaker",name="provider-a",outcome="success"} 1');
    expect(open).toContain('keel_policy_calls_total{policy="breaker",name="provider-a",outcome="failure"} 2');
    expect(open).toContain('keel_breaker_state{name="provider-a"} 2');
    expect(open).toContain('keel_breaker_transitions_total{name="provider-a",to="open"} 1');
    expect(open).toContain('keel_breaker_transitions_total{name="provider-a",to="closed"} 0');
    expect(open).toContain(
      'keel_rejections_total{policy="breaker",name="provider-a",reason="breaker-open"} 1',
    );
    expect(open).toContain(
      'keel_rejections_total{policy="breaker",name="provider-a",reason="bulkhead-full"} 0',
    );
    expect(open).toContain(
      'keel_policy_call_duration_seconds_count{policy="breaker",name="provider-a",outcome="failure"} 2',
    );

    await clock.advanceAsync(1_000);
    await breaker.execute(() => Promise.resolve('ok'));
    const closed = await registry.metrics();
    expect(closed).toContain('keel_breaker_state{name="provider-a"} 0');
    expect(closed).toContain('keel_breaker_transitions_total{name="provider-a",to="half-open"} 1');
    expect(closed).toContain('keel_breaker_transitions_total{name="provider-a",to="closed"} 1');
  });

  it('counts a real retry’s retries and the exhaustion of its budget', async () => {
    const { registry, keel } = setup();
    const clock = new FakeClock();
    const budget = retryBudget({ ratio: 0, minPerSecond: 0.1, windowMs: 10_000, clock }); // one retry in reserve;
    const policy = retry({
      name: 'provider-b',
      idempotent: true,
      maxAttempts: 3,
      backoff: () => 0,
      budget,
      clock,
      telemetry: keel.policy,
    });
    await expect(policy.execute(unavailable)).rejects.toThrow(HttpStatusError);
    const text = await registry.metrics();
    expect(text).toContain('keel_retries_total{name="provider-b"} 1');
    expect(text).toContain('keel_retry_budget_exhausted_total{name="provider-b"} 1');
    expect(text).toContain('keel_policy_calls_total{policy="retry",name="provider-b",outcome="failure"} 1');
    expect(text).toContain('keel_policy_calls_total{policy="retry",name="provider-b",outcome="success"} 0');
  });

  it('counts idempotency outcomes by engine name, never by key', async () => {
    const { registry, keel } = setup();
    const emit = keel.idempotency.emit.bind(keel.idempotency);
    emit({ type: 'executed', name: 'charges', key: 'k-1', resumed: false });
    emit({ type: 'completed', name: 'charges', key: 'k-1', status: 201 });
    emit({ type: 'replayed', name: 'charges', key: 'k-1', status: 201 });
    emit({ type: 'in-flight-conflict', name: 'charges', key: 'k-2' });
    emit({ type: 'mismatch', name: 'charges', key: 'k-3' });
    emit({ type: 'executed', name: 'charges', key: 'k-4', resumed: true });
    emit({ type: 'lease-lost', name: 'charges', key: 'k-4' });
    const text = await registry.metrics();
    for (const [outcome, n] of [
      ['executed', 1],
      ['resumed', 1],
      ['replayed', 1],
      ['conflict', 1],
      ['mismatch', 1],
      ['superseded', 0],
    ] as const) {
      expect(text).toContain(`keel_idempotency_requests_total{name="charges",outcome="${outcome}"} ${n}`);
    }
    expect(text).toContain('keel_idempotency_completions_total{name="charges",outcome="lease-lost"} 1');
    expect(text).toContain('keel_idempotency_completions_total{name="charges",outcome="released"} 0');
    expect(text).not.toContain('k-1');
  });

  it('counts outbox and consumer events, with lag in seconds and dead letters from zero', async () => {
    const { registry, keel } = setup();
    const base = {
      eventId: 'e-1',
      eventType: 'payment.completed',
      aggregateType: 'payment',
      aggregateId: 'p-1',
    };
    const events: OutboxTelemetryEvent[] = [
      { ...base, type: 'appended' },
      { ...base, type: 'publish-failed', transport: 'nats', attempt: 1, error: new Error('x') },
      { ...base, type: 'published', transport: 'nats', lagMs: 40 },
      { ...base, type: 'consumed', consumer: 'invoices', lagMs: 120 },
      { ...base, type: 'duplicate-skipped', consumer: 'invoices' },
      { ...base, type: 'consume-failed', consumer: 'ledger', attempt: 1, error: new Error('y') },
    ];
    for (const event of events) keel.outbox.emit(event);
    let text = await registry.metrics();
    expect(text).toContain('keel_outbox_appended_total{type="payment.completed"} 1');
    expect(text).toContain('keel_outbox_published_total{type="payment.completed"} 1');
    expect(text).toContain('keel_outbox_publish_failures_total{type="payment.completed"} 1');
    expect(text).toContain('keel_outbox_lag_seconds_bucket{le="0.05",stage="published"} 1');
    expect(text).toContain('keel_outbox_lag_seconds_bucket{le="0.1",stage="consumed"} 0');
    expect(text).toContain('keel_outbox_lag_seconds_bucket{le="0.25",stage="consumed"} 1');
    expect(text).toContain('keel_consumer_consumed_total{consumer="invoices",type="payment.completed"} 1');
    expect(text).toContain('keel_consumer_duplicates_total{consumer="invoices",type="payment.completed"} 1');
    expect(text).toContain('keel_consumer_failures_total{consumer="ledger",type="payment.completed"} 1');
    expect(text).toContain('keel_outbox_dead_letters_total{consumer="ledger",type="payment.completed"} 0');
    keel.outbox.emit({
      ...base,
      type: 'dead-lettered',
      consumer: 'ledger',
      attempts: 5,
      error: new Error('y'),
    });
    text = await registry.metrics();
    expect(text).toContain('keel_outbox_dead_letters_total{consumer="ledger",type="payment.completed"} 1');
    expect(text).not.toContain('p-1');
  });

  it('refuses new policy names beyond its bound instead of growing without limit', () => {
    const registry = new promClient.Registry();
    const keel = keelMetrics(prometheusMetrics(registry, promClient, { onRefused: 'throw' }), {
      maxNames: 2,
    });
    keel.policy.emit({ policy: 'retry', name: 'a', type: 'retry', attempt: 2, delayMs: 0, error: null });
    keel.policy.emit({ policy: 'retry', name: 'b', type: 'retry', attempt: 2, delayMs: 0, error: null });
    expect(() =>
      keel.policy.emit({ policy: 'retry', name: 'c', type: 'retry', attempt: 2, delayMs: 0, error: null }),
    ).toThrow(/maximum of 2 distinct values/);
  });

  it('validates its options and can be declared twice on one facade', () => {
    const { metrics } = setup();
    expect(() => keelMetrics(metrics)).not.toThrow();
    expect(() => keelMetrics(metrics, { maxNames: 0 })).toThrow(InvalidOptionError);
    expect(() =>
      keelMetrics(prometheusMetrics(new promClient.Registry(), promClient), { maxNames: 10_000 }),
    ).toThrow(/maxSeriesPerMetric/);
  });

  it('reads the outbox gauges on scrape', async () => {
    const { registry, metrics } = setup();
    let unpublished = 7;
    observeOutbox(metrics, {
      gauges: async () => ({ unpublished, oldestUnpublishedAgeMs: 2_500 }),
      deadLetters: () => 1,
    });
    expect(await registry.metrics()).toContain('keel_outbox_unpublished 7');
    unpublished = 0;
    const text = await registry.metrics();
    expect(text).toContain('keel_outbox_unpublished 0');
    expect(text).toContain('keel_outbox_oldest_unpublished_age_seconds 2.5');
    expect(text).toContain('keel_outbox_dead_letters 1');
    expect(() => observeOutbox(metrics, { deadLetters: 3 as unknown as () => number })).toThrow(
      InvalidOptionError,
    );
  });
});
