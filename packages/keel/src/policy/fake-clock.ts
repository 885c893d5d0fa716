import type { Clock, Timer } from './clock.ts';
import { nextTurn } from './next-turn.ts';

interface PendingTimer extends Timer {
  readonly at: number;
  readonly seq: number;
  readonly callback: () => void;
  cancelled: boolean;
}

/**
 * A clock that only moves when told to, for tests of every time-driven transition.
 *
 * @example
 * const clock = new FakeClock();
 * const breaker = circuitBreaker({ clock, openMs: 1_000 });
 * await clock.advanceAsync(1_000); // the breaker is half-open now
 */
export class FakeClock implements Clock {
  #now: number;
  #seq = 0;
  #timers: PendingTimer[] = [];

  constructor(start = 0) {
    this.#now = start;
  }

  now(): number {
    return this.#now;
  }

  setTimer(callback: () => void, delayMs: number): Timer {
    const timer: PendingTimer = {
      at: this.#now + Math.max(0, delayMs),
      seq: this.#seq++,
      callback,
      cancelled: false,
      cancel() {
        this.cancelled = true;
      },
    };
    this.#timers.push(timer);
    return timer;
  }

  /** Number of timers that are scheduled and not cancelled. */
  get pendingTimers(): number {
    return this.#timers.filter((t) => !t.cancelled).length;
  }

  /** Moves time forward by `ms`, firing due timers in order, synchronously. */
  advance(ms: number): void {
    const target = this.#now + ms;
    for (let next = this.#nextDue(target); next; next = this.#nextDue(target)) {
      this.#now = Math.max(this.#now, next.at);
      next.callback();
    }
    this.#now = target;
  }

  /**
   * Moves time forward by `ms`, firing due timers in order and letting promise callbacks run after
   * each one, so code that awaits between timers sees every step.
   */
  async advanceAsync(ms: number): Promise<void> {
    const target = this.#now + ms;
    await flushMicrotasks();
    for (let next = this.#nextDue(target); next; next = this.#nextDue(target)) {
      this.#now = Math.max(this.#now, next.at);
      next.callback();
      await flushMicrotasks();
    }
    this.#now = target;
    await flushMicrotasks();
  }

  #nextDue(limit: number): PendingTimer | undefined {
    let best: PendingTimer | undefined;
    let bestIndex = -1;
    for (let i = 0; i < this.#timers.length; i++) {
      const t = this.#timers[i] as PendingTimer;
      if (t.cancelled || t.at > limit) continue;
      if (!best || t.at < best.at || (t.at === best.at && t.seq < best.seq)) {
        best = t;
        bestIndex = i;
      }
    }
    if (best) this.#timers.splice(bestIndex, 1);
    this.#timers = this.#timers.filter((t) => !t.cancelled);
    return best;
  }
}

/** Lets every queued promise callback run, including ones queued by those callbacks. */
export function flushMicrotasks(): Promise<void> {
  return nextTurn();
}
