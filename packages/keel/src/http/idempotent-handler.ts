/**
 * The HTTP side of idempotency, shared by the Fastify, Express and Hono adapters: read the key,
 * ask the engine, and turn its verdict into a response — a problem, a replay, or "run the handler"
 * with an {@link IdempotentExchange} that captures what the handler sent and completes the key once.
 * The adapters only translate their framework's request and reply into these calls.
 *
 * @module
 */
import { createHash } from 'node:crypto';
import { InvalidOptionError } from '../errors/keel-error.ts';
import type { IdempotencyEngine, IdempotencyLease } from '../idempotency/engine.ts';
import {
  IdempotencyError,
  IdempotencyLeaseLostError,
  IdempotencySupersededError,
} from '../idempotency/errors.ts';
import type { StoredResponse } from '../idempotency/store.ts';
import { checkFunction } from '../policy/options.ts';
import { PROBLEM_CONTENT_TYPE } from './problem.ts';

/**
 * Response header set on every replayed response.
 *
 * @example
 * if (res.headers.get(REPLAYED_HEADER) === 'true') metrics.replays.inc();
 */
export const REPLAYED_HEADER = 'idempotent-replayed';

/**
 * Options shared by every HTTP adapter; `Request` is the framework's request (or context).
 *
 * @example
 * const options: IdempotentHandlerOptions<{ headers: Record<string, string> }> = {
 *   engine,
 *   principal: (req) => req.headers['x-api-key-id'] ?? 'anonymous',
 *   methods: ['POST'],
 * };
 */
export interface IdempotentHandlerOptions<Request> {
  /** The engine that owns the store and every rule about keys. */
  engine: IdempotencyEngine;
  /**
   * Who is calling (user id, API key id, tenant). Keys of different principals never meet, so one
   * caller can never see another's stored response. REQUIRED on authenticated routes: when omitted,
   * every caller is `'anonymous'` and shares one key space.
   * @default () => 'anonymous'
   */
  principal?: (request: Request) => string;
  /**
   * The route pattern the key is scoped to.
   * @default the framework's matched route (Fastify `routeOptions.url`, Express `baseUrl + route.path`, Hono the matched path)
   */
  route?: (request: Request) => string;
  /**
   * Request parts besides the body that make two requests different. The same key sent to
   * `/orders/1/charge` and then `/orders/2/charge` must not replay the first order's answer.
   * @default the route's path parameters (`{ params: { id: '1' } }`), so that case is a 422 mismatch
   */
  parts?: (request: Request) => Readonly<Record<string, unknown>>;
  /** Latest-wins engines: the request's sequence (a version header, a body field). */
  sequence?: (request: Request) => number | undefined;
  /**
   * HTTP methods that are idempotent-keyed; others pass through untouched.
   * @default ['POST', 'PATCH']
   */
  methods?: readonly string[];
  /**
   * Called when storing the response fails for a reason other than a lost lease (the store is down).
   * The response still goes out. A lost lease is never reported: another attempt owns the key and
   * the client's retry replays that attempt's response.
   * @default ignores the error
   */
  onCompleteError?: (error: unknown) => void;
}

/**
 * A response the adapter sends as it is.
 *
 * @example
 * const answer: HttpAnswer = { status: 201, headers: { 'content-type': 'application/json' }, body: '{}' };
 */
export interface HttpAnswer {
  readonly status: number;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: string | null;
}

/**
 * What the core needs to know about a request, in framework-neutral terms.
 *
 * @example
 * const facts: HttpFacts = { method: 'POST', route: '/orders/:id', key: headers['idempotency-key'], body, path: '/orders/7' };
 */
export interface HttpFacts {
  readonly method: string;
  /** The route pattern the adapter found (used unless the `route` option is set). */
  readonly route: string;
  /** The raw key header value(s). */
  readonly key: string | readonly string[] | undefined;
  /** The parsed body: an object, a string, a byte array, or `undefined`. */
  readonly body: unknown;
  /** The request path, used as the problem's `instance`. */
  readonly path: string;
  /** The route's path parameters, fingerprinted unless the `parts` option says otherwise. */
  readonly params?: unknown;
}

/**
 * What the adapter does next: send an answer, run the handler under the exchange, or pass through.
 *
 * @example
 * if (opening.kind === 'respond') return send(opening.answer);
 */
export type IdempotentOpening =
  | { readonly kind: 'respond'; readonly answer: HttpAnswer }
  | { readonly kind: 'execute'; readonly exchange: IdempotentExchange }
  | { readonly kind: 'bypass' };

