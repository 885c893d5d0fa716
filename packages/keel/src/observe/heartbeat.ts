/**
 * A dead man's switch for background jobs. A job checks in when it starts, succeeds (with how much
 * work it did) or fails; the heartbeat knows the schedule and raises the silent failures nobody
 * notices: the job that stopped running, the one that hangs, the one that "finished" suspiciously
 * fast, the nightly report that produced zero rows, and the one that failed. A heartbeat is an
 * invariant, so the same evaluator, alerts and sinks serve it.
 *
 * @module
 */
import { InvalidOptionError } from '../errors/keel-error.ts';
import type { WallClock } from '../idempotency/store.ts';
import { systemClock } from '../policy/clock.ts';
import { checkInteger, checkNumber } from '../policy/options.ts';
import {
  breachedExpression,
  checkInvariantOptions,
  type EvaluationContext,
  type Invariant,
  type InvariantOptions,
  type InvariantOutcome,
  promDuration,
} from './invariant.ts';

/** What is wrong with a job. */
export type HeartbeatProblem = 'late' | 'overran' | 'too-fast' | 'no-work' | 'failed';

/** Options of {@link heartbeat}. */
export interface HeartbeatOptions extends InvariantOptions {
  /** How often the job is expected to start, in ms. */
  readonly everyMs: number;
  /**
   * How late a start may be before it counts as missed.
   * @default 10% of `everyMs`, at least 1 s
   */
  readonly graceMs?: number;
  /** A run that has not finished after this long has overrun (hangs, or is far slower than usual). */
  readonly maxRunMs?: number;
  /** A run that finished faster than this probably skipped its work. */
  readonly minRunMs?: number;
  /** When true, a success must report `rows > 0`. @default false */
  readonly expectWork?: boolean;
  /**
   * Source of time; give the evaluator's clock so check-ins and evaluations agree.
   * @default systemClock
   */
  readonly clock?: WallClock;
}

/** The job's last known state. */
export interface HeartbeatState {
  /** Clock reading of the last start check-in. */
  readonly lastStartAt: number | undefined;
  /** Clock reading when the last run ended, and how. */
  readonly lastEndAt: number | undefined;
  readonly lastOutcome: 'success' | 'fail' | undefined;
  readonly lastRows: number | undefined;
  readonly lastError: string | undefined;
  readonly running: boolean;
}

/**
 * See {@link heartbeat}. Check in with `start()`, `success({ rows })` and `fail(err)`; the evaluator
 * calls `evaluate()`.
 */
export class Heartbeat implements Invariant {
  readonly name: string;
  readonly kind = 'heartbeat' as const;
  readonly alert: Invariant['alert'];
  readonly forMs: number;
  readonly promql: string;
  readonly watchesMetrics = false;
  readonly everyMs: number;
  readonly graceMs: number;
  readonly maxRunMs: number;
  readonly minRunMs: number;
  readonly expectWork: boolean;
  readonly #clock: WallClock;
  readonly #createdAt: number;
  #lastStartAt: number | undefined;
  #lastEndAt: number | undefined;
  #lastOutcome: 'success' | 'fail' | undefined;
  #lastRows: number | undefined;
  #lastError: string | undefined;
  #lastRunMs: number | undefined;
  #running = false;

  constructor(options: HeartbeatOptions) {
    const { name, forMs } = checkInvariantOptions(options);
    this.name = name;
    this.alert = options.alert;
    this.forMs = forMs;
    this.promql = breachedExpression(name);
    this.everyMs = checkInteger('everyMs', options.everyMs);
    this.graceMs = checkNumber('graceMs', options.graceMs ?? Math.max(1_000, Math.round(this.everyMs / 10)));
    this.maxRunMs = checkNumber('maxRunMs', options.maxRunMs ?? Number.POSITIVE_INFINITY, 0, true);
    this.minRunMs = checkNumber('minRunMs', options.minRunMs ?? 0);
    if (this.minRunMs >= this.maxRunMs) {
      throw new InvalidOptionError(
        'minRunMs',
        `must be below maxRunMs (${this.maxRunMs}), got ${this.minRunMs}`,
      );
    }
    this.expectWork = options.expectWork ?? false;
    this.#clock = options.clock ?? systemClock;
    this.#createdAt = this.#clock.now();
  }

  /** Checks in at the start of a run. */
  start(): void {
    this.#lastStartAt = this.#clock.now();
    this.#running = true;
  }

