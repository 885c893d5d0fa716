/**
 * @module
 * Open-loop load: arrivals follow a schedule fixed before the run — Poisson, from a seeded
 * generator, so the same seed gives the same arrivals — and each one starts on time whether or not
 * the earlier ones have been answered. A closed loop (a fixed set of clients, each waiting for its
 * answer) slows down with the system it measures and hides overload; an open loop keeps arriving,
 * so queues, timeouts and retries grow as they would with real users.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { checkFunction, checkInteger, checkNumber } from 'keel';
import { exponentialGap, seededRandom } from '../seeded-random.ts';

export interface OpenLoopOptions {
  /** Mean arrivals per second. */
  ratePerSecond: number;
  /** How many arrivals the run makes. */
  arrivals: number;
  /** Seed of the arrival times. @default 1 */
  seed?: number;
  /**
   * Starts the work of arrival `index` and returns its promise; the loop never waits for it before
   * the next arrival. It should record its own outcome and not reject: a rejection is a bug of
   * the caller, and `runOpenLoop` rejects with the first one once every arrival has settled.
   */
  arrive: (index: number) => Promise<unknown>;
  /** Milliseconds on a monotonic clock. @default performance.now */
  now?: () => number;
}

export interface OpenLoopResult {
  readonly arrivals: number;
  /** When the last arrival was due, in ms from the start. */
  readonly scheduledMs: number;
  /** From the first arrival until the last one settled, in ms. */
  readonly durationMs: number;
  /** The latest an arrival started after it was due, in ms (the lab machine falling behind). */
  readonly maxLagMs: number;
  /** Most arrivals in flight at once. */
  readonly maxInFlight: number;
}

/**
 * The due times of `count` Poisson arrivals at `ratePerSecond`, in ms from the start, ascending.
 *
 * @example
 * arrivalOffsets({ seed: 7, ratePerSecond: 100, count: 3 }); // e.g. [4.1, 13.9, 21.0]
 */
export function arrivalOffsets(options: { seed: number; ratePerSecond: number; count: number }): number[] {
  checkInteger('count', options.count, 0);
  const meanGapMs = 1_000 / checkNumber('ratePerSecond', options.ratePerSecond, Number.MIN_VALUE);
  const random = seededRandom(options.seed);
  const offsets: number[] = [];
  let at = 0;
  for (let i = 0; i < options.count; i++) {
    at += exponentialGap(random, meanGapMs);
    offsets.push(at);
  }
  return offsets;
}

/**
 * Runs the arrivals on their schedule and resolves once every one has settled.
 *
 * @example
 * const result = await runOpenLoop({
 *   ratePerSecond: 200,
 *   arrivals: 2_000,
 *   seed: 7,
 *   arrive: (i) => client.charge(orders[i]),
 * });
 */
export async function runOpenLoop(options: OpenLoopOptions): Promise<OpenLoopResult> {
  const arrive = checkFunction('arrive', options.arrive);
  const now = options.now ?? (() => performance.now());
  const offsets = arrivalOffsets({
    seed: options.seed ?? 1,
    ratePerSecond: options.ratePerSecond,
    count: options.arrivals,
  });
  const started = now();
  const pending: Promise<unknown>[] = [];
  let firstError: { error: unknown } | undefined;
  let inFlight = 0;
  let maxInFlight = 0;
  let maxLagMs = 0;
  const fire = (index: number, lagMs: number) => {
    maxLagMs = Math.max(maxLagMs, lagMs);
    inFlight++;
    maxInFlight = Math.max(maxInFlight, inFlight);
    let work: Promise<unknown>;
    try {
      work = arrive(index);
    } catch (error) {
      work = Promise.reject(error);
    }
    pending.push(
      work
        .catch((error: unknown) => {
          firstError ??= { error };
        })
        .finally(() => {
          inFlight--;
        }),
    );
  };
  let next = 0;
  while (next < offsets.length) {
    const elapsed = now() - started;
    // Every arrival already due starts now, even when the timer woke late: the schedule never slips.
    while (next < offsets.length && (offsets[next] as number) <= elapsed) {
      fire(next, elapsed - (offsets[next] as number));
      next++;
    }
    if (next < offsets.length) await sleep(Math.max(0, (offsets[next] as number) - elapsed));
  }
  await Promise.all(pending);
  if (firstError !== undefined) throw firstError.error;
  return {
    arrivals: offsets.length,
    scheduledMs: Math.round(offsets.at(-1) ?? 0),
    durationMs: Math.round(now() - started),
    maxLagMs: Math.round(maxLagMs * 10) / 10,
    maxInFlight,
  };
}
