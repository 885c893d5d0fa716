/**
 * Hedged requests: when an idempotent read has not answered within the time most reads take (the
 * 95th percentile of recent latencies, say), send the same read again — to another replica if there
 * is one — and take whichever answer comes first, cancelling the other. A few percent more requests
 * buy a much shorter tail: one slow replica, GC pause or lost packet no longer sets the latency of
 * the whole call.
 *
 * Hedging answers slowness, not failure: an attempt that fails while no other attempt is running
 * ends the call with its error. Put a retry outside the hedge for failures, and never hedge writes.
 *
 * Answers: tail latency — a p99 many times the median because one replica in twenty is slow.
 *
 * @module
 */
import { InvalidOptionError, KeelError } from '../errors/keel-error.ts';
import type { Clock } from './clock.ts';
import { LatencyWindow } from './latency-window.ts';
import {
  type CommonOptions,
  checkFraction,
  checkFunction,
  checkInteger,
  checkNumber,
  resolveTime,
} from './options.ts';
import {
  BasePolicy,
  CALL,
  Context,
  type ExecuteOptions,
  type ExecutionContext,
  type Next,
  type Operation,
} from './policy.ts';
import { EventSource } from './telemetry.ts';
import { TimerEntry } from './timer-wheel.ts';

/** How long to wait before hedging, learned from the latencies of recent successful calls. */
export interface HedgeDelayOptions {
  /**
   * Hedge a call once it has run longer than this fraction of recent calls took, in (0, 1].
   * @default 0.95
   */
  percentile?: number;
  /**
   * The shortest delay, so a very fast dependency is not hedged on every call.
   * @default 5
   */
  minMs?: number;
  /**
   * The longest delay, so a dependency that slows down as a whole is still hedged.
   * @default 1000
   */
  maxMs?: number;
  /**
   * The delay used until `minSamples` latencies have been seen. `Infinity` hedges nothing until then.
   * @default `maxMs`
   */
  initialMs?: number;
  /**
   * How many successful calls to observe before trusting the percentile; at most `windowSize`.
   * @default 20 (or `windowSize` when smaller)
   */
  minSamples?: number;
  /**
   * How many of the latest latencies the percentile is computed over.
   * @default 256
   */
  windowSize?: number;
}

/** Options of {@link hedge}. */
export interface HedgeOptions<Target = number> extends CommonOptions {
  /**
   * Must be `true`: a hedge runs the operation more than once at the same time, which is only safe
   * when running it twice has the effect of running it once (reads, idempotent writes).
   */
  idempotent: true;
  /**
   * A fixed delay in milliseconds, or how to learn one from observed latencies.
   * @default { percentile: 0.95, minMs: 5, maxMs: 1000 }
   */
  delay?: number | HedgeDelayOptions;
  /**
   * Extra attempts at most; each starts one delay after the previous one.
   * @default 1
   */
  maxHedges?: number;
  /**
   * Where each attempt goes: attempt `i` (0 for the first) gets `targets[i % targets.length]`, read
   * with {@link HedgePolicy.executeOn} or {@link HedgePolicy.targetOf}. Without targets, an attempt's
   * target is its index.
   */
  targets?: readonly Target[];
}

/** An operation that is told which target (replica, region, endpoint) its attempt should use. */
export type HedgeOperation<Target, T> = (target: Target, context: ExecutionContext) => PromiseLike<T> | T;

const DEFAULTS = Object.freeze({
  percentile: 0.95,
  minMs: 5,
  maxMs: 1_000,
  minSamples: 20,
  windowSize: 256,
  maxHedges: 1,
});

/**
 * Successful calls recorded between two recomputations of the percentile: selection is linear in the
 * window, so doing it on every call would make the hot path scale with `windowSize`.
 */
const REFRESH_EVERY = 16;

/**
 * The abort reason of an attempt that lost the race: another attempt of the same hedged call
 * answered first. Callers never see it as a rejection; it only reaches the losing attempt's signal.
 *
 * @example
 * signal.addEventListener('abort', () => {
 *   if (!(signal.reason instanceof HedgeLostError)) log.warn('read aborted', signal.reason);
 * });
 */
