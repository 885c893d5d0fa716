/**
 * A token bucket: calls spend a token, tokens come back at `ratePerSecond`, and at most `burst` pile
 * up while the caller is idle. It is kept in the GCRA form — one number, the time at which the bucket
 * would next be full — so the refill is computed from the clock on each call, no timer runs while the
 * limiter is idle, and `retryAfterMs` is exact rather than rounded to a refill tick.
 *
 * Answers: a client that must not exceed a provider's quota (an API that allows 100 requests a
 * second and bans you for more), and a burst of retries that would otherwise hit a dependency at once.
 *
 * @module
 */
import { AbortedError } from '../errors/keel-error.ts';
import { RateLimitedError } from '../errors/policy-errors.ts';
import type { Clock, Timer } from './clock.ts';
import { type CommonOptions, checkAbove, checkInteger, checkNumber, resolveTime } from './options.ts';
import { BasePolicy, type Context, type Next, type Operation } from './policy.ts';
import { EventSource } from './telemetry.ts';

/** Options of {@link rateLimiter}. */
export interface RateLimiterOptions extends CommonOptions {
  /** Tokens added per second; the sustained rate of calls. */
  ratePerSecond: number;
  /**
   * Tokens the bucket holds: how many calls may go at once after a quiet period.
   * @default `ratePerSecond` rounded up — one second's worth
   */
  burst?: number;
  /**
   * How long a call may wait for a token before it is rejected. `0` rejects at once. A call never
   * waits past its deadline.
   * @default 0
   */
  maxWaitMs?: number;
}

const DEFAULTS = Object.freeze({ maxWaitMs: 0 });

/**
 * Float slack when comparing times: a token due at exactly `now` must be granted even if the sum of
 * intervals came out a few ulps late.
 */
const EPSILON_MS = 1e-6;

/** One call sleeping until its reserved token is due; wakes early, with an error, when its caller aborts. */
class TokenWait {
  readonly #signal: AbortSignal | undefined;
  readonly #timer: Timer;
  #resolve!: () => void;
  #reject!: (reason: unknown) => void;
  readonly promise: Promise<void>;

  constructor(clock: Clock, waitMs: number, signal: AbortSignal | undefined) {
    this.promise = new Promise<void>((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
    });
    this.#signal = signal;
    this.#timer = clock.setTimer(() => this.#wake(), waitMs);
    signal?.addEventListener('abort', this, { once: true });
  }

  #wake(): void {
    this.#signal?.removeEventListener('abort', this);
    this.#resolve();
  }

  /** The abort listener (an object listener needs no extra closure). */
  handleEvent(): void {
    this.#timer.cancel();
    this.#reject(new AbortedError(this.#signal?.reason));
  }
}

/** See {@link rateLimiter}. */
export class RateLimiterPolicy extends BasePolicy {
  readonly ratePerSecond: number;
  readonly burst: number;
  readonly maxWaitMs: number;
  readonly clock: Clock;
  /** Milliseconds between two tokens. */
  readonly #intervalMs: number;
  /** How far ahead of a full bucket `#fullAt` may run: the whole bucket's worth of time. */
  readonly #capacityMs: number;
  /**
   * When the bucket will be full again if nothing more is taken. Taking `n` tokens moves it
   * `n × interval` later; a value in the past means the bucket is full.
   */
  #fullAt = Number.NEGATIVE_INFINITY;

  constructor(options: RateLimiterOptions) {
    const { clock, timers } = resolveTime(options);
    super(new EventSource('rate-limiter', options.name ?? 'rate-limiter', options.telemetry), timers);
    this.ratePerSecond = checkAbove('ratePerSecond', options.ratePerSecond, 0);
    this.burst = checkInteger('burst', options.burst ?? Math.max(1, Math.ceil(this.ratePerSecond)));
    this.maxWaitMs = checkNumber('maxWaitMs', options.maxWaitMs ?? DEFAULTS.maxWaitMs, 0, true);
    this.clock = clock;
    this.#intervalMs = 1000 / this.ratePerSecond;
    this.#capacityMs = this.burst * this.#intervalMs;
  }

  /** Tokens available right now (fractional while one is refilling). */
  get tokens(): number {
    const owed = Math.max(0, this.#fullAt - this.clock.now());
    return Math.max(0, (this.#capacityMs - owed) / this.#intervalMs);
  }

  /**
   * Takes `n` tokens if they are all available now, without waiting and without emitting events.
   *
   * @example
   * if (!exportLimiter.tryAcquire()) return reply.code(429).send();
   */
  tryAcquire(n = 1): boolean {
    checkNumber('n', n);
    const now = this.clock.now();
    const fullAt = Math.max(this.#fullAt, now) + n * this.#intervalMs;
    if (fullAt - now > this.#capacityMs + EPSILON_MS) return false;
    this.#fullAt = fullAt;
    return true;
  }

  run<T>(fn: Operation<T>, context: Context, next: Next): Promise<T> {
    const now = this.clock.now();
    const fullAt = Math.max(this.#fullAt, now) + this.#intervalMs;
    const waitMs = fullAt - now - this.#capacityMs;
    if (waitMs <= EPSILON_MS) {
      this.#fullAt = fullAt;
      return next.run(fn, context);
    }
    return this.#waitThenRun(fn, context, next, now, fullAt, waitMs);
  }

  async #waitThenRun<T>(
    fn: Operation<T>,
    context: Context,
    next: Next,
    now: number,
    fullAt: number,
    waitMs: number,
  ): Promise<T> {
    if (waitMs > this.maxWaitMs || now + waitMs > context.deadline) throw this.#rejected(waitMs);
    if (context.callerAborted) throw new AbortedError(context.parentSignal?.reason);
    // Reserve the token now so later callers queue behind this one instead of racing it.
    this.#fullAt = fullAt;
    try {
      await new TokenWait(this.clock, waitMs, context.parentSignal).promise;
    } catch (error) {
      // The caller gave up: hand the reserved token back to whoever comes next.
      this.#fullAt -= this.#intervalMs;
      throw error;
    }
    return next.run(fn, context);
  }

  #rejected(retryAfterMs: number): RateLimitedError {
    const error = new RateLimitedError(retryAfterMs);
    if (this.events.active)
      this.events.emit({ policy: 'rate-limiter', name: this.events.name, type: 'rejection', error });
    return error;
  }
}

/**
 * A token bucket in front of a dependency: up to `burst` calls at once, `ratePerSecond` sustained;
 * beyond that a call waits up to `maxWaitMs` for a token or is rejected with `RateLimitedError`,
 * whose `retryAfterMs` says when the next token is due.
 *
 * @example
 * const smsQuota = rateLimiter({ name: 'sms', ratePerSecond: 10, burst: 20, maxWaitMs: 500 });
 * await smsQuota.execute(({ signal }) => sms.send(message, { signal }));
 */
export function rateLimiter(options: RateLimiterOptions): RateLimiterPolicy {
  return new RateLimiterPolicy(options);
}
