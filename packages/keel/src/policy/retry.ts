/**
 * Retries that cannot become a storm. A call is retried only when all of these hold:
 *
 * - the operation is declared `idempotent: true` — repeating a charge or an insert that may have
 *   reached the server is how money moves twice, so the default is to never retry;
 * - the failure is retryable (`retryOn`, by default a transient error that is not a local
 *   rejection: an open breaker or a full bulkhead says "stop calling", not "call again"), or the
 *   result is (`retryOnResult`, e.g. {@link isRetryableResponse});
 * - attempts remain (`maxAttempts`), the shared {@link RetryBudget} grants one, and the wait —
 *   at least the server's `Retry-After` — ends before the deadline.
 *
 * The deadline is the surrounding one (a `timeout()` outside, or the request's deadline in async
 * context), narrowed by `totalTimeoutMs`. Nothing sleeps past it and no attempt starts after it.
 * This mirrors Envoy's two timeouts: the route timeout bounds the whole call including every retry,
 * the per-try timeout bounds one attempt. Compose the per-try one as `timeout()` inside the retry
 * (`pipeline(retry(…), timeout(2_000))`), or use the `attemptTimeoutMs` shorthand.
 *
 * When the retries run out, the last error is rethrown as it was (not wrapped), or the last result
 * is returned.
 *
 * Answers: retry storms — every layer retrying a failing dependency multiplies its load.
 *
 * @module
 */
import { isRetryableStatus, isTransient, parseRetryAfter } from '../errors/is-transient.ts';
import { AbortedError, isRejection } from '../errors/keel-error.ts';
import { DeadlineExceededError } from '../errors/policy-errors.ts';
import { type Backoff, exponentialBackoff } from './backoff.ts';
import type { Clock } from './clock.ts';
import {
  type CommonOptions,
  checkAbove,
  checkFunction,
  checkInteger,
  checkNumber,
  resolveTime,
} from './options.ts';
import { BasePolicy, CALL, type Context, type Next, type Operation } from './policy.ts';
import type { RetryBudget } from './retry-budget.ts';
import { EventSource } from './telemetry.ts';
import { type TimeoutOptions, TimeoutPolicy } from './timeout.ts';
import type { TimerWheel } from './timer-wheel.ts';

/** Options of {@link retry}. */
export interface RetryOptions extends CommonOptions {
  /**
   * Whether repeating the operation is safe. Nothing is retried unless this is `true`: a failed
   * call may still have taken effect on the server. Make writes idempotent (an idempotency key)
   * before turning it on for them.
   * @default false
   */
  idempotent?: boolean;
  /**
   * Attempts in total, the first one included.
   * @default 3
   */
  maxAttempts?: number;
  /**
   * The wait before each retry.
   * @default exponentialBackoff({ initialMs: 100, maxMs: 10_000, jitter: 'full' })
   */
  backoff?: Backoff;
  /**
   * Whether a thrown error is worth another attempt.
   * @default (error) => isTransient(error) && !isRejection(error)
   */
  retryOn?: (error: unknown) => boolean;
  /**
   * Whether a returned value is worth another attempt (an HTTP 503 response, say). When the
   * attempts run out, the last such value is returned.
   * @default no result is retried
   */
  retryOnResult?: (result: unknown) => boolean;
  /** A budget shared by every retry policy that calls the same dependency. */
  budget?: RetryBudget;
  /**
   * The longest `Retry-After` honoured; a longer one is waited for this long.
   * @default 30_000
   */
  maxRetryAfterMs?: number;
  /**
   * A bound on the whole call, every attempt and wait included; the surrounding deadline applies
   * when it is earlier.
   * @default no bound beyond the surrounding deadline
   */
  totalTimeoutMs?: number;
  /**
   * A timeout for each attempt, as if a `timeout()` were composed inside the retry.
   * @default no per-attempt timeout
   */
  attemptTimeoutMs?: number;
  /**
   * Source of the backoff's randomness; pass a deterministic one in tests.
   * @default Math.random
   */
  random?: () => number;
}

