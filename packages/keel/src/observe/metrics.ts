/**
 * One metrics facade over Prometheus (`prom-client`) and OpenTelemetry, with the guard that keeps a
 * metrics backend alive: every label value is declared up front — an enumerated list, or a bounded
 * number of distinct values — so an order id can never become a label and multiply the series
 * until the process or the Prometheus server runs out of memory. Entity ids belong in logs and in
 * exemplars; label names that look like ids (`order_id`, `paymentId`, `key`) are refused at
 * declaration.
 *
 * Every declared label combination is zero-initialised, so `increase()` and `rate()` see the first
 * event instead of a series that appears out of nowhere (and counts as zero increase). For a metric
 * with bounded labels, the combinations are zero-initialised when each new bounded value is first
 * seen. Gauges are not: an absent gauge means "unknown", which a zero would hide.
 *
 * A refused value throws a {@link CardinalityError} when the facade was made with
 * `onRefused: 'throw'` (use it in tests); by default it is dropped, counted in
 * `keel_metrics_refused_total{metric}` and reported once per metric with `process.emitWarning`
 * (code `KEEL_METRIC_REFUSED`), because a metrics call must never fail the request it measures.
 *
 * @module
 */
import { InvalidOptionError, isKeelError, KeelError } from '../errors/keel-error.ts';
import { checkInteger, checkOneOf } from '../policy/options.ts';
import { currentContext } from './context.ts';

/** A label whose values are not known up front, but whose number of distinct values is bounded. */
export interface BoundedLabel {
  /** Distinct values accepted; later new values are refused. */
  readonly maxValues: number;
}

/** Label names mapped to their enumerated values (`['ok', 'failed']`) or a bound (`{ maxValues: 50 }`). */
export type LabelSpec = Readonly<Record<string, readonly string[] | BoundedLabel>>;

/** A metric without labels. */
export type NoLabels = Readonly<Record<never, never>>;

/** The label values a metric accepts: the enumerated union, or `string` for a bounded label. */
export type LabelValues<L extends LabelSpec> = {
  readonly [K in keyof L]: L[K] extends readonly (infer V)[] ? V : string;
};

/** Plain label values, as adapters receive them. */
export type Labels = Readonly<Record<string, string>>;

/** What every metric declares. */
export interface MetricDeclaration<L extends LabelSpec = NoLabels> {
  /** Prometheus-style name: `[a-zA-Z_:][a-zA-Z0-9_:]*`, counters ending in `_total`. */
  readonly name: string;
  /** One sentence saying what is counted. */
  readonly help: string;
  /** The labels and their allowed values. @default no labels */
  readonly labels?: L;
}

/** A gauge; give `collect` to read its value when metrics are scraped or exported. */
export interface GaugeDeclaration<L extends LabelSpec = NoLabels> extends MetricDeclaration<L> {
  /**
   * Called on every scrape (Prometheus) or collection (OpenTelemetry) to set the current values;
   * series it does not set are dropped. A throwing reader skips this gauge and warns
   * (`KEEL_METRIC_COLLECT_FAILED`); it never fails the scrape.
   */
  readonly collect?: (gauge: Gauge<L>) => void | Promise<void>;
}

/** A histogram with explicit bucket upper bounds. */
export interface HistogramDeclaration<L extends LabelSpec = NoLabels> extends MetricDeclaration<L> {
  /** Strictly increasing upper bounds, in the metric's unit (seconds for `_seconds`). */
  readonly buckets: readonly number[];
}

/** Arguments of {@link Counter.inc}: labels may be left out only when there are none. */
export type CounterArgs<L extends LabelSpec> = [keyof L] extends [never]
  ? [labels?: NoLabels, by?: number]
  : [labels: LabelValues<L>, by?: number];

/** A monotonically increasing count. */
export interface Counter<L extends LabelSpec = NoLabels> {
  readonly name: string;
  /** Adds `by` (default 1, must be ≥ 0); the current context's entity ids become the exemplar. */
  inc(...args: CounterArgs<L>): void;
}

/** A value that goes up and down. */
export interface Gauge<L extends LabelSpec = NoLabels> {
  readonly name: string;
  set(labels: LabelValues<L>, value: number): void;
}