  /** Checks in at the end of a successful run, with how many rows (items, files) it produced. */
  success(result: { readonly rows?: number } = {}): void {
    this.#end('success');
    this.#lastRows = result.rows;
    this.#lastError = undefined;
  }

  /** Checks in at the end of a failed run. */
  fail(error?: unknown): void {
    this.#end('fail');
    this.#lastRows = undefined;
    this.#lastError =
      error instanceof Error ? error.message : error === undefined ? undefined : String(error);
  }

  /**
   * Runs `job` between `start()` and `success()`/`fail()`; a number it returns is the row count.
   *
   * @example
   * await nightly.run(async () => (await buildReport()).rowCount);
   */
  async run<T>(job: () => Promise<T>): Promise<T> {
    this.start();
    try {
      const result = await job();
      this.success(typeof result === 'number' ? { rows: result } : {});
      return result;
    } catch (err) {
      this.fail(err);
      throw err;
    }
  }

  /** The job's last known state. */
  get state(): HeartbeatState {
    return {
      lastStartAt: this.#lastStartAt,
      lastEndAt: this.#lastEndAt,
      lastOutcome: this.#lastOutcome,
      lastRows: this.#lastRows,
      lastError: this.#lastError,
      running: this.#running,
    };
  }

  /** What is wrong now, if anything (an empty list when the job is healthy). */
  problems(now = this.#clock.now()): HeartbeatProblem[] {
    const problems: HeartbeatProblem[] = [];
    const expectedBy = (this.#lastStartAt ?? this.#createdAt) + this.everyMs + this.graceMs;
    if (!this.#running && now > expectedBy) problems.push('late');
    if (this.#running && this.#lastStartAt !== undefined && now - this.#lastStartAt > this.maxRunMs) {
      problems.push('overran');
    }
    if (this.#lastOutcome === 'fail') problems.push('failed');
    if (this.#lastOutcome === 'success') {
      if (this.#lastRunMs !== undefined && this.#lastRunMs < this.minRunMs) problems.push('too-fast');
      if (this.expectWork && !((this.#lastRows ?? 0) > 0)) problems.push('no-work');
    }
    return problems;
  }

  evaluate(context: EvaluationContext): InvariantOutcome {
    const problems = this.problems(context.now);
    return {
      ok: problems.length === 0,
      evidence: {
        ids: problems,
        total: problems.length,
        value: problems.length,
        detail:
          problems.length === 0
            ? `${this.name} is on schedule`
            : problems.map((p) => this.#describe(p, context.now)).join('; '),
      },
    };
  }

  #describe(problem: HeartbeatProblem, now: number): string {
    switch (problem) {
      case 'late': {
        const since =
          this.#lastStartAt === undefined ? 'since the heartbeat was created' : 'since the last start';
        return `late: no start for ${promDuration(now - (this.#lastStartAt ?? this.#createdAt))} ${since} (expected every ${promDuration(this.everyMs)} + ${promDuration(this.graceMs)} grace)`;
      }
      case 'overran':
        return `overran: running for ${promDuration(now - (this.#lastStartAt ?? now))} (limit ${promDuration(this.maxRunMs)})`;
      case 'too-fast':
        return `too fast: the last run took ${promDuration(this.#lastRunMs ?? 0)} (expected at least ${promDuration(this.minRunMs)})`;
      case 'no-work':
        return `no work: the last run reported ${this.#lastRows ?? 'no'} rows`;
      case 'failed':
        return `failed: ${this.#lastError ?? 'the last run reported a failure'}`;
    }
  }

  #end(outcome: 'success' | 'fail'): void {
    const now = this.#clock.now();
    this.#lastRunMs = this.#running && this.#lastStartAt !== undefined ? now - this.#lastStartAt : undefined;
    // A success without a start check-in still proves the job ran.
    if (!this.#running) this.#lastStartAt = now;
    this.#lastEndAt = now;
    this.#lastOutcome = outcome;
    this.#running = false;
  }
}

/**
 * A dead man's switch for a background job that should run every `everyMs`.
 *
 * @example
 * const nightly = heartbeat({
 *   name: 'nightly_report', everyMs: 24 * 3_600_000, graceMs: 30 * 60_000,
 *   maxRunMs: 3_600_000, minRunMs: 5_000, expectWork: true,
 *   alert: defineAlert({ what: 'The nightly report did not run properly', ... }),
 * });
 * await nightly.run(async () => (await buildReport()).rowCount);
 */
export function heartbeat(options: HeartbeatOptions): Heartbeat {
  return new Heartbeat(options);
}