/** Retries transient failures, except local rejections: those mean "stop", not "try again". */
const retryTransient = (error: unknown): boolean => isTransient(error) && !isRejection(error);

const DEFAULTS = Object.freeze({
  idempotent: false,
  maxAttempts: 3,
  backoff: exponentialBackoff({ initialMs: 100, maxMs: 10_000, jitter: 'full' }),
  retryOn: retryTransient,
  maxRetryAfterMs: 30_000,
  random: Math.random,
});

const noop = (): void => {};

/**
 * True for a response-like value whose `status` is 408, 429 or a retryable 5xx; use it as
 * `retryOnResult` for clients that resolve with error responses instead of throwing.
 *
 * @example
 * const policy = retry({ idempotent: true, retryOnResult: isRetryableResponse });
 * const response = await policy.execute(({ signal }) => fetch(url, { signal }));
 */
export function isRetryableResponse(result: unknown): boolean {
  if (typeof result !== 'object' || result === null) return false;
  const status = (result as { status?: unknown }).status;
  return typeof status === 'number' && isRetryableStatus(status);
}

/** Runs the retry loop as the rest of a pipeline, so the whole loop sits inside the total timeout. */
class RetryLoop implements Next {
  readonly #policy: RetryPolicy;
  readonly #next: Next;
  constructor(policy: RetryPolicy, next: Next) {
    this.#policy = policy;
    this.#next = next;
  }
  run<T>(fn: Operation<T>, context: Context): Promise<T> {
    return this.#policy.loop(fn, context, this.#next);
  }
}

/** See {@link retry}. */
export class RetryPolicy extends BasePolicy {
  readonly idempotent: boolean;
  readonly maxAttempts: number;
  readonly backoff: Backoff;
  readonly budget: RetryBudget | undefined;
  readonly maxRetryAfterMs: number;
  readonly totalTimeoutMs: number | undefined;
  readonly attemptTimeoutMs: number | undefined;
  readonly clock: Clock;
  readonly #retryOn: (error: unknown) => boolean;
  readonly #retryOnResult: ((result: unknown) => boolean) | undefined;
  readonly #random: () => number;
  /** `maxAttempts`, or 1 when the operation is not idempotent. */
  readonly #attemptLimit: number;
  readonly #total: TimeoutPolicy | undefined;
  readonly #perAttempt: TimeoutPolicy | undefined;
  readonly #loopAtCall: RetryLoop;

  constructor(options: RetryOptions = {}) {
    const { clock, timers } = resolveTime(options);
    const name = options.name ?? 'retry';
    super(new EventSource('retry', name, options.telemetry), timers);
    this.clock = clock;
    this.idempotent = options.idempotent ?? DEFAULTS.idempotent;
    this.maxAttempts = checkInteger('maxAttempts', options.maxAttempts ?? DEFAULTS.maxAttempts, 1);
    this.backoff = checkFunction('backoff', options.backoff ?? DEFAULTS.backoff);
    this.#retryOn = checkFunction('retryOn', options.retryOn ?? DEFAULTS.retryOn);
    this.#retryOnResult =
      options.retryOnResult === undefined ? undefined : checkFunction('retryOnResult', options.retryOnResult);
    this.#random = checkFunction('random', options.random ?? DEFAULTS.random);
    this.budget = options.budget;
    if (this.budget !== undefined) checkFunction('budget.tryAcquireRetry', this.budget.tryAcquireRetry);
    this.maxRetryAfterMs = checkNumber(
      'maxRetryAfterMs',
      options.maxRetryAfterMs ?? DEFAULTS.maxRetryAfterMs,
      0,
      true,
    );
    this.totalTimeoutMs = optionalTimeout('totalTimeoutMs', options.totalTimeoutMs);
    this.attemptTimeoutMs = optionalTimeout('attemptTimeoutMs', options.attemptTimeoutMs);
    this.#attemptLimit = this.idempotent ? this.maxAttempts : 1;
    this.#total = innerTimeout(this.totalTimeoutMs, `${name}/total`, timers, options);
    this.#perAttempt = innerTimeout(this.attemptTimeoutMs, `${name}/attempt`, timers, options);
    this.#loopAtCall = new RetryLoop(this, CALL);
  }

