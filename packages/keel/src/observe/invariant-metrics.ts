/**
 * Invariants over metrics: a relationship between two counters over a window (orders created vs
 * payments completed), a threshold on one value (abandoned payments above N) and an absence check
 * (a stream that stopped arriving). In process they read current values through a
 * {@link MetricReader} and keep their own samples, so they work without a Prometheus server; each
 * also carries the PromQL that makes Prometheus watch the same thing.
 *
 * @module
 */
import { InvalidOptionError } from '../errors/keel-error.ts';
import { checkFunction, checkInteger, checkNumber } from '../policy/options.ts';
import {
  breachedExpression,
  checkInvariantOptions,
  type EvaluationContext,
  type Invariant,
  type InvariantKind,
  type InvariantOptions,
  type InvariantOutcome,
  promDuration,
} from './invariant.ts';

/**
 * Reads a metric's current value in process, e.g. `() => ordersCreated.value` or a query of the
 * prom-client registry. `undefined` means the metric does not exist (yet).
 */
export type MetricReader = () => number | undefined | Promise<number | undefined>;

/** A metric as both sides see it: the PromQL selector Prometheus scrapes and the in-process reader. */
export interface MetricSource {
  /** PromQL selector, e.g. `keel_orders_total{status="created"}`. */
  readonly metric: string;
  readonly read: MetricReader;
}

/** Counter samples over a sliding window; counts a drop in value as a counter reset, as Prometheus does. */
class CounterWindow {
  readonly #samples: { at: number; value: number }[] = [];
  readonly #windowMs: number;

  constructor(windowMs: number) {
    this.#windowMs = windowMs;
  }

