import {
  flattenHeaders,
  IdempotentHandler,
  type IdempotentHandlerOptions,
} from '../../http/idempotent-handler.ts';
import type { IdempotencyLease } from '../../idempotency/engine.ts';

/**
 * The part of an Express request the middleware reads (Keel never imports Express).
 *
 * @example
 * principal: (req: ExpressRequestLike) => String(req.headers['x-user'])
 */
export interface ExpressRequestLike {
  readonly method: string;
  readonly originalUrl: string;
  readonly baseUrl: string;
  readonly path: string;
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
  readonly body?: unknown;
  readonly params?: Readonly<Record<string, string>>;
  readonly route?: { readonly path: unknown } | undefined;
}

type WriteCallback = (error?: Error | null) => void;

/**
 * The part of an Express response the middleware calls.
 *
 * @example
 * const lease = idempotencyLease(res as ExpressResponseLike);
 */
export interface ExpressResponseLike {
  statusCode: number;
  readonly locals: Record<string, unknown>;
  setHeader(name: string, value: string): unknown;
  getHeaders(): Record<string, unknown>;
  write(chunk: unknown, encoding?: unknown, callback?: WriteCallback): boolean;
  end(chunk?: unknown, encoding?: unknown, callback?: () => void): unknown;
}

/**
 * Options of {@link expressIdempotency}; selectors receive the Express request.
 *
 * @example
 * const options: ExpressIdempotencyOptions = { engine, parts: (req) => ({ path: req.path }) };
 */
export type ExpressIdempotencyOptions<Request extends ExpressRequestLike = ExpressRequestLike> =
  IdempotentHandlerOptions<Request>;

/**
 * An Express middleware, as the adapter declares it.
 *
 * @example
 * const keyed: ExpressMiddleware = expressIdempotency({ engine });
 */
export type ExpressMiddleware = (
  req: ExpressRequestLike,
  res: ExpressResponseLike,
  next: (error?: unknown) => void,
) => void;

/**
 * Idempotency middleware for Express. Put it on the route, after the body parser and after
 * authentication: `app.post('/orders', express.json(), auth, expressIdempotency({...}), handler)`.
 * The route pattern scoping the key is `req.baseUrl + req.route.path` (mounted with `app.use`, where
 * Express sets no `req.route`, it is the concrete path). A malformed JSON body never reaches it: the
 * body parser answers 400 first and nothing is stored.
 *
 * The handler runs with the lease on `res.locals.idempotency`. The response is captured as it is
 * written (`res.send`, `res.json` and `res.end` all end in `res.end`); the final `end` waits until
 * the response is stored, so a client that retries as soon as it has the answer gets the replay.
 * A 5xx (the handler threw and Express's error handler answered) releases the key. If storing fails
 * because the lease was lost, nothing is logged and the response still goes out; the client's retry
 * replays the attempt that won.
 *
 * The principal is `'anonymous'` unless `principal` is given — give it on every authenticated route.
 *
 * @example
 * app.post('/orders', express.json(), expressIdempotency({ engine, principal: (req) => req.user.id }), async (req, res) => {
 *   res.status(201).json(await createOrder(req.body));
 * });
 */
export function expressIdempotency<Request extends ExpressRequestLike = ExpressRequestLike>(
  options: ExpressIdempotencyOptions<Request>,
): ExpressMiddleware {
  const core = new IdempotentHandler<Request>(options);
  return (req, res, next) => {
    if (!core.handles(req.method)) return next();
    const path = req.originalUrl.split('?')[0] ?? req.originalUrl;
    const route = req.route === undefined ? req.baseUrl + req.path : req.baseUrl + String(req.route.path);
    core
      .open(req as Request, {
        method: req.method,
        route,
        key: req.headers[core.engine.header],
        body: req.body,
        path,
        params: req.params,
      })
      .then((opening) => {
        if (opening.kind === 'bypass') return next();
        if (opening.kind === 'respond') {
          const { status, headers, body } = opening.answer;
          res.statusCode = status;
          for (const [name, value] of Object.entries(headers)) res.setHeader(name, value);
          res.end(body ?? undefined);
          return;
        }
        const { exchange } = opening;
        res.locals.idempotency = exchange.lease;
        const write = res.write;
        const end = res.end;
        const chunks: Buffer[] = [];
        res.write = function (this: ExpressResponseLike, ...args: Parameters<ExpressResponseLike['write']>) {
          collect(chunks, args[0], args[1]);
          return write.apply(this, args);
        };
        res.end = function (this: ExpressResponseLike, ...args: Parameters<ExpressResponseLike['end']>) {
          res.write = write;
          res.end = end;
          if (typeof args[0] !== 'function') collect(chunks, args[0], args[1]);
          const body = Buffer.concat(chunks).toString('utf8');
          void exchange
            .finish({
              status: res.statusCode,
              headers: flattenHeaders(res.getHeaders()),
              body: body.length === 0 ? null : body,
            })
            .then(() => end.apply(res, args));
          return res;
        };
        next();
      }, next);
  };
}

/**
 * The lease of the current request, when it runs under one (the same as `res.locals.idempotency`).
 *
 * @example
 * const lease = idempotencyLease(res);
 * await provider.charge(req.body, { idempotencyKey: lease?.derivedKey('charge') });
 */
export function idempotencyLease(res: {
  readonly locals: Record<string, unknown>;
}): IdempotencyLease | undefined {
  return res.locals.idempotency as IdempotencyLease | undefined;
}

function collect(chunks: Buffer[], chunk: unknown, encoding: unknown): void {
  if (typeof chunk === 'string') {
    chunks.push(Buffer.from(chunk, typeof encoding === 'string' ? (encoding as BufferEncoding) : 'utf8'));
  } else if (chunk instanceof Uint8Array) {
    chunks.push(Buffer.from(chunk));
  }
}
