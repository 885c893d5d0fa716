/**
 * Limit algorithms for the adaptive concurrency limiter, after Netflix's concurrency-limits. Each
 * watches completed calls — how long they took and how many were in flight — and moves the
 * concurrency limit: up while latency stays flat, down when it rises or calls are dropped. They
 * find the concurrency a dependency sustains without anyone configuring it, and follow it when it
 * changes.
 *
 * - {@link aimdLimit}: additive increase, multiplicative decrease on drops. Simple, reacts only to
 *   loss (timeouts, 429/503).
 * - {@link gradientLimit}: Gradient2 — compares short-term latency with a long-term average and
 *   shrinks the limit as queueing builds up.
 * - {@link vegasLimit}: TCP Vegas — estimates the queue from the lowest latency seen and keeps it
 *   between two thresholds.
 *
 * @module
 */
import { InvalidOptionError } from '../errors/keel-error.ts';
import { checkFunction, checkInteger, checkNumber } from './options.ts';

/**
 * One completed call, as a limit algorithm sees it. The limiter reuses one sample object for every
 * call, so an algorithm must copy what it wants to keep.
 */
export interface LimitSample {
  /** Clock time (ms) when the call was admitted. */
  readonly startTime: number;
  /** How long the call took, in milliseconds. */
  readonly rtt: number;
  /** Calls in flight when this one was admitted, itself included. */
  readonly inflight: number;
  /** True when the call was dropped: it timed out or the dependency refused it for overload. */
  readonly didDrop: boolean;
}

/** What every limit algorithm implements. */
export interface LimitAlgorithm {
  /** The current limit: a whole number from `minLimit` to `maxLimit`. */
  readonly limit: number;
  /** The limit never goes below this. */
  readonly minLimit: number;
  /** The limit never goes above this. */
  readonly maxLimit: number;
  /** Learns from one completed call and returns the new limit. */
  onSample(sample: LimitSample): number;
}

/** Bounds every algorithm accepts. */
export interface LimitBoundsOptions {
  /**
   * The limit before any call has completed.
   * @default 20, kept within `minLimit`..`maxLimit`
   */
  initialLimit?: number;
  /**
   * The lowest limit; a dependency in trouble still gets this many calls at once.
   * @default 1
   */
  minLimit?: number;
  /** The highest limit. @default 200 (1000 for Vegas) */
  maxLimit?: number;
}

/** Clamped so a call that completes in no measurable time (a fake clock, a cache hit) never divides by zero. */
const MIN_RTT_MS = 1e-3;

interface Bounds {
  readonly initial: number;
  readonly min: number;
  readonly max: number;
}

function checkBounds(options: LimitBoundsOptions, defaultMax: number): Bounds {
  const min = checkInteger('minLimit', options.minLimit ?? 1);
  const max = checkInteger('maxLimit', options.maxLimit ?? Math.max(defaultMax, min));
  if (min > max) {
    throw new InvalidOptionError('minLimit', `must be ≤ maxLimit (${max}), got ${min}`);
  }
  const initial =
    options.initialLimit === undefined
      ? Math.min(max, Math.max(min, 20))
      : checkInteger('initialLimit', options.initialLimit, min, max);
  return { initial, min, max };
}

function checkOpenFraction(option: string, value: number): number {
  if (typeof value !== 'number' || !(value > 0 && value < 1)) {
    throw new InvalidOptionError(option, `must be a fraction in (0, 1), got ${String(value)}`);
  }
  return value;
}

function checkSmoothing(value: number): number {
  if (typeof value !== 'number' || !(value > 0 && value <= 1)) {
    throw new InvalidOptionError('smoothing', `must be a fraction in (0, 1], got ${String(value)}`);
  }
  return value;
}

function clamp(value: number, min: number, max: number): number {
  return Math.max(min, Math.min(max, value));
}

