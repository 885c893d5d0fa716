/**
 * @module
 * Latency and outcomes of requests, kept in fixed time buckets from the start of a run, so a report
 * can draw percentiles over time (a fault window shows as a bump, not as a blur in one average) and
 * goodput — successful answers per second — as it rose and fell. Latency goes to the bucket the
 * request *started* in (what a user arriving then saw); goodput to the bucket it *finished* in.
 */
import { checkInteger, checkNumber } from 'keel';

/** How a request ended, as a client saw it: answered well, refused, or unknown (timed out, cut off). */
export type OutcomeKind = 'ok' | 'fail' | 'unknown';

/** Latency percentiles and counts of a set of requests; latencies in milliseconds. */
export interface LatencySummary {
  readonly count: number;
  readonly ok: number;
  readonly fail: number;
  readonly unknown: number;
  readonly p50Ms: number;
  readonly p95Ms: number;
  readonly p99Ms: number;
  readonly maxMs: number;
}

/** One bucket: the requests that started in it, and the successes that finished in it. */
export interface BucketSummary extends LatencySummary {
  /** Start of the bucket, in ms from the start of the run. */
  readonly fromMs: number;
  /** Successful answers per second that finished in this bucket. */
  readonly goodputPerSecond: number;
}

export interface TimeBucketsOptions {
  /** Width of a bucket, in ms. @default 1000 */
  bucketMs?: number;
  /** Start of the run, on the same clock as the times recorded (ms). */
  startedAtMs: number;
}

interface Bucket {
  latencies: number[];
  ok: number;
  fail: number;
  unknown: number;
  finishedOk: number;
}

/**
 * The value at quantile `q` of ascending `sorted` (nearest rank); 0 when empty.
 *
 * @example
 * quantile([10, 20, 30, 40], 0.5); // 20
 */
export function quantile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return 0;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[rank] ?? 0;
}

function summarize(latencies: readonly number[], ok: number, fail: number, unknown: number): LatencySummary {
  const sorted = [...latencies].sort((x, y) => x - y);
  const round = (value: number) => Math.round(value * 10) / 10;
  return {
    count: latencies.length,
    ok,
    fail,
    unknown,
    p50Ms: round(quantile(sorted, 0.5)),
    p95Ms: round(quantile(sorted, 0.95)),
    p99Ms: round(quantile(sorted, 0.99)),
    maxMs: round(sorted.at(-1) ?? 0),
  };
}

/**
 * @example
 * const buckets = new TimeBuckets({ startedAtMs: performance.now(), bucketMs: 500 });
 * buckets.record(started, performance.now(), 'ok');
 * buckets.summary(); // [{ fromMs: 0, count, p50Ms, p99Ms, goodputPerSecond, … }, …]
 */
export class TimeBuckets {
  readonly bucketMs: number;
  readonly startedAtMs: number;
  readonly #buckets: Bucket[] = [];

  constructor(options: TimeBucketsOptions) {
    this.bucketMs = checkInteger('bucketMs', options.bucketMs ?? 1_000);
    this.startedAtMs = checkNumber('startedAtMs', options.startedAtMs);
  }

  /** Records one request that started at `startedAtMs` and ended at `finishedAtMs` with `kind`. */
  record(startedAtMs: number, finishedAtMs: number, kind: OutcomeKind): void {
    const started = this.#bucket(startedAtMs);
    started.latencies.push(Math.max(0, finishedAtMs - startedAtMs));
    started[kind]++;
    if (kind === 'ok') this.#bucket(finishedAtMs).finishedOk++;
  }

  /** Every bucket from the start of the run to the last one touched, empty ones included. */
  summary(): BucketSummary[] {
    return Array.from(this.#buckets, (bucket = emptyBucket(), index) => ({
      fromMs: index * this.bucketMs,
      ...summarize(bucket.latencies, bucket.ok, bucket.fail, bucket.unknown),
      goodputPerSecond: Math.round((bucket.finishedOk * 1_000 * 10) / this.bucketMs) / 10,
    }));
  }

  /** All requests of the run together. */
  overall(): LatencySummary {
    const all = this.#buckets.filter((bucket) => bucket !== undefined);
    return summarize(
      all.flatMap((bucket) => bucket.latencies),
      all.reduce((sum, bucket) => sum + bucket.ok, 0),
      all.reduce((sum, bucket) => sum + bucket.fail, 0),
      all.reduce((sum, bucket) => sum + bucket.unknown, 0),
    );
  }

  #bucket(atMs: number): Bucket {
    const index = Math.max(0, Math.floor((atMs - this.startedAtMs) / this.bucketMs));
    for (let i = this.#buckets.length; i <= index; i++) this.#buckets[i] = emptyBucket();
    return this.#buckets[index] as Bucket;
  }
}

function emptyBucket(): Bucket {
  return { latencies: [], ok: 0, fail: 0, unknown: 0, finishedOk: 0 };
}
