/**
 * An adaptive concurrency limit, after Netflix's concurrency-limits: a limit algorithm watches how
 * long calls take and how many run at once, and the limiter refuses calls beyond the limit it
 * learns. Overload then shows up as fast local refusals (`LimitExceededError`) instead of a queue
 * that grows until every caller times out.
 *
 * Partitions split the limit into reserved shares, so a flood of one kind of work (reports) cannot
 * take the capacity another (logins) is promised. Criticality decides who is refused first when the
 * limit is nearly used: sheddable work stops being admitted before critical work does. The global
 * limit holds under any interleaving: admission checks and counts in one synchronous step.
 *
 * Answers: overload — a dependency slows down, callers pile on, and latency collapses for everyone.
 *
 * @module
 */
import { AbortedError, InvalidOptionError, isRejection } from '../errors/keel-error.ts';
import {
  BrokenCircuitError,
  BulkheadRejectedError,
  HttpStatusError,
  LimitExceededError,
  RateLimitedError,
  ThrottledError,
  TimeoutError,
} from '../errors/policy-errors.ts';
import type { Clock } from './clock.ts';
import { gradientLimit, type LimitAlgorithm } from './limit-algorithms.ts';
import { type CommonOptions, checkFraction, checkFunction, resolveTime } from './options.ts';
import {
  BasePolicy,
  CALL,
  Context,
  type ExecuteOptions,
  type ExecutionContext,
  type Next,
  type Operation,
  type Policy,
} from './policy.ts';
import type { Disposable, PolicyListener } from './telemetry.ts';
import { EventSource } from './telemetry.ts';

/** How much a call matters when capacity runs short; `sheddable` work is refused first. */
export type Criticality = 'critical' | 'degradable' | 'sheddable';

/**
 * What a failed call tells the limit algorithm: `success` — its latency counts; `ignore` — nothing
 * (a client error, a cancelled caller); `dropped` — the dependency is overloaded, shrink the limit.
 */
export type SampleOutcome = 'success' | 'ignore' | 'dropped';

/** Decides what a failed call tells the limit algorithm. */
export type SampleClassifier = (error: unknown) => SampleOutcome;

/** One partition of the limit. */
export interface PartitionOptions {
  /**
   * The fraction of the limit reserved for this partition: it may always run
   * `max(1, floor(limit × share))` calls, whatever the other partitions do.
   */
  share: number;
}

/** Options of {@link concurrencyLimiter}. */
export interface ConcurrencyLimiterOptions<P extends string = string> extends CommonOptions {
  /**
   * The algorithm that learns the limit: `aimdLimit()`, `gradientLimit()` or `vegasLimit()`. Give
   * each limiter its own instance.
   * @default gradientLimit()
   */
  limit?: LimitAlgorithm;
  /**
   * Named shares of the limit. A share is a reservation: capacity a partition does not use stays
   * free for it, so a partition can exceed its share only with capacity no share reserves. Leave
   * part of the limit unassigned (shares summing below 1) to let busy partitions borrow.
   * @default one partition, `'default'`, with the whole limit
   */
  partitions?: Readonly<Record<P, PartitionOptions>>;
  /**
   * The partition plain `execute` and `run` calls use.
   * @default 'default'
   */
  defaultPartition?: P;
  /**
   * `degradable` calls are admitted only while fewer than `limit × degradableFraction` are in flight.
   * @default 0.9
   */
  degradableFraction?: number;
  /**
   * `sheddable` calls are admitted only while fewer than `limit × sheddableFraction` are in flight.
   * @default 0.8
   */
  sheddableFraction?: number;
  /**
   * Decides what a failed call tells the limit algorithm. A call whose caller aborted is always
   * ignored.
   * @default defaultSampleClassifier
   */
  classify?: SampleClassifier;
}

/** Which calls a {@link LimiterLane} admits. */
export interface LaneOptions<P extends string = string> {
  /** @default the limiter's `defaultPartition` */
  partition?: P;
  /** @default 'critical' */
  criticality?: Criticality;
}

const DEFAULTS = Object.freeze({
  defaultPartition: 'default',
  degradableFraction: 0.9,
  sheddableFraction: 0.8,
});

const CRITICALITIES: readonly Criticality[] = ['critical', 'degradable', 'sheddable'];

/** Tolerates float rounding when checking that shares sum to at most 1. */
const SHARE_EPSILON = 1e-9;

