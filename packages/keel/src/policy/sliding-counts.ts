import type { Clock } from './clock.ts';

/**
 * Two counters over a sliding window of time buckets, kept in ring buffers: adding is O(1) and
 * allocation-free, and buckets that fall out of the window are cleared lazily on the next touch.
 * Retry budgets count requests and retries with it; adaptive throttling, requests and accepts.
 */
export class SlidingCounts {
  readonly #clock: Clock;
  readonly #bucketMs: number;
  readonly #first: Float64Array;
  readonly #second: Float64Array;
  #current: number;
  #firstSum = 0;
  #secondSum = 0;

  constructor(clock: Clock, bucketMs: number, buckets: number) {
    this.#clock = clock;
    this.#bucketMs = bucketMs;
    this.#first = new Float64Array(buckets);
    this.#second = new Float64Array(buckets);
    this.#current = Math.floor(clock.now() / bucketMs);
  }

  /** Sum of the first counter over the window. */
  get first(): number {
    this.#rotate();
    return this.#firstSum;
  }

  /** Sum of the second counter over the window. */
  get second(): number {
    this.#rotate();
    return this.#secondSum;
  }

  /** The first counter's sum without its oldest bucket: what will still count one bucket from now. */
  get firstWithoutOldest(): number {
    this.#rotate();
    const size = this.#first.length;
    const oldest = (((this.#current + 1) % size) + size) % size;
    return this.#firstSum - (this.#first[oldest] as number);
  }

  addFirst(n = 1): void {
    const slot = this.#rotate();
    this.#first[slot] = (this.#first[slot] as number) + n;
    this.#firstSum += n;
  }

  addSecond(n = 1): void {
    const slot = this.#rotate();
    this.#second[slot] = (this.#second[slot] as number) + n;
    this.#secondSum += n;
  }

  /** Clears the buckets that fell out of the window since the last call; returns the current slot. */
  #rotate(): number {
    const size = this.#first.length;
    const now = Math.floor(this.#clock.now() / this.#bucketMs);
    const steps = now - this.#current;
    if (steps > 0) {
      if (steps >= size) {
        this.#first.fill(0);
        this.#second.fill(0);
        this.#firstSum = 0;
        this.#secondSum = 0;
      } else {
        for (let i = 1; i <= steps; i++) {
          const slot = (((this.#current + i) % size) + size) % size;
          this.#firstSum -= this.#first[slot] as number;
          this.#secondSum -= this.#second[slot] as number;
          this.#first[slot] = 0;
          this.#second[slot] = 0;
        }
      }
      this.#current = now;
    }
    return ((this.#current % size) + size) % size;
  }
}
