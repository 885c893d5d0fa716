/**
 * @module
 * The clients the lab plays, with the habits real users and their SDKs have: give up after a
 * timeout and retry at once, retry with exponential back-off, or submit the same thing two or three
 * times at once (a double click, a retry racing its original, two tabs) — across service instances.
 * One logical charge carries one `Idempotency-Key`, reused by every retry and every copy. The key is
 * sent in naive runs too: the requests are the same, and only the service decides to ignore it.
 * Logins and reports are logical calls too, repeated as they are by the same habits.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { checkFunction, checkInteger } from 'keel';
import type { OutcomeKind } from './time-buckets.ts';

/** Anything a behaviour sends: it names the instance its first request goes to. */
export interface Routed {
  /** Instance the first request goes to; each retry moves on to the next one. */
  readonly instance: number;
}

/** One logical charge: an order, the key all its requests carry, and who asks. */
export interface LogicalCharge extends Routed {
  readonly orderId: string;
  readonly idempotencyKey: string;
  /** `Bearer …` of the order's owner. */
  readonly authorization: string;
}

/**
 * One logical request that is not a charge — a login, a report — as the client repeats it on
 * every attempt. It carries no idempotency key: those routes read, or are safe to repeat.
 */
export interface LogicalCall extends Routed {
  readonly method: 'GET' | 'POST';
  /** Path and query, e.g. `/reports/sales?limit=20`. */
  readonly path: string;
  readonly headers?: Readonly<Record<string, string>>;
  /** Sent as JSON when given. */
  readonly body?: unknown;
}

/** What one HTTP request of a charge came to. */
export interface AttemptResult {
  readonly kind: OutcomeKind;
  /** HTTP status, when there was an answer. */
  readonly status?: number;
  /** Worth trying again: no answer, 5xx, 429, or 409 for a charge still in progress. */
  readonly retryable: boolean;
}

/** Sends single requests of one kind of logical call; a behaviour decides when and where. */
export interface RequestSender<C extends Routed> {
  /** Number of service instances requests can go to. */
  readonly instances: number;
  /** One request to instance `instance` (taken modulo `instances`). */
  send(call: C, instance: number): Promise<AttemptResult>;
}

/** Sends single charge requests; a behaviour decides when and where to send them. */
export type ChargeSender = RequestSender<LogicalCharge>;

/** Where each request's latency and outcome go: a {@link TimeBuckets}, or several at once. */
export interface RequestRecorder {
  record(startedAtMs: number, finishedAtMs: number, kind: OutcomeKind): void;
}

/** How a logical charge ended, for the client: acknowledged (a 2xx), refused, or unknown. */
export interface LogicalOutcome {
  readonly kind: OutcomeKind;
  /** Requests sent for it, every copy and retry counted. */
  readonly attempts: number;
  /** Status of the answer that decided the outcome, when there was one. */
  readonly status?: number;
}

/** A client's habit: turns one logical charge (or another logical call) into requests. */
export type ClientBehaviour<C extends Routed = LogicalCharge> = (
  call: C,
  sender: RequestSender<C>,
) => Promise<LogicalOutcome>;

export interface HttpChargeSenderOptions {
  /** Base URLs of the service instances. */
  urls: readonly string[];
  /** The client's own timeout per request, in ms. */
  timeoutMs: number;
  /** Where each request's latency and outcome go. */
  buckets: RequestRecorder;
}

const ALREADY_PAID = 'order-already-paid';

/**
 * Sends `POST /orders/:id/charge` with `fetch`, bounded by `AbortSignal.timeout`.
 *
 * @example
 * const sender = httpChargeSender({ urls, timeoutMs: 3_000, buckets });
 * await retryWithBackoff()(charge, sender);
 */
export function httpChargeSender(options: HttpChargeSenderOptions): ChargeSender {
  const timed = timedFetch(options);
  return {
    instances: timed.instances,
    send: (charge, instance) =>
      timed.send(instance, `/orders/${charge.orderId}/charge`, {
        method: 'POST',
        headers: { authorization: charge.authorization, 'idempotency-key': charge.idempotencyKey },
      }),
  };
}

/**
 * Sends a {@link LogicalCall} (a login, a report) with `fetch`, bounded by `AbortSignal.timeout`,
 * and judges its answer as a charge's: 2xx ok; 5xx and 429 worth trying again; no answer unknown.
 *
 * @example
 * const sender = httpCallSender({ urls, timeoutMs: 1_000, buckets });
 * await timeoutThenRetryImmediately<LogicalCall>()({ method: 'POST', path: '/login', body, instance: 0 }, sender);
 */
export function httpCallSender(options: HttpChargeSenderOptions): RequestSender<LogicalCall> {
  const timed = timedFetch(options);
  return {
    instances: timed.instances,
    send: (call, instance) =>
      timed.send(instance, call.path, {
        method: call.method,
        headers: {
          ...call.headers,
          ...(call.body !== undefined && { 'content-type': 'application/json' }),
        },
        ...(call.body !== undefined && { body: JSON.stringify(call.body) }),
      }),
  };
}