/** Options of {@link aimdLimit}. */
export interface AimdLimitOptions extends LimitBoundsOptions {
  /**
   * The factor the limit is multiplied by on a drop or a slow call.
   * @default 0.9
   */
  backoffRatio?: number;
  /**
   * A call slower than this counts as a drop.
   * @default 5000
   */
  timeoutMs?: number;
}

const AIMD_DEFAULTS = Object.freeze({ maxLimit: 200, backoffRatio: 0.9, timeoutMs: 5_000 });

/** See {@link aimdLimit}. */
export class AimdLimit implements LimitAlgorithm {
  readonly minLimit: number;
  readonly maxLimit: number;
  readonly backoffRatio: number;
  readonly timeoutMs: number;
  #limit: number;

  constructor(options: AimdLimitOptions = {}) {
    const bounds = checkBounds(options, AIMD_DEFAULTS.maxLimit);
    this.minLimit = bounds.min;
    this.maxLimit = bounds.max;
    this.#limit = bounds.initial;
    this.backoffRatio = checkOpenFraction('backoffRatio', options.backoffRatio ?? AIMD_DEFAULTS.backoffRatio);
    this.timeoutMs = checkNumber('timeoutMs', options.timeoutMs ?? AIMD_DEFAULTS.timeoutMs, 0, true);
  }

  get limit(): number {
    return this.#limit;
  }

  onSample(sample: LimitSample): number {
    let next = this.#limit;
    if (sample.didDrop || sample.rtt > this.timeoutMs) {
      next = Math.floor(next * this.backoffRatio);
    } else if (sample.inflight * 2 >= next) {
      // Grow only when the limit was actually in use; an idle service proves nothing about capacity.
      next += 1;
    }
    this.#limit = clamp(next, this.minLimit, this.maxLimit);
    return this.#limit;
  }
}

/**
 * Additive increase, multiplicative decrease: +1 for each call that completes while the limit is at
 * least half used, × `backoffRatio` for each drop or call slower than `timeoutMs`.
 *
 * @example
 * const limiter = concurrencyLimiter({ limit: aimdLimit({ initialLimit: 10, maxLimit: 100 }) });
 */
export function aimdLimit(options: AimdLimitOptions = {}): AimdLimit {
  return new AimdLimit(options);
}

/** Options of {@link gradientLimit}. */
export interface GradientLimitOptions extends LimitBoundsOptions {
  /**
   * How much the short-term latency may exceed the long-term average before the limit shrinks.
   * @default 1.5
   */
  rttTolerance?: number;
  /**
   * The weight of each new estimate in the limit; lower is steadier and slower.
   * @default 0.2
   */
  smoothing?: number;
  /**
   * Headroom added to the estimate so the limit can grow; a number or a function of the limit.
   * @default 4
   */
  queueSize?: number | ((limit: number) => number);
  /**
   * Samples the long-term latency average spans.
   * @default 600
   */
  longWindow?: number;
}

const GRADIENT_DEFAULTS = Object.freeze({
  maxLimit: 200,
  rttTolerance: 1.5,
  smoothing: 0.2,
  queueSize: 4,
  longWindow: 600,
});

/** Samples averaged plainly before the exponential average takes over, so the first few do not dominate. */
const WARMUP_SAMPLES = 10;

/** See {@link gradientLimit}. */
export class GradientLimit implements LimitAlgorithm {
  readonly minLimit: number;
  readonly maxLimit: number;
  readonly rttTolerance: number;
  readonly smoothing: number;
  readonly #queueSize: (limit: number) => number;
  readonly #longFactor: number;
  #estimate: number;
  #longRtt = 0;
  #samples = 0;

