/**
 * The errors policies throw. Each knows the HTTP answer a service should give when it escapes a
 * handler (`toProblem()`, an RFC 9457 body, and `problemHeaders` such as `Retry-After`), so the
 * HTTP adapters and error handlers answer overload with 503, a spent deadline with 504 and a rate
 * limit with 429 without a mapping table in every service.
 *
 * @module
 */
import { type ProblemDetails, type ProblemSource, problemType } from '../http/problem.ts';
import { KeelError, RejectionError } from './keel-error.ts';

function problem(
  name: string,
  title: string,
  status: number,
  detail: string,
  instance?: string,
): ProblemDetails {
  return { type: problemType(name), title, status, detail, ...(instance === undefined ? {} : { instance }) };
}

/** `Retry-After` in whole seconds, at least 1; none when the wait is unknown or endless. */
function retryAfter(ms: number | undefined): Readonly<Record<string, string>> | undefined {
  if (ms === undefined || !Number.isFinite(ms)) return undefined;
  return { 'retry-after': String(Math.max(1, Math.ceil(ms / 1000))) };
}

/**
 * The operation ran past its deadline. `work` settles when the abandoned operation really ends, so
 * a bulkhead or breaker can keep its slot until then instead of admitting more work than it allows.
 */
export class TimeoutError extends KeelError implements ProblemSource {
  /** The budget the operation had, when known. */
  readonly timeoutMs: number | undefined;
  readonly work: Promise<void> | undefined;
  constructor(timeoutMs?: number, work?: Promise<void>) {
    super(
      'KEEL_TIMEOUT',
      timeoutMs === undefined
        ? 'The deadline was reached'
        : `The operation timed out after ${Math.round(timeoutMs)} ms`,
    );
    this.timeoutMs = timeoutMs;
    this.work = work;
  }
  get problemHeaders(): Readonly<Record<string, string>> | undefined {
    return undefined;
  }
  /** 504: a dependency did not answer in time. */
  toProblem(instance?: string): ProblemDetails {
    return problem('dependency-timeout', 'A dependency did not answer in time', 504, this.message, instance);
  }
}

/** Not enough of the deadline was left to start the operation, so it was not started. */
export class DeadlineExceededError extends RejectionError implements ProblemSource {
  readonly remainingMs: number;
  constructor(remainingMs: number) {
    super(
      'KEEL_DEADLINE_EXCEEDED',
      `Only ${Math.max(0, Math.round(remainingMs))} ms of the deadline remained; the operation was not started`,
    );
    this.remainingMs = remainingMs;
  }
  get problemHeaders(): Readonly<Record<string, string>> | undefined {
    return undefined;
  }
  /** 504: the request's deadline was spent before the work could start. */
  toProblem(instance?: string): ProblemDetails {
    return problem('deadline-exceeded', 'The request ran out of time', 504, this.message, instance);
  }
}

/** The circuit is open: the dependency is failing and calls are refused until `retryAt`. */
export class BrokenCircuitError extends RejectionError implements ProblemSource {
  /** Clock time (ms) when the breaker will admit a probe again. */
  readonly retryAt: number;
  /** Milliseconds from the moment of rejection until `retryAt`. */
  readonly retryAfterMs: number;
  constructor(retryAfterMs: number, retryAt: number, message = 'The circuit is open; the call was not made') {
    super('KEEL_BREAKER_OPEN', message);
    this.retryAfterMs = retryAfterMs;
    this.retryAt = retryAt;
  }
  get problemHeaders(): Readonly<Record<string, string>> | undefined {
    return retryAfter(this.retryAfterMs);
  }
  /** 503 with `Retry-After`: the dependency is failing and is not being called. */
  toProblem(instance?: string): ProblemDetails {
    return problem('dependency-unavailable', 'A dependency is unavailable', 503, this.message, instance);
  }
}

/** The circuit was isolated by hand and stays open until it is reset. */
export class IsolatedCircuitError extends BrokenCircuitError {
  constructor() {
    super(
      Number.POSITIVE_INFINITY,
      Number.POSITIVE_INFINITY,
      'The circuit is isolated; the call was not made',
    );
    (this as { code: string }).code = 'KEEL_BREAKER_ISOLATED';
  }
}

