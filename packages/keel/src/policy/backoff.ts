/**
 * How long to wait before the next attempt. A backoff is a plain function of the attempt that just
 * failed, the delay it chose last time and a source of randomness, so a custom schedule is one line
 * and tests can pass a deterministic `random`.
 *
 * Jitter matters more than the curve: without it every client that failed together retries
 * together, and the synchronized wave is what keeps an overloaded dependency down. See the AWS
 * Architecture Blog, "Exponential Backoff And Jitter".
 *
 * @module
 */
import { checkNumber, checkOneOf } from './options.ts';

/**
 * Chooses the delay before the next attempt.
 *
 * @param attempt The attempt that just failed: 1 after the first attempt, 2 after the first retry.
 * @param previousDelayMs What this backoff returned for the previous retry of the call; 0 before the first.
 * @param random A uniform source in [0, 1); the retry policy passes its own `random` option.
 * @returns Milliseconds to wait; a negative or NaN result is treated as 0.
 *
 * @example
 * const linear: Backoff = (attempt) => attempt * 250;
 * const policy = retry({ idempotent: true, backoff: linear });
 */
export type Backoff = (attempt: number, previousDelayMs: number, random: () => number) => number;

/** How {@link exponentialBackoff} randomizes its delays. */
export type Jitter = 'none' | 'full' | 'decorrelated';

/** Options of {@link exponentialBackoff}. */
export interface ExponentialBackoffOptions {
  /**
   * The delay after the first attempt, and the floor of decorrelated jitter.
   * @default 100
   */
  initialMs?: number;
  /**
   * No delay is ever longer than this.
   * @default 10_000
   */
  maxMs?: number;
  /**
   * Growth per attempt: the n-th delay before jitter is `initialMs × factor^(n−1)`.
   * @default 2
   */
  factor?: number;
  /**
   * `'full'`: uniform in [0, min(maxMs, initialMs × factor^(n−1))]. `'decorrelated'`:
   * min(maxMs, uniform in [initialMs, previous × 3]). `'none'`: the exponential curve itself.
   * @default 'full'
   */
  jitter?: Jitter;
}

const DEFAULTS = Object.freeze({
  initialMs: 100,
  maxMs: 10_000,
  factor: 2,
  jitter: 'full' as Jitter,
});

const JITTERS: readonly Jitter[] = ['none', 'full', 'decorrelated'];

/**
 * The same delay before every retry.
 *
 * @example
 * const policy = retry({ idempotent: true, maxAttempts: 5, backoff: constantBackoff(200) });
 */
export function constantBackoff(ms: number): Backoff {
  const delay = checkNumber('ms', ms);
  return () => delay;
}

/**
 * Exponentially growing delays, capped, with jitter (full by default).
 *
 * @example
 * const policy = retry({
 *   idempotent: true,
 *   backoff: exponentialBackoff({ initialMs: 50, maxMs: 2_000, jitter: 'decorrelated' }),
 * });
 */
export function exponentialBackoff(options: ExponentialBackoffOptions = {}): Backoff {
  const initialMs = checkNumber('initialMs', options.initialMs ?? DEFAULTS.initialMs);
  const maxMs = checkNumber('maxMs', options.maxMs ?? DEFAULTS.maxMs, initialMs);
  const factor = checkNumber('factor', options.factor ?? DEFAULTS.factor, 1);
  const jitter = checkOneOf('jitter', options.jitter ?? DEFAULTS.jitter, JITTERS);
  switch (jitter) {
    case 'none':
      return (attempt) => Math.min(maxMs, initialMs * factor ** (attempt - 1));
    case 'full':
      return (attempt, _previous, random) => random() * Math.min(maxMs, initialMs * factor ** (attempt - 1));
    case 'decorrelated':
      return (_attempt, previousDelayMs, random) => {
        // The first retry has no previous sleep; AWS seeds it with the base delay.
        const upper = Math.max(previousDelayMs, initialMs) * 3;
        return Math.min(maxMs, initialMs + random() * (upper - initialMs));
      };
  }
}