  constructor(options: GradientLimitOptions = {}) {
    const bounds = checkBounds(options, GRADIENT_DEFAULTS.maxLimit);
    this.minLimit = bounds.min;
    this.maxLimit = bounds.max;
    this.#estimate = bounds.initial;
    this.rttTolerance = checkNumber(
      'rttTolerance',
      options.rttTolerance ?? GRADIENT_DEFAULTS.rttTolerance,
      1,
    );
    this.smoothing = checkSmoothing(options.smoothing ?? GRADIENT_DEFAULTS.smoothing);
    const queueSize = options.queueSize ?? GRADIENT_DEFAULTS.queueSize;
    if (typeof queueSize === 'number') {
      const fixed = checkNumber('queueSize', queueSize);
      this.#queueSize = () => fixed;
    } else {
      this.#queueSize = checkFunction('queueSize', queueSize);
    }
    const window = checkInteger('longWindow', options.longWindow ?? GRADIENT_DEFAULTS.longWindow);
    this.#longFactor = 2 / (window + 1);
  }

  get limit(): number {
    return Math.floor(this.#estimate);
  }

  /** The long-term latency average in milliseconds (0 before the first sample). */
  get longRtt(): number {
    return this.#longRtt;
  }

  onSample(sample: LimitSample): number {
    const estimate = this.#estimate;
    let gradient: number;
    if (sample.didDrop) {
      // A dropped call's rtt is cut short by its timeout and says little about queueing; treat it as
      // the strongest congestion signal the gradient allows instead of averaging it in.
      gradient = 0.5;
    } else {
      const shortRtt = Math.max(sample.rtt, MIN_RTT_MS);
      const longRtt = this.#addLongRtt(shortRtt);
      // After a long overload the average stays inflated; pull it down faster once latency recovers.
      if (longRtt / shortRtt > 2) this.#longRtt = longRtt * 0.95;
      if (sample.inflight < estimate / 2) return this.limit;
      gradient = Math.max(0.5, Math.min(1, (this.rttTolerance * longRtt) / shortRtt));
    }
    const target = estimate * gradient + this.#queueSize(estimate);
    const smoothed = estimate * (1 - this.smoothing) + target * this.smoothing;
    this.#estimate = clamp(smoothed, this.minLimit, this.maxLimit);
    return this.limit;
  }

  #addLongRtt(rtt: number): number {
    if (this.#samples < WARMUP_SAMPLES) {
      this.#samples++;
      this.#longRtt += (rtt - this.#longRtt) / this.#samples;
    } else {
      this.#longRtt = this.#longRtt * (1 - this.#longFactor) + rtt * this.#longFactor;
    }
    return this.#longRtt;
  }
}

/**
 * Gradient2 from Netflix's concurrency-limits: the limit follows `limit × gradient + queueSize`,
 * where the gradient `clamp(rttTolerance × longRtt / shortRtt, 0.5, 1)` falls below 1 as soon as
 * calls queue up and latency rises above its long-term average. Drops count as the lowest gradient.
 *
 * @example
 * const limiter = concurrencyLimiter({ limit: gradientLimit({ maxLimit: 500 }) });
 */
export function gradientLimit(options: GradientLimitOptions = {}): GradientLimit {
  return new GradientLimit(options);
}

/** Options of {@link vegasLimit}. */
export interface VegasLimitOptions extends LimitBoundsOptions {
  /**
   * Below `alphaFactor × log10(limit)` estimated queued calls the limit grows.
   * @default 3
   */
  alphaFactor?: number;
  /**
   * Above `betaFactor × log10(limit)` estimated queued calls the limit shrinks.
   * @default 6
   */
  betaFactor?: number;
  /**
   * The weight of each new estimate in the limit.
   * @default 1
   */
  smoothing?: number;
  /**
   * Every `probeMultiplier × limit` samples (jittered) the no-load latency is re-measured, so a
   * lasting shift in the dependency's baseline latency is followed. `Infinity` never probes.
   * @default 30
   */
  probeMultiplier?: number;
  /**
   * Source of the probe jitter, a number in [0, 1).
   * @default Math.random
   */
  random?: () => number;
}

