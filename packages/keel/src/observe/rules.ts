/**
 * Prometheus alerting rules from the same invariant declarations the in-process evaluator runs:
 * one rule per invariant, with its `for:`, its severity and group as labels and the alert's four
 * parts as annotations. The output is a rule file `promtool check rules` accepts. A tiny emitter for
 * this one fixed shape keeps Keel free of a YAML dependency: every string is written as a JSON
 * string, which YAML reads as a double-quoted scalar.
 *
 * @module
 */
import { InvalidOptionError } from '../errors/keel-error.ts';
import { type Invariant, promDuration } from './invariant.ts';

/** Options of {@link prometheusRules}. */
export interface PrometheusRulesOptions {
  /** @default 'keel-invariants' */
  readonly groupName?: string;
  /** How often Prometheus evaluates the group. @default Prometheus' global evaluation interval */
  readonly intervalMs?: number;
  /**
   * `'metrics'` exports only invariants whose PromQL reads the application's metrics
   * (relationships, thresholds on a metric, absence); `'all'` also exports data, flow and heartbeat
   * checks, watching the evaluator's `keel_invariant_breached` gauge.
   * @default 'all'
   */
  readonly include?: 'all' | 'metrics';
  /** Extra labels on every rule, e.g. `{ service: 'shop' }`. */
  readonly labels?: Readonly<Record<string, string>>;
}

/** One alerting rule, as {@link prometheusRules} writes it. */
export interface PrometheusRule {
  readonly alert: string;
  readonly expr: string;
  readonly for: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly annotations: Readonly<Record<string, string>>;
}

const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/**
 * The rules for `checks` as plain objects, for callers that write their own format.
 *
 * @example
 * const rules = alertingRules([paymentsFollowOrders]);
 */
export function alertingRules(
  checks: readonly Invariant[],
  options: Pick<PrometheusRulesOptions, 'include' | 'labels'> = {},
): PrometheusRule[] {
  const include = options.include ?? 'all';
  for (const name of Object.keys(options.labels ?? {})) {
    if (!LABEL_NAME.test(name)) throw new InvalidOptionError('labels', `'${name}' is not a valid label name`);
  }
  return checks
    .filter((check) => include === 'all' || check.watchesMetrics)
    .map((check) => ({
      alert: check.name,
      expr: check.promql,
      for: promDuration(check.forMs),
      labels: {
        ...options.labels,
        severity: check.alert.severity,
        group: check.alert.group,
        invariant: check.name,
        kind: check.kind,
      },
      annotations: {
        summary: literalTemplate(check.alert.what),
        where: literalTemplate(check.alert.where),
        impact: literalTemplate(check.alert.impact),
        next: literalTemplate(check.alert.next),
      },
    }));
}

/**
 * A Prometheus rule file (YAML) with one alerting rule per invariant.
 *
 * @example
 * await writeFile('rules/keel.yml', prometheusRules([paymentsFollowOrders, invoicesFlowing], { groupName: 'shop' }));
 * // promtool check rules rules/keel.yml
 */
export function prometheusRules(checks: readonly Invariant[], options: PrometheusRulesOptions = {}): string {
  const groupName = options.groupName ?? 'keel-invariants';
  if (typeof groupName !== 'string' || groupName === '') {
    throw new InvalidOptionError('groupName', 'must be a non-empty string');
  }
  const lines = ['groups:', `  - name: ${quote(groupName)}`];
  if (options.intervalMs !== undefined) lines.push(`    interval: ${promDuration(options.intervalMs)}`);
  const rules = alertingRules(checks, options);
  if (rules.length === 0) {
    lines.push('    rules: []');
    return `${lines.join('\n')}\n`;
  }
  lines.push('    rules:');
  for (const rule of rules) {
    lines.push(
      `      - alert: ${quote(rule.alert)}`,
      `        expr: ${quote(rule.expr)}`,
      `        for: ${rule.for}`,
    );
    lines.push('        labels:');
    for (const [key, value] of Object.entries(rule.labels)) lines.push(`          ${key}: ${quote(value)}`);
    lines.push('        annotations:');
    for (const [key, value] of Object.entries(rule.annotations))
      lines.push(`          ${key}: ${quote(value)}`);
  }
  return `${lines.join('\n')}\n`;
}

/** Prometheus expands annotations as Go templates; keep a literal `{{` in the team's text literal. */
function literalTemplate(text: string): string {
  return text.replaceAll('{{', '{{ "{{" }}');
}

/** A YAML double-quoted scalar: JSON's string escapes are a subset of YAML's. */
function quote(text: string): string {
  return JSON.stringify(text);
}