  /** Adds a sample and returns the increase over the window (over the history so far while it is shorter). */
  record(at: number, value: number): number {
    this.#samples.push({ at, value });
    // Keep one sample at or before the window's start, so the increase covers the whole window.
    while (this.#samples.length > 2 && (this.#samples[1] as { at: number }).at <= at - this.#windowMs) {
      this.#samples.shift();
    }
    let increase = 0;
    for (let i = 1; i < this.#samples.length; i++) {
      const before = (this.#samples[i - 1] as { value: number }).value;
      const after = (this.#samples[i] as { value: number }).value;
      increase += after >= before ? after - before : after;
    }
    return increase;
  }
}

function checkSource(option: string, source: MetricSource): MetricSource {
  if (
    typeof source !== 'object' ||
    source === null ||
    typeof source.metric !== 'string' ||
    source.metric === ''
  ) {
    throw new InvalidOptionError(option, 'must be { metric: PromQL selector, read: () => number }');
  }
  checkFunction(`${option}.read`, source.read);
  return source;
}

function metricInvariant(
  options: InvariantOptions,
  kind: InvariantKind,
  promql: string,
  watchesMetrics: boolean,
  evaluate: (context: EvaluationContext) => Promise<InvariantOutcome>,
): Invariant {
  const { name, forMs } = checkInvariantOptions(options);
  return Object.freeze({ name, kind, alert: options.alert, forMs, promql, watchesMetrics, evaluate });
}

/** Options of {@link relationship}: give `minRatio`, `maxShortfall`, or both. */
export interface RelationshipOptions extends InvariantOptions {
  /** What happened first and should be followed (orders created). */
  readonly expected: MetricSource;
  /** What should follow it (payments completed). */
  readonly actual: MetricSource;
  /** The window both counters' increases are taken over, in ms. */
  readonly windowMs: number;
  /** Breached when `increase(actual) / increase(expected)` falls below this. */
  readonly minRatio?: number;
  /** Breached when `increase(expected) - increase(actual)` exceeds this. */
  readonly maxShortfall?: number;
  /**
   * The ratio is judged only when `expected` grew by at least this much in the window, so a quiet
   * hour with one order and no payment yet is not an incident.
   * @default 1
   */
  readonly minEvents?: number;
}

/**
 * A relationship between two counters over a window: a ratio that must stay above `minRatio` or a
 * shortfall that must stay below `maxShortfall`.
 *
 * @example
 * const paymentsFollowOrders = relationship({
 *   name: 'payments_follow_orders',
 *   expected: { metric: 'shop_orders_created_total', read: () => ordersCreated },
 *   actual: { metric: 'shop_payments_completed_total', read: () => paymentsCompleted },
 *   windowMs: 10 * 60_000, minRatio: 0.9, minEvents: 20, forMs: 5 * 60_000,
 *   alert: defineAlert({ what: 'Orders are not being paid', ... }),
 * });
 */
export function relationship(options: RelationshipOptions): Invariant {
  const expected = checkSource('expected', options.expected);
  const actual = checkSource('actual', options.actual);
  const windowMs = checkInteger('windowMs', options.windowMs, 1_000);
  const { minRatio, maxShortfall } = options;
  if (minRatio === undefined && maxShortfall === undefined) {
    throw new InvalidOptionError('minRatio', 'give minRatio, maxShortfall or both');
  }
  if (minRatio !== undefined) checkNumber('minRatio', minRatio);
  if (maxShortfall !== undefined) checkNumber('maxShortfall', maxShortfall);
  const minEvents = checkNumber('minEvents', options.minEvents ?? 1);
  const range = promDuration(windowMs);
  const expectedIncrease = `sum(increase(${expected.metric}[${range}]))`;
  const actualIncrease = `(sum(increase(${actual.metric}[${range}])) or vector(0))`;
  const conditions: string[] = [];
  if (minRatio !== undefined) {
    conditions.push(
      `(${actualIncrease} / ${expectedIncrease} < ${minRatio} and ${expectedIncrease} >= ${minEvents})`,
    );
  }
  if (maxShortfall !== undefined)
    conditions.push(`(${expectedIncrease} - ${actualIncrease} > ${maxShortfall})`);
  const expectedWindow = new CounterWindow(windowMs);
  const actualWindow = new CounterWindow(windowMs);
  return metricInvariant(options, 'relationship', conditions.join(' or '), true, async ({ now }) => {
    const [e, a] = await Promise.all([expected.read(), actual.read()]);
    const grewExpected = expectedWindow.record(now, e ?? 0);
    const grewActual = actualWindow.record(now, a ?? 0);
    const shortfall = grewExpected - grewActual;
    const ratio = grewExpected > 0 ? grewActual / grewExpected : 1;
    const ratioBroken = minRatio !== undefined && grewExpected >= minEvents && ratio < minRatio;
    const shortfallBroken = maxShortfall !== undefined && shortfall > maxShortfall;
    const window = promDuration(windowMs);
    return {
      ok: !ratioBroken && !shortfallBroken,
      evidence: {
        ids: [],
        total: Math.max(0, shortfall),
        value: ratioBroken || maxShortfall === undefined ? ratio : shortfall,
        query: conditions.join(' or '),
        detail:
          `${actual.metric} grew ${grewActual} vs ${expected.metric} ${grewExpected} in ${window}` +
          ` (ratio ${ratio.toFixed(3)}${minRatio === undefined ? '' : `, min ${minRatio}`}` +
          `; shortfall ${shortfall}${maxShortfall === undefined ? '' : `, max ${maxShortfall}`})`,
      },
    };
  });
}

/** Options of {@link threshold}. */
export interface ThresholdOptions extends InvariantOptions {
  /** Reads the value in process. */
  readonly read: MetricReader;
  /** Breached when the value is above this. */
  readonly above: number;
  /**
   * PromQL for the same value (`keel_payments_abandoned`). Without it, the exported rule watches
   * the evaluator's result metric instead.
   */
  readonly metric?: string;
}

/**
 * A value that must stay at or below a bound, e.g. abandoned payments.
 *
 * @example
 * const abandoned = threshold({
 *   name: 'abandoned_payments', metric: 'shop_payments_abandoned', read: () => abandonedCount(),
 *   above: 10, forMs: 10 * 60_000, alert: defineAlert({ what: 'Payments are being abandoned', ... }),
 * });
 */
export function threshold(options: ThresholdOptions): Invariant {
  const read = checkFunction('read', options.read);
  const above = checkNumber('above', options.above, Number.NEGATIVE_INFINITY);
  const { metric } = options;
  if (metric !== undefined && (typeof metric !== 'string' || metric === '')) {
    throw new InvalidOptionError('metric', 'must be a non-empty PromQL expression');
  }
  const promql = metric === undefined ? breachedExpression(options.name) : `sum(${metric}) > ${above}`;
  return metricInvariant(options, 'threshold', promql, metric !== undefined, async () => {
    const value = await read();
    const label = metric ?? options.name;
    return {
      ok: value === undefined || value <= above,
      evidence: {
        ids: [],
        total: value !== undefined && value > above ? value : 0,
        value: value ?? Number.NaN,
        query: promql,
        detail: value === undefined ? `${label} has no value` : `${label} is ${value} (limit ${above})`,
      },
    };
  });
}

/** Options of {@link absence}. */
export interface AbsenceOptions extends InvariantOptions {
  /** PromQL selector of the counter that must keep growing, e.g. `shop_events_consumed_total{type="payment.completed"}`. */
  readonly metric: string;
  /** Reads the counter in process; `undefined` while it does not exist. */
  readonly read: MetricReader;
  /** Breached when the value has not changed for this long. */
  readonly withinMs: number;
}

/**
 * A metric or event stream that must keep arriving: breached when its counter has not moved for
 * `withinMs` (or never appeared).
 *
 * @example
 * const invoicesFlow = absence({
 *   name: 'invoices_flowing', metric: 'shop_invoices_sent_total', read: () => invoicesSent,
 *   withinMs: 15 * 60_000, alert: defineAlert({ what: 'No invoice sent for 15 minutes', ... }),
 * });
 */
export function absence(options: AbsenceOptions): Invariant {
  const { metric } = options;
  if (typeof metric !== 'string' || metric === '') {
    throw new InvalidOptionError('metric', 'must be a non-empty PromQL selector');
  }
  const read = checkFunction('read', options.read);
  const withinMs = checkInteger('withinMs', options.withinMs, 1_000);
  const range = promDuration(withinMs);
  const promql = `(sum(increase(${metric}[${range}])) == 0) or absent_over_time(${metric}[${range}])`;
  let lastValue: number | undefined;
  let lastChangeAt: number | undefined;
  return metricInvariant(options, 'absence', promql, true, async ({ now }) => {
    const value = await read();
    if (lastChangeAt === undefined || (value !== undefined && value !== lastValue)) lastChangeAt = now;
    lastValue = value;
    const silentMs = now - lastChangeAt;
    return {
      ok: silentMs < withinMs,
      evidence: {
        ids: [],
        total: 0,
        value: silentMs,
        query: promql,
        detail:
          value === undefined
            ? `${metric} has not appeared for ${promDuration(silentMs)}`
            : `${metric} has not changed for ${promDuration(silentMs)} (stays at ${value}; limit ${range})`,
      },
    };
  });
}