export class HedgeLostError extends KeelError {
  constructor() {
    super('KEEL_HEDGE_LOST', 'Another attempt of the hedged call answered first');
  }
}

/**
 * The cancellation of one attempt. Its `AbortController` exists only once the attempt reads its
 * signal, so an attempt whose code never looks at the signal allocates none.
 */
class HedgeAttempt {
  readonly index: number;
  done = false;
  cancelled = false;
  #reason: unknown;
  #controller: AbortController | undefined;

  constructor(index: number) {
    this.index = index;
  }

  get signal(): AbortSignal {
    if (this.#controller === undefined) {
      this.#controller = new AbortController();
      if (this.cancelled) this.#controller.abort(this.#reason);
    }
    return this.#controller.signal;
  }

  cancel(reason: unknown): void {
    this.cancelled = true;
    this.#reason = reason;
    this.#controller?.abort(reason);
  }
}

/**
 * The context of one attempt: the caller's signal and deadline plus the attempt's own cancellation.
 * Contexts derived from it by inner layers (a per-attempt timeout narrowing the deadline) stay
 * attempt contexts, so the cancellation reaches the guarded function whatever sits in between.
 */
class AttemptContext extends Context {
  readonly hedgeAttempt: HedgeAttempt;
  #combined: AbortSignal | undefined;

  constructor(
    parentSignal: AbortSignal | undefined,
    deadline: number,
    attempt: number,
    context: Context,
    hedgeAttempt: HedgeAttempt,
  ) {
    super(parentSignal, deadline, attempt, context.timers);
    this.hedgeAttempt = hedgeAttempt;
  }

  override get signal(): AbortSignal {
    if (this.#combined === undefined) {
      const own = this.hedgeAttempt.signal;
      const unbounded = this.parentSignal === undefined && this.deadline === Number.POSITIVE_INFINITY;
      this.#combined = unbounded ? own : AbortSignal.any([super.signal, own]);
    }
    return this.#combined;
  }

  override get callerAborted(): boolean {
    return this.hedgeAttempt.cancelled || super.callerAborted;
  }

  override withDeadline(deadline: number): Context {
    if (deadline >= this.deadline) return this;
    return new AttemptContext(this.parentSignal, deadline, this.attempt, this, this.hedgeAttempt);
  }

  override withAttempt(attempt: number): Context {
    return new AttemptContext(this.parentSignal, this.deadline, attempt, this, this.hedgeAttempt);
  }

  override withSignal(signal: AbortSignal): Context {
    return new AttemptContext(signal, this.deadline, this.attempt, this, this.hedgeAttempt);
  }
}

/** One hedged call: its attempts, the timer of its next hedge, and the first answer. */
class HedgedCall<T> extends TimerEntry {
  readonly #fn: Operation<T>;
  readonly #context: Context;
  readonly #next: Next;
  readonly attempts: HedgeAttempt[] = [];
  running = 0;
  /** The hedge timer fired and the call has not started that hedge yet. */
  due = false;
  settled = false;
  succeeded = false;
  value: T | undefined;
  /** The error of the attempt that failed first. */
  error: unknown;
  #failed = false;
  #wake: (() => void) | undefined;

  constructor(fn: Operation<T>, context: Context, next: Next) {
    super();
    this.#fn = fn;
    this.#context = context;
    this.#next = next;
  }

  /** Resolves once the call settles or a hedge is due. */
  changed(): Promise<void> {
    if (this.settled || this.due) return Promise.resolve();
    return new Promise<void>((resolve) => {
      this.#wake = resolve;
    });
  }

  launch(): void {
    const attempt = new HedgeAttempt(this.attempts.length);
    this.attempts.push(attempt);
    this.running++;
    const c = this.#context;
    const context = new AttemptContext(c.parentSignal, c.deadline, c.attempt, c, attempt);
    let work: Promise<T>;
    try {
      work = this.#next.run(this.#fn, context);
    } catch (error) {
      work = Promise.reject(error);
    }
    work.then(
      (value) => this.#attemptSucceeded(attempt, value),
      (error: unknown) => this.#attemptFailed(attempt, error),
    );
  }