/** A distribution of observed values. */
export interface Histogram<L extends LabelSpec = NoLabels> {
  readonly name: string;
  /** Records `value`; the current context's entity ids become the exemplar. */
  observe(labels: LabelValues<L>, value: number): void;
}

/** Declares metrics on one backend. Declaring the same name twice with the same shape returns the same metric. */
export interface MetricsFacade {
  counter<const L extends LabelSpec = NoLabels>(declaration: MetricDeclaration<L>): Counter<L>;
  gauge<const L extends LabelSpec = NoLabels>(declaration: GaugeDeclaration<L>): Gauge<L>;
  histogram<const L extends LabelSpec = NoLabels>(declaration: HistogramDeclaration<L>): Histogram<L>;
  /** Values refused by the guard so far, over every metric. */
  readonly refused: number;
}

/** What an adapter registers for one metric. */
export interface MetricDefinition {
  readonly name: string;
  readonly help: string;
  readonly labelNames: readonly string[];
}

/** The backend half of a counter. */
export interface BackendCounter {
  add(labels: Labels, value: number, exemplar: Labels | undefined): void;
}

/** The backend half of a gauge. */
export interface BackendGauge {
  set(labels: Labels, value: number): void;
}

/** The backend half of a histogram. */
export interface BackendHistogram {
  record(labels: Labels, value: number, exemplar: Labels | undefined): void;
  /** Makes the series exist with zero counts, where the backend can (OpenTelemetry cannot). */
  zero(labels: Labels): void;
}

/** Reads a gauge at collection time, reporting each series through `record`. */
export type GaugeCollector = (record: (labels: Labels, value: number) => void) => void | Promise<void>;

/** What an adapter implements; the facade owns validation, the guard and zero-initialisation. */
export interface MetricsBackend {
  /** True when exemplars reach the backend (prom-client with an OpenMetrics registry). */
  readonly exemplars: boolean;
  counter(definition: MetricDefinition): BackendCounter;
  gauge(definition: MetricDefinition, collect: GaugeCollector | undefined): BackendGauge;
  histogram(definition: MetricDefinition & { readonly buckets: readonly number[] }): BackendHistogram;
}

/** Options of {@link createMetrics} (and of the adapters that call it). */
export interface MetricsOptions {
  /**
   * What a refused update does — a label value outside its declaration or bound (a
   * {@link CardinalityError}), or a negative, NaN or infinite value (an `InvalidOptionError`):
   * `'throw'` the error (tests), or `'count'` it in `keel_metrics_refused_total` and drop the
   * update (production).
   * @default 'count'
   */
  onRefused?: 'throw' | 'count';
  /**
   * The most series one metric may declare: the product of its label value counts and bounds.
   * @default 10000
   */
  maxSeriesPerMetric?: number;
}

const DEFAULTS = Object.freeze({ onRefused: 'count' as const, maxSeriesPerMetric: 10_000 });

/** Name of the counter of refused values. */
export const REFUSED_METRIC = 'keel_metrics_refused_total';

/**
 * Thrown (with `onRefused: 'throw'`) when a label value was not declared, a bounded label has seen
 * its maximum of distinct values, or a label is missing or unknown.
 *
 * @example
 * expect(() => orders.inc({ status: 'o-42' })).toThrow(CardinalityError);
 */
export class CardinalityError extends KeelError {
  readonly metric: string;
  readonly label: string;
  readonly value: string | undefined;
  constructor(metric: string, label: string, value: string | undefined, message: string) {
    super('KEEL_METRIC_CARDINALITY', `${metric}: ${message}`);
    this.metric = metric;
    this.label = label;
    this.value = value;
  }
}