/** One request to one instance, timed and recorded whatever its end. */
function timedFetch(options: HttpChargeSenderOptions) {
  const timeoutMs = checkInteger('timeoutMs', options.timeoutMs);
  checkInteger('urls.length', options.urls.length);
  const urls = [...options.urls];
  return {
    instances: urls.length,
    async send(instance: number, path: string, init: RequestInit): Promise<AttemptResult> {
      const url = urls[instance % urls.length] as string;
      const started = performance.now();
      let result: AttemptResult;
      try {
        const response = await fetch(`${url}${path}`, { ...init, signal: AbortSignal.timeout(timeoutMs) });
        const body = await response.text();
        result = classify(response.status, body);
      } catch {
        // Timed out or cut off: the request may or may not have done its work.
        result = { kind: 'unknown', retryable: true };
      }
      options.buckets.record(started, performance.now(), result.kind);
      return result;
    },
  };
}

function classify(status: number, body: string): AttemptResult {
  if (status >= 200 && status < 300) return { kind: 'ok', status, retryable: false };
  if (status === 409) return { kind: 'fail', status, retryable: !body.includes(ALREADY_PAID) };
  return { kind: 'fail', status, retryable: status === 429 || status >= 500 };
}

export interface RetryOptions {
  /** Requests per logical charge at most, the first included. @default 4 */
  attempts?: number;
}

export interface BackoffOptions extends RetryOptions {
  /** First back-off ceiling, doubled each retry, in ms. @default 50 */
  baseMs?: number;
  /** Largest back-off ceiling, in ms. @default 1000 */
  maxMs?: number;
  /** Source of the jitter, in [0, 1). @default Math.random */
  random?: () => number;
}

async function retrying<C extends Routed>(
  call: C,
  sender: RequestSender<C>,
  attempts: number,
  pause: (retry: number) => Promise<void>,
): Promise<LogicalOutcome> {
  let last: AttemptResult = { kind: 'unknown', retryable: true };
  let sent = 0;
  while (sent < attempts) {
    if (sent > 0) await pause(sent);
    last = await sender.send(call, call.instance + sent);
    sent++;
    if (!last.retryable) break;
  }
  return { kind: last.kind, attempts: sent, ...(last.status !== undefined && { status: last.status }) };
}

/**
 * Times out and retries at once, to the next instance, with the same key — or, for a login or a
 * report, the same request.
 *
 * @example
 * const client = timeoutThenRetryImmediately({ attempts: 3 });
 * const outcome = await client(charge, sender);
 * const login = timeoutThenRetryImmediately<LogicalCall>({ attempts: 2 });
 */
export function timeoutThenRetryImmediately<C extends Routed = LogicalCharge>(
  options: RetryOptions = {},
): ClientBehaviour<C> {
  const attempts = checkInteger('attempts', options.attempts ?? 4);
  return (call, sender) => retrying(call, sender, attempts, async () => undefined);
}

/**
 * Retries with exponential back-off and full jitter, to the next instance, with the same key.
 *
 * @example
 * const client = retryWithBackoff({ attempts: 6, baseMs: 100, random: seededRandom(7) });
 */
export function retryWithBackoff(options: BackoffOptions = {}): ClientBehaviour {
  const attempts = checkInteger('attempts', options.attempts ?? 4);
  const baseMs = checkInteger('baseMs', options.baseMs ?? 50);
  const maxMs = checkInteger('maxMs', options.maxMs ?? 1_000, baseMs);
  const random = checkFunction('random', options.random ?? Math.random);
  return (charge, sender) =>
    retrying(charge, sender, attempts, (retry) =>
      sleep(random() * Math.min(maxMs, baseMs * 2 ** (retry - 1))),
    );
}

export interface DoubleSubmitOptions {
  /** Fewest copies sent at once. @default 2 */
  minCopies?: number;
  /** Most copies sent at once. @default 3 */
  maxCopies?: number;
  /** What each copy does after its first request. @default retryWithBackoff() */
  each?: ClientBehaviour;
  /** Picks the number of copies, in [0, 1). @default Math.random */
  random?: () => number;
}

/**
 * Sends the same logical charge 2–3 times at once, each copy to another instance, each copy
 * retrying on its own; acknowledged when any copy is.
 *
 * @example
 * const client = doubleSubmit({ random: seededRandom(7), each: retryWithBackoff({ attempts: 6 }) });
 */
export function doubleSubmit(options: DoubleSubmitOptions = {}): ClientBehaviour {
  const minCopies = checkInteger('minCopies', options.minCopies ?? 2, 1, 16);
  const maxCopies = checkInteger('maxCopies', options.maxCopies ?? 3, minCopies, 16);
  const random = checkFunction('random', options.random ?? Math.random);
  const each = checkFunction('each', options.each ?? retryWithBackoff());
  return async (charge, sender) => {
    const copies = minCopies + Math.floor(random() * (maxCopies - minCopies + 1));
    const outcomes = await Promise.all(
      Array.from({ length: copies }, (_, copy) =>
        each({ ...charge, instance: charge.instance + copy }, sender),
      ),
    );
    const attempts = outcomes.reduce((sum, outcome) => sum + outcome.attempts, 0);
    const decided =
      outcomes.find((outcome) => outcome.kind === 'ok') ??
      outcomes.find((outcome) => outcome.kind === 'unknown') ??
      (outcomes[0] as LogicalOutcome);
    return { ...decided, attempts };
  };
}
