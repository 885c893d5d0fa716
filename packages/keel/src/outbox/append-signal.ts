/**
 * The wake-up behind `OutboxStore.appended`: every waiter shares one promise per wake, so a relay
 * that asks again and again while nothing happens allocates nothing more, and a wake resolves all of
 * them at once. Internal to the stores.
 *
 * @module
 */

/** Resolves waiters when events may have been appended. */
export class AppendSignal {
  #wake: Promise<void> | undefined;
  #resolve: (() => void) | undefined;
  /** Signals whose abort already wakes the waiters: one listener per signal, however often it waits. */
  readonly #watched = new WeakSet<AbortSignal>();

  /**
   * Resolves at the next {@link notify}, or when `signal` aborts. An abort wakes every waiter — a
   * spurious wake, which waiters tolerate since a wake only says events *may* have been appended —
   * so no per-wait promise has to race a long-lived abort promise (whose reactions would pile up
   * for as long as the relay runs).
   */
  wait(signal: AbortSignal): Promise<void> {
    if (signal.aborted) return Promise.resolve();
    if (!this.#watched.has(signal)) {
      this.#watched.add(signal);
      signal.addEventListener('abort', () => this.notify(), { once: true });
    }
    if (this.#wake === undefined) {
      this.#wake = new Promise((resolve) => {
        this.#resolve = resolve;
      });
    }
    return this.#wake;
  }

  /** True while someone waits. */
  get waiting(): boolean {
    return this.#wake !== undefined;
  }

  /** Wakes every waiter. */
  notify(): void {
    const resolve = this.#resolve;
    this.#wake = undefined;
    this.#resolve = undefined;
    resolve?.();
  }
}
