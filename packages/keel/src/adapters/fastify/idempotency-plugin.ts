import { InvalidOptionError } from '../../errors/keel-error.ts';
import {
  bodyText,
  flattenHeaders,
  type HttpAnswer,
  type IdempotentExchange,
  IdempotentHandler,
  type IdempotentHandlerOptions,
} from '../../http/idempotent-handler.ts';
import type { IdempotencyLease } from '../../idempotency/engine.ts';
import type { TransactionHandle } from '../../idempotency/store.ts';

/**
 * The part of a Fastify request the plugin reads (Keel never imports Fastify).
 *
 * @example
 * principal: (request: FastifyRequestLike) => String(request.headers['x-user'])
 */
export interface FastifyRequestLike {
  readonly method: string;
  readonly url: string;
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
  readonly body?: unknown;
  readonly params?: unknown;
  readonly routeOptions: { readonly url?: string | undefined };
}

/**
 * The part of a Fastify reply the plugin calls.
 *
 * @example
 * const reply: FastifyReplyLike = fastifyReply; // a real FastifyReply fits
 */
export interface FastifyReplyLike {
  readonly statusCode: number;
  code(statusCode: number): FastifyReplyLike;
  header(name: string, value: string): FastifyReplyLike;
  getHeaders(): Record<string, unknown>;
  send(payload?: unknown): FastifyReplyLike;
}

/**
 * The part of a Fastify instance the plugin calls.
 *
 * @example
 * idempotencyPlugin(app as FastifyInstanceLike, { engine }, done);
 */
export interface FastifyInstanceLike {
  addHook(name: 'preHandler', hook: FastifyPreHandler): unknown;
  addHook(name: 'onSend', hook: FastifyOnSend): unknown;
  decorateRequest(name: string, value: unknown): unknown;
  hasRequestDecorator(name: string): boolean;
}

/**
 * A `preHandler` hook as the plugin declares it.
 *
 * @example
 * app.addHook('preHandler', hooks.preHandler);
 */
export type FastifyPreHandler = (request: FastifyRequestLike, reply: FastifyReplyLike) => Promise<unknown>;
/**
 * An `onSend` hook as the plugin declares it.
 *
 * @example
 * app.addHook('onSend', hooks.onSend);
 */
export type FastifyOnSend = (
  request: FastifyRequestLike,
  reply: FastifyReplyLike,
  payload: unknown,
) => Promise<unknown>;

/**
 * Options of {@link fastifyIdempotency}; selectors receive the Fastify request.
 *
 * @example
 * const options: FastifyIdempotencyOptions<FastifyRequest> = { engine, principal: (req) => req.user.id };
 */
export type FastifyIdempotencyOptions<Request extends FastifyRequestLike = FastifyRequestLike> =
  IdempotentHandlerOptions<Request>;

/**
 * Options of {@link idempotencyPlugin}: the route options plus which routes it applies to. Its
 * selectors receive the request typed as {@link FastifyRequestLike}; cast to your `FastifyRequest`
 * to read what your hooks decorated (`(request as FastifyRequest).user.id`).
 *
 * @example
 * await app.register(idempotencyPlugin, { engine, routes: (route, method) => method === 'POST' });
 */
export interface FastifyIdempotencyPluginOptions<Request extends FastifyRequestLike = FastifyRequestLike>
  extends FastifyIdempotencyOptions<Request> {
  /**
   * Which routes (by pattern and method) go through idempotency.
   * @default every route whose method is in `methods`
   */
  routes?: (route: string, method: string) => boolean;
}

/**
 * The hooks to put on a route.
 *
 * @example
 * app.post('/orders', { ...fastifyIdempotency({ engine }) }, handler);
 */
export interface FastifyIdempotencyHooks {
  readonly preHandler: FastifyPreHandler;
  readonly onSend: FastifyOnSend;
}

/**
 * The lease of the current request, when it runs under one (also readable as `request.idempotency`).
 *
 * @example
 * const lease = idempotencyLease(request);
 * await provider.charge(body, { idempotencyKey: lease?.derivedKey('charge') });
 */
export function idempotencyLease(request: object): IdempotencyLease | undefined {
  return (request as { idempotency?: IdempotencyLease | null }).idempotency ?? undefined;
}

