import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  absence,
  alertingRules,
  dataCheck,
  defineAlert,
  heartbeat,
  type Invariant,
  promDuration,
  prometheusRules,
  relationship,
  threshold,
} from 'keel/observe';
import { afterAll, describe, expect, it } from 'vitest';

const MINUTE = 60_000;

const paymentsAlert = defineAlert({
  what: 'Orders are not being paid',
  where: 'logs: event="payment.failed"; dashboard "Payments"',
  impact: 'Revenue stops while orders pile up',
  next: 'keel replay --type payment.completed --since 1h',
  severity: 'critical',
  group: 'payments',
});
const abandonedAlert = defineAlert({
  what: 'Payments are being abandoned',
  where: "table payments where status = 'abandoned'",
  impact: 'Customers give up at checkout; literal {{ braces }} stay as written',
  next: 'Check the provider status page, then `keel lab --scenario cascade`',
  severity: 'warning',
  group: 'payments',
});
const invoicesAlert = defineAlert({
  what: 'No invoice sent for 5 minutes',
  where: 'logs: consumer="invoices"',
  impact: 'Customers do not receive invoices',
  next: 'Restart the invoice consumer; then keel replay --type payment.completed --since 30m',
  severity: 'critical',
  group: 'invoicing',
});
const paidOrdersAlert = defineAlert({
  what: 'Paid orders without a payment',
  where: 'table orders',
  impact: 'Customers were charged but their orders are not fulfilled',
  next: 'keel replay --type payment.completed --since 1h',
  severity: 'critical',
  group: 'payments',
});

const zero = () => 0;
const checks: Invariant[] = [
  relationship({
    name: 'payments_follow_orders',
    expected: { metric: 'shop_orders_created_total', read: zero },
    actual: { metric: 'shop_payments_completed_total', read: zero },
    windowMs: 5 * MINUTE,
    minRatio: 0.9,
    minEvents: 10,
    forMs: 5 * MINUTE,
    alert: paymentsAlert,
  }),
  threshold({
    name: 'abandoned_payments',
    metric: 'shop_payments_abandoned',
    read: zero,
    above: 10,
    forMs: 5 * MINUTE,
    alert: abandonedAlert,
  }),
  absence({
    name: 'invoices_flowing',
    metric: 'shop_invoices_sent_total',
    read: zero,
    withinMs: 5 * MINUTE,
    forMs: 2 * MINUTE,
    alert: invoicesAlert,
  }),
  dataCheck({
    name: 'paid_orders_have_payments',
    sql: 'SELECT id FROM orders',
    query: () => ({ ids: [], total: 0 }),
    forMs: MINUTE,
    alert: paidOrdersAlert,
  }),
];

describe('prometheusRules()', () => {
  it('writes one rule per invariant with for:, labels and the four parts as annotations', () => {
    const yaml = prometheusRules(checks, { groupName: 'shop', labels: { service: 'shop' } });
    expect(yaml).toContain(
      'groups:\n  - name: "shop"\n    rules:\n      - alert: "payments_follow_orders"\n',
    );
    expect(yaml).toContain('        for: 5m\n');
    expect(yaml).toContain('          severity: "critical"\n          group: "payments"\n');
    expect(yaml).toContain('          next: "keel replay --type payment.completed --since 1h"\n');
    expect(yaml).toContain('          where: "logs: event=\\"payment.failed\\"; dashboard \\"Payments\\""\n');
    expect(yaml).toContain(
      'expr: "max(keel_invariant_breached{invariant=\\"paid_orders_have_payments\\"}) > 0"',
    );
    expect(yaml.match(/- alert:/g)).toHaveLength(4);
  });

  it('exports only metric-based invariants when asked', () => {
    const names = alertingRules(checks, { include: 'metrics' }).map((r) => r.alert);
    expect(names).toEqual(['payments_follow_orders', 'abandoned_payments', 'invoices_flowing']);
    const job = heartbeat({ name: 'nightly', everyMs: 86_400_000, alert: paidOrdersAlert });
    expect(alertingRules([job])[0]?.expr).toBe('max(keel_invariant_breached{invariant="nightly"}) > 0');
    expect(prometheusRules([], { groupName: 'empty' })).toBe('groups:\n  - name: "empty"\n    rules: []\n');
    expect(() => prometheusRules(checks, { labels: { 'bad-label': 'x' } })).toThrow(/bad-label/);
  });

  it('writes Prometheus durations', () => {
    expect([0, 250, 1_000, 90_000, 5_400_000, 86_400_000 + 1_500].map(promDuration)).toEqual([
      '0s',
      '250ms',
      '1s',
      '1m30s',
      '1h30m',
      '1d1s500ms',
    ]);
  });
});

function promtoolPath(): string | undefined {
  const found = spawnSync('promtool', ['--version'], { encoding: 'utf8' });
  return found.status === 0 ? 'promtool' : undefined;
}

const promtool = promtoolPath();