  expire(): void {
    if (this.settled) return;
    this.due = true;
    this.#notify();
  }

  #attemptSucceeded(attempt: HedgeAttempt, value: T): void {
    attempt.done = true;
    this.running--;
    if (this.settled) return;
    this.settled = true;
    this.succeeded = true;
    this.value = value;
    const attempts = this.attempts;
    for (let i = 0; i < attempts.length; i++) {
      const other = attempts[i] as HedgeAttempt;
      if (!other.done) other.cancel(new HedgeLostError());
    }
    this.#notify();
  }

  #attemptFailed(attempt: HedgeAttempt, error: unknown): void {
    attempt.done = true;
    this.running--;
    if (this.settled) return;
    if (!this.#failed) {
      this.#failed = true;
      this.error = error;
    }
    if (this.running > 0) return;
    this.settled = true;
    this.#notify();
  }

  #notify(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }
}

/** See {@link hedge}. */
export class HedgePolicy<Target = number> extends BasePolicy {
  readonly maxHedges: number;
  readonly targets: readonly Target[] | undefined;
  readonly clock: Clock;
  /** Latencies of recent successful calls; empty when the delay is fixed. */
  readonly latencies: LatencyWindow;
  readonly percentile: number;
  readonly minMs: number;
  readonly maxMs: number;
  readonly initialMs: number;
  readonly minSamples: number;
  readonly #fixedMs: number | undefined;
  #learnedMs: number | undefined;
  #recordedSinceRefresh = 0;

  constructor(options: HedgeOptions<Target>) {
    const { clock, timers } = resolveTime(options);
    super(new EventSource('hedge', options.name ?? 'hedge', options.telemetry), timers);
    if (options.idempotent !== true) {
      throw new InvalidOptionError(
        'idempotent',
        'must be true: hedging runs the operation more than once at the same time, so only idempotent operations may be hedged',
      );
    }
    this.clock = clock;
    this.maxHedges = checkInteger('maxHedges', options.maxHedges ?? DEFAULTS.maxHedges, 1);
    if (options.targets !== undefined && (!Array.isArray(options.targets) || options.targets.length === 0)) {
      throw new InvalidOptionError('targets', 'must be a non-empty array when given');
    }
    this.targets = options.targets === undefined ? undefined : Object.freeze([...options.targets]);
    const delay = options.delay ?? {};
    if (typeof delay === 'number') {
      this.#fixedMs = checkNumber('delay', delay);
      this.percentile = DEFAULTS.percentile;
      this.minMs = this.#fixedMs;
      this.maxMs = this.#fixedMs;
      this.initialMs = this.#fixedMs;
      this.minSamples = DEFAULTS.minSamples;
      this.latencies = new LatencyWindow({ size: 1 });
    } else {
      this.percentile = checkFraction('delay.percentile', delay.percentile ?? DEFAULTS.percentile, true);
      this.minMs = checkNumber('delay.minMs', delay.minMs ?? DEFAULTS.minMs);
      this.maxMs = checkNumber(
        'delay.maxMs',
        delay.maxMs ?? Math.max(DEFAULTS.maxMs, this.minMs),
        this.minMs,
        true,
      );
      this.initialMs = checkNumber('delay.initialMs', delay.initialMs ?? this.maxMs, 0, true);
      const size = checkInteger('delay.windowSize', delay.windowSize ?? DEFAULTS.windowSize);
      // A window smaller than minSamples would never hold enough samples to learn from.
      this.minSamples = checkInteger(
        'delay.minSamples',
        delay.minSamples ?? Math.min(DEFAULTS.minSamples, size),
        1,
        size,
      );
      this.latencies = new LatencyWindow({ size });
    }
  }

