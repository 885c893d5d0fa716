/**
 * One timer for every deadline in the process. Deadlines are grouped into buckets of
 * `resolutionMs`; only the earliest bucket has a real timer armed, and each bucket owns one
 * `AbortSignal` that all calls due in it share. A call that finishes in time costs an array push
 * and a swap-remove: no `setTimeout`, no `AbortController`.
 *
 * @module
 */
import { InvalidOptionError } from '../errors/keel-error.ts';
import { TimeoutError } from '../errors/policy-errors.ts';
import { type Clock, systemClock, type Timer } from './clock.ts';

/** Something that is told when its deadline passes. Extend it to be scheduled on a {@link TimerWheel}. */
export abstract class TimerEntry {
  /** Bucket the entry waits in; undefined when not scheduled. Owned by the wheel. */
  wheelBucket: Bucket | undefined = undefined;
  /** Position inside the bucket, for O(1) removal. Owned by the wheel. */
  wheelIndex = -1;
  /** Called once, from the wheel's timer, when the deadline passes and the entry is still scheduled. */
  abstract expire(): void;
}

class Bucket {
  readonly slot: number;
  readonly entries: TimerEntry[] = [];
  controller: AbortController | undefined = undefined;
  constructor(slot: number) {
    this.slot = slot;
  }
}

/** Options of {@link TimerWheel}. */
export interface TimerWheelOptions {
  /** @default systemClock */
  clock?: Clock;
  /**
   * Width of a bucket. A deadline fires up to this much late, never early.
   * @default 5
   */
  resolutionMs?: number;
}

/**
 * Schedules deadlines in shared buckets behind a single timer.
 *
 * @example
 * const wheel = new TimerWheel({ clock: new FakeClock(), resolutionMs: 1 });
 * const t = timeout({ ms: 100, timers: wheel });
 */
export class TimerWheel {
  readonly clock: Clock;
  readonly resolutionMs: number;
  readonly #buckets = new Map<number, Bucket>();
  /** Min-heap of bucket slots. */
  readonly #slots: number[] = [];
  #armedSlot = Number.POSITIVE_INFINITY;
  #timer: Timer | undefined;
  readonly #fire = () => this.#onTimer();

  constructor(options: TimerWheelOptions = {}) {
    const resolutionMs = options.resolutionMs ?? 5;
    if (!(resolutionMs > 0) || !Number.isFinite(resolutionMs)) {
      throw new InvalidOptionError(
        'resolutionMs',
        `must be a positive number of milliseconds, got ${resolutionMs}`,
      );
    }
    this.clock = options.clock ?? systemClock;
    this.resolutionMs = resolutionMs;
  }

  /** Entries scheduled and not yet expired or cancelled. */
  get size(): number {
    let n = 0;
    for (const bucket of this.#buckets.values()) n += bucket.entries.length;
    return n;
  }

  /** Calls `entry.expire()` once the clock reaches `at` (rounded up to the resolution). */
  schedule(entry: TimerEntry, at: number): void {
    if (entry.wheelBucket) this.cancel(entry);
    const bucket = this.#bucketFor(at);
    entry.wheelBucket = bucket;
    entry.wheelIndex = bucket.entries.length;
    bucket.entries.push(entry);
  }

  /** Removes a scheduled entry; a no-op when it already fired or was never scheduled. */
  cancel(entry: TimerEntry): void {
    const bucket = entry.wheelBucket;
    if (!bucket) return;
    const entries = bucket.entries;
    const last = entries.pop() as TimerEntry;
    if (last !== entry) {
      entries[entry.wheelIndex] = last;
      last.wheelIndex = entry.wheelIndex;
    }
    entry.wheelBucket = undefined;
    entry.wheelIndex = -1;
  }

  /**
   * The signal that aborts when the clock reaches `at` (rounded up to the resolution). Every caller
   * with a deadline in the same bucket gets the same signal.
   */
  signalAt(at: number): AbortSignal {
    const bucket = this.#bucketFor(at);
    bucket.controller ??= new AbortController();
    return bucket.controller.signal;
  }

  /** Cancels the timer and forgets every entry without expiring it. */
  dispose(): void {
    this.#timer?.cancel();
    this.#timer = undefined;
    this.#armedSlot = Number.POSITIVE_INFINITY;
    for (const bucket of this.#buckets.values()) {
      for (const entry of bucket.entries) {
        entry.wheelBucket = undefined;
        entry.wheelIndex = -1;
      }
    }
    this.#buckets.clear();
    this.#slots.length = 0;
  }

  #bucketFor(at: number): Bucket {
    const slot = Math.ceil(at / this.resolutionMs);
    let bucket = this.#buckets.get(slot);
    if (bucket === undefined) {
      bucket = new Bucket(slot);
      this.#buckets.set(slot, bucket);
      this.#pushSlot(slot);
      if (slot < this.#armedSlot) this.#arm(slot);
    }
    return bucket;
  }

  #arm(slot: number): void {
    this.#timer?.cancel();
    this.#armedSlot = slot;
    this.#timer = this.clock.setTimer(this.#fire, Math.max(0, slot * this.resolutionMs - this.clock.now()));
  }

  #onTimer(): void {
    this.#timer = undefined;
    this.#armedSlot = Number.POSITIVE_INFINITY;
    const now = this.clock.now();
    while (this.#slots.length > 0 && (this.#slots[0] as number) * this.resolutionMs <= now) {
      const slot = this.#popSlot();
      const bucket = this.#buckets.get(slot) as Bucket;
      this.#buckets.delete(slot);
      bucket.controller?.abort(new TimeoutError());
      const entries = bucket.entries;
      // Entries may cancel others of the same bucket from expire(); walk from the end.
      while (entries.length > 0) {
        const entry = entries.pop() as TimerEntry;
        entry.wheelBucket = undefined;
        entry.wheelIndex = -1;
        entry.expire();
      }
    }
    if (this.#slots.length > 0) this.#arm(this.#slots[0] as number);
  }

  #pushSlot(slot: number): void {
    const heap = this.#slots;
    let i = heap.push(slot) - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if ((heap[parent] as number) <= slot) break;
      heap[i] = heap[parent] as number;
      i = parent;
    }
    heap[i] = slot;
  }

  #popSlot(): number {
    const heap = this.#slots;
    const top = heap[0] as number;
    const last = heap.pop() as number;
    if (heap.length > 0) {
      let i = 0;
      for (;;) {
        const left = 2 * i + 1;
        if (left >= heap.length) break;
        const right = left + 1;
        const child = right < heap.length && (heap[right] as number) < (heap[left] as number) ? right : left;
        if ((heap[child] as number) >= last) break;
        heap[i] = heap[child] as number;
        i = child;
      }
      heap[i] = last;
    }
    return top;
  }
}

let shared: TimerWheel | undefined;

/**
 * The process-wide wheel policies use when none is passed. It holds no timer while empty, and its
 * timer never keeps the process alive, so it needs no cleanup; tests pass their own wheel instead.
 */
export function sharedTimerWheel(): TimerWheel {
  shared ??= new TimerWheel();
  return shared;
}
