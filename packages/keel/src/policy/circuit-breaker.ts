/**
 * Circuit breaker. It watches a sliding window of outcomes of calls to one dependency; when the
 * failure rate or the slow-call rate reaches its threshold it opens and refuses calls locally for
 * `openMs` (growing with each re-open when `openBackoff` is set), then lets exactly
 * `halfOpenProbes` calls through to decide whether to close again. Local refusals from inner
 * layers (a full bulkhead, a rate limit) never count as the dependency's failures, and a timed-out
 * probe keeps its slot until the abandoned work really ends, so a half-open breaker never has more
 * than its probes running against a struggling dependency.
 *
 * Answers: a failing dependency kept busy by callers who wait for it to time out, again and again.
 *
 * @module
 */
import { InvalidOptionError, isKeelError, isRejection } from '../errors/keel-error.ts';
import { BrokenCircuitError, IsolatedCircuitError, TimeoutError } from '../errors/policy-errors.ts';
import {
  type BreakerWindow,
  type BreakerWindowOptions,
  type BreakerWindowState,
  createBreakerWindow,
  OUTCOME_FAILED,
  OUTCOME_SLOW,
} from './breaker-window.ts';
import type { Clock } from './clock.ts';
import {
  type CommonOptions,
  checkFraction,
  checkFunction,
  checkInteger,
  checkNumber,
  checkOneOf,
  resolveTime,
} from './options.ts';
import { BasePolicy, type Context, type Next, type Operation } from './policy.ts';
import { type Disposable, EventSource } from './telemetry.ts';

export type { BreakerWindowOptions, BreakerWindowState } from './breaker-window.ts';

/** The states of a breaker. `isolated` is open by hand and stays so until released or reset. */
export type CircuitState = 'closed' | 'open' | 'half-open' | 'isolated';

/**
 * How the open duration grows while the dependency keeps failing its probes.
 *
 * @example
 * circuitBreaker({ openMs: 5_000, openBackoff: { factor: 2, maxMs: 60_000 } }); // 5 s, 10 s, 20 s, 40 s, 60 s…
 */
export interface OpenBackoffOptions {
  /**
   * Each re-open from half-open multiplies the previous open duration by this.
   * @default 2
   */
  factor?: number;
  /** The longest the breaker stays open. */
  maxMs: number;
}

/** Options of {@link circuitBreaker}. */
export interface CircuitBreakerOptions extends CommonOptions {
  /**
   * The outcomes the breaker judges.
   * @default { kind: 'count', size: 20 }
   */
  window?: BreakerWindowOptions;
  /**
   * Fraction of failed calls in the window (and among half-open probes) that opens the breaker.
   * @default 0.5
   */
  failureRateThreshold?: number;
  /**
   * Fraction of slow calls in the window (and among half-open probes) that opens the breaker.
   * @default 1
   */
  slowCallRateThreshold?: number;
  /**
   * A call that takes longer than this counts as slow, even when it succeeded. `Infinity` turns
   * slow-call detection off.
   * @default Infinity
   */
  slowCallDurationMs?: number;
  /**
   * Calls the window must hold before rates are judged (capped at a count window's size; not used
   * by the consecutive window).
   * @default 10
   */
  minimumCalls?: number;
  /**
   * How long the breaker stays open before it lets probes through.
   * @default 30000
   */
  openMs?: number;
  /**
   * Grows the open duration on each re-open from half-open; reset when the breaker closes.
   * @default undefined (every open lasts `openMs`)
   */
  openBackoff?: OpenBackoffOptions;
  /**
   * Calls let through at once while half-open; all of them must end (within the thresholds) to close.
   * @default 1
   */
  halfOpenProbes?: number;
  /**
   * Whether an error counts against the dependency. An error for which it returns false (a 4xx
   * validation error, say) counts as a success: the dependency answered. Local rejections
   * (`isRejection(err)`) and `AbortedError` (the caller gave up) never reach it and never count.
   * @default every error
   */
  isFailure?: (error: unknown) => boolean;
  /**
   * Whether a returned value counts against the dependency (a 503 response object, say).
   * @default no value does
   */
  isFailureResult?: (result: unknown) => boolean;
  /**
   * `'shadow'` computes state and emits every state change but never rejects a call, for tuning
   * thresholds against production traffic before enforcing them.
   * @default 'enforce'
   */
  mode?: 'enforce' | 'shadow';
  /** State saved by {@link CircuitBreakerPolicy.toJSON}, to carry it across restarts or invocations. */
  initialState?: unknown;
}

