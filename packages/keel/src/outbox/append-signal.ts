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
  readonly #aborted = new WeakMap<AbortSignal, Promise<void>>();

  /** Resolves at the next {@link notify}, or when `signal` aborts. */
  wait(signal: AbortSignal): Promise<void> {
    if (signal.aborted) return Promise.resolve();
    if (this.#wake === undefined) {
      this.#wake = new Promise((resolve) => {
        this.#resolve = resolve;
      });
    }
    let aborted = this.#aborted.get(signal);
    if (aborted === undefined) {
      aborted = new Promise((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
      this.#aborted.set(signal, aborted);
    }
    return Promise.race([this.#wake, aborted]);
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
