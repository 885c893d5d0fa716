/**
 * Runs invariants on a schedule and turns breaches into alerts: a breach alerts only after it has
 * lasted the invariant's `for:` duration (so a blip pages nobody), fires once, re-notifies on an
 * interval while it lasts, and sends a resolve when the invariant holds again. Every evaluation is
 * also reported as a result — to a callback and to a gauge — so the checks themselves are visible
 * on a dashboard and in Prometheus rules.
 *
 * @module
 */
import { InvalidOptionError } from '../errors/keel-error.ts';
import type { WallClock } from '../idempotency/store.ts';
import { wallClock as defaultWallClock } from '../idempotency/store.ts';
import { type Clock, systemClock, type Timer } from '../policy/clock.ts';
import { checkFunction, checkInteger } from '../policy/options.ts';
import type { AlertNotification, AlertSeverity, BreachEvidence } from './alert.ts';
import type { AlertSink } from './alert-sinks.ts';
import type { Invariant, InvariantKind } from './invariant.ts';

/** One evaluation of one invariant, as `onResult` receives it. */
export interface InvariantResult {
  readonly name: string;
  readonly kind: InvariantKind;
  readonly severity: AlertSeverity;
  /** `ok`, `breached` (before or after `for:`), or `error` when the check itself threw. */
  readonly status: 'ok' | 'breached' | 'error';
  /** Absent when the check threw. */
  readonly evidence?: BreachEvidence;
  readonly error?: unknown;
  /** How long the current breach has lasted, 0 when it holds. */
  readonly breachedForMs: number;
  /** True while its alert is firing (the breach outlasted `for:`). */
  readonly firing: boolean;
}

/**
 * A gauge the evaluator sets per invariant, 1 while breached and 0 while it holds. The metrics
 * facade's `gauge({ name: INVARIANT_BREACHED_METRIC, labels: { invariant: { maxValues: 100 } } })`
 * fits, as does any `{ set(labels, value) }`.
 */
export interface InvariantGauge {
  set(labels: { readonly invariant: string }, value: number): void;
}

/** Options of {@link invariants}. */
export interface InvariantsOptions {
  /** The invariants and heartbeats to evaluate. Names must be unique. */
  readonly checks: readonly Invariant[];
  /**
   * Time between the end of one round and the start of the next.
   * @default 30_000
   */
  readonly intervalMs?: number;
  /**
   * How often a firing alert is sent again while the breach lasts.
   * @default 3_600_000 (one hour)
   */
  readonly renotifyMs?: number;
  /** Where notifications go. @default [] */
  readonly sinks?: readonly AlertSink[];
  /** Called with every evaluation result. */
  readonly onResult?: (result: InvariantResult) => void;
  /** Set to 1/0 per invariant on every evaluation; see {@link InvariantGauge}. */
  readonly breachedGauge?: InvariantGauge;
  /** Called when a sink fails to deliver; by default a process warning (`KEEL_ALERT_SINK_FAILED`). */
  readonly onSinkError?: (error: unknown, sink: AlertSink, notification: AlertNotification) => void;
  /**
   * Schedules rounds and measures `for:`; pass a `FakeClock` in tests (and to heartbeats).
   * @default systemClock
   */
  readonly clock?: Clock;
  /**
   * Stamps `startsAt`/`endsAt` of notifications.
   * @default Date.now
   */
  readonly wallClock?: WallClock;
}

interface CheckState {
  breachedSince: number | undefined;
  wallStart: number;
  firing: boolean;
  lastSentAt: number;
  sequence: number;
  lastEvidence: BreachEvidence | undefined;
}

