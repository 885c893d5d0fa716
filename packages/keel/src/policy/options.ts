/**
 * Construction-time checks shared by every policy: each names the option and the allowed range, so
 * bad configuration fails at start-up instead of during an incident.
 *
 * @module
 */
import { InvalidOptionError } from '../errors/keel-error.ts';
import { type Clock, systemClock } from './clock.ts';
import type { Telemetry } from './telemetry.ts';
import { sharedTimerWheel, TimerWheel } from './timer-wheel.ts';

/** Options every policy accepts. */
export interface CommonOptions {
  /**
   * Names the dependency or endpoint in events, metrics and error messages.
   * @default the policy kind
   */
  name?: string;
  /** A sink that receives every event of this policy (several policies can share one). */
  telemetry?: Telemetry;
  /**
   * Source of time; pass a `FakeClock` in tests.
   * @default systemClock
   */
  clock?: Clock;
  /**
   * The timer wheel that serves deadlines.
   * @default the shared wheel on the system clock, or a 1 ms wheel on `clock` when one is given
   */
  timers?: TimerWheel;
}

/** Resolves the clock and wheel of a policy from its options, making sure they agree. */
export function resolveTime(options: Pick<CommonOptions, 'clock' | 'timers'>): {
  clock: Clock;
  timers: TimerWheel;
} {
  const { clock, timers } = options;
  if (timers) {
    if (clock && clock !== timers.clock) {
      throw new InvalidOptionError('timers', 'must run on the same clock as the `clock` option');
    }
    return { clock: timers.clock, timers };
  }
  if (!clock || clock === systemClock) return { clock: systemClock, timers: sharedTimerWheel() };
  return { clock, timers: new TimerWheel({ clock, resolutionMs: 1 }) };
}

/** An integer ≥ `min` (1 by default). */
export function checkInteger(option: string, value: number, min = 1, max = Number.MAX_SAFE_INTEGER): number {
  if (!Number.isInteger(value) || value < min || value > max) {
    const range =
      max === Number.MAX_SAFE_INTEGER ? `an integer ≥ ${min}` : `an integer from ${min} to ${max}`;
    throw new InvalidOptionError(option, `must be ${range}, got ${String(value)}`);
  }
  return value;
}

/** A finite number ≥ `min` (0 by default); `Infinity` is allowed only when `allowInfinity`. */
export function checkNumber(option: string, value: number, min = 0, allowInfinity = false): number {
  const ok =
    typeof value === 'number' &&
    !Number.isNaN(value) &&
    value >= min &&
    (allowInfinity || Number.isFinite(value));
  if (!ok) {
    throw new InvalidOptionError(
      option,
      `must be a number ≥ ${min}${allowInfinity ? ' or Infinity' : ''}, got ${String(value)}`,
    );
  }
  return value;
}

/** A number strictly greater than `min`. */
export function checkAbove(option: string, value: number, min: number): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= min) {
    throw new InvalidOptionError(option, `must be a finite number > ${min}, got ${String(value)}`);
  }
  return value;
}

/** A fraction in [0, 1] (or (0, 1] when `exclusiveZero`). */
export function checkFraction(option: string, value: number, exclusiveZero = false): number {
  if (
    typeof value !== 'number' ||
    Number.isNaN(value) ||
    value > 1 ||
    (exclusiveZero ? value <= 0 : value < 0)
  ) {
    throw new InvalidOptionError(
      option,
      `must be a fraction ${exclusiveZero ? 'in (0, 1]' : 'in [0, 1]'}, got ${String(value)}`,
    );
  }
  return value;
}

/** One of the listed string values. */
export function checkOneOf<T extends string>(option: string, value: T, allowed: readonly T[]): T {
  if (!allowed.includes(value)) {
    throw new InvalidOptionError(
      option,
      `must be one of ${allowed.map((a) => `'${a}'`).join(', ')}, got '${String(value)}'`,
    );
  }
  return value;
}

/** A function. */
export function checkFunction<F>(option: string, value: F): F {
  if (typeof value !== 'function')
    throw new InvalidOptionError(option, `must be a function, got ${typeof value}`);
  return value;
}
