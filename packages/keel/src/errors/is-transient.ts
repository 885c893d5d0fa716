import { isRejection } from './keel-error.ts';
import { HttpStatusError, TimeoutError } from './policy-errors.ts';

/** Error codes of Node's sockets, DNS and undici that mean "the network hiccupped", not "the request was wrong". */
const TRANSIENT_NETWORK_CODES: ReadonlySet<string> = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'ECONNABORTED',
  'ETIMEDOUT',
  'EPIPE',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENETDOWN',
  'EAI_AGAIN',
  'UND_ERR_SOCKET',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
  'UND_ERR_CLOSED',
]);

/** HTTP statuses worth retrying: request timeout, too many requests, and server-side failures. */
export function isRetryableStatus(status: number): boolean {
  return status === 408 || status === 429 || (status >= 500 && status <= 599 && status !== 501);
}

/**
 * True when `err` is likely to go away if the same call is made again later: a timeout, a network
 * error, an HTTP 408/429/5xx, or a local rejection (open breaker, full bulkhead, rate limit).
 * Validation errors, 4xx responses and programming errors are not transient.
 *
 * @example
 * if (!isTransient(err)) return problem(400, err.message);
 */
export function isTransient(err: unknown): boolean {
  if (err instanceof TimeoutError || isRejection(err)) return true;
  if (err instanceof HttpStatusError) return isRetryableStatus(err.status);
  if (typeof err !== 'object' || err === null) return false;
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string' && TRANSIENT_NETWORK_CODES.has(code)) return true;
  const cause = (err as { cause?: unknown }).cause;
  // fetch() wraps socket errors in a TypeError whose cause carries the code.
  return cause !== undefined && cause !== err && isNetworkError(cause);
}

function isNetworkError(err: unknown): boolean {
  if (typeof err !== 'object' || err === null) return false;
  const code = (err as { code?: unknown }).code;
  return typeof code === 'string' && TRANSIENT_NETWORK_CODES.has(code);
}

/**
 * Parses an HTTP `Retry-After` value — delay-seconds or an HTTP date — into milliseconds from `now`.
 * Returns `undefined` for a missing or malformed value.
 *
 * @example
 * const waitMs = parseRetryAfter(response.headers.get('retry-after'));
 */
export function parseRetryAfter(
  value: string | null | undefined,
  now: number = Date.now(),
): number | undefined {
  if (value === null || value === undefined) return undefined;
  const trimmed = value.trim();
  if (trimmed === '') return undefined;
  if (/^\d+$/.test(trimmed)) return Number(trimmed) * 1000;
  const at = Date.parse(trimmed);
  if (Number.isNaN(at)) return undefined;
  return Math.max(0, at - now);
}

/** Connection errors raised before a request was sent: the server cannot have acted on it. */
const NOT_SENT_NETWORK_CODES: ReadonlySet<string> = new Set([
  'ECONNREFUSED',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENETDOWN',
  'EAI_AGAIN',
  'ENOTFOUND',
  'UND_ERR_CONNECT_TIMEOUT',
]);

/**
 * True when the call certainly did not take effect, so sending it elsewhere cannot do it twice: a
 * local rejection (open breaker, full bulkhead, spent deadline — the dependency was never called), a
 * connection that was never made, or a status by which the server says it did not act (408, 425,
 * 429, 503). A timeout, a reset connection or a 500 leave the outcome unknown: a charge may have
 * gone through, and only a lookup can tell.
 *
 * @example
 * failover({ targets, failoverOn: isUnprocessed }) // the default unless the operation is idempotent
 */
export function isUnprocessed(err: unknown): boolean {
  if (isRejection(err)) return true;
  if (err instanceof HttpStatusError) {
    return err.status === 408 || err.status === 425 || err.status === 429 || err.status === 503;
  }
  if (typeof err !== 'object' || err === null) return false;
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string') return NOT_SENT_NETWORK_CODES.has(code);
  const cause = (err as { cause?: unknown }).cause;
  if (typeof cause !== 'object' || cause === null || cause === err) return false;
  const causeCode = (cause as { code?: unknown }).code;
  return typeof causeCode === 'string' && NOT_SENT_NETWORK_CODES.has(causeCode);
}
