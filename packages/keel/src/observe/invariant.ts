/**
 * What an invariant is: one typed declaration of something that must stay true about the running
 * system — a relationship between metrics, a data check, an event flow, a threshold, a stream that
 * must keep arriving, a background job's heartbeat. The same declaration drives the in-process
 * evaluator and the Prometheus rule, so the check a team reviews is the check that pages them.
 *
 * @module
 */
import { InvalidOptionError } from '../errors/keel-error.ts';
import { checkNumber } from '../policy/options.ts';
import type { AlertDefinition, BreachEvidence } from './alert.ts';

/** The kinds of invariant Keel evaluates. */
export type InvariantKind = 'relationship' | 'data' | 'flow' | 'threshold' | 'absence' | 'heartbeat';

/** One evaluation of one invariant. */
export interface InvariantOutcome {
  /** True when the invariant holds. */
  readonly ok: boolean;
  /** What was measured; when `ok` is false, what is broken and how to list it. */
  readonly evidence: BreachEvidence;
}

/** What the evaluator passes to each check. */
export interface EvaluationContext {
  /** The evaluator's clock reading, in milliseconds. */
  readonly now: number;
}

/**
 * A declared invariant. Build one with `relationship()`, `dataCheck()`, `flowCheck()`,
 * `threshold()`, `absence()` or `heartbeat()`.
 *
 * @example
 * const evaluator = invariants({ checks: [paidOrdersHavePayments, nightlyReport], sinks: [logSink(log)] });
 */
export interface Invariant {
  /** Names the invariant in alerts, metrics and rules: `[a-zA-Z_][a-zA-Z0-9_]*`. */
  readonly name: string;
  readonly kind: InvariantKind;
  /** The alert raised when it stays broken for `forMs`. */
  readonly alert: AlertDefinition;
  /** How long a breach must last before it alerts, so a blip does not page anyone. */
  readonly forMs: number;
  /**
   * PromQL that returns a non-empty result while the invariant is broken. Metric-based invariants
   * derive it from the metrics they read (`watchesMetrics`); the others watch the evaluator's
   * result metric {@link INVARIANT_BREACHED_METRIC}.
   */
  readonly promql: string;
  /** True when `promql` reads the application's metrics directly, not the evaluator's result. */
  readonly watchesMetrics: boolean;
  /** Measures the invariant once. A thrown error counts as "could not evaluate", not as a breach. */
  evaluate(context: EvaluationContext): InvariantOutcome | Promise<InvariantOutcome>;
}

/** Options every invariant accepts. */
export interface InvariantOptions {
  /** Names the invariant in alerts, metrics and rules: `[a-zA-Z_][a-zA-Z0-9_]*`. */
  readonly name: string;
  /** The alert to raise; build it with `defineAlert()`. */
  readonly alert: AlertDefinition;
  /**
   * How long a breach must last before it alerts.
   * @default 0 (alert on the first breaching evaluation)
   */
  readonly forMs?: number;
}

/**
 * The gauge the evaluator sets per invariant: 1 while breached (before `for:` has passed too), 0
 * while it holds. Declare it under this name so the exported rules of data, flow and heartbeat
 * checks find it.
 */
export const INVARIANT_BREACHED_METRIC = 'keel_invariant_breached';

const NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/** Validates the options shared by every invariant; returns the name and `forMs`. */
export function checkInvariantOptions(options: InvariantOptions): { name: string; forMs: number } {
  if (typeof options.name !== 'string' || !NAME.test(options.name)) {
    throw new InvalidOptionError('name', `must match ${String(NAME)}, got '${String(options.name)}'`);
  }
  if (typeof options.alert !== 'object' || options.alert === null || typeof options.alert.what !== 'string') {
    throw new InvalidOptionError('alert', 'must be an alert built with defineAlert()');
  }
  return { name: options.name, forMs: checkNumber('forMs', options.forMs ?? 0) };
}

/** The PromQL that watches the evaluator's result metric for invariant `name`. */
export function breachedExpression(name: string): string {
  return `max(${INVARIANT_BREACHED_METRIC}{invariant="${name}"}) > 0`;
}

/** A Prometheus duration for `ms` (`5m`, `1h30m`, `250ms`), as range selectors and `for:` take it. */
export function promDuration(ms: number): string {
  checkNumber('duration', ms);
  let rest = Math.round(ms);
  if (rest === 0) return '0s';
  const units: [string, number][] = [
    ['d', 86_400_000],
    ['h', 3_600_000],
    ['m', 60_000],
    ['s', 1_000],
    ['ms', 1],
  ];
  let text = '';
  for (const [unit, size] of units) {
    const count = Math.floor(rest / size);
    if (count > 0) {
      text += `${count}${unit}`;
      rest -= count * size;
    }
  }
  return text;
}
