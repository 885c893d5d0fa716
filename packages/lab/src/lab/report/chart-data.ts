/**
 * @module
 * Turns a run's timeline into the charts the report draws, as columns uPlot reads directly: one
 * latency chart (p50/p95/p99) per request class, one goodput chart for all classes, and a breaker
 * chart when any breaker changed state. Each chart carries the run's fault windows, alerts and
 * marks to overlay. Charts of the same kind share their axes' ranges across the naive and guarded
 * runs of a scenario, so the two can be compared by eye. Whatever classes, breakers or alerts a
 * scenario fills are drawn; none is assumed.
 */
import type { ModeResult, RunTimeline } from '../scenario.ts';
import type { BucketSummary } from '../time-buckets.ts';

/** The kinds of chart, in the order a run shows them. */
export type ChartKind = 'latency' | 'goodput' | 'breakers';

export interface ChartSeries {
  readonly label: string;
  /** A CSS colour; the series' line. */
  readonly color: string;
  /** One value per entry of the chart's `x`; `null` where there is none (an empty bucket). */
  readonly values: readonly (number | null)[];
}

/** One chart, ready for uPlot: seconds on x, the overlays in seconds too. */
export interface ChartSpec {
  /** The id of the element the chart is drawn in. */
  readonly id: string;
  readonly kind: ChartKind;
  /** Charts with the same key move their cursors together (the charts of one run). */
  readonly syncKey: string;
  readonly title: string;
  readonly yLabel: string;
  readonly x: readonly number[];
  readonly series: readonly ChartSeries[];
  /** The x axis runs from 0 to here, in s. */
  readonly xMax: number;
  /** The y axis runs up to at least here (shared with the other mode's chart). */
  readonly yMax: number;
  /** A logarithmic y axis (latency, where a timeout dwarfs the median). */
  readonly logY: boolean;
  /** Names of the y values 0, 1, 2, … (breaker states); none for plain numbers. */
  readonly yNames?: readonly string[];
  /** Drawn as steps (a state holds until it changes). */
  readonly stepped: boolean;
  readonly faults: readonly { readonly label: string; readonly fromS: number; readonly toS: number }[];
  readonly alerts: readonly {
    readonly atS: number;
    readonly label: string;
    readonly status: 'firing' | 'resolved';
  }[];
  readonly marks: readonly { readonly atS: number; readonly label: string }[];
}

/** Colours of request classes and breakers, in order; none is a marker's colour. */
export const SERIES_COLORS: readonly string[] = Object.freeze([
  '#2563eb',
  '#d97706',
  '#7c3aed',
  '#0891b2',
  '#db2777',
  '#65a30d',
]);

const PERCENTILES = Object.freeze([
  { label: 'p50', key: 'p50Ms', color: '#2563eb' },
  { label: 'p95', key: 'p95Ms', color: '#d97706' },
  { label: 'p99', key: 'p99Ms', color: '#7c3aed' },
] as const);

/** Breaker states from healthiest to most cut off, as the breaker chart's y values. */
export const BREAKER_STATES: readonly string[] = Object.freeze(['closed', 'half-open', 'open', 'isolated']);

/** The smallest latency a log axis shows, in ms: a 0 would have no place on it. */
const LATENCY_FLOOR_MS = 0.1;

const seconds = (ms: number) => Math.round(ms) / 1_000;

/** The end of a run's timeline, in ms: its last bucket, fault, alert, mark or breaker change. */
function timelineEndMs(chart: RunTimeline): number {
  const ends = [
    ...Object.values(chart.series).map((buckets) => (buckets.at(-1)?.fromMs ?? 0) + chart.bucketMs),
    ...chart.faults.map((fault) => fault.toMs),
    ...chart.alerts.map((alert) => alert.atMs),
    ...chart.marks.map((mark) => mark.atMs),
    ...chart.breakers.map((sample) => sample.atMs),
  ];
  return Math.max(0, ...ends.filter(Number.isFinite));
}

function colorOf(index: number): string {
  return SERIES_COLORS[index % SERIES_COLORS.length] as string;
}

/** Every bucket start of `series`, ascending, each once. */
function bucketStarts(series: readonly (readonly BucketSummary[])[]): number[] {
  return [...new Set(series.flatMap((buckets) => buckets.map((bucket) => bucket.fromMs)))].sort(
    (x, y) => x - y,
  );
}

function overlays(chart: RunTimeline): Pick<ChartSpec, 'faults' | 'alerts' | 'marks'> {
  return {
    faults: chart.faults.map((fault) => ({
      label: fault.label,
      fromS: seconds(fault.fromMs),
      toS: seconds(fault.toMs),
    })),
    alerts: chart.alerts.map((alert) => ({
      atS: seconds(alert.atMs),
      label: `${alert.alert} ${alert.status}`,
      status: alert.status,
    })),
    marks: chart.marks.map((mark) => ({ atS: seconds(mark.atMs), label: mark.label })),
  };
}

