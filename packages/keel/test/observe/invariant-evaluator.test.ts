import { FakeClock } from 'keel';
import {
  type AlertNotification,
  type AlertSink,
  absence,
  dataCheck,
  defineAlert,
  type InvariantResult,
  invariants,
  relationship,
  threshold,
} from 'keel/observe';
import { describe, expect, it } from 'vitest';

const alert = defineAlert({
  what: 'Orders are not being paid',
  where: 'logs: event="payment.failed"; dashboard Payments',
  impact: 'Revenue stops while orders pile up',
  next: 'keel replay --type payment.completed --since 1h',
  severity: 'critical',
  group: 'payments',
});

function collector(): AlertSink & { sent: AlertNotification[] } {
  const sent: AlertNotification[] = [];
  return { name: 'memory', sent, send: async (n) => void sent.push(n) };
}

function setup() {
  const clock = new FakeClock(1_000_000);
  const wall = { now: () => 1_700_000_000_000 + clock.now() };
  const sink = collector();
  return { clock, wall, sink };
}

describe('invariants()', () => {
  it('fires a threshold breach only after it has lasted for:, re-notifies, then resolves once', async () => {
    const { clock, wall, sink } = setup();
    let abandoned = 0;
    const check = threshold({
      name: 'abandoned_payments',
      read: () => abandoned,
      above: 5,
      forMs: 60_000,
      alert,
    });
    const evaluator = invariants({
      checks: [check],
      intervalMs: 15_000,
      renotifyMs: 120_000,
      clock,
      wallClock: wall,
      sinks: [sink],
    });
    evaluator.start();
    await clock.advanceAsync(30_000);
    expect(sink.sent).toEqual([]);
    abandoned = 9;
    await clock.advanceAsync(45_000); // breached at 45 s, for: not yet over
    expect(sink.sent).toEqual([]);
    await clock.advanceAsync(60_000); // breached for 60 s now
    expect(sink.sent).toHaveLength(1);
    expect(sink.sent[0]).toMatchObject({ status: 'firing', name: 'abandoned_payments', sequence: 1 });
    expect(sink.sent[0]?.evidence.detail).toContain('is 9 (limit 5)');
    expect(evaluator.firing()).toEqual([{ name: 'abandoned_payments', severity: 'critical' }]);
    await clock.advanceAsync(120_000);
    expect(sink.sent.map((n) => n.status)).toEqual(['firing', 'firing']);
    expect(sink.sent[1]?.sequence).toBe(2);
    expect(sink.sent[1]?.startsAt).toBe(sink.sent[0]?.startsAt);
    abandoned = 2;
    await clock.advanceAsync(15_000);
    await clock.advanceAsync(60_000);
    expect(sink.sent.map((n) => n.status)).toEqual(['firing', 'firing', 'resolved']);
    expect(sink.sent[2]?.endsAt).toBeGreaterThan(sink.sent[2]?.startsAt ?? Infinity);
    expect(evaluator.firing()).toEqual([]);
    await evaluator.stop();
    expect(clock.pendingTimers).toBe(0);
  });

  it('lets a blip shorter than for: pass without an alert', async () => {
    const { clock, wall, sink } = setup();
    let value = 0;
    const check = threshold({ name: 'blip', read: () => value, above: 0, forMs: 60_000, alert });
    const evaluator = invariants({
      checks: [check],
      intervalMs: 10_000,
      clock,
      wallClock: wall,
      sinks: [sink],
    });
    value = 1;
    await evaluator.evaluateOnce();
    await clock.advanceAsync(50_000);
    await evaluator.evaluateOnce();
    value = 0;
    await clock.advanceAsync(10_000);
    await evaluator.evaluateOnce();
    value = 1;
    await clock.advanceAsync(10_000);
    const [result] = await evaluator.evaluateOnce();
    expect(result).toMatchObject({ status: 'breached', breachedForMs: 0, firing: false });
    expect(sink.sent).toEqual([]);
  });

  it('fires a ratio relationship within its window and resolves when payments catch up', async () => {
    const { clock, wall, sink } = setup();
    const counts = { orders: 0, payments: 0 };
    const check = relationship({
      name: 'payments_follow_orders',
      expected: { metric: 'shop_orders_created_total', read: () => counts.orders },
      actual: { metric: 'shop_payments_completed_total', read: () => counts.payments },
      windowMs: 60_000,
      minRatio: 0.9,
      minEvents: 10,
      forMs: 30_000,
      alert,
    });
    const evaluator = invariants({
      checks: [check],
      intervalMs: 10_000,
      clock,
      wallClock: wall,
      sinks: [sink],
    });
    evaluator.start();
    for (let i = 0; i < 6; i++) {
      counts.orders += 10;
      counts.payments += 10;
      await clock.advanceAsync(10_000);
    }
    expect(sink.sent).toEqual([]);
    for (let i = 0; i < 5; i++) {
      counts.orders += 10;
      counts.payments += 5;
      await clock.advanceAsync(10_000);
    }
    expect(sink.sent.map((n) => n.status)).toEqual(['firing']);
    expect(sink.sent[0]?.evidence.detail).toMatch(/ratio 0\.\d+, min 0\.9/);
    expect(sink.sent[0]?.evidence.query).toContain('increase(shop_payments_completed_total[1m])');
    for (let i = 0; i < 7; i++) {
      counts.orders += 10;
      counts.payments += 10;
      await clock.advanceAsync(10_000);
    }
    expect(sink.sent.map((n) => n.status)).toEqual(['firing', 'resolved']);
    await evaluator.stop();
  });

  it('treats a quiet period below minEvents as healthy and a counter reset as a reset', async () => {
    const { clock } = setup();
    const counts = { orders: 100, payments: 100 };
    const check = relationship({
      name: 'quiet',
      expected: { metric: 'a_total', read: () => counts.orders },
      actual: { metric: 'b_total', read: () => counts.payments },
      windowMs: 60_000,
      minRatio: 0.9,
      minEvents: 10,
      alert,
    });
    const evaluator = invariants({ checks: [check], clock });
    await evaluator.evaluateOnce();
    counts.orders += 3;
    await clock.advanceAsync(10_000);
    expect((await evaluator.evaluateOnce())[0]?.status).toBe('ok');
    counts.orders = 20; // restart: the counter starts again from zero
    counts.payments = 21;
    await clock.advanceAsync(10_000);
    const [result] = await evaluator.evaluateOnce();
    expect(result?.status).toBe('ok');
    expect(result?.evidence?.detail).toContain('grew 21 vs a_total 23');
  });

  it('fires a shortfall relationship when the gap exceeds maxShortfall', async () => {
    const { clock, sink } = setup();
    const counts = { published: 0, consumed: 0 };
    const check = relationship({
      name: 'consumed_follow_published',
      expected: { metric: 'p_total', read: () => counts.published },
      actual: { metric: 'c_total', read: () => counts.consumed },
      windowMs: 60_000,
      maxShortfall: 5,
      alert,
    });
    const evaluator = invariants({ checks: [check], clock, sinks: [sink] });
    await evaluator.evaluateOnce();
    counts.published = 20;
    counts.consumed = 16;
    await clock.advanceAsync(10_000);
    expect((await evaluator.evaluateOnce())[0]?.status).toBe('ok');
    counts.published = 40;
    counts.consumed = 20;
    await clock.advanceAsync(10_000);
    await evaluator.evaluateOnce();
    expect(sink.sent).toHaveLength(1);
    expect(sink.sent[0]?.evidence).toMatchObject({ total: 20, value: 20 });
  });

  it('fires an absence check when a stream stops arriving and resolves when it resumes', async () => {
    const { clock, sink } = setup();
    let invoices: number | undefined;
    const check = absence({
      name: 'invoices_flowing',
      metric: 'shop_invoices_sent_total',
      read: () => invoices,
      withinMs: 60_000,
      alert,
    });
    const evaluator = invariants({ checks: [check], intervalMs: 10_000, clock, sinks: [sink] });
    evaluator.start();
    await clock.advanceAsync(50_000);
    expect(sink.sent).toEqual([]);
    await clock.advanceAsync(10_000);
    expect(sink.sent.map((n) => n.status)).toEqual(['firing']);
    expect(sink.sent[0]?.evidence.detail).toContain('has not appeared for 1m');
    invoices = 1;
    await clock.advanceAsync(10_000);
    expect(sink.sent.map((n) => n.status)).toEqual(['firing', 'resolved']);
    for (let i = 0; i < 10; i++) {
      invoices++;
      await clock.advanceAsync(10_000);
    }
    expect(sink.sent).toHaveLength(2);
    await clock.advanceAsync(60_000);
    expect(sink.sent.map((n) => n.status)).toEqual(['firing', 'resolved', 'firing']);
    expect(sink.sent[2]?.evidence.detail).toContain('stays at 11');
    await evaluator.stop();
  });

  it('raises no alert in a clean run of every kind and reports each result', async () => {
    const { clock, sink } = setup();
    const results: InvariantResult[] = [];
    const gauge: Record<string, number> = {};
    let counter = 0;
    const evaluator = invariants({
      checks: [
        threshold({ name: 't', read: () => 0, above: 0, alert }),
        absence({ name: 'a', metric: 'x_total', read: () => counter, withinMs: 60_000, alert }),
        relationship({
          name: 'r',
          expected: { metric: 'x_total', read: () => counter },
          actual: { metric: 'y_total', read: () => counter },
          windowMs: 60_000,
          minRatio: 1,
          alert,
        }),
        dataCheck({ name: 'd', sql: 'SELECT 1 WHERE false', query: () => ({ ids: [], total: 0 }), alert }),
      ],
      intervalMs: 5_000,
      clock,
      sinks: [sink],
      onResult: (r) => results.push(r),
      breachedGauge: {
        set: (labels, value) => {
          gauge[labels.invariant] = value;
        },
      },
    });
    evaluator.start();
    for (let i = 0; i < 40; i++) {
      counter += 3;
      await clock.advanceAsync(5_000);
    }
    await evaluator.stop();
    expect(sink.sent).toEqual([]);
    expect(results.length).toBeGreaterThanOrEqual(4 * 40);
    expect(new Set(results.map((r) => r.status))).toEqual(new Set(['ok']));
    expect(gauge).toEqual({ t: 0, a: 0, r: 0, d: 0 });
  });

  it('keeps the alert state when a check throws, and reports the error', async () => {
    const { clock, sink } = setup();
    let mode: 'breach' | 'throw' | 'ok' = 'breach';
    const check = dataCheck({
      name: 'flaky',
      sql: 'SELECT id FROM orders',
      query: () => {
        if (mode === 'throw') throw new Error('connection refused');
        return mode === 'breach' ? { ids: ['o-1'], total: 1 } : { ids: [], total: 0 };
      },
      alert,
    });
    const evaluator = invariants({ checks: [check], clock, sinks: [sink] });
    await evaluator.evaluateOnce();
    mode = 'throw';
    const [failed] = await evaluator.evaluateOnce();
    expect(failed).toMatchObject({ status: 'error', firing: true });
    expect(String(failed?.error)).toContain('connection refused');
    expect(sink.sent.map((n) => n.status)).toEqual(['firing']);
    mode = 'ok';
    await evaluator.evaluateOnce();
    expect(sink.sent.map((n) => n.status)).toEqual(['firing', 'resolved']);
  });

  it('keeps delivering to the other sinks when one fails', async () => {
    const { clock } = setup();
    const good = collector();
    const errors: string[] = [];
    const broken: AlertSink = {
      name: 'broken',
      send: async () => Promise.reject(new Error('503 from hook')),
    };
    const evaluator = invariants({
      checks: [threshold({ name: 'x', read: () => 1, above: 0, alert })],
      clock,
      sinks: [broken, good],
      onSinkError: (err, sink) => errors.push(`${sink.name}: ${String(err)}`),
    });
    await evaluator.evaluateOnce();
    expect(good.sent).toHaveLength(1);
    expect(errors).toEqual(['broken: Error: 503 from hook']);
  });

  it('still alerts when the result observer throws', async () => {
    const { clock, sink } = setup();
    const warnings: string[] = [];
    const onWarning = (warning: Error & { code?: string }) => warnings.push(warning.code ?? '');
    process.on('warning', onWarning);
    try {
      const evaluator = invariants({
        checks: [threshold({ name: 'x', read: () => 1, above: 0, alert })],
        clock,
        sinks: [sink],
        onResult: () => {
          throw new Error('dashboard down');
        },
      });
      await evaluator.evaluateOnce();
      await new Promise((resolve) => setImmediate(resolve));
      expect(sink.sent).toHaveLength(1);
      expect(warnings).toContain('KEEL_INVARIANT_REPORT_FAILED');
    } finally {
      process.off('warning', onWarning);
    }
  });

  it('shares one round between concurrent evaluateOnce() calls', async () => {
    const { clock } = setup();
    let reads = 0;
    const evaluator = invariants({
      checks: [threshold({ name: 'x', read: async () => ++reads, above: 100, alert })],
      clock,
    });
    const [a, b] = await Promise.all([evaluator.evaluateOnce(), evaluator.evaluateOnce()]);
    expect(a).toBe(b);
    expect(reads).toBe(1);
  });

  it('refuses bad options', () => {
    const check = threshold({ name: 'x', read: () => 1, above: 0, alert });
    expect(() => invariants({ checks: [check, check] })).toThrow(/two invariants are named 'x'/);
    expect(() => invariants({ checks: [check], intervalMs: 0 })).toThrow(/intervalMs/);
    expect(() => threshold({ name: 'bad name', read: () => 1, above: 0, alert })).toThrow(/name/);
    expect(() => threshold({ name: 'x', read: () => 1, above: 0, alert, forMs: -1 })).toThrow(/forMs/);
    expect(() =>
      relationship({
        name: 'r',
        expected: { metric: 'a', read: () => 1 },
        actual: { metric: 'b', read: () => 1 },
        windowMs: 60_000,
        alert,
      }),
    ).toThrow(/minRatio/);
    expect(() => absence({ name: 'a', metric: '', read: () => 1, withinMs: 60_000, alert })).toThrow(
      /metric/,
    );
  });
});
