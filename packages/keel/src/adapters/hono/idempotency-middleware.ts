import { IdempotentHandler, type IdempotentHandlerOptions } from '../../http/idempotent-handler.ts';
import type { IdempotencyLease } from '../../idempotency/engine.ts';

/**
 * The part of a Hono context the middleware uses (Keel never imports Hono).
 *
 * @example
 * principal: (c: HonoContextLike) => c.req.header('x-user') ?? 'anonymous'
 */
export interface HonoContextLike {
  readonly req: {
    readonly method: string;
    readonly path: string;
    readonly routePath: string;
    readonly matchedRoutes?: readonly { readonly method: string; readonly path: string }[];
    header(name: string): string | undefined;
    text(): Promise<string>;
    /** All path parameters of the matched route. */
    param?(): unknown;
  };
  readonly res: Response;
  set(key: 'idempotency', value: IdempotencyLease): void;
}

/**
 * Options of {@link honoIdempotency}; selectors receive the Hono context.
 *
 * @example
 * const options: HonoIdempotencyOptions = { engine, parts: (c) => ({ path: c.req.path }) };
 */
export type HonoIdempotencyOptions<Context extends HonoContextLike = HonoContextLike> =
  IdempotentHandlerOptions<Context>;

/**
 * A Hono middleware, as the adapter declares it.
 *
 * @example
 * app.use('/api/*', honoIdempotency({ engine }) satisfies HonoMiddleware);
 */
export type HonoMiddleware<Context extends HonoContextLike = HonoContextLike> = (
  c: Context,
  next: () => Promise<void>,
) => Promise<Response | undefined>;

/**
 * Idempotency middleware for Hono, for one route (`app.post('/orders/:id', honoIdempotency(...), handler)`)
 * or many (`app.use('/orders/*', honoIdempotency(...))`). The key is scoped to the matched route
 * pattern of the handler. The body is read once as text (Hono caches it, so the handler can still
 * call `c.req.json()`) and fingerprinted as JSON when it is JSON, as text otherwise.
 *
 * The handler runs with the lease at `c.get('idempotency')` (declare `idempotency: IdempotencyLease`
 * in your `Variables` to type it). After the handler, the response in `c.res` — including the one
 * `app.onError` built from a thrown error — is stored, or the key released on a 5xx. If storing fails
 * because the lease was lost, nothing is logged and the response still goes out; the client's retry
 * replays the attempt that won.
 *
 * The principal is `'anonymous'` unless `principal` is given — give it on every authenticated route.
 *
 * @example
 * app.post('/orders', honoIdempotency({ engine, principal: (c) => c.get('user').id }), async (c) => {
 *   return c.json(await createOrder(await c.req.json()), 201);
 * });
 */
export function honoIdempotency<Context extends HonoContextLike = HonoContextLike>(
  options: HonoIdempotencyOptions<Context>,
): HonoMiddleware<Context> {
  const core = new IdempotentHandler<Context>(options);
  return async (c, next) => {
    if (!core.handles(c.req.method)) {
      await next();
      return undefined;
    }
    const opening = await core.open(c, {
      method: c.req.method,
      route: routeOf(c),
      key: c.req.header(core.engine.header),
      body: await bodyOf(c),
      path: c.req.path,
      params: c.req.param?.(),
    });
    if (opening.kind === 'respond') {
      const { status, headers, body } = opening.answer;
      return new Response(body, { status, headers });
    }
    if (opening.kind === 'execute') c.set('idempotency', opening.exchange.lease);
    await next();
    if (opening.kind === 'bypass') return undefined;
    const res = c.res;
    const text = await res.clone().text();
    const headers: Record<string, string> = {};
    res.headers.forEach((value, name) => {
      headers[name] = value;
    });
    await opening.exchange.finish({ status: res.status, headers, body: text.length === 0 ? null : text });
    return undefined;
  };
}

/** The handler's route pattern: the last matched route that is not a middleware (`app.use`). */
function routeOf(c: HonoContextLike): string {
  const routes = c.req.matchedRoutes;
  if (routes !== undefined) {
    for (let i = routes.length - 1; i >= 0; i--) {
      const route = routes[i];
      if (route !== undefined && route.method !== 'ALL') return route.path;
    }
  }
  return c.req.routePath;
}

async function bodyOf(c: HonoContextLike): Promise<unknown> {
  const text = await c.req.text();
  if (text.length === 0) return undefined;
  if (!/[/+]json\b/i.test(c.req.header('content-type') ?? '')) return text;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    // Malformed JSON is the handler's to refuse; fingerprint it as the text it is.
    return text;
  }
}