const DEFAULTS = Object.freeze({
  principal: () => 'anonymous',
  methods: Object.freeze(['POST', 'PATCH']),
  onCompleteError: () => {},
});

/**
 * One request's run under a lease. The handler sees the lease (adapters expose it as
 * `request.idempotency`, `res.locals.idempotency` or `c.get('idempotency')`); if the handler calls
 * `complete`, `release` or `suspend` itself — to pass `{ tx }` and commit the stored response with
 * its business write — the exchange notices and does not complete a second time.
 *
 * @example
 * const opening = await handler.open(request, facts);
 * if (opening.kind === 'execute') {
 *   // ...run the route, then:
 *   await opening.exchange.finish({ status, headers, body });
 * }
 */
export class IdempotentExchange {
  readonly lease: IdempotencyLease;
  readonly #onCompleteError: (error: unknown) => void;
  #settled = false;

  constructor(lease: IdempotencyLease, onCompleteError: (error: unknown) => void) {
    this.lease = lease;
    this.#onCompleteError = onCompleteError;
    // Mark the exchange settled when the handler ends the lease itself (runPhases does too).
    const complete = lease.complete.bind(lease);
    const release = lease.release.bind(lease);
    const suspend = lease.suspend.bind(lease);
    lease.complete = (response, options) => {
      this.#settled = true;
      return complete(response, options);
    };
    lease.release = () => {
      this.#settled = true;
      return release();
    };
    lease.suspend = () => {
      this.#settled = true;
      return suspend();
    };
  }

  /** True once the key was completed, released or suspended, by the handler or by {@link finish}. */
  get settled(): boolean {
    return this.#settled;
  }

  /**
   * Completes the key with the response actually sent, unless the handler already settled it. A
   * status the engine does not store (5xx by default) releases the key. Never rejects: the
   * response must go out whatever happens to its stored copy.
   */
  async finish(response: StoredResponse): Promise<void> {
    if (this.#settled) return;
    try {
      await this.lease.complete(response);
    } catch (error) {
      if (error instanceof IdempotencyLeaseLostError || error instanceof IdempotencySupersededError) return;
      this.#onCompleteError(error);
    }
  }
}

/**
 * The framework-agnostic core of the HTTP adapters.
 *
 * @example
 * const handler = idempotentHandler<MyRequest>({ engine, principal: (req) => req.user.id });
 * const opening = await handler.open(req, { method, route, key, body, path });
 */
export class IdempotentHandler<Request> {
  readonly engine: IdempotencyEngine;
  readonly methods: ReadonlySet<string>;
  readonly #principal: (request: Request) => string;
  readonly #route: ((request: Request) => string) | undefined;
  readonly #parts: ((request: Request) => Readonly<Record<string, unknown>>) | undefined;
  readonly #sequence: ((request: Request) => number | undefined) | undefined;
  readonly #onCompleteError: (error: unknown) => void;

  constructor(options: IdempotentHandlerOptions<Request>) {
    if (typeof options?.engine?.begin !== 'function') {
      throw new InvalidOptionError('engine', 'must be an IdempotencyEngine (see idempotency())');
    }
    this.engine = options.engine;
    this.#principal = checkFunction('principal', options.principal ?? DEFAULTS.principal);
    this.#route = options.route && checkFunction('route', options.route);
    this.#parts = options.parts && checkFunction('parts', options.parts);
    this.#sequence = options.sequence && checkFunction('sequence', options.sequence);
    this.#onCompleteError = checkFunction(
      'onCompleteError',
      options.onCompleteError ?? DEFAULTS.onCompleteError,
    );
    const methods = options.methods ?? DEFAULTS.methods;
    if (!Array.isArray(methods) || methods.length === 0 || !methods.every((m) => typeof m === 'string')) {
      throw new InvalidOptionError('methods', 'must be a non-empty array of HTTP method names');
    }
    this.methods = new Set(methods.map((m) => m.toUpperCase()));
  }

  /** True when requests with `method` go through idempotency. */
  handles(method: string): boolean {
    return this.methods.has(method.toUpperCase());
  }

