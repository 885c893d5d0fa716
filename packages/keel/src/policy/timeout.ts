/**
 * Deadlines and timeouts. The effective deadline is the earlier of this policy's budget and the one
 * the call already has, so a nested call never outlives its request; an attempt with less than
 * `minRemainingMs` left is not started at all. The guarded function gets the deadline and a signal
 * that aborts at it (cooperative), and the call is rejected at the deadline even if the function
 * ignores the signal (the hard ceiling). The abandoned work stays visible on `TimeoutError.work` so
 * capacity policies keep their slot until it really ends.
 *
 * Two factories, one policy:
 * - `timeout()` bounds one call. The function receives the narrowed deadline in its context; code
 *   that does not receive the context still sees the surrounding budget.
 * - `deadline()` is a budget for a unit of work — a request, a job, a multi-step operation. It also
 *   writes the deadline to async context, so every nested call inherits it without being passed it
 *   (one `AsyncLocalStorage.run` per call, ~150 ns: cheap per request, measurable per attempt).
 *
 * Answers: cascading failures — a slow dependency holds every caller until they all time out.
 *
 * @module
 */
import { AbortedError } from '../errors/keel-error.ts';
import { DeadlineExceededError, TimeoutError } from '../errors/policy-errors.ts';
import type { Clock } from './clock.ts';
import { runWithDeadline3 } from './deadline.ts';
import { type CommonOptions, checkNumber, resolveTime } from './options.ts';
import { BasePolicy, type Context, type Next, type Operation } from './policy.ts';
import { EventSource } from './telemetry.ts';
import { TimerEntry } from './timer-wheel.ts';

/** Options of {@link timeout}. */
export interface TimeoutOptions extends CommonOptions {
  /** The budget of one call in milliseconds; `Infinity` only inherits the surrounding deadline. */
  ms: number;
  /**
   * An attempt with less time than this left is rejected with `DeadlineExceededError` before it starts.
   * @default 1
   */
  minRemainingMs?: number;
  /**
   * Whether nested calls inside the function see this deadline through async context, beside the
   * function's own context argument.
   * @default false for `timeout()`, true for `deadline()`
   */
  propagate?: boolean;
}

const noop = (): void => {};

/** One guarded call waiting on the wheel. */
class TimedCall<T> extends TimerEntry {
  readonly #policy: TimeoutPolicy;
  readonly #startedAt: number;
  readonly #budgetMs: number;
  #resolve!: (value: T) => void;
  #reject!: (reason: unknown) => void;
  #work: Promise<T> | undefined;
  #settled = false;
  readonly promise: Promise<T>;

  constructor(policy: TimeoutPolicy, startedAt: number, budgetMs: number) {
    super();
    this.#policy = policy;
    this.#startedAt = startedAt;
    this.#budgetMs = budgetMs;
    this.promise = new Promise<T>((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
    });
  }

  watch(work: Promise<T>): void {
    this.#work = work;
    work.then(
      (value) => {
        if (this.#settled) return;
        this.#settled = true;
        this.#policy.timers.cancel(this);
        this.#policy.succeeded(this.#startedAt);
        this.#resolve(value);
      },
      (error: unknown) => {
        if (this.#settled) return;
        this.#settled = true;
        this.#policy.timers.cancel(this);
        this.#policy.failed(this.#startedAt, error);
        this.#reject(error);
      },
    );
  }

  expire(): void {
    if (this.#settled) return;
    this.#settled = true;
    this.#policy.timedOut(this.#startedAt);
    this.#reject(new TimeoutError(this.#budgetMs, this.#work?.then(noop, noop)));
  }
}

/** See {@link timeout}. */
export class TimeoutPolicy extends BasePolicy {
  readonly ms: number;
  readonly minRemainingMs: number;
  readonly propagate: boolean;
  readonly clock: Clock;

  constructor(options: TimeoutOptions) {
    const { clock, timers } = resolveTime(options);
    super(new EventSource('timeout', options.name ?? 'timeout', options.telemetry), timers);
    this.ms = checkNumber('ms', options.ms, 0, true);
    this.minRemainingMs = checkNumber('minRemainingMs', options.minRemainingMs ?? 1);
    this.propagate = options.propagate ?? false;
    this.clock = clock;
  }

  run<T>(fn: Operation<T>, context: Context, next: Next): Promise<T> {
    const now = this.clock.now();
    const own = now + this.ms;
    const deadline = Math.min(own, context.deadline);
    const remaining = deadline - now;
    if (remaining < this.minRemainingMs || remaining <= 0) {
      const error = new DeadlineExceededError(remaining);
      if (this.events.active)
        this.events.emit({ policy: 'timeout', name: this.events.name, type: 'rejection', error });
      return Promise.reject(error);
    }
    if (context.callerAborted) return Promise.reject(new AbortedError(context.parentSignal?.reason));
    const inner = context.withDeadline(deadline);
    if (remaining === Number.POSITIVE_INFINITY) return next.run(fn, inner);
    const call = new TimedCall<T>(this, now, remaining);
    this.timers.schedule(call, deadline);
    call.watch(this.propagate ? runWithDeadline3(deadline, callNext, next, fn, inner) : next.run(fn, inner));
    return call.promise;
  }

  /** @internal */
  succeeded(startedAt: number): void {
    if (this.events.active) {
      this.events.emit({
        policy: 'timeout',
        name: this.events.name,
        type: 'success',
        durationMs: this.clock.now() - startedAt,
      });
    }
  }

  /** @internal */
  failed(startedAt: number, error: unknown): void {
    if (this.events.active) {
      const durationMs = this.clock.now() - startedAt;
      this.events.emit({ policy: 'timeout', name: this.events.name, type: 'failure', durationMs, error });
    }
  }

  /** @internal */
  timedOut(startedAt: number): void {
    if (this.events.active) {
      this.events.emit({
        policy: 'timeout',
        name: this.events.name,
        type: 'timeout',
        durationMs: this.clock.now() - startedAt,
      });
    }
  }
}

function callNext<T>(next: Next, fn: Operation<T>, context: Context): Promise<T> {
  return next.run(fn, context);
}

/**
 * A deadline for each call: cooperative through `signal`, enforced at the deadline regardless.
 *
 * @example
 * const perTry = timeout({ ms: 2_000 });
 * const charge = await perTry.execute(({ signal }) => provider.charge(order, { signal }));
 */
export function timeout(options: TimeoutOptions | number): TimeoutPolicy {
  return new TimeoutPolicy(typeof options === 'number' ? { ms: options } : options);
}

/**
 * A time budget for a unit of work that every nested call inherits through async context: a nested
 * `timeout()`, `remainingMs()` for a statement timeout, `deadlineHeaderValue()` for a downstream
 * request all see what is left.
 *
 * @example
 * const job = deadline({ ms: 30_000 });
 * await job.execute(async () => {
 *   await db.query({ text: sql, statement_timeout: remainingMs() }); // at most what is left of 30 s
 * });
 */
export function deadline(options: TimeoutOptions | number): TimeoutPolicy {
  const resolved = typeof options === 'number' ? { ms: options } : options;
  return new TimeoutPolicy({
    ...resolved,
    propagate: resolved.propagate ?? true,
    name: resolved.name ?? 'deadline',
  });
}