type ChartBase = Pick<ChartSpec, 'syncKey' | 'xMax' | 'faults' | 'alerts' | 'marks'>;

function latencyChart(
  base: ChartBase,
  id: string,
  name: string,
  buckets: readonly BucketSummary[],
): ChartSpec {
  return {
    ...base,
    id,
    kind: 'latency',
    title: `${name} latency`,
    yLabel: 'ms (log)',
    x: buckets.map((bucket) => seconds(bucket.fromMs)),
    series: PERCENTILES.map((percentile) => ({
      label: percentile.label,
      color: percentile.color,
      values: buckets.map((bucket) =>
        bucket.count > 0 ? Math.max(LATENCY_FLOOR_MS, bucket[percentile.key]) : null,
      ),
    })),
    yMax: Math.max(1, ...buckets.map((bucket) => bucket.p99Ms)),
    logY: true,
    stepped: false,
  };
}

function goodputChart(base: ChartBase, id: string, chart: RunTimeline): ChartSpec {
  const names = Object.keys(chart.series);
  const x = bucketStarts(Object.values(chart.series));
  const series = names.map((name, index) => {
    const byStart = new Map((chart.series[name] ?? []).map((bucket) => [bucket.fromMs, bucket]));
    return {
      label: name,
      color: colorOf(index),
      values: x.map((fromMs) => byStart.get(fromMs)?.goodputPerSecond ?? null),
    };
  });
  return {
    ...base,
    id,
    kind: 'goodput',
    title: 'goodput (successful answers per second)',
    yLabel: 'ok/s',
    x: x.map(seconds),
    series,
    yMax: Math.max(1, ...series.flatMap((one) => one.values.map((value) => value ?? 0))),
    logY: false,
    stepped: false,
  };
}

function breakerChart(base: ChartBase, id: string, chart: RunTimeline, endMs: number): ChartSpec {
  const samples = [...chart.breakers].sort((x, y) => x.atMs - y.atMs);
  const names = [...new Set(samples.map((sample) => sample.breaker))];
  const x = [...new Set([0, ...samples.map((sample) => sample.atMs), endMs])].sort((a, b) => a - b);
  const series = names.map((name, index) => {
    const own = samples.filter((sample) => sample.breaker === name);
    return {
      label: name,
      color: colorOf(index),
      // The state a breaker was last seen in holds until its next change; before its first, unknown.
      values: x.map((atMs) => {
        const last = own.filter((sample) => sample.atMs <= atMs).at(-1);
        return last === undefined ? null : BREAKER_STATES.indexOf(last.state);
      }),
    };
  });
  return {
    ...base,
    id,
    kind: 'breakers',
    title: 'breaker states',
    yLabel: 'state',
    x: x.map(seconds),
    series,
    yMax: BREAKER_STATES.length - 1,
    logY: false,
    yNames: BREAKER_STATES,
    stepped: true,
  };
}

/**
 * The charts of one run, in the order it shows them; `idPrefix` makes their element ids unique in
 * the page.
 *
 * @example
 * const charts = runCharts(result.guarded, 'chart-0-guarded');
 * charts.map((chart) => chart.kind); // ['latency', 'goodput', 'breakers']
 */
export function runCharts(run: Pick<ModeResult<object>, 'chart'>, idPrefix: string): ChartSpec[] {
  const chart = run.chart;
  const endMs = timelineEndMs(chart);
  const base: ChartBase = { syncKey: idPrefix, xMax: Math.max(seconds(endMs), 0.001), ...overlays(chart) };
  const withRequests = Object.entries(chart.series).filter(([, buckets]) =>
    buckets.some((bucket) => bucket.count > 0),
  );
  const charts = withRequests.map(([name, buckets], index) =>
    latencyChart(base, `${idPrefix}-latency-${index}`, name, buckets),
  );
  if (withRequests.length > 0) charts.push(goodputChart(base, `${idPrefix}-goodput`, chart));
  if (chart.breakers.length > 0) charts.push(breakerChart(base, `${idPrefix}-breakers`, chart, endMs));
  return charts;
}

/**
 * Gives the charts of a scenario's runs that draw the same thing (same kind and title) the same x
 * and y ranges, the widest of them, so naive and guarded read on one scale.
 *
 * @example
 * const [naive, guarded] = shareRanges([runCharts(result.naive, 'n'), runCharts(result.guarded, 'g')]);
 */
export function shareRanges(runs: readonly (readonly ChartSpec[])[]): ChartSpec[][] {
  const xMax = Math.max(0.001, ...runs.flat().map((chart) => chart.xMax));
  const yMax = new Map<string, number>();
  for (const chart of runs.flat()) {
    const key = `${chart.kind}:${chart.title}`;
    yMax.set(key, Math.max(yMax.get(key) ?? 0, chart.yMax));
  }
  return runs.map((charts) =>
    charts.map((chart) => ({ ...chart, xMax, yMax: yMax.get(`${chart.kind}:${chart.title}`) ?? chart.yMax })),
  );
}