  /**
   * Asks the engine about one request. Refusals become a `respond` with an
   * `application/problem+json` answer; a finished key becomes a `respond` with the replay. Errors
   * that are not idempotency problems (the store is down, a selector threw) are rethrown for the
   * framework's error handler.
   */
  async open(request: Request, facts: HttpFacts): Promise<IdempotentOpening> {
    const key = typeof facts.key === 'string' || facts.key === undefined ? facts.key : facts.key.join(', ');
    const parts = this.#parts ? this.#parts(request) : paramsPart(facts.params);
    const sequence = this.#sequence?.(request);
    try {
      const decision = await this.engine.begin({
        key,
        principal: this.#principal(request),
        method: facts.method,
        route: this.#route ? this.#route(request) : facts.route,
        payload: fingerprintable(facts.body),
        ...(parts === undefined ? {} : { parts }),
        ...(sequence === undefined ? {} : { sequence }),
      });
      if (decision.kind === 'bypass') return decision;
      if (decision.kind === 'replay') return { kind: 'respond', answer: replayAnswer(decision.response) };
      return { kind: 'execute', exchange: new IdempotentExchange(decision.lease, this.#onCompleteError) };
    } catch (error) {
      if (error instanceof IdempotencyError)
        return { kind: 'respond', answer: problemAnswer(error, facts.path) };
      throw error;
    }
  }
}

/**
 * Builds an {@link IdempotentHandler}.
 *
 * @example
 * const handler = idempotentHandler({ engine, principal: (req: { user: { id: string } }) => req.user.id });
 */
export function idempotentHandler<Request>(
  options: IdempotentHandlerOptions<Request>,
): IdempotentHandler<Request> {
  return new IdempotentHandler(options);
}

/**
 * The `application/problem+json` answer for an idempotency refusal, with its extra headers
 * (`Retry-After` on a 409 in flight).
 *
 * @example
 * problemAnswer(new IdempotencyKeyInFlightError(2), '/orders') // { status: 409, headers: { 'retry-after': '2', ... } }
 */
export function problemAnswer(error: IdempotencyError, instance: string): HttpAnswer {
  return {
    status: error.status,
    headers: { 'content-type': PROBLEM_CONTENT_TYPE, ...error.problemHeaders },
    body: JSON.stringify(error.toProblem(instance)),
  };
}

/**
 * The answer that replays a stored response, marked with `Idempotent-Replayed: true`.
 *
 * @example
 * replayAnswer({ status: 201, headers: { 'content-type': 'application/json' }, body: '{"id":1}' })
 */
export function replayAnswer(response: StoredResponse): HttpAnswer {
  return {
    status: response.status,
    headers: { ...response.headers, [REPLAYED_HEADER]: 'true' },
    body: response.body,
  };
}

/**
 * A request body the engine can fingerprint: parsed JSON as it is, text as it is, bytes as their
 * SHA-256 (so a large upload is hashed once rather than walked as an object).
 *
 * @example
 * fingerprintable(Buffer.from('raw')) // { sha256: '…' }
 */
export function fingerprintable(body: unknown): unknown {
  if (body instanceof Uint8Array) return { sha256: createHash('sha256').update(body).digest('hex') };
  if (body instanceof ArrayBuffer) {
    return { sha256: createHash('sha256').update(new Uint8Array(body)).digest('hex') };
  }
  return body;
}

/**
 * Response headers as one string each, lower-cased (`getHeaders()` may hold numbers and arrays).
 *
 * @example
 * flattenHeaders({ 'Content-Length': 2, vary: ['a', 'b'] }) // { 'content-length': '2', vary: 'a, b' }
 */
export function flattenHeaders(headers: Readonly<Record<string, unknown>>): Record<string, string> {
  const flat: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || value === null) continue;
    flat[name.toLowerCase()] = Array.isArray(value) ? value.join(', ') : String(value);
  }
  return flat;
}

/**
 * A captured response body as stored text: `null` when empty. Bodies are kept as UTF-8 text, so a
 * binary response does not replay byte for byte; keep binary routes out of the key's scope.
 *
 * @example
 * bodyText(Buffer.from('{"a":1}')) // '{"a":1}'
 */
export function bodyText(body: string | Uint8Array | null | undefined): string | null {
  if (body === null || body === undefined) return null;
  const text =
    typeof body === 'string'
      ? body
      : Buffer.from(body.buffer, body.byteOffset, body.byteLength).toString('utf8');
  return text.length === 0 ? null : text;
}

/** `{ params }` when the route has path parameters, so they are part of the fingerprint. */
function paramsPart(params: unknown): Readonly<Record<string, unknown>> | undefined {
  if (typeof params !== 'object' || params === null) return undefined;
  for (const _ in params) return { params };
  return undefined;
}
