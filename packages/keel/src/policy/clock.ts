/**
 * Time as policies see it: a monotonic `now()` in milliseconds and one way to be called back later.
 * Policies take a `Clock` so tests can pass a {@link FakeClock} and step through every transition
 * without sleeping.
 *
 * @module
 */

/** A scheduled callback that can be cancelled. */
export interface Timer {
  cancel(): void;
}

/** Monotonic time in milliseconds and one-shot timers. */
export interface Clock {
  /** Milliseconds on a monotonic scale; only differences between two readings mean anything. */
  now(): number;
  /** Calls `callback` once after `delayMs`. The timer never keeps the process alive by itself. */
  setTimer(callback: () => void, delayMs: number): Timer;
}

class SystemTimer implements Timer {
  readonly #handle: NodeJS.Timeout;
  constructor(callback: () => void, delayMs: number) {
    this.#handle = setTimeout(callback, delayMs);
    this.#handle.unref();
  }
  cancel(): void {
    clearTimeout(this.#handle);
  }
}

/**
 * The real clock: `performance.now()` and unref'd `setTimeout`. Stateless, so sharing it is safe.
 *
 * @example
 * const breaker = circuitBreaker({ clock: systemClock });
 */
export const systemClock: Clock = Object.freeze({
  now: () => performance.now(),
  setTimer: (callback: () => void, delayMs: number): Timer => new SystemTimer(callback, delayMs),
});
