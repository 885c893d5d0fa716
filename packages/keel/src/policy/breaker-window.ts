/**
 * The sliding windows a circuit breaker judges a dependency by: the last N outcomes in a row
 * (`consecutive`), the last N calls (`count`), or the last N seconds in clock-aligned buckets
 * (`time`). Each is a fixed ring allocated once at construction with running totals, so recording
 * an outcome is a few array writes and no allocation, and deciding whether to trip is arithmetic on
 * the totals.
 *
 * @module
 */
import { InvalidOptionError } from '../errors/keel-error.ts';
import { checkAbove, checkInteger, checkNumber, checkOneOf } from './options.ts';

/** Outcome bit: the call failed. */
export const OUTCOME_FAILED = 1;
/** Outcome bit: the call took longer than the slow-call threshold (whether or not it failed). */
export const OUTCOME_SLOW = 2;

/**
 * Which window a breaker keeps.
 *
 * @example
 * circuitBreaker({ window: { kind: 'consecutive', size: 5 } }); // open after 5 failures in a row
 * circuitBreaker({ window: { kind: 'count', size: 50 } }); // judge the last 50 calls
 * circuitBreaker({ window: { kind: 'time', seconds: 30 } }); // judge the last 30 s, bucketed per second
 */
export type BreakerWindowOptions =
  | {
      /** Trips after `size` failures in a row (or `size` slow calls in a row). */
      kind: 'consecutive';
      size: number;
    }
  | {
      /** Judges the rates over the last `size` calls. */
      kind: 'count';
      size: number;
    }
  | {
      /** Judges the rates over the calls that ended in the last `seconds`. */
      kind: 'time';
      seconds: number;
      /**
       * Width of one bucket; outcomes leave the window a bucket at a time.
       * @default 1000
       */
      bucketMs?: number;
    };

/** What a window is compared against; a breaker trips when either rate reaches its threshold. */
export interface BreakerThresholds {
  /** Fraction of failed calls (0–1) that trips the breaker. */
  readonly failureRate: number;
  /** Fraction of slow calls (0–1) that trips the breaker. */
  readonly slowCallRate: number;
  /** Calls the window must hold before the rates are judged at all. */
  readonly minimumCalls: number;
}

/**
 * The serialisable contents of a window. Time buckets are stored by age (`bucketsAgo`) because
 * monotonic clock readings mean nothing in another process.
 */
export type BreakerWindowState =
  | { readonly kind: 'consecutive'; readonly failures: number; readonly slowCalls: number }
  | { readonly kind: 'count'; readonly outcomes: readonly number[] }
  | {
      readonly kind: 'time';
      readonly bucketMs: number;
      readonly buckets: readonly {
        readonly bucketsAgo: number;
        readonly calls: number;
        readonly failures: number;
        readonly slowCalls: number;
      }[];
    };

/** A sliding window of call outcomes. */
export interface BreakerWindow {
  readonly kind: BreakerWindowOptions['kind'];
  /** Records one outcome (a mix of {@link OUTCOME_FAILED} and {@link OUTCOME_SLOW}); true when the thresholds are now breached. */
  record(outcome: number, now: number): boolean;
  /** Drops outcomes that have left the window by `now` (only the time window has any). */
  advance(now: number): void;
  /** Calls in the window (for `consecutive`: the length of the current bad run). */
  readonly calls: number;
  readonly failures: number;
  readonly slowCalls: number;
  /** Forgets every outcome. */
  clear(): void;
  toJSON(now: number): BreakerWindowState;
  /** Loads outcomes saved by `toJSON`, keeping only what fits this window. */
  restore(state: BreakerWindowState, now: number): void;
}

/** True when `part / whole` reaches `threshold`; a rate with no bad calls never trips, even at threshold 0. */
function breached(part: number, whole: number, threshold: number): boolean {
  return part > 0 && part / whole >= threshold;
}

/**
 * Failures in a row. A call that did not fail ends the failure run; a call that was not slow ends
 * the slow run.
 *
 * @example
 * const window = new ConsecutiveWindow(3);
 * window.record(OUTCOME_FAILED, 0); // false
 */
export class ConsecutiveWindow implements BreakerWindow {
  readonly kind = 'consecutive';
  readonly size: number;
  failures = 0;
  slowCalls = 0;

  constructor(size: number) {
    this.size = size;
  }

  get calls(): number {
    return Math.max(this.failures, this.slowCalls);
  }

  record(outcome: number): boolean {
    this.failures = (outcome & OUTCOME_FAILED) === 0 ? 0 : this.failures + 1;
    this.slowCalls = (outcome & OUTCOME_SLOW) === 0 ? 0 : this.slowCalls + 1;
    return this.failures >= this.size || this.slowCalls >= this.size;
  }

  advance(): void {}

  clear(): void {
    this.failures = 0;
    this.slowCalls = 0;
  }