/**
 * The default {@link SampleClassifier}: timeouts, HTTP 408/429/503/504 and overload refusals from
 * inner layers (a full bulkhead, a rate limit, throttling, another limiter) are drops; other 5xx
 * responses are latency samples like successes; everything else — client errors, unknown errors, an
 * open breaker, a deadline too short to start — says nothing about capacity and is ignored.
 *
 * @example
 * const limiter = concurrencyLimiter({
 *   classify: (err) => (err instanceof PoolExhaustedError ? 'dropped' : defaultSampleClassifier(err)),
 * });
 */
export function defaultSampleClassifier(error: unknown): SampleOutcome {
  if (error instanceof TimeoutError) return 'dropped';
  if (error instanceof HttpStatusError) {
    const status = error.status;
    if (status === 408 || status === 429 || status === 503 || status === 504) return 'dropped';
    return status >= 500 ? 'success' : 'ignore';
  }
  if (isRejection(error)) {
    if (error instanceof BrokenCircuitError) return 'ignore';
    return error instanceof BulkheadRejectedError ||
      error instanceof LimitExceededError ||
      error instanceof RateLimitedError ||
      error instanceof ThrottledError
      ? 'dropped'
      : 'ignore';
  }
  return 'ignore';
}

/** What the limiter passes to its algorithm; one object per limiter, refilled for every sample. */
interface MutableSample {
  startTime: number;
  rtt: number;
  inflight: number;
  didDrop: boolean;
}

/**
 * A view of the limiter that admits calls into one partition at one criticality. It is a policy of
 * its own, so it can stand in a pipeline. Lanes are cached: asking twice returns the same object.
 */
export class LimiterLane<P extends string = string> implements Policy {
  readonly limiter: ConcurrencyLimiterPolicy<P>;
  readonly partition: P;
  readonly criticality: Criticality;
  /** @internal Position of the partition in the limiter's counters. */
  readonly partitionIndex: number;
  /** @internal Fraction of the limit below which this lane's calls are admitted. */
  readonly admitBelow: number;

  constructor(
    limiter: ConcurrencyLimiterPolicy<P>,
    partition: P,
    partitionIndex: number,
    criticality: Criticality,
    admitBelow: number,
  ) {
    this.limiter = limiter;
    this.partition = partition;
    this.partitionIndex = partitionIndex;
    this.criticality = criticality;
    this.admitBelow = admitBelow;
  }

  execute<T>(fn: Operation<T>, options?: ExecuteOptions | ExecutionContext): Promise<T> {
    return this.limiter.runIn(this, fn, Context.from(options, this.limiter.timers), CALL);
  }

  run<T>(fn: Operation<T>, context: Context, next: Next): Promise<T> {
    return this.limiter.runIn(this, fn, context, next);
  }

  onEvent(listener: PolicyListener): Disposable {
    return this.limiter.onEvent(listener);
  }
}

/** See {@link concurrencyLimiter}. */
export class ConcurrencyLimiterPolicy<P extends string = string> extends BasePolicy {
  readonly algorithm: LimitAlgorithm;
  readonly classify: SampleClassifier;
  readonly clock: Clock;
  readonly partitionNames: readonly P[];
  readonly #shares: readonly number[];
  /** Calls in flight per partition, by partition index. */
  readonly #partitionInflight: number[];
  /** Calls each partition may always run at the current limit. */
  readonly #guaranteed: number[];
  readonly #fractions: readonly number[];
  /** Lanes by `partitionIndex × 3 + criticality index`, built on first use. */
  readonly #lanes: (LimiterLane<P> | undefined)[];
  readonly #defaultLane: LimiterLane<P>;
  readonly #sample: MutableSample = { startTime: 0, rtt: 0, inflight: 0, didDrop: false };
  #limit: number;
  #inflight = 0;