const VEGAS_DEFAULTS = Object.freeze({
  maxLimit: 1_000,
  alphaFactor: 3,
  betaFactor: 6,
  smoothing: 1,
  probeMultiplier: 30,
});

/** See {@link vegasLimit}. */
export class VegasLimit implements LimitAlgorithm {
  readonly minLimit: number;
  readonly maxLimit: number;
  readonly alphaFactor: number;
  readonly betaFactor: number;
  readonly smoothing: number;
  readonly probeMultiplier: number;
  readonly #random: () => number;
  #estimate: number;
  #rttNoLoad = Number.POSITIVE_INFINITY;
  #probeCount = 0;
  #probeJitter: number;

  constructor(options: VegasLimitOptions = {}) {
    const bounds = checkBounds(options, VEGAS_DEFAULTS.maxLimit);
    this.minLimit = bounds.min;
    this.maxLimit = bounds.max;
    this.#estimate = bounds.initial;
    this.alphaFactor = checkNumber('alphaFactor', options.alphaFactor ?? VEGAS_DEFAULTS.alphaFactor);
    this.betaFactor = checkNumber('betaFactor', options.betaFactor ?? VEGAS_DEFAULTS.betaFactor);
    if (this.betaFactor < this.alphaFactor) {
      throw new InvalidOptionError(
        'betaFactor',
        `must be ≥ alphaFactor (${this.alphaFactor}), got ${this.betaFactor}`,
      );
    }
    this.smoothing = checkSmoothing(options.smoothing ?? VEGAS_DEFAULTS.smoothing);
    this.probeMultiplier = checkNumber(
      'probeMultiplier',
      options.probeMultiplier ?? VEGAS_DEFAULTS.probeMultiplier,
      1,
      true,
    );
    this.#random = checkFunction('random', options.random ?? Math.random);
    this.#probeJitter = this.#nextJitter();
  }

  get limit(): number {
    return Math.floor(this.#estimate);
  }

  /** The lowest latency seen since the last probe, in milliseconds (`Infinity` before any sample). */
  get rttNoLoad(): number {
    return this.#rttNoLoad;
  }

  onSample(sample: LimitSample): number {
    const estimate = this.#estimate;
    const step = Math.max(1, Math.floor(Math.log10(estimate)));
    let target: number;
    if (sample.didDrop) {
      target = estimate - step;
    } else {
      const rtt = Math.max(sample.rtt, MIN_RTT_MS);
      this.#probeCount++;
      if (this.#probeCount >= this.#probeJitter * this.probeMultiplier * estimate) {
        this.#probeCount = 0;
        this.#probeJitter = this.#nextJitter();
        this.#rttNoLoad = rtt;
        return this.limit;
      }
      if (rtt < this.#rttNoLoad) {
        this.#rttNoLoad = rtt;
        return this.limit;
      }
      if (sample.inflight * 2 < estimate) return this.limit;
      const queued = Math.ceil(estimate * (1 - this.#rttNoLoad / rtt));
      if (queued <= step) target = estimate + this.betaFactor * step;
      else if (queued < this.alphaFactor * step) target = estimate + step;
      else if (queued > this.betaFactor * step) target = estimate - step;
      else return this.limit;
    }
    const bounded = clamp(target, this.minLimit, this.maxLimit);
    this.#estimate = estimate * (1 - this.smoothing) + bounded * this.smoothing;
    return this.limit;
  }

  #nextJitter(): number {
    return 0.5 + this.#random() * 0.5;
  }
}

/**
 * TCP Vegas applied to concurrency: with `rttNoLoad` the lowest latency seen, the calls queued at the
 * dependency are about `limit × (1 − rttNoLoad / rtt)`. Few queued — grow; many — shrink; a drop
 * shrinks.
 *
 * @example
 * const limiter = concurrencyLimiter({ limit: vegasLimit({ initialLimit: 10 }) });
 */
export function vegasLimit(options: VegasLimitOptions = {}): VegasLimit {
  return new VegasLimit(options);
}
