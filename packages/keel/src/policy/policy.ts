/**
 * What every policy is: an object with `execute(fn, context)`, where `fn` receives the call's
 * signal, attempt number and deadline. Policies compose through `run(fn, context, next)`, which a
 * pipeline chains without allocating a closure per layer.
 *
 * @module
 */
import { currentDeadline } from './deadline.ts';
import type { Disposable, EventSource, PolicyListener } from './telemetry.ts';
import { sharedTimerWheel, type TimerWheel } from './timer-wheel.ts';

const NEVER_ABORTED: AbortSignal = new AbortController().signal;

/** What the guarded function receives. */
export interface ExecutionContext {
  /** Aborts when the deadline passes or the caller gives up. Pass it to fetch, pg, timers. */
  readonly signal: AbortSignal;
  /** 1 for the first attempt, 2 for the first retry, and so on. */
  readonly attempt: number;
  /** Absolute deadline on the policy clock's scale; `Infinity` when there is none. */
  readonly deadline: number;
}

/** The function a policy guards. */
export type Operation<T> = (context: ExecutionContext) => PromiseLike<T> | T;

/** What a caller may pass as the second argument of `execute`. */
export interface ExecuteOptions {
  /** The caller's own signal (an HTTP request's, say); aborting it aborts the call. */
  readonly signal?: AbortSignal | undefined;
  /** An absolute deadline; the earlier of it and the async context's deadline applies. */
  readonly deadline?: number | undefined;
  /** The attempt number to start counting from. */
  readonly attempt?: number | undefined;
}

/**
 * The context passed down through a pipeline. Immutable: a layer that changes the deadline or the
 * attempt derives a new one. The signal is built only when the guarded function reads it, from the
 * timer wheel's shared per-bucket signal, so a call that never looks at it allocates none.
 */
export class Context implements ExecutionContext {
  readonly parentSignal: AbortSignal | undefined;
  readonly deadline: number;
  readonly attempt: number;
  readonly timers: TimerWheel;
  #signal: AbortSignal | undefined;

  constructor(parentSignal: AbortSignal | undefined, deadline: number, attempt: number, timers: TimerWheel) {
    this.parentSignal = parentSignal;
    this.deadline = deadline;
    this.attempt = attempt;
    this.timers = timers;
  }

  /** Builds the context for a top-level `execute` call. */
  static from(options: ExecuteOptions | ExecutionContext | undefined, timers: TimerWheel): Context {
    if (options instanceof Context) return options;
    const ambient = currentDeadline();
    if (options === undefined) return new Context(undefined, ambient, 1, timers);
    const requested = options.deadline ?? Number.POSITIVE_INFINITY;
    return new Context(options.signal, Math.min(requested, ambient), options.attempt ?? 1, timers);
  }

  get signal(): AbortSignal {
    if (this.#signal !== undefined) return this.#signal;
    let signal: AbortSignal;
    if (this.deadline === Number.POSITIVE_INFINITY) {
      signal = this.parentSignal ?? NEVER_ABORTED;
    } else {
      const timed = this.timers.signalAt(this.deadline);
      signal = this.parentSignal ? AbortSignal.any([this.parentSignal, timed]) : timed;
    }
    this.#signal = signal;
    return signal;
  }

  /** True when the caller's signal has aborted (the deadline is checked separately). */
  get callerAborted(): boolean {
    return this.parentSignal?.aborted === true;
  }

  /** A context with an earlier deadline (a later one is ignored). */
  withDeadline(deadline: number): Context {
    if (deadline >= this.deadline) return this;
    return new Context(this.parentSignal, deadline, this.attempt, this.timers);
  }

  /** A context for another attempt. */
  withAttempt(attempt: number): Context {
    return new Context(this.parentSignal, this.deadline, attempt, this.timers);
  }

  /** A context whose caller signal is `signal` (hedging and failover cancel losers through it). */
  withSignal(signal: AbortSignal): Context {
    return new Context(signal, this.deadline, this.attempt, this.timers);
  }
}

/** The rest of a pipeline, as seen by one layer. */
export interface Next {
  run<T>(fn: Operation<T>, context: Context): Promise<T>;
}

/** The end of every chain: calls the guarded function, turning a synchronous throw into a rejection. */
export const CALL: Next = {
  run<T>(fn: Operation<T>, context: Context): Promise<T> {
    // Not an async function: a native promise from `fn` passes through without another wrapper.
    try {
      const result = fn(context);
      return result instanceof Promise ? result : Promise.resolve(result);
    } catch (error) {
      return Promise.reject(error);
    }
  },
};

/**
 * A resilience policy. `F` is what the policy may return instead of the function's result (only a
 * fallback has one).
 */
export interface Policy<F = never> {
  /** Type-level only: what the policy may return instead of the function's result. */
  readonly fallbackType?: F;
  /**
   * Runs `fn` under this policy.
   *
   * @example
   * const body = await policy.execute(({ signal }) => fetch(url, { signal }).then((r) => r.json()));
   */
  execute<T>(fn: Operation<T>, options?: ExecuteOptions | ExecutionContext): Promise<T | F>;
  /** The composable form of `execute`: runs this layer, then `next`. */
  run<T>(fn: Operation<T>, context: Context, next: Next): Promise<T | F>;
  /** Subscribes to this policy's events. */
  onEvent(listener: PolicyListener): Disposable;
}

/** The fallback type of a policy. */
export type FallbackOf<P> = P extends { readonly fallbackType?: infer F } ? F : never;

/** Shared plumbing of every built-in policy. */
export abstract class BasePolicy<F = never> implements Policy<F> {
  declare readonly fallbackType?: F;
  protected readonly events: EventSource;
  readonly timers: TimerWheel;

  protected constructor(events: EventSource, timers: TimerWheel | undefined) {
    this.events = events;
    this.timers = timers ?? sharedTimerWheel();
  }

  execute<T>(fn: Operation<T>, options?: ExecuteOptions | ExecutionContext): Promise<T | F> {
    return this.run(fn, Context.from(options, this.timers), CALL);
  }

  abstract run<T>(fn: Operation<T>, context: Context, next: Next): Promise<T | F>;

  onEvent(listener: PolicyListener): Disposable {
    return this.events.subscribe(listener);
  }
}