  constructor(options: ConcurrencyLimiterOptions<P> = {}) {
    const { clock, timers } = resolveTime(options);
    super(new EventSource('limiter', options.name ?? 'limiter', options.telemetry), timers);
    this.clock = clock;
    this.algorithm = options.limit ?? gradientLimit();
    if (typeof this.algorithm?.onSample !== 'function') {
      throw new InvalidOptionError(
        'limit',
        'must be a limit algorithm such as aimdLimit() or gradientLimit()',
      );
    }
    this.classify = checkFunction('classify', options.classify ?? defaultSampleClassifier);
    const sheddable = checkFraction(
      'sheddableFraction',
      options.sheddableFraction ?? DEFAULTS.sheddableFraction,
      true,
    );
    const degradable = checkFraction(
      'degradableFraction',
      options.degradableFraction ?? DEFAULTS.degradableFraction,
      true,
    );
    if (sheddable > degradable) {
      throw new InvalidOptionError(
        'sheddableFraction',
        `must be ≤ degradableFraction (${degradable}), got ${sheddable}`,
      );
    }
    this.#fractions = [1, degradable, sheddable];

    const partitions = (options.partitions ?? { default: { share: 1 } }) as Readonly<
      Record<string, PartitionOptions>
    >;
    const names = Object.keys(partitions) as P[];
    if (names.length === 0) throw new InvalidOptionError('partitions', 'must name at least one partition');
    const shares = names.map((name) => {
      const share = (partitions[name] as PartitionOptions | undefined)?.share as number;
      return checkFraction(`partitions.${name}.share`, share);
    });
    const total = shares.reduce((sum, share) => sum + share, 0);
    if (total > 1 + SHARE_EPSILON) {
      throw new InvalidOptionError('partitions', `shares must sum to at most 1, got ${total}`);
    }
    const defaultPartition = (options.defaultPartition ?? DEFAULTS.defaultPartition) as P;
    const defaultIndex = names.indexOf(defaultPartition);
    if (defaultIndex < 0) {
      throw new InvalidOptionError(
        'defaultPartition',
        `must name one of the partitions (${names.map((n) => `'${n}'`).join(', ')}), got '${defaultPartition}'`,
      );
    }
    this.partitionNames = Object.freeze(names);
    this.#shares = shares;
    this.#partitionInflight = names.map(() => 0);
    this.#guaranteed = names.map(() => 0);
    this.#lanes = new Array<LimiterLane<P> | undefined>(names.length * CRITICALITIES.length).fill(undefined);
    this.#limit = Math.max(1, Math.floor(this.algorithm.limit));
    this.#reserve();
    this.#defaultLane = this.#lane(defaultIndex, 0);
  }

  /** The current concurrency limit. */
  get limit(): number {
    return this.#limit;
  }

  /**
   * Calls holding a place under the limit, including ones abandoned by a timeout whose work has not
   * ended. It can exceed `limit` only after the limit shrank; no call is admitted until it drops below.
   */
  get inflight(): number {
    return this.#inflight;
  }

  /** Calls in flight in one partition. */
  inflightOf(partition: P): number {
    return this.#partitionInflight[this.#indexOf(partition)] as number;
  }

  /** Calls one partition may always run at the current limit. */
  guaranteeOf(partition: P): number {
    return this.#guaranteed[this.#indexOf(partition)] as number;
  }

  /**
   * The policy that admits calls into one partition at one criticality.
   *
   * @example
   * const reports = limiter.for({ partition: 'report', criticality: 'sheddable' });
   * await reports.execute(() => buildReport(id));
   */
  for(lane: LaneOptions<P> = {}): LimiterLane<P> {
    const index =
      lane.partition === undefined ? this.#defaultLane.partitionIndex : this.#indexOf(lane.partition);
    const criticality = lane.criticality ?? 'critical';
    const level = CRITICALITIES.indexOf(criticality);
    if (level < 0) {
      throw new InvalidOptionError(
        'criticality',
        `must be one of ${CRITICALITIES.map((c) => `'${c}'`).join(', ')}, got '${String(criticality)}'`,
      );
    }
    return this.#lane(index, level);
  }