  run<T>(fn: Operation<T>, context: Context, next: Next): Promise<T> {
    if (this.#total === undefined) return this.loop(fn, context, next);
    return this.#total.run(fn, context, next === CALL ? this.#loopAtCall : new RetryLoop(this, next));
  }

  /** @internal The attempts and waits of one call, inside the total timeout when there is one. */
  async loop<T>(fn: Operation<T>, context: Context, next: Next): Promise<T> {
    const clock = this.clock;
    const deadline = context.deadline;
    // Without a deadline the start time only feeds events, so the clock is not read for nothing.
    const startedAt = deadline !== Number.POSITIVE_INFINITY || this.events.active ? clock.now() : 0;
    if (startedAt >= deadline) {
      const error = new DeadlineExceededError(deadline - startedAt);
      if (this.events.active)
        this.events.emit({ policy: 'retry', name: this.events.name, type: 'rejection', error });
      throw error;
    }
    const budget = this.budget;
    budget?.recordRequest();
    const perAttempt = this.#perAttempt;
    let attempt = 1;
    let attemptContext = context;
    let previousDelayMs = 0;
    for (;;) {
      let outcome: unknown;
      let threw = false;
      try {
        outcome = await (perAttempt === undefined
          ? next.run(fn, attemptContext)
          : perAttempt.run(fn, attemptContext, next));
      } catch (error) {
        outcome = error;
        threw = true;
      }
      const retryable = threw ? this.#retryOn(outcome) : this.#retryOnResult?.(outcome) === true;
      if (!retryable) {
        if (threw) return this.#giveUp(startedAt, outcome, true);
        budget?.recordSuccess();
        if (this.events.active) {
          const durationMs = clock.now() - startedAt;
          this.events.emit({ policy: 'retry', name: this.events.name, type: 'success', durationMs });
        }
        return outcome as T;
      }
      budget?.recordFailure();
      if (attempt >= this.#attemptLimit || context.callerAborted)
        return this.#giveUp(startedAt, outcome, threw);

      const backoffMs = this.backoff(attempt, previousDelayMs, this.#random);
      previousDelayMs = Number.isNaN(backoffMs) ? 0 : Math.max(backoffMs, 0);
      let delayMs = previousDelayMs;
      const retryAfterMs = retryAfterOf(outcome);
      // An endless wait (a breaker isolated by hand, a backoff that says stop) means no retry.
      if (retryAfterMs === Number.POSITIVE_INFINITY || delayMs === Number.POSITIVE_INFINITY) {
        return this.#giveUp(startedAt, outcome, threw);
      }
      if (retryAfterMs !== undefined)
        delayMs = Math.max(delayMs, Math.min(retryAfterMs, this.maxRetryAfterMs));
      if (clock.now() + delayMs >= deadline) return this.#giveUp(startedAt, outcome, threw);
      if (budget !== undefined && !budget.tryAcquireRetry()) {
        if (this.events.active) {
          this.events.emit({
            policy: 'retry',
            name: this.events.name,
            type: 'budget-exhausted',
            attempt: attempt + 1,
            error: outcome,
          });
        }
        return this.#giveUp(startedAt, outcome, threw);
      }

      attempt++;
      if (this.events.active) {
        this.events.emit({
          policy: 'retry',
          name: this.events.name,
          type: 'retry',
          attempt,
          delayMs,
          error: outcome,
        });
      }
      if (delayMs > 0) {
        try {
          await sleep(clock, delayMs, context.parentSignal);
        } catch (aborted) {
          if (!threw) discard(outcome);
          return this.#giveUp(startedAt, aborted, true);
        }
      }
      // A late timer must not start an attempt the deadline has already ruled out.
      if (clock.now() >= deadline) return this.#giveUp(startedAt, outcome, threw);
      if (!threw) discard(outcome);
      attemptContext = context.withAttempt(context.attempt + attempt - 1);
    }
  }

  /** Ends the call with its last outcome: rethrows the error as it was, or returns the result. */
  #giveUp<T>(startedAt: number, outcome: unknown, threw: boolean): T {
    if (this.events.active) {
      const durationMs = this.clock.now() - startedAt;
      this.events.emit({
        policy: 'retry',
        name: this.events.name,
        type: 'failure',
        durationMs,
        error: outcome,
      });
    }
    if (threw) throw outcome;
    return outcome as T;
  }
}

function optionalTimeout(option: string, value: number | undefined): number | undefined {
  if (value === undefined || value === Number.POSITIVE_INFINITY) return undefined;
  return checkAbove(option, value, 0);
}

function innerTimeout(
  ms: number | undefined,
  name: string,
  timers: TimerWheel,
  options: RetryOptions,
): TimeoutPolicy | undefined {
  if (ms === undefined) return undefined;
  const timeoutOptions: TimeoutOptions = { ms, name, timers };
  if (options.telemetry !== undefined) timeoutOptions.telemetry = options.telemetry;
  return new TimeoutPolicy(timeoutOptions);
}

/**
 * The wait a failure asks for: `retryAfterMs` of Keel's errors (HTTP status, rate limit, open
 * breaker), or the `Retry-After` header of a response-like value.
 */
function retryAfterOf(outcome: unknown): number | undefined {
  if (typeof outcome !== 'object' || outcome === null) return undefined;
  const ms = (outcome as { retryAfterMs?: unknown }).retryAfterMs;
  if (typeof ms === 'number' && !Number.isNaN(ms)) return ms;
  const headers = (outcome as { headers?: unknown }).headers;
  if (typeof headers !== 'object' || headers === null) return undefined;
  const raw =
    typeof (headers as { get?: unknown }).get === 'function'
      ? (headers as { get(name: string): unknown }).get('retry-after')
      : (headers as Record<string, unknown>)['retry-after'];
  return typeof raw === 'string' ? parseRetryAfter(raw) : undefined;
}

/**
 * Releases a response-like result that is being replaced by another attempt: an unread fetch body
 * holds its connection until it is consumed or cancelled.
 */
function discard(result: unknown): void {
  if (typeof result !== 'object' || result === null) return;
  const { body, bodyUsed } = result as { body?: unknown; bodyUsed?: unknown };
  if (bodyUsed === true || typeof body !== 'object' || body === null) return;
  const cancel = (body as { cancel?: unknown }).cancel;
  if (typeof cancel !== 'function') return;
  try {
    Promise.resolve(cancel.call(body)).catch(noop);
  } catch {
    // A body that cannot be cancelled is left to the garbage collector.
  }
}

/** Waits on the policy clock; the caller's signal cuts the wait short with `AbortedError`. */
function sleep(clock: Clock, ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal === undefined) {
      clock.setTimer(resolve, ms);
      return;
    }
    if (signal.aborted) {
      reject(new AbortedError(signal.reason));
      return;
    }
    const onAbort = (): void => {
      timer.cancel();
      reject(new AbortedError(signal.reason));
    };
    const timer = clock.setTimer(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * Retries idempotent operations on transient failures, with backoff and jitter, within the
 * deadline and a shared retry budget.
 *
 * @example
 * const budget = retryBudget({ ratio: 0.2 });
 * const getRates = pipeline(
 *   retry({ idempotent: true, maxAttempts: 3, budget, retryOnResult: isRetryableResponse }),
 *   timeout(1_000), // per attempt
 * );
 * const response = await getRates.execute(({ signal }) => fetch(ratesUrl, { signal }), { signal: req.signal });
 */
export function retry(options: RetryOptions = {}): RetryPolicy {
  return new RetryPolicy(options);
}
