/**
 * The request's deadline, carried in async context so that every nested call sees how much time is
 * left, and written to an HTTP header so that a downstream service inherits it.
 *
 * Deadlines are absolute times on a {@link Clock}'s monotonic scale; headers carry the *remaining*
 * milliseconds, because two machines do not share a monotonic clock.
 *
 * @module
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { type Clock, systemClock } from './clock.ts';

const storage = new AsyncLocalStorage<number>();

/** Header Keel writes and reads by default: the remaining budget in whole milliseconds. */
export const DEADLINE_HEADER = 'request-timeout';

/** The absolute deadline of the current async context, or `Infinity` when there is none. */
export function currentDeadline(): number {
  return storage.getStore() ?? Number.POSITIVE_INFINITY;
}

/**
 * Milliseconds left before the current context's deadline; `Infinity` when there is no deadline.
 *
 * @example
 * await pool.query({ text: sql, query_timeout: Math.min(5_000, remainingMs()) });
 */
export function remainingMs(clock: Clock = systemClock): number {
  const deadline = storage.getStore();
  return deadline === undefined ? Number.POSITIVE_INFINITY : deadline - clock.now();
}

/**
 * Runs `fn` with the deadline narrowed to `at` (never widened: an inner call cannot outlive the
 * request that made it).
 */
export function runWithDeadline<R, A extends unknown[]>(at: number, fn: (...args: A) => R, ...args: A): R {
  const current = storage.getStore();
  return storage.run(current === undefined || at < current ? at : current, fn, ...args);
}

/**
 * Runs `fn(a, b, c)` with the deadline narrowed to `at`; a fixed arity keeps the hot path of the
 * timeout policy free of rest-parameter arrays.
 */
export function runWithDeadline3<R, A, B, C>(at: number, fn: (a: A, b: B, c: C) => R, a: A, b: B, c: C): R {
  const current = storage.getStore();
  if (current !== undefined && current <= at) return fn(a, b, c);
  return storage.run(at, fn, a, b, c);
}

/**
 * Runs `fn` with `budgetMs` from now as its deadline, or less when the surrounding deadline ends first.
 *
 * @example
 * app.addHook('onRequest', (req, _reply, done) =>
 *   withTimeBudget(readDeadlineHeader(req.headers) ?? 10_000, done));
 */
export function withTimeBudget<T>(budgetMs: number, fn: () => T, clock: Clock = systemClock): T {
  return runWithDeadline(clock.now() + budgetMs, fn);
}

type HeaderBag = Record<string, string | string[] | undefined> | { get(name: string): string | null };

/**
 * Reads the remaining budget from incoming headers: `Request-Timeout` in milliseconds, or gRPC's
 * `grpc-timeout` (`100m`, `2S`, …). Returns `undefined` when absent or malformed — a malformed
 * header never becomes a zero deadline.
 */
export function readDeadlineHeader(headers: HeaderBag, name: string = DEADLINE_HEADER): number | undefined {
  const plain = parseMilliseconds(headerValue(headers, name));
  if (plain !== undefined) return plain;
  return parseGrpcTimeout(headerValue(headers, 'grpc-timeout'));
}

/**
 * The header value that passes the current deadline downstream, or `undefined` when the context has
 * no deadline. Rounds down so a downstream service never believes it has more time than it does.
 *
 * @example
 * const budget = deadlineHeaderValue();
 * await fetch(url, { headers: budget ? { 'request-timeout': budget } : {} });
 */
export function deadlineHeaderValue(clock: Clock = systemClock): string | undefined {
  const left = remainingMs(clock);
  if (left === Number.POSITIVE_INFINITY) return undefined;
  return String(Math.max(0, Math.floor(left)));
}

function headerValue(headers: HeaderBag, name: string): string | undefined {
  if (typeof (headers as { get?: unknown }).get === 'function') {
    return (headers as { get(name: string): string | null }).get(name) ?? undefined;
  }
  const raw = (headers as Record<string, string | string[] | undefined>)[name];
  return Array.isArray(raw) ? raw[0] : raw;
}

function parseMilliseconds(value: string | undefined): number | undefined {
  if (value === undefined || !/^\s*\d{1,12}\s*$/.test(value)) return undefined;
  return Number(value);
}

const GRPC_UNITS: Record<string, number> = {
  H: 3_600_000,
  M: 60_000,
  S: 1_000,
  m: 1,
  u: 0.001,
  n: 0.000_001,
};

function parseGrpcTimeout(value: string | undefined): number | undefined {
  const match = value === undefined ? null : /^\s*(\d{1,8})([HMSmun])\s*$/.exec(value);
  if (!match) return undefined;
  return Number(match[1]) * (GRPC_UNITS[match[2] as string] as number);
}