  run<T>(fn: Operation<T>, context: Context, next: Next): Promise<T> {
    return this.runIn(this.#defaultLane, fn, context, next);
  }

  /** @internal Admits a call through `lane`, runs it and feeds its outcome to the algorithm. */
  async runIn<T>(lane: LimiterLane<P>, fn: Operation<T>, context: Context, next: Next): Promise<T> {
    if (context.callerAborted) throw new AbortedError(context.parentSignal?.reason);
    const index = lane.partitionIndex;
    // Check and count in one synchronous step: no await may separate them, or racing calls could all
    // pass the check before any is counted.
    if (!this.#tryAcquire(index, lane.admitBelow)) throw this.#refuse(lane);
    const inflight = this.#inflight;
    const startTime = this.clock.now();
    let holdsSlot = true;
    try {
      const value = await next.run(fn, context);
      const rtt = this.clock.now() - startTime;
      this.#learn(startTime, rtt, inflight, false);
      if (this.events.active) {
        this.events.emit({ policy: 'limiter', name: this.events.name, type: 'success', durationMs: rtt });
      }
      return value;
    } catch (error) {
      const rtt = this.clock.now() - startTime;
      const outcome = context.callerAborted ? 'ignore' : this.classify(error);
      if (outcome !== 'ignore') this.#learn(startTime, rtt, inflight, outcome === 'dropped');
      if (this.events.active) {
        this.events.emit({
          policy: 'limiter',
          name: this.events.name,
          type: 'failure',
          durationMs: rtt,
          error,
        });
      }
      if (error instanceof TimeoutError && error.work !== undefined) {
        // The abandoned work still loads the dependency; keep its place until it really ends.
        holdsSlot = false;
        const release = (): void => this.#release(index);
        error.work.then(release, release);
      }
      throw error;
    } finally {
      if (holdsSlot) this.#release(index);
    }
  }

  #tryAcquire(index: number, admitBelow: number): boolean {
    const limit = this.#limit;
    const inflight = this.#inflight;
    if (inflight >= limit) return false;
    if (admitBelow < 1 && inflight >= limit * admitBelow) return false;
    const own = this.#partitionInflight[index] as number;
    if (own >= (this.#guaranteed[index] as number)) {
      // Beyond its share a partition borrows, but never the places other partitions have reserved
      // and not used yet: they must find them free when they come.
      const guaranteed = this.#guaranteed;
      const used = this.#partitionInflight;
      let reservedFree = 0;
      for (let i = 0; i < guaranteed.length; i++) {
        const free = (guaranteed[i] as number) - (used[i] as number);
        if (free > 0) reservedFree += free;
      }
      if (inflight + reservedFree >= limit) return false;
    }
    this.#inflight = inflight + 1;
    this.#partitionInflight[index] = own + 1;
    return true;
  }

  #release(index: number): void {
    this.#inflight--;
    this.#partitionInflight[index] = (this.#partitionInflight[index] as number) - 1;
  }

  #learn(startTime: number, rtt: number, inflight: number, didDrop: boolean): void {
    const sample = this.#sample;
    sample.startTime = startTime;
    sample.rtt = rtt;
    sample.inflight = inflight;
    sample.didDrop = didDrop;
    const limit = Math.max(1, Math.floor(this.algorithm.onSample(sample)));
    if (limit === this.#limit) return;
    this.#limit = limit;
    this.#reserve();
    if (this.events.active) {
      this.events.emit({
        policy: 'limiter',
        name: this.events.name,
        type: 'limit-change',
        limit,
        inflight: this.#inflight,
      });
    }
  }

  /** Recomputes each partition's guaranteed places for the current limit. */
  #reserve(): void {
    for (let i = 0; i < this.#shares.length; i++) {
      const share = this.#shares[i] as number;
      this.#guaranteed[i] = share > 0 ? Math.max(1, Math.floor(this.#limit * share)) : 0;
    }
  }

  #refuse(lane: LimiterLane<P>): LimitExceededError {
    const error = new LimitExceededError(
      this.#limit,
      this.#inflight,
      this.partitionNames.length > 1 ? lane.partition : undefined,
    );
    if (this.events.active) {
      this.events.emit({ policy: 'limiter', name: this.events.name, type: 'rejection', error });
    }
    return error;
  }

  #indexOf(partition: P): number {
    const index = this.partitionNames.indexOf(partition);
    if (index < 0) {
      throw new InvalidOptionError(
        'partition',
        `must be one of ${this.partitionNames.map((n) => `'${n}'`).join(', ')}, got '${partition}'`,
      );
    }
    return index;
  }

  #lane(index: number, level: number): LimiterLane<P> {
    const slot = index * CRITICALITIES.length + level;
    let lane = this.#lanes[slot];
    if (lane === undefined) {
      lane = new LimiterLane(
        this,
        this.partitionNames[index] as P,
        index,
        CRITICALITIES[level] as Criticality,
        this.#fractions[level] as number,
      );
      this.#lanes[slot] = lane;
    }
    return lane;
  }
}

/**
 * Limits concurrency to what the dependency sustains, learned from latency and drops; refuses the
 * rest at once with `LimitExceededError`. Plain `execute` runs critical work in the default
 * partition; `for({ partition, criticality })` gives a lane for other work.
 *
 * @example
 * const limiter = concurrencyLimiter({
 *   limit: gradientLimit({ maxLimit: 200 }),
 *   partitions: { login: { share: 0.3 }, report: { share: 0.2 }, default: { share: 0.3 } },
 * });
 * const reports = limiter.for({ partition: 'report', criticality: 'sheddable' });
 * await reports.execute(({ signal }) => warehouse.query(sql, { signal }));
 */
export function concurrencyLimiter<P extends string = 'default'>(
  options: ConcurrencyLimiterOptions<P> = {},
): ConcurrencyLimiterPolicy<P> {
  return new ConcurrencyLimiterPolicy(options);
}