  /**
   * The delay the next call will hedge after: the fixed delay, `initialMs` until `minSamples`
   * calls have succeeded, then the percentile of recent latencies within [`minMs`, `maxMs`].
   */
  get delayMs(): number {
    if (this.#fixedMs !== undefined) return this.#fixedMs;
    if (this.latencies.count < this.minSamples) return this.initialMs;
    if (this.#learnedMs === undefined || this.#recordedSinceRefresh >= REFRESH_EVERY) {
      const observed = this.latencies.percentile(this.percentile);
      this.#learnedMs = Math.min(this.maxMs, Math.max(this.minMs, observed));
      this.#recordedSinceRefresh = 0;
    }
    return this.#learnedMs;
  }

  /**
   * The target of the attempt `context` belongs to, for a hedge used inside a pipeline.
   *
   * @example
   * const reads = hedge({ idempotent: true, targets: replicas });
   * await pipeline(reads, timeout({ ms: 500 })).execute((ctx) => reads.targetOf(ctx).query(sql));
   */
  targetOf(context: ExecutionContext): Target {
    const index = context instanceof AttemptContext ? context.hedgeAttempt.index : 0;
    const targets = this.targets;
    return (targets === undefined ? index : targets[index % targets.length]) as Target;
  }

  /**
   * Runs a hedged call whose attempts are told their target.
   *
   * @example
   * const reads = hedge({ idempotent: true, targets: ['replica-a', 'replica-b'] });
   * const row = await reads.executeOn((replica, { signal }) => db(replica).get(id, { signal }));
   */
  executeOn<T>(fn: HedgeOperation<Target, T>, options?: ExecuteOptions | ExecutionContext): Promise<T> {
    checkFunction('fn', fn);
    return this.run(
      (context) => fn(this.targetOf(context), context),
      Context.from(options, this.timers),
      CALL,
    );
  }

  async run<T>(fn: Operation<T>, context: Context, next: Next): Promise<T> {
    const startedAt = this.clock.now();
    const delayMs = this.delayMs;
    const call = new HedgedCall(fn, context, next);
    call.launch();
    if (delayMs !== Number.POSITIVE_INFINITY) this.timers.schedule(call, startedAt + delayMs);
    for (;;) {
      // Hedges start here, in a continuation of the caller's own async chain rather than in the
      // timer's callback, so they run in the caller's async context (its deadline, its trace).
      await call.changed();
      if (call.settled) break;
      call.due = false;
      const now = this.clock.now();
      if (context.callerAborted || now >= context.deadline) continue;
      if (this.events.active) {
        this.events.emit({
          policy: 'hedge',
          name: this.events.name,
          type: 'hedge',
          attempt: call.attempts.length + 1,
          delayMs,
        });
      }
      call.launch();
      if (call.attempts.length <= this.maxHedges) this.timers.schedule(call, now + delayMs);
    }
    this.timers.cancel(call);
    const durationMs = this.clock.now() - startedAt;
    if (call.succeeded) {
      if (this.#fixedMs === undefined) {
        // The whole call's latency, not the winning attempt's: when a hedge wins, the first attempt
        // had already run longer than the delay, and recording only the winner would pull the
        // percentile down and make hedges ever earlier.
        this.latencies.record(durationMs);
        this.#recordedSinceRefresh++;
      }
      if (this.events.active)
        this.events.emit({ policy: 'hedge', name: this.events.name, type: 'success', durationMs });
      return call.value as T;
    }
    if (this.events.active) {
      this.events.emit({
        policy: 'hedge',
        name: this.events.name,
        type: 'failure',
        durationMs,
        error: call.error,
      });
    }
    throw call.error;
  }
}

/**
 * Hedges idempotent reads: a second attempt (to another target when given) starts once the first
 * has taken longer than the chosen percentile of recent calls; the first success wins and the other
 * attempts are aborted through their signals. When every attempt fails, the call rejects with the
 * error of the attempt that failed first.
 *
 * @example
 * const reads = hedge({ idempotent: true, delay: { percentile: 0.95, minMs: 10, maxMs: 200 } });
 * const user = await reads.execute(({ signal }) => users.get(id, { signal }));
 */
export function hedge<Target = number>(options: HedgeOptions<Target>): HedgePolicy<Target> {
  return new HedgePolicy(options);
}