/**
 * The part of a Fastify reply {@link completeInTransaction} calls; a real `FastifyReply` fits.
 *
 * @example
 * const reply: FastifySerializingReplyLike = fastifyReply;
 */
export interface FastifySerializingReplyLike extends FastifyReplyLike {
  getHeader(name: string): unknown;
  /** The route's serializer (its response schema for the current status, or JSON). */
  serialize(payload: unknown): string | Uint8Array | ArrayBuffer;
}

/**
 * Stores the response a handler is about to send as part of the handler's own transaction, so the
 * business write and the stored response commit — or roll back — together, in one commit instead of
 * two. Call it inside the transaction after setting the status and headers, then return what it
 * returns: `payload` serialised as Fastify would send it (an object through the route's
 * serializer, with `application/json; charset=utf-8` unless a content type is set; text as
 * `text/plain; charset=utf-8`; bytes as `application/octet-stream`). The plugin then sends it and
 * does not store a second copy. Hooks that rewrite the payload (`preSerialization`, `onSend`) run
 * after the copy was stored, so replays do not see their changes.
 *
 * A request with no lease (a route outside the filter, a method that passes through) stores
 * nothing; the payload is serialised all the same. When the lease was lost (the handler outlived
 * `leaseMs` and another attempt took the key over) it throws `IdempotencyLeaseLostError`: roll
 * back, since the other attempt's result is the one the client's retry replays. A rollback after
 * it stored the response leaves the key in flight until its lease ends; the retry after that runs
 * the handler again. A status the engine does not store (5xx by default) releases the key at once,
 * outside the transaction.
 *
 * @example
 * app.post('/orders', async (request, reply) => {
 *   const client = await pool.connect();
 *   try {
 *     await client.query('BEGIN');
 *     const order = await orders.insert(client, request.body);
 *     const body = await completeInTransaction(request, reply.code(201), order, { tx: client });
 *     await client.query('COMMIT');
 *     return body;
 *   } catch (error) {
 *     await client.query('ROLLBACK');
 *     throw error;
 *   } finally {
 *     client.release();
 *   }
 * });
 */
export async function completeInTransaction(
  request: object,
  reply: FastifySerializingReplyLike,
  payload: unknown,
  options: { readonly tx: TransactionHandle },
): Promise<string | Uint8Array> {
  if (options?.tx === undefined || options.tx === null) {
    throw new InvalidOptionError(
      'tx',
      'must be the open transaction (a pg client after BEGIN, a SQLite handle)',
    );
  }
  const body = serializeLikeFastify(reply, payload);
  const lease = idempotencyLease(request);
  if (lease !== undefined) {
    await lease.complete(
      { status: reply.statusCode, headers: flattenHeaders(reply.getHeaders()), body: bodyText(body) },
      { tx: options.tx },
    );
  }
  return body;
}

/** The payload as `reply.send` would put it on the wire, setting the content type it would set. */
function serializeLikeFastify(reply: FastifySerializingReplyLike, payload: unknown): string | Uint8Array {
  const typed = reply.getHeader('content-type') !== undefined;
  if (payload instanceof Uint8Array) {
    if (!typed) reply.header('content-type', 'application/octet-stream');
    return payload;
  }
  if (typeof payload === 'string') {
    if (!typed) reply.header('content-type', 'text/plain; charset=utf-8');
    return payload;
  }
  if (!typed) reply.header('content-type', 'application/json; charset=utf-8');
  const serialized = reply.serialize(payload);
  return serialized instanceof ArrayBuffer ? new Uint8Array(serialized) : serialized;
}

/**
 * Route-level hooks: a `preHandler` that replays or refuses before the handler runs, and an
 * `onSend` that stores the response the handler produced (or releases the key on a 5xx). The lease
 * is on `request.idempotency` during the handler.
 *
 * The principal is `'anonymous'` unless `principal` is given — give it on every authenticated route.
 * When storing the response fails because the lease was lost (the handler outlived `leaseMs` and
 * another attempt took the key over), nothing is logged and the response still goes out: the
 * client's retry replays the attempt that won. A streamed body is read to its end and stored as
 * text; a hijacked reply (`reply.hijack()`) is never seen, so its key stays in flight until the lease
 * runs out.
 *
 * @example
 * const hooks = fastifyIdempotency({ engine, principal: (req) => req.headers['x-user'] as string });
 * app.post('/orders', { ...hooks }, async (request, reply) => reply.code(201).send(await createOrder(request.body)));
 */
