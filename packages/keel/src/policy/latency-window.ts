/**
 * The latest latencies of a dependency and their percentiles. A fixed-size ring keeps the last
 * `size` samples, so the percentiles follow the dependency as it speeds up or slows down and memory
 * stays constant; recording is one array write. A percentile is an exact nearest-rank value over the
 * window, found by selection (linear time) in a scratch buffer allocated once.
 *
 * @module
 */
import { checkFraction, checkInteger } from './options.ts';

/** Options of {@link LatencyWindow}. */
export interface LatencyWindowOptions {
  /**
   * How many of the latest samples the window keeps.
   * @default 256
   */
  size?: number;
}

const DEFAULTS = Object.freeze({ size: 256 });

/**
 * The last `size` latencies, with nearest-rank percentiles.
 *
 * @example
 * const latencies = new LatencyWindow({ size: 128 });
 * latencies.record(clock.now() - startedAt);
 * const p99 = latencies.percentile(0.99);
 */
export class LatencyWindow {
  readonly size: number;
  readonly #samples: Float64Array;
  readonly #scratch: Float64Array;
  #next = 0;
  #count = 0;

  constructor(options: LatencyWindowOptions = {}) {
    this.size = checkInteger('size', options.size ?? DEFAULTS.size);
    this.#samples = new Float64Array(this.size);
    this.#scratch = new Float64Array(this.size);
  }

  /** Samples held, up to `size`. */
  get count(): number {
    return this.#count;
  }

  /** Adds one latency in milliseconds, evicting the oldest when the window is full. */
  record(ms: number): void {
    this.#samples[this.#next] = ms;
    this.#next = this.#next + 1 === this.size ? 0 : this.#next + 1;
    if (this.#count < this.size) this.#count++;
  }

  /**
   * The smallest sample that at least `p` of the samples do not exceed (`p` in (0, 1]); `NaN` when the
   * window is empty.
   */
  percentile(p: number): number {
    checkFraction('percentile', p, true);
    const n = this.#count;
    if (n === 0) return Number.NaN;
    const scratch = this.#scratch;
    scratch.set(n === this.size ? this.#samples : this.#samples.subarray(0, n));
    return select(scratch, n, Math.max(0, Math.ceil(p * n) - 1));
  }

  /** Forgets every sample. */
  clear(): void {
    this.#next = 0;
    this.#count = 0;
  }
}

/** The `k`-th smallest of `a[0..n)` (Hoare's selection), reordering `a` in place. */
function select(a: Float64Array, n: number, k: number): number {
  let lo = 0;
  let hi = n - 1;
  while (lo < hi) {
    const pivot = a[(lo + hi) >>> 1] as number;
    let i = lo;
    let j = hi;
    while (i <= j) {
      while ((a[i] as number) < pivot) i++;
      while ((a[j] as number) > pivot) j--;
      if (i <= j) {
        const t = a[i] as number;
        a[i] = a[j] as number;
        a[j] = t;
        i++;
        j--;
      }
    }
    if (k <= j) hi = j;
    else if (k >= i) lo = i;
    else break;
  }
  return a[k] as number;
}