/** The bulkhead's slots and queue are full, or the call waited in the queue too long. */
export class BulkheadRejectedError extends RejectionError implements ProblemSource {
  readonly maxConcurrent: number;
  readonly maxQueued: number;
  constructor(maxConcurrent: number, maxQueued: number, reason: 'full' | 'queue-timeout') {
    super(
      'KEEL_BULKHEAD_FULL',
      reason === 'full'
        ? `The bulkhead is full (${maxConcurrent} running, ${maxQueued} queued)`
        : 'The call waited in the bulkhead queue longer than its queue timeout',
    );
    this.maxConcurrent = maxConcurrent;
    this.maxQueued = maxQueued;
  }
  get problemHeaders(): Readonly<Record<string, string>> | undefined {
    return retryAfter(1_000);
  }
  /** 503: the service is at capacity and shed this request. */
  toProblem(instance?: string): ProblemDetails {
    return problem('overloaded', 'The service is at capacity', 503, this.message, instance);
  }
}

/** The adaptive concurrency limit is reached for this call's partition or criticality. */
export class LimitExceededError extends RejectionError implements ProblemSource {
  readonly limit: number;
  readonly inflight: number;
  constructor(limit: number, inflight: number, partition?: string) {
    super(
      'KEEL_LIMIT_EXCEEDED',
      `Concurrency limit ${limit} reached (${inflight} in flight${partition ? `, partition ${partition}` : ''})`,
    );
    this.limit = limit;
    this.inflight = inflight;
  }
  get problemHeaders(): Readonly<Record<string, string>> | undefined {
    return retryAfter(1_000);
  }
  /** 503: the service is at capacity and shed this request. */
  toProblem(instance?: string): ProblemDetails {
    return problem('overloaded', 'The service is at capacity', 503, this.message, instance);
  }
}

/** The token bucket is empty. `retryAfterMs` says when a token will be available. */
export class RateLimitedError extends RejectionError implements ProblemSource {
  readonly retryAfterMs: number;
  constructor(retryAfterMs: number) {
    super('KEEL_RATE_LIMITED', `Rate limit reached; retry in ${Math.ceil(retryAfterMs)} ms`);
    this.retryAfterMs = retryAfterMs;
  }
  get problemHeaders(): Readonly<Record<string, string>> | undefined {
    return retryAfter(this.retryAfterMs);
  }
  /** 429 with `Retry-After`. */
  toProblem(instance?: string): ProblemDetails {
    return problem('rate-limited', 'Too many requests', 429, this.message, instance);
  }
}

/** Client-side adaptive throttling refused the call locally because the backend rejects too much. */
export class ThrottledError extends RejectionError implements ProblemSource {
  readonly probability: number;
  constructor(probability: number) {
    super(
      'KEEL_THROTTLED',
      `Throttled locally: the backend refuses ${(probability * 100).toFixed(1)} % of calls`,
    );
    this.probability = probability;
  }
  get problemHeaders(): Readonly<Record<string, string>> | undefined {
    return retryAfter(1_000);
  }
  /** 503: a dependency is refusing most calls, so this one was not made. */
  toProblem(instance?: string): ProblemDetails {
    return problem('dependency-unavailable', 'A dependency is unavailable', 503, this.message, instance);
  }
}

/**
 * A response with a status that callers may want to retry or count as a failure. Throw it from an
 * HTTP call so retry predicates and `isTransient()` can see the status and `Retry-After`.
 */
export class HttpStatusError extends KeelError {
  readonly status: number;
  /** Parsed `Retry-After` in milliseconds, when the response carried one. */
  readonly retryAfterMs: number | undefined;
  constructor(status: number, message?: string, retryAfterMs?: number) {
    super('KEEL_HTTP_STATUS', message ?? `The response had status ${status}`);
    this.status = status;
    this.retryAfterMs = retryAfterMs;
  }
}

/** Every target of a failover failed; `errors` holds each target's error in order. */
export class AllTargetsFailedError extends KeelError implements ProblemSource {
  readonly errors: readonly unknown[];
  constructor(errors: readonly unknown[]) {
    super('KEEL_ALL_TARGETS_FAILED', `All ${errors.length} targets failed`, {
      cause: errors[errors.length - 1],
    });
    this.errors = errors;
  }
  get problemHeaders(): Readonly<Record<string, string>> | undefined {
    return undefined;
  }
  /** 503: every provider failed. */
  toProblem(instance?: string): ProblemDetails {
    return problem('dependency-unavailable', 'Every provider failed', 503, this.message, instance);
  }
}