export function fastifyIdempotency<Request extends FastifyRequestLike = FastifyRequestLike>(
  options: FastifyIdempotencyOptions<Request>,
  routes?: (route: string, method: string) => boolean,
): FastifyIdempotencyHooks {
  const core = new IdempotentHandler<Request>(options);
  const exchanges = new WeakMap<object, IdempotentExchange>();

  const preHandler: FastifyPreHandler = async (request, reply) => {
    if (!core.handles(request.method)) return;
    const route = request.routeOptions.url ?? pathOf(request.url);
    if (routes && !routes(route, request.method)) return;
    const opening = await core.open(request as Request, {
      method: request.method,
      route,
      key: request.headers[core.engine.header],
      body: request.body,
      path: pathOf(request.url),
      params: request.params,
    });
    if (opening.kind === 'respond') return answer(reply, opening.answer);
    if (opening.kind === 'execute') {
      exchanges.set(request, opening.exchange);
      (request as { idempotency?: IdempotencyLease | null }).idempotency = opening.exchange.lease;
    }
  };

  const onSend: FastifyOnSend = async (request, reply, payload) => {
    const exchange = exchanges.get(request);
    if (exchange === undefined) return payload;
    exchanges.delete(request);
    // A streamed body is read to the end so it can be stored; the buffered copy is what goes out.
    const body = isReadable(payload) ? await readAll(payload) : payload;
    await exchange.finish({
      status: reply.statusCode,
      headers: flattenHeaders(reply.getHeaders()),
      body: bodyText(typeof body === 'string' || body instanceof Uint8Array ? body : null),
    });
    return body;
  };

  return Object.freeze({ preHandler, onSend });
}

/**
 * A Fastify plugin that applies {@link fastifyIdempotency} to every matching route of the instance
 * it is registered on (it is not encapsulated, like a `fastify-plugin` plugin). Register it before
 * the routes, after the hooks that authenticate (`onRequest`/`preValidation`), since `principal`
 * reads what they set. The lease is on `request.idempotency`.
 *
 * @example
 * await app.register(idempotencyPlugin, {
 *   engine: idempotency({ store: postgresStore({ pool }) }),
 *   principal: (request) => request.user.id,
 *   routes: (route) => route.startsWith('/payments'),
 * });
 */
export function idempotencyPlugin(
  fastify: FastifyInstanceLike,
  options: FastifyIdempotencyPluginOptions,
  done: (error?: Error) => void,
): void {
  const { routes, ...rest } = options;
  const hooks = fastifyIdempotency(rest, routes);
  if (!fastify.hasRequestDecorator('idempotency')) fastify.decorateRequest('idempotency', null);
  fastify.addHook('preHandler', hooks.preHandler);
  fastify.addHook('onSend', hooks.onSend);
  done();
}

// What `fastify-plugin` sets: hooks apply to the registering scope, not a child one.
Object.assign(idempotencyPlugin, {
  [Symbol.for('skip-override')]: true,
  [Symbol.for('fastify.display-name')]: 'keel-idempotency',
});

function answer(reply: FastifyReplyLike, response: HttpAnswer): FastifyReplyLike {
  reply.code(response.status);
  for (const [name, value] of Object.entries(response.headers)) reply.header(name, value);
  return response.body === null ? reply.send() : reply.send(response.body);
}

function pathOf(url: string): string {
  const q = url.indexOf('?');
  return q === -1 ? url : url.slice(0, q);
}

function isReadable(payload: unknown): payload is AsyncIterable<unknown> {
  return (
    typeof payload === 'object' &&
    payload !== null &&
    typeof (payload as { pipe?: unknown }).pipe === 'function' &&
    typeof (payload as AsyncIterable<unknown>)[Symbol.asyncIterator] === 'function'
  );
}

async function readAll(stream: AsyncIterable<unknown>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) {
    chunks.push(typeof chunk === 'string' ? Buffer.from(chunk) : Buffer.from(chunk as Uint8Array));
  }
  return Buffer.concat(chunks);
}
