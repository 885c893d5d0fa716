/**
 * Errors of the database pool guards (`guardPool` for Postgres, `guardSqlitePool` for SQLite): a
 * connection that could not be had in time, a statement cut off by its timeout, and a connection or
 * pool that is gone. Each knows the HTTP problem it becomes, so an HTTP adapter can answer a busy
 * database with `503` and `Retry-After` instead of a generic `500`.
 *
 * @module
 */
import { type ProblemDetails, type ProblemSource, problemType } from '../http/problem.ts';
import { KeelError, RejectionError } from './keel-error.ts';
import { TimeoutError } from './policy-errors.ts';

/**
 * No connection of the route class's share became free within the acquire timeout: the statement
 * was never sent. → 503 with `Retry-After`
 *
 * @example
 * try { await guard.query('report', sql) } catch (err) {
 *   if (err instanceof PoolAcquireTimeoutError) return reply.status(503).header('retry-after', err.retryAfterSeconds);
 * }
 */
export class PoolAcquireTimeoutError extends RejectionError implements ProblemSource {
  readonly status = 503;
  /** The route class that asked for a connection. */
  readonly routeClass: string;
  /** How long the request waited before it was refused. */
  readonly waitedMs: number;
  /** When a retry has a fair chance: the acquire timeout, rounded up to whole seconds. */
  readonly retryAfterSeconds: number;
  constructor(routeClass: string, waitedMs: number, acquireTimeoutMs: number, poolName: string) {
    super(
      'KEEL_POOL_ACQUIRE_TIMEOUT',
      `No connection of pool '${poolName}' was free for route class '${routeClass}' within ${Math.round(waitedMs)} ms`,
    );
    this.routeClass = routeClass;
    this.waitedMs = waitedMs;
    this.retryAfterSeconds = Math.max(1, Math.ceil(acquireTimeoutMs / 1000));
  }
  get problemHeaders(): Readonly<Record<string, string>> {
    return { 'retry-after': String(this.retryAfterSeconds) };
  }
  toProblem(instance?: string): ProblemDetails {
    return {
      type: problemType('database-busy'),
      title: 'The database is busy',
      status: this.status,
      detail: this.message,
      ...(instance === undefined ? {} : { instance }),
    };
  }
}

/**
 * The database statement ran past its timeout — the guard's ceiling or the request's remaining
 * deadline, whichever was shorter — and was cancelled (Postgres) or abandoned (SQLite). It is a
 * {@link TimeoutError}, so retry predicates, breakers and limiters treat it like any other timeout;
 * `work` settles when an abandoned statement really ends. → 504
 *
 * @example
 * runWithDeadline(Date.now() + 200, () => guard.query('api', 'SELECT pg_sleep(5)'))
 *   .catch((err) => err instanceof StatementTimeoutError); // true
 */
export class StatementTimeoutError extends TimeoutError implements ProblemSource {
  readonly status = 504;
  /** The route class the statement ran for. */
  readonly routeClass: string;
  constructor(
    routeClass: string,
    timeoutMs: number,
    options: { cause?: unknown; work?: Promise<void> } = {},
  ) {
    super(timeoutMs, options.work);
    (this as { code: string }).code = 'KEEL_STATEMENT_TIMEOUT';
    this.message = `The statement of route class '${routeClass}' was cancelled after its ${Math.round(timeoutMs)} ms timeout`;
    if (options.cause !== undefined) this.cause = options.cause;
    this.routeClass = routeClass;
  }
  override get problemHeaders(): undefined {
    return undefined;
  }
  override toProblem(instance?: string): ProblemDetails {
    return {
      type: problemType('database-timeout'),
      title: 'The database statement timed out',
      status: this.status,
      detail: this.message,
      ...(instance === undefined ? {} : { instance }),
    };
  }
}

/**
 * The connection a client held is gone — its worker was abandoned after a statement timeout, or it
 * crashed — so nothing more can run on it. A transaction open on it did not commit.
 */
export class PoolConnectionLostError extends KeelError {
  constructor(reason: string, options?: { cause?: unknown }) {
    super('KEEL_POOL_CONNECTION_LOST', `The pooled connection is gone: ${reason}`, options);
  }
}

/** The pool was closed; it runs no more statements. */
export class PoolClosedError extends KeelError {
  constructor(poolName: string) {
    super('KEEL_POOL_CLOSED', `The pool '${poolName}' is closed`);
  }
}
