/**
 * Client-side adaptive throttling, as in Google's SRE book ("Handling Overload"). Each client
 * remembers, over a sliding window, how many requests it attempted and how many the backend
 * accepted, and refuses new requests locally with probability
 *
 *   max(0, (requests − k × accepts) / (requests + 1))
 *
 * While the backend accepts nearly everything the probability is 0. When it starts refusing
 * (HTTP 429/503, overload rejections), clients shed the excess themselves instead of sending
 * requests that cost the backend work only to be refused. Locally refused requests still count as
 * requests, so the pressure builds while the backend refuses and falls as soon as accepts return.
 * A larger `k` is more tolerant: with `k = 2` the backend may refuse up to half before any local
 * rejection.
 *
 * Answers: overload — a backend spending its capacity on rejecting requests it cannot serve.
 *
 * @module
 */
import { isRejection } from '../errors/keel-error.ts';
import { HttpStatusError, ThrottledError } from '../errors/policy-errors.ts';
import type { Clock } from './clock.ts';
import {
  type CommonOptions,
  checkAbove,
  checkFunction,
  checkInteger,
  checkNumber,
  resolveTime,
} from './options.ts';
import { BasePolicy, type Context, type Next, type Operation } from './policy.ts';
import { SlidingCounts } from './sliding-counts.ts';
import { EventSource } from './telemetry.ts';

/** Options of {@link adaptiveThrottle}. */
export interface AdaptiveThrottleOptions extends CommonOptions {
  /**
   * How many requests per accept the backend may see before local rejection starts; at least 1.
   * @default 2
   */
  k?: number;
  /**
   * The window over which requests and accepts are counted.
   * @default 120_000
   */
  windowMs?: number;
  /**
   * How many time buckets the window is divided into.
   * @default 60
   */
  buckets?: number;
  /**
   * No call is refused while the window holds fewer requests than this, so a single failure of a
   * quiet client does not start throttling.
   * @default 10
   */
  minRequests?: number;
  /**
   * Whether the backend accepted a call: `value` is the result, or the error when `failed`.
   * @default successes, and failures that are not an overload signal ({@link isOverloadSignal})
   */
  isAccepted?: (value: unknown, failed: boolean) => boolean;
  /**
   * Source of the rejection draws; pass a deterministic one in tests.
   * @default Math.random
   */
  random?: () => number;
}

const DEFAULTS = Object.freeze({
  k: 2,
  windowMs: 120_000,
  buckets: 60,
  minRequests: 10,
  random: Math.random,
});

/**
 * True when an error says the backend refused the call because it is overloaded: HTTP 429 or 503,
 * or a Keel rejection.
 *
 * @example
 * const throttle = adaptiveThrottle({
 *   isAccepted: (value, failed) => (failed ? !isOverloadSignal(value) : (value as Response).status !== 503),
 * });
 */
export function isOverloadSignal(error: unknown): boolean {
  if (error instanceof HttpStatusError) return error.status === 429 || error.status === 503;
  return isRejection(error);
}

const acceptedByDefault = (value: unknown, failed: boolean): boolean => !failed || !isOverloadSignal(value);

/** What {@link AdaptiveThrottlePolicy.snapshot} reports. */
export interface AdaptiveThrottleSnapshot {
  /** Requests attempted in the window, locally refused ones included. */
  readonly requests: number;
  /** Requests the backend accepted in the window. */
  readonly accepts: number;
  /** The probability the next call is refused locally. */
  readonly probability: number;
}

/** See {@link adaptiveThrottle}. */
export class AdaptiveThrottlePolicy extends BasePolicy {
  readonly k: number;
  readonly windowMs: number;
  readonly minRequests: number;
  readonly clock: Clock;
  readonly #isAccepted: (value: unknown, failed: boolean) => boolean;
  readonly #random: () => number;
  /** First: requests; second: accepts. */
  readonly #counts: SlidingCounts;

  constructor(options: AdaptiveThrottleOptions = {}) {
    const { clock, timers } = resolveTime(options);
    super(new EventSource('throttle', options.name ?? 'throttle', options.telemetry), timers);
    this.clock = clock;
    this.k = checkNumber('k', options.k ?? DEFAULTS.k, 1);
    this.windowMs = checkAbove('windowMs', options.windowMs ?? DEFAULTS.windowMs, 0);
    const buckets = checkInteger('buckets', options.buckets ?? DEFAULTS.buckets, 1, 10_000);
    this.minRequests = checkInteger('minRequests', options.minRequests ?? DEFAULTS.minRequests, 0);
    this.#isAccepted = checkFunction('isAccepted', options.isAccepted ?? acceptedByDefault);
    this.#random = checkFunction('random', options.random ?? DEFAULTS.random);
    this.#counts = new SlidingCounts(clock, this.windowMs / buckets, buckets);
  }

  /** The probability that the next call is refused locally. */
  get rejectionProbability(): number {
    return this.#probability();
  }

  /** The window's counters, for dashboards and tests. */
  snapshot(): AdaptiveThrottleSnapshot {
    return { requests: this.#counts.first, accepts: this.#counts.second, probability: this.#probability() };
  }

  run<T>(fn: Operation<T>, context: Context, next: Next): Promise<T> {
    const probability = this.#probability();
    this.#counts.addFirst();
    if (probability > 0 && this.#random() < probability) {
      const error = new ThrottledError(probability);
      if (this.events.active) {
        this.events.emit({ policy: 'throttle', name: this.events.name, type: 'rejection', error });
      }
      return Promise.reject(error);
    }
    return this.#call(fn, context, next);
  }

  async #call<T>(fn: Operation<T>, context: Context, next: Next): Promise<T> {
    let value: T;
    try {
      value = await next.run(fn, context);
    } catch (error) {
      if (this.#isAccepted(error, true)) this.#accept();
      throw error;
    }
    if (this.#isAccepted(value, false)) this.#accept();
    return value;
  }

  #accept(): void {
    this.#counts.addSecond();
  }

  #probability(): number {
    const requests = this.#counts.first;
    if (requests < this.minRequests) return 0;
    const p = (requests - this.k * this.#counts.second) / (requests + 1);
    return Math.max(p, 0);
  }
}

/**
 * Refuses calls locally, with the SRE book's probability, while the backend rejects too many.
 *
 * @example
 * const throttle = adaptiveThrottle({ name: 'search', k: 2 });
 * const hits = await pipeline(retry({ idempotent: true }), throttle, timeout(500)).execute(({ signal }) =>
 *   search.query(q, { signal }),
 * );
 */
export function adaptiveThrottle(options: AdaptiveThrottleOptions = {}): AdaptiveThrottlePolicy {
  return new AdaptiveThrottlePolicy(options);
}