const DEFAULTS = Object.freeze({
  window: Object.freeze({ kind: 'count', size: 20 }) as BreakerWindowOptions,
  failureRateThreshold: 0.5,
  slowCallRateThreshold: 1,
  slowCallDurationMs: Number.POSITIVE_INFINITY,
  minimumCalls: 10,
  openMs: 30_000,
  openBackoffFactor: 2,
  halfOpenProbes: 1,
  mode: 'enforce' as 'enforce' | 'shadow',
});

/** The breaker's state in a plain, JSON-safe form; times are relative because clocks are per process. */
export interface CircuitBreakerState {
  readonly version: 1;
  /** A half-open breaker is saved as open with nothing left to wait: probes in flight do not carry over. */
  readonly state: 'closed' | 'open' | 'isolated';
  /** How long ago the breaker opened (0 unless open). */
  readonly openedAgoMs: number;
  /** How long until the breaker lets probes through (0 unless open). */
  readonly retryAfterMs: number;
  /** Opens since the breaker was last closed; drives `openBackoff`. */
  readonly consecutiveOpens: number;
  readonly window: BreakerWindowState;
}

/** A health-check view of a breaker. */
export interface CircuitBreakerSnapshot {
  readonly state: CircuitState;
  readonly mode: 'enforce' | 'shadow';
  /** Calls in the window (for a consecutive window: the current run of bad calls). */
  readonly calls: number;
  readonly failures: number;
  readonly slowCalls: number;
  /** `failures / calls`, 0 for an empty window. */
  readonly failureRate: number;
  /** `slowCalls / calls`, 0 for an empty window. */
  readonly slowCallRate: number;
  /** Milliseconds until an open breaker lets probes through; 0 otherwise. */
  readonly retryAfterMs: number;
  readonly consecutiveOpens: number;
  /** Half-open probes whose work has not ended yet. */
  readonly probesRunning: number;
  /** Calls a shadow breaker let through that an enforcing one would have rejected. */
  readonly shadowRejections: number;
}

/** A state change as `onStateChange` listeners receive it. */
export interface CircuitStateChange {
  readonly from: CircuitState;
  readonly to: CircuitState;
}

const CLOSED = 0;
const OPEN = 1;
const HALF_OPEN = 2;
const ISOLATED = 3;
const STATE_NAMES: readonly CircuitState[] = ['closed', 'open', 'half-open', 'isolated'];

/** An outcome that counts neither way: a local rejection, or the caller giving up. */
const IGNORED = -1;

const everyError = (): boolean => true;

/** See {@link circuitBreaker}. */
export class CircuitBreakerPolicy extends BasePolicy {
  readonly clock: Clock;
  readonly mode: 'enforce' | 'shadow';
  readonly openMs: number;
  readonly halfOpenProbes: number;
  readonly failureRateThreshold: number;
  readonly slowCallRateThreshold: number;
  readonly slowCallDurationMs: number;
  readonly #window: BreakerWindow;
  readonly #isFailure: (error: unknown) => boolean;
  readonly #isFailureResult: ((result: unknown) => boolean) | undefined;
  readonly #backoffFactor: number;
  readonly #maxOpenMs: number;
  readonly #enforce: boolean;
  /** Slow-call detection needs the start time of every call. */
  readonly #timesStart: boolean;
  /** The time window files each outcome under the time its call ended. */
  readonly #timeWindow: boolean;

