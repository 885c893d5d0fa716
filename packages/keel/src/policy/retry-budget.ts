/**
 * Retry budgets: a cap on retries shared by every caller of one dependency, so retries cannot
 * multiply the load on a service that is already failing. Per-call `maxAttempts` alone does not do
 * this — three attempts at every layer of a five-deep call graph is 3⁵ = 243 calls at the bottom.
 *
 * Two models, one interface:
 * - {@link retryBudget}, Finagle's: retries in a sliding window may be at most `ratio` of the
 *   requests in it plus a small reserve, so low-traffic callers can still retry (Envoy defaults its
 *   retry budget to 20 %).
 * - {@link tokenBucketRetryBudget}, gRPC's retry throttling: failures drain a bucket, successes
 *   refill it slowly, and retries stop while it is at most half full.
 *
 * Share one budget per dependency across every retry policy and client that calls it.
 *
 * @module
 */
import { type Clock, systemClock } from './clock.ts';
import { checkAbove, checkFraction, checkInteger, checkNumber } from './options.ts';
import { SlidingCounts } from './sliding-counts.ts';

/** What a retry budget reports for dashboards and tests. */
export type RetryBudgetSnapshot =
  | {
      readonly kind: 'ratio';
      /** First attempts recorded in the window. */
      readonly requests: number;
      /** Retries granted in the window. */
      readonly retries: number;
      /** Retries the window allows in total right now: `ratio × requests + reserve`. */
      readonly allowed: number;
      /** Retries granted since the budget was created. */
      readonly granted: number;
      /** Retries refused since the budget was created. */
      readonly refused: number;
    }
  | {
      readonly kind: 'token-bucket';
      readonly tokens: number;
      readonly maxTokens: number;
      /** Retries granted since the budget was created. */
      readonly granted: number;
      /** Retries refused since the budget was created. */
      readonly refused: number;
    };

/**
 * A budget that retry policies consult before each retry. The retry policy calls `recordRequest()`
 * once per call, `recordSuccess()` / `recordFailure()` after each attempt (a failure here is one
 * the policy would retry), and `tryAcquireRetry()` before each retry.
 *
 * @example
 * const paymentsBudget: RetryBudget = retryBudget({ ratio: 0.1 });
 * const charge = retry({ idempotent: true, budget: paymentsBudget });
 * const refund = retry({ idempotent: true, budget: paymentsBudget });
 */
export interface RetryBudget {
  /** A call (its first attempt) is about to be made. */
  recordRequest(): void;
  /** An attempt succeeded. */
  recordSuccess(): void;
  /** An attempt failed in a way the caller would retry. */
  recordFailure(): void;
  /** Takes one retry from the budget; false means do not retry. */
  tryAcquireRetry(): boolean;
  /** Current counters, for observability. */
  snapshot(): RetryBudgetSnapshot;
}

/** Options of {@link retryBudget}. */
export interface RetryBudgetOptions {
  /**
   * Retries allowed per request in the window, from 0 to 1.
   * @default 0.2
   */
  ratio?: number;
  /**
   * Retries per second allowed regardless of traffic, so a quiet client can still retry.
   * @default 10
   */
  minPerSecond?: number;
  /**
   * The sliding window.
   * @default 10_000
   */
  windowMs?: number;
  /**
   * How many time buckets the window is divided into; more buckets track it more closely.
   * @default 10
   */
  buckets?: number;
  /**
   * Source of time; pass the same `FakeClock` as the retry policies in tests.
   * @default systemClock
   */
  clock?: Clock;
}

const RATIO_DEFAULTS = Object.freeze({ ratio: 0.2, minPerSecond: 10, windowMs: 10_000, buckets: 10 });

// Sums of integers and products like 0.2 × 5 differ from the exact value by far less than this.
const EPSILON = 1e-9;

/**
 * See {@link retryBudget}. The window is a ring of `buckets + 1` time buckets with running sums, so
 * recording costs O(1) and allocates nothing. It errs on the safe side: a request counts only while
 * it is certainly inside the last `windowMs`, and a retry counts for at least `windowMs`, so at
 * every grant the retries of any `windowMs` ending then are within `ratio × requests + reserve` of
 * that same stretch of time.
 */
export class RatioRetryBudget implements RetryBudget {
  readonly ratio: number;
  readonly minPerSecond: number;
  readonly windowMs: number;
  readonly clock: Clock;
  /** Retries allowed in a window with no requests: `minPerSecond × windowMs / 1000`. */
  readonly reserve: number;
  /**
   * First: requests; second: retries. One bucket more than the window holds, so a retry keeps
   * counting for a full window while a request counts for at most one.
   */
  readonly #counts: SlidingCounts;
  #granted = 0;
  #refused = 0;