/** See {@link invariants}. */
export class InvariantEvaluator {
  readonly checks: readonly Invariant[];
  readonly intervalMs: number;
  readonly renotifyMs: number;
  readonly #sinks: readonly AlertSink[];
  readonly #clock: Clock;
  readonly #wallClock: WallClock;
  readonly #onResult: ((result: InvariantResult) => void) | undefined;
  readonly #gauge: InvariantGauge | undefined;
  readonly #onSinkError: (error: unknown, sink: AlertSink, notification: AlertNotification) => void;
  readonly #state = new Map<string, CheckState>();
  #timer: Timer | undefined;
  #running = false;
  #round: Promise<readonly InvariantResult[]> | undefined;

  constructor(options: InvariantsOptions) {
    if (!Array.isArray(options.checks))
      throw new InvalidOptionError('checks', 'must be an array of invariants');
    const names = new Set<string>();
    for (const check of options.checks) {
      if (typeof check?.evaluate !== 'function')
        throw new InvalidOptionError('checks', 'every check must be an invariant');
      if (names.has(check.name))
        throw new InvalidOptionError('checks', `two invariants are named '${check.name}'`);
      names.add(check.name);
    }
    this.checks = Object.freeze([...options.checks]);
    this.intervalMs = checkInteger('intervalMs', options.intervalMs ?? 30_000);
    this.renotifyMs = checkInteger('renotifyMs', options.renotifyMs ?? 3_600_000);
    this.#sinks = Object.freeze([...(options.sinks ?? [])]);
    this.#clock = options.clock ?? systemClock;
    this.#wallClock = options.wallClock ?? defaultWallClock;
    this.#onResult = options.onResult === undefined ? undefined : checkFunction('onResult', options.onResult);
    this.#gauge = options.breachedGauge;
    this.#onSinkError =
      options.onSinkError ??
      ((error, sink, notification) =>
        process.emitWarning(
          `Alert ${notification.name} was not delivered to ${sink.name}: ${String(error)}`,
          {
            code: 'KEEL_ALERT_SINK_FAILED',
          },
        ));
    for (const check of this.checks) {
      this.#state.set(check.name, {
        breachedSince: undefined,
        wallStart: 0,
        firing: false,
        lastSentAt: 0,
        sequence: 0,
        lastEvidence: undefined,
      });
    }
  }

  /** Evaluates every invariant now (first round immediately), then every `intervalMs` until `stop()`. */
  start(): void {
    if (this.#running) return;
    this.#running = true;
    void this.#tick();
  }

  /** Stops scheduling rounds; a round in progress finishes. Resolves when it has. */
  async stop(): Promise<void> {
    this.#running = false;
    this.#timer?.cancel();
    this.#timer = undefined;
    await this.#round;
  }

  /**
   * Runs one round: evaluates every invariant concurrently, updates alert state and delivers
   * notifications. Concurrent calls share the round in progress.
   */
  evaluateOnce(): Promise<readonly InvariantResult[]> {
    this.#round ??= this.#evaluateAll().finally(() => {
      this.#round = undefined;
    });
    return this.#round;
  }

  /** The invariants whose alerts are firing now, with their severity. */
  firing(): readonly { readonly name: string; readonly severity: AlertSeverity }[] {
    return this.checks
      .filter((check) => this.#state.get(check.name)?.firing === true)
      .map((check) => ({ name: check.name, severity: check.alert.severity }));
  }

  async #tick(): Promise<void> {
    if (!this.#running) return;
    try {
      await this.evaluateOnce();
    } finally {
      if (this.#running) this.#timer = this.#clock.setTimer(() => void this.#tick(), this.intervalMs);
    }
  }

  async #evaluateAll(): Promise<readonly InvariantResult[]> {
    const now = this.#clock.now();
    const outcomes = await Promise.allSettled(this.checks.map(async (check) => check.evaluate({ now })));
    const notifications: AlertNotification[] = [];
    const results = this.checks.map((check, i) => {
      const outcome = outcomes[i] as PromiseSettledResult<Awaited<ReturnType<Invariant['evaluate']>>>;
      const state = this.#state.get(check.name) as CheckState;
      let result: InvariantResult;
      if (outcome.status === 'rejected') {
        // A check that cannot run says nothing about the invariant: the alert state stays as it was.
        result = this.#result(check, state, 'error', now, undefined, outcome.reason);
      } else if (outcome.value.ok) {
        if (state.firing && state.lastEvidence !== undefined) {
          notifications.push(this.#notification(check, state, 'resolved', state.lastEvidence));
        }
        state.breachedSince = undefined;
        state.firing = false;
        state.sequence = 0;
        state.lastEvidence = undefined;
        result = this.#result(check, state, 'ok', now, outcome.value.evidence);
      } else {
        const evidence = outcome.value.evidence;
        if (state.breachedSince === undefined) {
          state.breachedSince = now;
          state.wallStart = this.#wallClock.now();
        }
        state.lastEvidence = evidence;
        const due = state.firing
          ? now - state.lastSentAt >= this.renotifyMs
          : now - state.breachedSince >= check.forMs;
        if (due) {
          state.firing = true;
          state.lastSentAt = now;
          state.sequence++;
          notifications.push(this.#notification(check, state, 'firing', evidence));
        }
        result = this.#result(check, state, 'breached', now, evidence);
      }
      this.#report(check, result);
      return result;
    });
    await Promise.all(notifications.map((notification) => this.#deliver(notification)));
    return results;
  }

  /** Hands a result to the gauge and `onResult`; a throwing observer must not stop the round's alerts. */
  #report(check: Invariant, result: InvariantResult): void {
    try {
      if (result.status !== 'error') {
        this.#gauge?.set({ invariant: check.name }, result.status === 'breached' ? 1 : 0);
      }
      this.#onResult?.(result);
    } catch (err) {
      process.emitWarning(`Reporting the result of invariant ${check.name} threw: ${String(err)}`, {
        code: 'KEEL_INVARIANT_REPORT_FAILED',
      });
    }
  }

  #result(
    check: Invariant,
    state: CheckState,
    status: InvariantResult['status'],
    now: number,
    evidence?: BreachEvidence,
    error?: unknown,
  ): InvariantResult {
    return {
      name: check.name,
      kind: check.kind,
      severity: check.alert.severity,
      status,
      ...(evidence === undefined ? {} : { evidence }),
      ...(status === 'error' ? { error } : {}),
      breachedForMs: state.breachedSince === undefined ? 0 : now - state.breachedSince,
      firing: state.firing,
    };
  }

  #notification(
    check: Invariant,
    state: CheckState,
    status: 'firing' | 'resolved',
    evidence: BreachEvidence,
  ): AlertNotification {
    const wallNow = this.#wallClock.now();
    return {
      status,
      name: check.name,
      alert: check.alert,
      evidence,
      startsAt: state.wallStart,
      ...(status === 'resolved'
        ? { endsAt: wallNow }
        : { expiresAt: wallNow + this.renotifyMs + 2 * this.intervalMs }),
      sequence: state.sequence,
    };
  }

  async #deliver(notification: AlertNotification): Promise<void> {
    await Promise.all(
      this.#sinks.map(async (sink) => {
        try {
          await sink.send(notification);
        } catch (err) {
          this.#onSinkError(err, sink, notification);
        }
      }),
    );
  }
}

/**
 * Evaluates invariants and heartbeats on a schedule and alerts through the sinks.
 *
 * @example
 * const evaluator = invariants({
 *   checks: [paidOrdersHavePayments, paymentsFollowOrders, nightly],
 *   intervalMs: 30_000,
 *   sinks: [logSink(log), alertmanagerSink({ url: 'http://alertmanager:9093' })],
 *   breachedGauge: metrics.gauge({ name: INVARIANT_BREACHED_METRIC, help: '1 while an invariant is breached', labels: { invariant: { maxValues: 100 } } }),
 * });
 * evaluator.start();
 * // on shutdown
 * await evaluator.stop();
 */
export function invariants(options: InvariantsOptions): InvariantEvaluator {
  return new InvariantEvaluator(options);
}