  toJSON(): BreakerWindowState {
    return { kind: 'consecutive', failures: this.failures, slowCalls: this.slowCalls };
  }

  restore(state: BreakerWindowState): void {
    if (state.kind !== 'consecutive') throw kindMismatch(this.kind, state.kind);
    this.failures = Math.min(state.failures, this.size);
    this.slowCalls = Math.min(state.slowCalls, this.size);
  }
}

/**
 * The last `size` calls in a ring of outcome bytes with running totals.
 *
 * @example
 * const window = new CountWindow(10, { failureRate: 0.5, slowCallRate: 1, minimumCalls: 4 });
 */
export class CountWindow implements BreakerWindow {
  readonly kind = 'count';
  readonly size: number;
  readonly #thresholds: BreakerThresholds;
  /** `minimumCalls`, capped at the size so a small window can still trip. */
  readonly #minimumCalls: number;
  readonly #ring: Uint8Array;
  #next = 0;
  calls = 0;
  failures = 0;
  slowCalls = 0;

  constructor(size: number, thresholds: BreakerThresholds) {
    this.size = size;
    this.#thresholds = thresholds;
    this.#minimumCalls = Math.min(thresholds.minimumCalls, size);
    this.#ring = new Uint8Array(size);
  }

  record(outcome: number): boolean {
    const i = this.#next;
    if (this.calls === this.size) {
      const evicted = this.#ring[i] as number;
      this.failures -= evicted & OUTCOME_FAILED;
      this.slowCalls -= (evicted & OUTCOME_SLOW) >> 1;
    } else {
      this.calls++;
    }
    this.#ring[i] = outcome;
    this.failures += outcome & OUTCOME_FAILED;
    this.slowCalls += (outcome & OUTCOME_SLOW) >> 1;
    this.#next = i + 1 === this.size ? 0 : i + 1;
    if (this.calls < this.#minimumCalls) return false;
    const t = this.#thresholds;
    return (
      breached(this.failures, this.calls, t.failureRate) ||
      breached(this.slowCalls, this.calls, t.slowCallRate)
    );
  }

  advance(): void {}

  clear(): void {
    this.#ring.fill(0);
    this.#next = 0;
    this.calls = 0;
    this.failures = 0;
    this.slowCalls = 0;
  }

  toJSON(): BreakerWindowState {
    const outcomes: number[] = [];
    const start = this.calls === this.size ? this.#next : 0;
    for (let k = 0; k < this.calls; k++) outcomes.push(this.#ring[(start + k) % this.size] as number);
    return { kind: 'count', outcomes };
  }

  restore(state: BreakerWindowState): void {
    if (state.kind !== 'count') throw kindMismatch(this.kind, state.kind);
    this.clear();
    const { outcomes } = state;
    for (let k = Math.max(0, outcomes.length - this.size); k < outcomes.length; k++) {
      this.record(outcomes[k] as number);
    }
  }
}

/**
 * The calls that ended in the last `windowMs`, counted in buckets of `bucketMs` aligned on the
 * clock. A bucket is emptied when time rolls past it, so reading the window never scans it.
 *
 * @example
 * const window = new TimeWindow(10_000, 1_000, { failureRate: 0.5, slowCallRate: 1, minimumCalls: 20 });
 */
export class TimeWindow implements BreakerWindow {
  readonly kind = 'time';
  readonly bucketMs: number;
  readonly #thresholds: BreakerThresholds;
  readonly #buckets: number;
  readonly #calls: Uint32Array;
  readonly #failures: Uint32Array;
  readonly #slow: Uint32Array;
  /** Index (`floor(now / bucketMs)`) of the newest bucket the ring holds. */
  #head = Number.NEGATIVE_INFINITY;
  calls = 0;
  failures = 0;
  slowCalls = 0;

  constructor(windowMs: number, bucketMs: number, thresholds: BreakerThresholds) {
    this.bucketMs = bucketMs;
    this.#thresholds = thresholds;
    this.#buckets = Math.ceil(windowMs / bucketMs);
    this.#calls = new Uint32Array(this.#buckets);
    this.#failures = new Uint32Array(this.#buckets);
    this.#slow = new Uint32Array(this.#buckets);
  }