if (promtool === undefined) {
  describe('promtool', () => {
    it('needs promtool (Debian package prometheus)', (context) => {
      if (process.env.KEEL_REQUIRE_SERVICES === '1') {
        throw new Error(
          'promtool is not installed, and KEEL_REQUIRE_SERVICES=1 requires it (apt-get install -y prometheus)',
        );
      }
      context.skip('promtool is not installed');
    });
  });
} else {
  describe('promtool', () => {
    const dir = mkdtempSync(join(tmpdir(), 'keel-rules-'));
    afterAll(() => rmSync(dir, { recursive: true, force: true }));
    const run = (...args: string[]) => {
      const result = spawnSync(promtool, args, { cwd: dir, encoding: 'utf8' });
      return { status: result.status, output: `${result.stdout}${result.stderr}` };
    };
    writeFileSync(join(dir, 'rules.yml'), prometheusRules(checks, { groupName: 'shop' }));

    it('accepts the generated rule file', () => {
      const { status, output } = run('check', 'rules', 'rules.yml');
      expect(output).toContain('SUCCESS: 4 rules found');
      expect(status).toBe(0);
    });

    it('fires each rule on synthetic series when it should and stays quiet when it should not', () => {
      const rules = Object.fromEntries(alertingRules(checks).map((r) => [r.alert, r]));
      // Prometheus renders annotations as templates: the alert must read exactly as the team wrote it.
      const firing = (name: string) => {
        const rule = rules[name];
        const check = checks.find((c) => c.name === name);
        if (rule === undefined || check === undefined) throw new Error(name);
        const { what, where, impact, next } = check.alert;
        return [{ exp_labels: rule.labels, exp_annotations: { summary: what, where, impact, next } }];
      };
      const test = {
        rule_files: ['rules.yml'],
        evaluation_interval: '1m',
        tests: [
          {
            interval: '1m',
            input_series: [
              // Orders keep coming; payments keep up for 10 minutes, then fall to 2 a minute.
              { series: 'shop_orders_created_total', values: '0+10x40' },
              { series: 'shop_payments_completed_total', values: '0+10x10 100+2x30' },
              { series: 'shop_payments_abandoned', values: '0x10 20x30' },
              // Invoices flow for 10 minutes, then stop.
              { series: 'shop_invoices_sent_total', values: '0+5x10 50x30' },
              {
                series: 'keel_invariant_breached{invariant="paid_orders_have_payments"}',
                values: '0x10 1x30',
              },
            ],
            alert_rule_test: [
              { eval_time: '9m', alertname: 'payments_follow_orders', exp_alerts: [] },
              {
                eval_time: '30m',
                alertname: 'payments_follow_orders',
                exp_alerts: firing('payments_follow_orders'),
              },
              { eval_time: '9m', alertname: 'abandoned_payments', exp_alerts: [] },
              // 20 abandoned since minute 11, but not yet for 5 minutes.
              { eval_time: '14m', alertname: 'abandoned_payments', exp_alerts: [] },
              { eval_time: '30m', alertname: 'abandoned_payments', exp_alerts: firing('abandoned_payments') },
              { eval_time: '9m', alertname: 'invoices_flowing', exp_alerts: [] },
              { eval_time: '30m', alertname: 'invoices_flowing', exp_alerts: firing('invoices_flowing') },
              { eval_time: '9m', alertname: 'paid_orders_have_payments', exp_alerts: [] },
              {
                eval_time: '30m',
                alertname: 'paid_orders_have_payments',
                exp_alerts: firing('paid_orders_have_payments'),
              },
            ],
          },
          {
            // A healthy system: nothing fires.
            interval: '1m',
            input_series: [
              { series: 'shop_orders_created_total', values: '0+10x40' },
              { series: 'shop_payments_completed_total', values: '0+10x40' },
              { series: 'shop_payments_abandoned', values: '2x40' },
              { series: 'shop_invoices_sent_total', values: '0+5x40' },
              { series: 'keel_invariant_breached{invariant="paid_orders_have_payments"}', values: '0x40' },
            ],
            alert_rule_test: Object.keys(rules).map((alertname) => ({
              eval_time: '30m',
              alertname,
              exp_alerts: [],
            })),
          },
        ],
      };
      // JSON is YAML, so the test file needs no emitter either.
      writeFileSync(join(dir, 'rules.test.yml'), JSON.stringify(test, null, 2));
      const { status, output } = run('test', 'rules', 'rules.test.yml');
      expect(output).toContain('SUCCESS');
      expect(status).toBe(0);
    });

    it('detects a rule that should have fired but did not', () => {
      const test = {
        rule_files: ['rules.yml'],
        tests: [
          {
            interval: '1m',
            input_series: [{ series: 'shop_payments_abandoned', values: '0x30' }],
            alert_rule_test: [
              {
                eval_time: '30m',
                alertname: 'abandoned_payments',
                exp_alerts: [{ exp_labels: { severity: 'warning' } }],
              },
            ],
          },
        ],
      };
      writeFileSync(join(dir, 'wrong.test.yml'), JSON.stringify(test));
      expect(run('test', 'rules', 'wrong.test.yml').status).not.toBe(0);
    });
  });
}
