/**
 * The error hierarchy every Keel module throws from. Each error has a stable `code` that tests and
 * alerting can match on, and a brand so `isKeelError()` works across duplicate installs where
 * `instanceof` would not.
 *
 * @module
 */

const KEEL_ERROR = Symbol.for('keel.error');
const REJECTION = Symbol.for('keel.rejection');

/** Stable codes of every error Keel throws. */
export type KeelErrorCode =
  | 'KEEL_INVALID_OPTION'
  | 'KEEL_TIMEOUT'
  | 'KEEL_DEADLINE_EXCEEDED'
  | 'KEEL_ABORTED'
  | 'KEEL_BREAKER_OPEN'
  | 'KEEL_BREAKER_ISOLATED'
  | 'KEEL_BULKHEAD_FULL'
  | 'KEEL_LIMIT_EXCEEDED'
  | 'KEEL_RATE_LIMITED'
  | 'KEEL_THROTTLED'
  | 'KEEL_HTTP_STATUS'
  | 'KEEL_ALL_TARGETS_FAILED'
  | (string & {});

/**
 * Base class of every Keel error.
 *
 * @example
 * try { await policy.execute(call) } catch (err) {
 *   if (isKeelError(err) && err.code === 'KEEL_BREAKER_OPEN') serveFromCache();
 * }
 */
export class KeelError extends Error {
  readonly code: KeelErrorCode;
  readonly [KEEL_ERROR] = true;

  constructor(code: KeelErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/**
 * Errors thrown by local admission control (open breaker, full bulkhead, concurrency or rate limit,
 * client-side throttling). They say "we did not call the dependency", so a circuit breaker never
 * counts them as the dependency's failures.
 */
export class RejectionError extends KeelError {
  readonly [REJECTION] = true;
}

/** True when `err` is any Keel error, even one from another copy of the library. */
export function isKeelError(err: unknown): err is KeelError {
  return typeof err === 'object' && err !== null && (err as { [KEEL_ERROR]?: boolean })[KEEL_ERROR] === true;
}

/** True when `err` means the call was refused locally and never reached the dependency. */
export function isRejection(err: unknown): err is RejectionError {
  return typeof err === 'object' && err !== null && (err as { [REJECTION]?: boolean })[REJECTION] === true;
}

/** Thrown at construction when an option is out of range; the message names the option and the range. */
export class InvalidOptionError extends KeelError {
  readonly option: string;
  constructor(option: string, message: string) {
    super('KEEL_INVALID_OPTION', `${option}: ${message}`);
    this.option = option;
  }
}

/** Thrown when the caller's own signal aborts the operation. */
export class AbortedError extends KeelError {
  constructor(reason?: unknown) {
    super('KEEL_ABORTED', 'The operation was aborted by the caller', { cause: reason });
  }
}