  #state = CLOSED;
  /** Bumped on every transition; a probe admitted under an older one only releases its slot. */
  #generation = 0;
  #openedAt = 0;
  #retryAt = 0;
  #consecutiveOpens = 0;
  /** Probe slots held by work that has not ended, across generations. */
  #probesRunning = 0;
  /** Probes of this half-open period admitted and not yet judged. */
  #probesPending = 0;
  #probeOutcomes = 0;
  #probeFailures = 0;
  #probeSlow = 0;
  #isolations = 0;
  #shadowRejections = 0;
  #stateListeners: ((change: CircuitStateChange) => void)[] = [];
  readonly #releaseProbe = (): void => {
    this.#probesRunning--;
  };

  constructor(options: CircuitBreakerOptions = {}) {
    const { clock, timers } = resolveTime(options);
    super(new EventSource('breaker', options.name ?? 'breaker', options.telemetry), timers);
    this.clock = clock;
    this.failureRateThreshold = checkFraction(
      'failureRateThreshold',
      options.failureRateThreshold ?? DEFAULTS.failureRateThreshold,
    );
    this.slowCallRateThreshold = checkFraction(
      'slowCallRateThreshold',
      options.slowCallRateThreshold ?? DEFAULTS.slowCallRateThreshold,
    );
    this.slowCallDurationMs = checkNumber(
      'slowCallDurationMs',
      options.slowCallDurationMs ?? DEFAULTS.slowCallDurationMs,
      0,
      true,
    );
    const minimumCalls = checkInteger('minimumCalls', options.minimumCalls ?? DEFAULTS.minimumCalls);
    this.openMs = checkNumber('openMs', options.openMs ?? DEFAULTS.openMs);
    this.halfOpenProbes = checkInteger('halfOpenProbes', options.halfOpenProbes ?? DEFAULTS.halfOpenProbes);
    this.mode = checkOneOf('mode', options.mode ?? DEFAULTS.mode, ['enforce', 'shadow']);
    this.#enforce = this.mode === 'enforce';
    this.#isFailure =
      options.isFailure === undefined ? everyError : checkFunction('isFailure', options.isFailure);
    this.#isFailureResult =
      options.isFailureResult === undefined
        ? undefined
        : checkFunction('isFailureResult', options.isFailureResult);
    if (options.openBackoff === undefined) {
      this.#backoffFactor = 1;
      this.#maxOpenMs = this.openMs;
    } else {
      const backoff = options.openBackoff;
      if (typeof backoff !== 'object' || backoff === null) {
        throw new InvalidOptionError('openBackoff', `must be an object with maxMs, got ${String(backoff)}`);
      }
      this.#backoffFactor = checkNumber(
        'openBackoff.factor',
        backoff.factor ?? DEFAULTS.openBackoffFactor,
        1,
      );
      this.#maxOpenMs = checkNumber('openBackoff.maxMs', backoff.maxMs, this.openMs);
    }
    this.#window = createBreakerWindow(options.window ?? DEFAULTS.window, {
      failureRate: this.failureRateThreshold,
      slowCallRate: this.slowCallRateThreshold,
      minimumCalls,
    });
    this.#timesStart = this.slowCallDurationMs !== Number.POSITIVE_INFINITY;
    this.#timeWindow = this.#window.kind === 'time';
    if (options.initialState !== undefined) this.#restore(options.initialState);
  }

  /** The current state; an open breaker whose open time has passed reads (and becomes) half-open. */
  get state(): CircuitState {
    if (this.#state === OPEN && this.clock.now() >= this.#retryAt) this.#toHalfOpen();
    return STATE_NAMES[this.#state] as CircuitState;
  }

  run<T>(fn: Operation<T>, context: Context, next: Next): Promise<T> {
    if (this.#state !== CLOSED) return this.#runGuarded(fn, context, next);
    // The hot path: two handlers shared by every call instead of an async frame or closures, and no
    // clock reading unless a time window needs the end time. Calls that need their start time take
    // `#runTimed`. A call that ends after the breaker left the closed state is not recorded: it was
    // admitted before the decision and cannot stand in for a probe.
    if (this.#timesStart || this.events.active) return this.#runTimed(fn, context, next);
    return next.run(fn, context).then(this.#closedSuccess, this.#closedFailure) as Promise<T>;
  }

  readonly #closedSuccess = (result: unknown): unknown => {
    if (this.#state === CLOSED) {
      const outcome = this.#isFailureResult?.(result) === true ? OUTCOME_FAILED : 0;
      this.#record(outcome, this.#timeWindow ? this.clock.now() : Number.NaN);
    }
    return result;
  };

  readonly #closedFailure = (error: unknown): never => {
    if (this.#state === CLOSED) {
      const outcome = this.#classify(error);
      if (outcome !== IGNORED) this.#record(outcome, this.#timeWindow ? this.clock.now() : Number.NaN);
    }
    throw error;
  };

  /** Feeds a closed breaker's window, opening it when a threshold is reached. */
  #record(outcome: number, now: number): void {
    if (this.#window.record(outcome, now)) this.#open(Number.isNaN(now) ? this.clock.now() : now);
  }

  /** A closed-state call that is timed, for slow-call detection or for events with `durationMs`. */
  async #runTimed<T>(fn: Operation<T>, context: Context, next: Next): Promise<T> {
    const startedAt = this.clock.now();
    let result: T;
    try {
      result = await next.run(fn, context);
    } catch (error) {
      this.#settle(-1, startedAt, this.#classify(error), error);
      throw error;
    }
    const failed = this.#isFailureResult?.(result) === true;
    this.#settle(-1, startedAt, failed ? OUTCOME_FAILED : 0, failed ? result : undefined);
    return result;
  }

  async #runGuarded<T>(fn: Operation<T>, context: Context, next: Next): Promise<T> {
    const now = this.clock.now();
    if (this.#state === OPEN && now >= this.#retryAt) this.#toHalfOpen();
    const state = this.#state;
    if (state === CLOSED) return this.run(fn, context, next);
    const n = this.halfOpenProbes;
    if (state === HALF_OPEN && this.#probesRunning < n && this.#probesPending + this.#probeOutcomes < n) {
      return this.#runProbe(fn, context, next, now);
    }
    if (!this.#enforce) {
      // Shadow mode: let the call through, but as if it never happened, since enforcing would not have made it.
      this.#shadowRejections++;
      return next.run(fn, context);
    }
    const error = this.#rejection(now);
    if (this.events.active) {
      this.events.emit({ policy: 'breaker', name: this.events.name, type: 'rejection', error });
    }
    throw error;
  }

  async #runProbe<T>(fn: Operation<T>, context: Context, next: Next, startedAt: number): Promise<T> {
    const generation = this.#generation;
    this.#probesRunning++;
    this.#probesPending++;
    let result: T;
    try {
      result = await next.run(fn, context);
    } catch (error) {
      if (error instanceof TimeoutError && error.work !== undefined) {
        // Judge the probe now, but keep its slot until the abandoned work really ends.
        error.work.then(this.#releaseProbe, this.#releaseProbe);
      } else {
        this.#probesRunning--;
      }
      this.#settle(generation, startedAt, this.#classify(error), error);
      throw error;
    }
    this.#probesRunning--;
    const failed = this.#isFailureResult?.(result) === true;
    this.#settle(generation, startedAt, failed ? OUTCOME_FAILED : 0, failed ? result : undefined);
    return result;
  }

  /** Local rejections and the caller's own abort say nothing about the dependency, so they count neither way. */
  #classify(error: unknown): number {
    if (isRejection(error) || (isKeelError(error) && error.code === 'KEEL_ABORTED')) return IGNORED;
    return this.#isFailure(error) ? OUTCOME_FAILED : 0;
  }

  /**
   * Records a timed outcome: emits its event, then feeds the window (a closed-state call, `probe`
   * -1) or the tally of the half-open period the probe was admitted in.
   */
  #settle(probe: number, startedAt: number, outcome: number, error: unknown): void {
    if (outcome === IGNORED) {
      if (probe === this.#generation && this.#state === HALF_OPEN) this.#probesPending--;
      return;
    }
    const now = this.clock.now();
    const durationMs = now - startedAt;
    if (durationMs > this.slowCallDurationMs) outcome |= OUTCOME_SLOW;
    if (this.events.active) {
      const name = this.events.name;
      if ((outcome & OUTCOME_FAILED) === 0) {
        this.events.emit({ policy: 'breaker', name, type: 'success', durationMs });
      } else {
        this.events.emit({ policy: 'breaker', name, type: 'failure', durationMs, error });
      }
    }
    if (probe === -1) {
      if (this.#state === CLOSED) this.#record(outcome, now);
    } else if (probe === this.#generation && this.#state === HALF_OPEN) {
      this.#probesPending--;
      this.#judgeProbe(outcome, now);
    }
  }

  #judgeProbe(outcome: number, now: number): void {
    this.#probeOutcomes++;
    this.#probeFailures += outcome & OUTCOME_FAILED;
    this.#probeSlow += (outcome & OUTCOME_SLOW) >> 1;
    const n = this.halfOpenProbes;
    // The tally is over all n probes, so once the bad ones alone reach a threshold no later probe can save it.
    const failing = this.#probeFailures > 0 && this.#probeFailures / n >= this.failureRateThreshold;
    const slow = this.#probeSlow > 0 && this.#probeSlow / n >= this.slowCallRateThreshold;
    if (failing || slow) this.#open(now);
    else if (this.#probeOutcomes === n) this.#close();
  }

  #rejection(now: number): BrokenCircuitError {
    if (this.#state === ISOLATED) return new IsolatedCircuitError();
    if (this.#state === OPEN) return new BrokenCircuitError(this.#retryAt - now, this.#retryAt);
    return new BrokenCircuitError(
      0,
      now,
      'The circuit is half-open and its probes are running; the call was not made',
    );
  }

  #open(now: number): void {
    this.#consecutiveOpens = this.#state === HALF_OPEN ? this.#consecutiveOpens + 1 : 1;
    const ms = Math.min(this.openMs * this.#backoffFactor ** (this.#consecutiveOpens - 1), this.#maxOpenMs);
    this.#openedAt = now;
    this.#retryAt = now + ms;
    this.#transition(OPEN);
  }

  #toHalfOpen(): void {
    this.#probesPending = 0;
    this.#probeOutcomes = 0;
    this.#probeFailures = 0;
    this.#probeSlow = 0;
    this.#transition(HALF_OPEN);
  }

  #close(): void {
    this.#window.clear();
    this.#consecutiveOpens = 0;
    this.#transition(CLOSED);
  }

  #transition(to: number): void {
    const from = this.#state;
    this.#state = to;
    this.#generation++;
    if (from === to) return;
    const change: CircuitStateChange = {
      from: STATE_NAMES[from] as CircuitState,
      to: STATE_NAMES[to] as CircuitState,
    };
    if (this.events.active) {
      this.events.emit({ policy: 'breaker', name: this.events.name, type: 'state-change', ...change });
    }
    const listeners = this.#stateListeners;
    for (let i = 0; i < listeners.length; i++) {
      try {
        (listeners[i] as (change: CircuitStateChange) => void)(change);
      } catch (err) {
        process.emitWarning(`A Keel breaker state listener threw: ${String(err)}`, {
          code: 'KEEL_LISTENER_THREW',
        });
      }
    }
  }

  /**
   * Holds the breaker open by hand (during a provider's maintenance, say) until every handle is
   * disposed or {@link reset} is called; then it closes with an empty window.
   *
   * @example
   * const hold = breaker.isolate();
   * // … maintenance …
   * hold.dispose();
   */
  isolate(): Disposable {
    this.#isolations++;
    if (this.#state !== ISOLATED) this.#transition(ISOLATED);
    const generation = this.#generation;
    let disposed = false;
    return {
      dispose: () => {
        // A reset or a later restore has already released every handle taken before it.
        if (disposed || this.#state !== ISOLATED || this.#generation !== generation) return;
        disposed = true;
        if (--this.#isolations === 0) this.#close();
      },
    };
  }

  /**
   * Closes the breaker with an empty window, whatever its state, and releases every isolation.
   *
   * @example
   * breaker.reset(); // after the dependency was fixed by hand
   */
  reset(): void {
    this.#isolations = 0;
    this.#close();
  }

  /**
   * Subscribes to state changes only; returns a disposer.
   *
   * @example
   * breaker.onStateChange(({ from, to }) => log.warn({ from, to }, 'provider breaker changed state'));
   */
  onStateChange(listener: (change: CircuitStateChange) => void): Disposable {
    this.#stateListeners = [...this.#stateListeners, listener];
    return {
      dispose: () => {
        this.#stateListeners = this.#stateListeners.filter((l) => l !== listener);
      },
    };
  }

  /**
   * A view for health checks and dashboards.
   *
   * @example
   * app.get('/health', () => ({ provider: breaker.snapshot() }));
   */
  snapshot(): CircuitBreakerSnapshot {
    const state = this.state;
    const now = this.clock.now();
    const window = this.#window;
    window.advance(now);
    const calls = window.calls;
    return {
      state,
      mode: this.mode,
      calls,
      failures: window.failures,
      slowCalls: window.slowCalls,
      failureRate: calls === 0 ? 0 : window.failures / calls,
      slowCallRate: calls === 0 ? 0 : window.slowCalls / calls,
      retryAfterMs: this.#state === OPEN ? Math.max(0, this.#retryAt - now) : 0,
      consecutiveOpens: this.#consecutiveOpens,
      probesRunning: this.#probesRunning,
      shadowRejections: this.#shadowRejections,
    };
  }

  /**
   * The state to pass as `initialState` to a later breaker (in another process or invocation).
   *
   * @example
   * await kv.put('breaker:provider-a', JSON.stringify(breaker));
   * const restored = circuitBreaker({ initialState: JSON.parse(await kv.get('breaker:provider-a')) });
   */
  toJSON(): CircuitBreakerState {
    const state = this.state;
    const now = this.clock.now();
    const open = state === 'open' || state === 'half-open';
    return {
      version: 1,
      state: state === 'half-open' ? 'open' : state,
      openedAgoMs: open ? Math.max(0, now - this.#openedAt) : 0,
      retryAfterMs: state === 'open' ? Math.max(0, this.#retryAt - now) : 0,
      consecutiveOpens: this.#consecutiveOpens,
      window: this.#window.toJSON(now),
    };
  }

  #restore(input: unknown): void {
    const saved = parseState(input);
    const now = this.clock.now();
    this.#window.restore(saved.window, now);
    this.#consecutiveOpens = saved.consecutiveOpens;
    if (saved.state === 'open') {
      this.#openedAt = now - saved.openedAgoMs;
      this.#retryAt = now + saved.retryAfterMs;
      this.#state = OPEN;
    } else if (saved.state === 'isolated') {
      this.#state = ISOLATED;
    }
  }
}

function parseState(input: unknown): CircuitBreakerState {
  const fail = (why: string): never => {
    throw new InvalidOptionError('initialState', `is not a saved breaker state: ${why}`);
  };
  if (typeof input !== 'object' || input === null) return fail(`expected an object, got ${String(input)}`);
  const s = input as Record<string, unknown>;
  if (s.version !== 1) fail(`unknown version ${String(s.version)}`);
  if (s.state !== 'closed' && s.state !== 'open' && s.state !== 'isolated') {
    fail(`state must be 'closed', 'open' or 'isolated', got ${String(s.state)}`);
  }
  for (const key of ['openedAgoMs', 'retryAfterMs']) {
    if (!isCount(s[key], false)) fail(`${key} must be a finite number ≥ 0, got ${String(s[key])}`);
  }
  if (!isCount(s.consecutiveOpens, true)) fail(`consecutiveOpens must be an integer ≥ 0`);
  const w = s.window as Record<string, unknown> | null;
  if (typeof w !== 'object' || w === null) return fail('window must be an object');
  if (w.kind === 'consecutive') {
    if (!isCount(w.failures, true) || !isCount(w.slowCalls, true)) {
      fail('a consecutive window needs integer failures and slowCalls ≥ 0');
    }
  } else if (w.kind === 'count') {
    const outcomes = w.outcomes;
    if (!Array.isArray(outcomes) || !outcomes.every((o) => o === 0 || o === 1 || o === 2 || o === 3)) {
      fail('a count window needs outcomes, an array of 0–3');
    }
  } else if (w.kind === 'time') {
    if (typeof w.bucketMs !== 'number' || !(w.bucketMs > 0) || !Number.isFinite(w.bucketMs)) {
      fail('a time window needs a positive bucketMs');
    }
    const buckets = w.buckets;
    const valid =
      Array.isArray(buckets) &&
      buckets.every((b: unknown) => {
        if (typeof b !== 'object' || b === null) return false;
        const { bucketsAgo, calls, failures, slowCalls } = b as Record<string, unknown>;
        return (
          isCount(bucketsAgo, true) &&
          isCount(calls, true) &&
          isCount(failures, true) &&
          isCount(slowCalls, true) &&
          (failures as number) <= (calls as number) &&
          (slowCalls as number) <= (calls as number)
        );
      });
    if (!valid) fail('a time window needs buckets of integer bucketsAgo, calls, failures, slowCalls');
  } else {
    fail(`unknown window kind ${String(w.kind)}`);
  }
  return s as unknown as CircuitBreakerState;
}

function isCount(value: unknown, integer: boolean): boolean {
  return (
    typeof value === 'number' &&
    value >= 0 &&
    (integer ? Number.isSafeInteger(value) : Number.isFinite(value))
  );
}

/**
 * A circuit breaker around one dependency.
 *
 * @example
 * const breaker = circuitBreaker({
 *   name: 'provider-a',
 *   window: { kind: 'time', seconds: 30 },
 *   failureRateThreshold: 0.5,
 *   slowCallDurationMs: 2_000,
 *   slowCallRateThreshold: 0.8,
 *   minimumCalls: 20,
 *   openMs: 10_000,
 *   openBackoff: { maxMs: 120_000 },
 *   halfOpenProbes: 3,
 *   isFailure: (err) => !(err instanceof HttpStatusError && err.status < 500),
 * });
 * const charge = await breaker.execute(({ signal }) => provider.charge(order, { signal }));
 */
export function circuitBreaker(options: CircuitBreakerOptions = {}): CircuitBreakerPolicy {
  return new CircuitBreakerPolicy(options);
}