/** True when `err` is a {@link CardinalityError}, even from another copy of Keel. */
export function isCardinalityError(err: unknown): err is CardinalityError {
  return isKeelError(err) && err.code === 'KEEL_METRIC_CARDINALITY';
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
/** `id`, `order_id`, `orderId`, `paymentID`, `key`, `idempotency_key`, `idempotencyKey`. */
const ID_LIKE = /(^|_)(id|key)$|[a-z0-9](Id|ID|Key)$/;
/** OpenMetrics caps an exemplar's label names and values at 128 characters in total. */
const EXEMPLAR_CHARS = 128;

type MetricKind = 'counter' | 'gauge' | 'histogram';

/** One label's check: a set of allowed values, or a bound on distinct values seen. */
interface LabelRule {
  readonly name: string;
  readonly allowed: ReadonlySet<string> | undefined;
  readonly values: readonly string[] | undefined;
  readonly maxValues: number;
  readonly seen: Set<string>;
}

/** The guard of one metric: its label rules, and which bounded tuples were zero-initialised. */
class LabelGuard {
  readonly metric: string;
  readonly rules: readonly LabelRule[];
  readonly bounded: boolean;
  readonly #zeroed = new Set<string>();

  constructor(metric: string, spec: LabelSpec, maxSeries: number) {
    this.metric = metric;
    const rules: LabelRule[] = [];
    let series = 1;
    for (const name of Object.keys(spec)) {
      const option = `${metric}.labels.${name}`;
      if (!LABEL_NAME.test(name) || name.startsWith('__')) {
        throw new InvalidOptionError(option, 'must be a label name matching [a-zA-Z_][a-zA-Z0-9_]*');
      }
      if (ID_LIKE.test(name)) {
        throw new InvalidOptionError(
          option,
          'looks like an entity id or key: ids go to logs and exemplars, never to metric labels',
        );
      }
      const rule = spec[name] as readonly string[] | BoundedLabel;
      if (isValueList(rule)) {
        if (
          rule.length === 0 ||
          rule.some((v) => typeof v !== 'string') ||
          new Set(rule).size !== rule.length
        ) {
          throw new InvalidOptionError(option, 'must list at least one distinct string value');
        }
        rules.push({ name, allowed: new Set(rule), values: rule, maxValues: rule.length, seen: new Set() });
        series *= rule.length;
      } else {
        const maxValues = checkInteger(`${option}.maxValues`, rule?.maxValues as number, 1, maxSeries);
        rules.push({ name, allowed: undefined, values: undefined, maxValues, seen: new Set() });
        series *= maxValues;
      }
    }
    if (series > maxSeries) {
      throw new InvalidOptionError(
        `${metric}.labels`,
        `allow ${series} series, more than maxSeriesPerMetric (${maxSeries})`,
      );
    }
    this.rules = rules;
    this.bounded = rules.some((r) => r.allowed === undefined);
  }

  /** Returns the refusal, or undefined when every label is present, known and within bounds. */
  check(labels: Labels | undefined): CardinalityError | undefined {
    const rules = this.rules;
    let present = 0;
    for (let i = 0; i < rules.length; i++) {
      const rule = rules[i] as LabelRule;
      const value = labels?.[rule.name];
      if (typeof value !== 'string') {
        return new CardinalityError(this.metric, rule.name, undefined, `label '${rule.name}' is missing`);
      }
      present++;
      if (rule.allowed !== undefined) {
        if (!rule.allowed.has(value)) {
          return new CardinalityError(
            this.metric,
            rule.name,
            value,
            `label '${rule.name}' has undeclared value '${value}' (declared: ${[...rule.allowed].join(', ')})`,
          );
        }
      } else if (!rule.seen.has(value) && rule.seen.size >= rule.maxValues) {
        return new CardinalityError(
          this.metric,
          rule.name,
          value,
          `label '${rule.name}' already has its maximum of ${rule.maxValues} distinct values; refused '${value}'`,
        );
      }
    }
    if (labels !== undefined && Object.keys(labels).length !== present) {
      const extra = Object.keys(labels).find((k) => !rules.some((r) => r.name === k)) as string;
      return new CardinalityError(this.metric, extra, labels[extra], `label '${extra}' was not declared`);
    }
    return undefined;
  }

  /** Records the bounded values of accepted labels; returns them when this tuple is new. */
  admit(labels: Labels): Labels | undefined {
    let key = '';
    for (const rule of this.rules) {
      if (rule.allowed !== undefined) continue;
      const value = labels[rule.name] as string;
      rule.seen.add(value);
      key += `${value}\u0000`;
    }
    if (this.#zeroed.has(key)) return undefined;
    this.#zeroed.add(key);
    return labels;
  }

  /** Every combination of the enumerated values, bounded labels taken from `fixed`. */
  combinations(fixed: Labels | undefined): Labels[] {
    let result: Record<string, string>[] = [{}];
    for (const rule of this.rules) {
      const values = rule.values ?? [(fixed as Labels)[rule.name] as string];
      const next: Record<string, string>[] = [];
      for (const partial of result) for (const v of values) next.push({ ...partial, [rule.name]: v });
      result = next;
    }
    return result;
  }
}

function isValueList(rule: readonly string[] | BoundedLabel): rule is readonly string[] {
  return Array.isArray(rule);
}

interface Declared {
  readonly kind: MetricKind;
  readonly shape: string;
  readonly metric: unknown;
}

/**
 * Builds a facade over any {@link MetricsBackend}. Users normally call `prometheusMetrics()` or
 * `otelMetrics()`, which call this with their adapter.
 *
 * @example
 * const metrics = createMetrics(myBackend, { onRefused: 'throw' });
 */
export function createMetrics(backend: MetricsBackend, options: MetricsOptions = {}): MetricsFacade {
  const onRefused = checkOneOf('onRefused', options.onRefused ?? DEFAULTS.onRefused, ['throw', 'count']);
  const maxSeries = checkInteger(
    'maxSeriesPerMetric',
    options.maxSeriesPerMetric ?? DEFAULTS.maxSeriesPerMetric,
  );
  const declared = new Map<string, Declared>();
  const warned = new Set<string>();
  const refusedCounter = backend.counter({
    name: REFUSED_METRIC,
    help: 'Metric updates refused by the cardinality guard, by metric.',
    labelNames: ['metric'],
  });
  let refused = 0;

  /** Throws in test mode; otherwise counts, warns once per metric, and drops the update. */
  const refuse = (metric: string, error: KeelError): void => {
    if (onRefused === 'throw') throw error;
    refused++;
    refusedCounter.add({ metric }, 1, undefined);
    if (!warned.has(metric)) {
      warned.add(metric);
      process.emitWarning(`Keel refused a metric update: ${error.message}`, { code: 'KEEL_METRIC_REFUSED' });
    }
  };

  const exemplar = backend.exemplars ? contextExemplar : noExemplar;

  /** Validates a declaration, or returns the metric already declared with the same shape. */
  const declare = <M>(
    kind: MetricKind,
    declaration: MetricDeclaration<LabelSpec>,
    extra: unknown,
    build: (guard: LabelGuard, definition: MetricDefinition) => M,
  ): M => {
    const { name, help } = declaration;
    if (typeof name !== 'string' || !METRIC_NAME.test(name) || name === REFUSED_METRIC) {
      throw new InvalidOptionError(
        'name',
        `must match [a-zA-Z_:][a-zA-Z0-9_:]* and not be reserved, got '${String(name)}'`,
      );
    }
    if (typeof help !== 'string' || help.trim() === '') {
      throw new InvalidOptionError(`${name}.help`, 'must say what the metric counts');
    }
    const spec = declaration.labels ?? {};
    const shape = JSON.stringify([kind, spec, extra]);
    const existing = declared.get(name);
    if (existing !== undefined) {
      if (existing.shape !== shape) {
        throw new InvalidOptionError('name', `'${name}' is already declared with another kind or labels`);
      }
      return existing.metric as M;
    }
    const guard = new LabelGuard(name, spec, maxSeries);
    const metric = build(guard, { name, help, labelNames: guard.rules.map((r) => r.name) });
    declared.set(name, { kind, shape, metric });
    refusedCounter.add({ metric: name }, 0, undefined);
    return metric;
  };

  const counter = <L extends LabelSpec>(declaration: MetricDeclaration<L>): Counter<L> =>
    declare('counter', declaration, undefined, (guard, definition) => {
      const target = backend.counter(definition);
      const zero = (fixed: Labels | undefined): void => {
        for (const labels of guard.combinations(fixed)) target.add(labels, 0, undefined);
      };
      if (!guard.bounded) zero(undefined);
      return {
        name: definition.name,
        inc(labels?: Labels, by = 1): void {
          const error = guard.check(labels);
          if (error !== undefined) {
            refuse(definition.name, error);
            return;
          }
          if (!(by >= 0) || !Number.isFinite(by)) {
            refuse(definition.name, new InvalidOptionError('by', `must be a finite number ≥ 0, got ${by}`));
            return;
          }
          const accepted = labels ?? {};
          if (guard.bounded) {
            const fresh = guard.admit(accepted);
            if (fresh !== undefined) zero(fresh);
          }
          target.add(accepted, by, exemplar());
        },
      } as unknown as Counter<L>;
    });

  const gauge = <L extends LabelSpec>(declaration: GaugeDeclaration<L>): Gauge<L> => {
    const reader = declaration.collect;
    if (reader !== undefined && typeof reader !== 'function') {
      throw new InvalidOptionError(`${declaration.name}.collect`, 'must be a function');
    }
    if (reader !== undefined && declared.has(declaration.name)) {
      throw new InvalidOptionError(
        'name',
        `'${declaration.name}' is already declared; a gauge has one reader`,
      );
    }
    return declare('gauge', declaration, reader !== undefined, (guard, definition) => {
      const setter = (write: (labels: Labels, value: number) => void) => ({
        name: definition.name,
        set(labels: Labels, value: number): void {
          const error = guard.check(labels);
          if (error !== undefined) {
            refuse(definition.name, error);
            return;
          }
          if (typeof value !== 'number' || Number.isNaN(value)) {
            refuse(definition.name, new InvalidOptionError('value', `must be a number, got ${value}`));
            return;
          }
          if (guard.bounded) guard.admit(labels);
          write(labels, value);
        },
      });
      const collect: GaugeCollector | undefined =
        reader === undefined
          ? undefined
          : async (record) => {
              try {
                await reader(setter(record) as unknown as Gauge<L>);
              } catch (err) {
                process.emitWarning(`Keel gauge ${definition.name} could not be read: ${String(err)}`, {
                  code: 'KEEL_METRIC_COLLECT_FAILED',
                });
              }
            };
      const target = backend.gauge(definition, collect);
      return setter((labels, value) => target.set(labels, value)) as unknown as Gauge<L>;
    });
  };

  const histogram = <L extends LabelSpec>(declaration: HistogramDeclaration<L>): Histogram<L> => {
    const buckets = checkBuckets(declaration.name, declaration.buckets);
    return declare('histogram', declaration, buckets, (guard, definition) => {
      const target = backend.histogram({ ...definition, buckets });
      const zero = (fixed: Labels | undefined): void => {
        for (const labels of guard.combinations(fixed)) target.zero(labels);
      };
      if (!guard.bounded) zero(undefined);
      return {
        name: definition.name,
        observe(labels: Labels, value: number): void {
          const error = guard.check(labels);
          if (error !== undefined) {
            refuse(definition.name, error);
            return;
          }
          if (typeof value !== 'number' || !Number.isFinite(value)) {
            refuse(definition.name, new InvalidOptionError('value', `must be a finite number, got ${value}`));
            return;
          }
          if (guard.bounded) {
            const fresh = guard.admit(labels);
            if (fresh !== undefined) zero(fresh);
          }
          target.record(labels, value, exemplar());
        },
      } as unknown as Histogram<L>;
    });
  };

  return {
    counter,
    gauge,
    histogram,
    get refused() {
      return refused;
    },
  };
}

function checkBuckets(metric: string, buckets: readonly number[] | undefined): readonly number[] {
  const ok =
    Array.isArray(buckets) &&
    buckets.length > 0 &&
    buckets.every((b, i) => Number.isFinite(b) && (i === 0 || b > (buckets[i - 1] as number)));
  if (!ok)
    throw new InvalidOptionError(
      `${metric}.buckets`,
      'must be a non-empty, strictly increasing list of finite numbers',
    );
  return Object.freeze([...buckets]);
}

function noExemplar(): undefined {
  return undefined;
}

/** The current context's entity ids (then its request id) that fit in an exemplar's 128 characters. */
function contextExemplar(): Labels | undefined {
  const context = currentContext();
  if (context === undefined) return undefined;
  let exemplar: Record<string, string> | undefined;
  let size = 0;
  const add = (name: string, value: string | undefined): void => {
    if (value === undefined || size + name.length + value.length > EXEMPLAR_CHARS) return;
    exemplar ??= {};
    exemplar[name] = value;
    size += name.length + value.length;
  };
  for (const name in context.entities) add(name, context.entities[name]);
  add('requestId', context.requestId);
  return exemplar;
}