  record(outcome: number, now: number): boolean {
    const index = Math.floor(now / this.bucketMs);
    if (index > this.#head) this.#roll(index);
    const slot = this.#slot(this.#head);
    const failed = outcome & OUTCOME_FAILED;
    const slow = (outcome & OUTCOME_SLOW) >> 1;
    this.#calls[slot] = (this.#calls[slot] as number) + 1;
    this.#failures[slot] = (this.#failures[slot] as number) + failed;
    this.#slow[slot] = (this.#slow[slot] as number) + slow;
    this.calls++;
    this.failures += failed;
    this.slowCalls += slow;
    if (this.calls < this.#thresholds.minimumCalls) return false;
    const t = this.#thresholds;
    return (
      breached(this.failures, this.calls, t.failureRate) ||
      breached(this.slowCalls, this.calls, t.slowCallRate)
    );
  }

  advance(now: number): void {
    const index = Math.floor(now / this.bucketMs);
    if (index > this.#head) this.#roll(index);
  }

  clear(): void {
    this.#calls.fill(0);
    this.#failures.fill(0);
    this.#slow.fill(0);
    this.#head = Number.NEGATIVE_INFINITY;
    this.calls = 0;
    this.failures = 0;
    this.slowCalls = 0;
  }

  toJSON(now: number): BreakerWindowState {
    this.advance(now);
    const buckets: {
      bucketsAgo: number;
      calls: number;
      failures: number;
      slowCalls: number;
    }[] = [];
    for (let ago = this.#buckets - 1; ago >= 0 && this.calls > 0; ago--) {
      const slot = this.#slot(this.#head - ago);
      const calls = this.#calls[slot] as number;
      if (calls === 0) continue;
      buckets.push({
        bucketsAgo: ago,
        calls,
        failures: this.#failures[slot] as number,
        slowCalls: this.#slow[slot] as number,
      });
    }
    return { kind: 'time', bucketMs: this.bucketMs, buckets };
  }

  restore(state: BreakerWindowState, now: number): void {
    if (state.kind !== 'time') throw kindMismatch(this.kind, state.kind);
    this.clear();
    this.#roll(Math.floor(now / this.bucketMs));
    for (const bucket of state.buckets) {
      // Re-bucket by age so a changed `bucketMs` still keeps whatever is young enough.
      const ago = Math.floor((bucket.bucketsAgo * state.bucketMs) / this.bucketMs);
      if (ago >= this.#buckets) continue;
      const slot = this.#slot(this.#head - ago);
      this.#calls[slot] = (this.#calls[slot] as number) + bucket.calls;
      this.#failures[slot] = (this.#failures[slot] as number) + bucket.failures;
      this.#slow[slot] = (this.#slow[slot] as number) + bucket.slowCalls;
      this.calls += bucket.calls;
      this.failures += bucket.failures;
      this.slowCalls += bucket.slowCalls;
    }
  }

  #slot(index: number): number {
    const slot = index % this.#buckets;
    return slot < 0 ? slot + this.#buckets : slot;
  }

  /** Moves the head to `index`, emptying every bucket that time has rolled past. */
  #roll(index: number): void {
    const from = Math.max(this.#head + 1, index - this.#buckets + 1);
    for (let k = from; k <= index; k++) {
      const slot = this.#slot(k);
      this.calls -= this.#calls[slot] as number;
      this.failures -= this.#failures[slot] as number;
      this.slowCalls -= this.#slow[slot] as number;
      this.#calls[slot] = 0;
      this.#failures[slot] = 0;
      this.#slow[slot] = 0;
    }
    this.#head = index;
  }
}

/** The most buckets a time window may hold, so a typo in `bucketMs` cannot allocate gigabytes. */
const MAX_TIME_BUCKETS = 100_000;

/**
 * Validates window options and builds the window.
 *
 * @example
 * const window = createBreakerWindow({ kind: 'count', size: 20 }, { failureRate: 0.5, slowCallRate: 1, minimumCalls: 10 });
 */
export function createBreakerWindow(
  options: BreakerWindowOptions,
  thresholds: BreakerThresholds,
): BreakerWindow {
  if (typeof options !== 'object' || options === null) {
    throw new InvalidOptionError('window', `must be an object with a kind, got ${String(options)}`);
  }
  const kind = checkOneOf('window.kind', options.kind, ['consecutive', 'count', 'time']);
  if (kind === 'consecutive')
    return new ConsecutiveWindow(checkInteger('window.size', (options as { size: number }).size));
  if (kind === 'count')
    return new CountWindow(checkInteger('window.size', (options as { size: number }).size), thresholds);
  const time = options as { seconds: number; bucketMs?: number };
  const windowMs = checkNumber('window.seconds', time.seconds, 1) * 1000;
  const bucketMs = checkAbove('window.bucketMs', time.bucketMs ?? 1000, 0);
  if (bucketMs > windowMs) {
    throw new InvalidOptionError(
      'window.bucketMs',
      `must not exceed the window (${windowMs} ms), got ${bucketMs}`,
    );
  }
  if (windowMs / bucketMs > MAX_TIME_BUCKETS) {
    throw new InvalidOptionError(
      'window.bucketMs',
      `makes ${Math.ceil(windowMs / bucketMs)} buckets; at most ${MAX_TIME_BUCKETS} are allowed`,
    );
  }
  return new TimeWindow(windowMs, bucketMs, thresholds);
}

function kindMismatch(expected: string, got: string): InvalidOptionError {
  return new InvalidOptionError(
    'initialState',
    `holds a '${got}' window but this breaker keeps a '${expected}' window`,
  );
}