  constructor(options: RetryBudgetOptions = {}) {
    this.ratio = checkFraction('ratio', options.ratio ?? RATIO_DEFAULTS.ratio);
    this.minPerSecond = checkNumber('minPerSecond', options.minPerSecond ?? RATIO_DEFAULTS.minPerSecond);
    this.windowMs = checkAbove('windowMs', options.windowMs ?? RATIO_DEFAULTS.windowMs, 0);
    const buckets = checkInteger('buckets', options.buckets ?? RATIO_DEFAULTS.buckets, 1, 10_000);
    this.clock = options.clock ?? systemClock;
    this.reserve = (this.minPerSecond * this.windowMs) / 1000;
    this.#counts = new SlidingCounts(this.clock, this.windowMs / buckets, buckets + 1);
  }

  recordRequest(): void {
    this.#counts.addFirst();
  }

  recordSuccess(): void {}

  recordFailure(): void {}

  tryAcquireRetry(): boolean {
    if (this.#counts.second + 1 > this.#allowed() + EPSILON) {
      this.#refused++;
      return false;
    }
    this.#counts.addSecond();
    this.#granted++;
    return true;
  }

  snapshot(): RetryBudgetSnapshot {
    return {
      kind: 'ratio',
      requests: this.#counts.firstWithoutOldest,
      retries: this.#counts.second,
      allowed: this.#allowed(),
      granted: this.#granted,
      refused: this.#refused,
    };
  }

  #allowed(): number {
    // Requests of the newest `buckets` buckets: the oldest one may have started before the window.
    return this.ratio * this.#counts.firstWithoutOldest + this.reserve;
  }
}

/**
 * A retry budget in Finagle's model: retries in the last `windowMs` may be at most
 * `ratio × requests + minPerSecond × windowMs / 1000`.
 *
 * @example
 * const ledgerBudget = retryBudget({ ratio: 0.2, minPerSecond: 10 });
 * const policy = pipeline(retry({ idempotent: true, budget: ledgerBudget }), breaker, timeout(2_000));
 */
export function retryBudget(options: RetryBudgetOptions = {}): RatioRetryBudget {
  return new RatioRetryBudget(options);
}

/** Options of {@link tokenBucketRetryBudget}. */
export interface TokenBucketRetryBudgetOptions {
  /**
   * The bucket's capacity; it starts full. Retries are allowed while more than half of it is left.
   * @default 10
   */
  maxTokens?: number;
  /**
   * Tokens a successful attempt puts back; each failed attempt takes one.
   * @default 0.1
   */
  tokenRatio?: number;
}

const TOKEN_DEFAULTS = Object.freeze({ maxTokens: 10, tokenRatio: 0.1 });

/** See {@link tokenBucketRetryBudget}. */
export class TokenBucketRetryBudget implements RetryBudget {
  readonly maxTokens: number;
  readonly tokenRatio: number;
  #tokens: number;
  #granted = 0;
  #refused = 0;

  constructor(options: TokenBucketRetryBudgetOptions = {}) {
    this.maxTokens = checkAbove('maxTokens', options.maxTokens ?? TOKEN_DEFAULTS.maxTokens, 0);
    this.tokenRatio = checkAbove('tokenRatio', options.tokenRatio ?? TOKEN_DEFAULTS.tokenRatio, 0);
    this.#tokens = this.maxTokens;
  }

  /** Tokens left. */
  get tokens(): number {
    return this.#tokens;
  }

  recordRequest(): void {}

  recordSuccess(): void {
    this.#tokens = Math.min(this.maxTokens, this.#tokens + this.tokenRatio);
  }

  recordFailure(): void {
    this.#tokens = Math.max(0, this.#tokens - 1);
  }

  tryAcquireRetry(): boolean {
    if (this.#tokens > this.maxTokens / 2) {
      this.#granted++;
      return true;
    }
    this.#refused++;
    return false;
  }

  snapshot(): RetryBudgetSnapshot {
    return {
      kind: 'token-bucket',
      tokens: this.#tokens,
      maxTokens: this.maxTokens,
      granted: this.#granted,
      refused: this.#refused,
    };
  }
}

/**
 * gRPC-style retry throttling: each failed attempt costs a token, each success adds `tokenRatio`,
 * and retries are allowed only while more than `maxTokens / 2` tokens are left. Needs no clock:
 * it reacts to the failure rate, not to time.
 *
 * @example
 * const budget = tokenBucketRetryBudget({ maxTokens: 10, tokenRatio: 0.1 });
 * const policy = retry({ idempotent: true, budget });
 */
export function tokenBucketRetryBudget(options: TokenBucketRetryBudgetOptions = {}): TokenBucketRetryBudget {
  return new TokenBucketRetryBudget(options);
}
