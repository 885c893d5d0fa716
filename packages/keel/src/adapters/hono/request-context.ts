/**
 * Starts Keel's async context for each Hono request, so every log line, metric exemplar and outbox
 * event made while handling it carries the request id, correlation id and idempotency key. The
 * request id comes from `x-request-id` (a fresh UUID when absent) and is echoed on the response.
 *
 * @module
 */
import { REQUEST_ID_HEADER, requestContext, runInContext } from '../../observe/context.ts';

/** The parts of a Hono context the middleware touches. */
export interface HonoRequestContext {
  readonly req: { readonly raw: { readonly headers: Headers } };
  header(name: string, value: string): void;
}

/**
 * Middleware that runs the rest of the request inside a Keel context.
 *
 * @example
 * app.use(honoContext());
 */
export function honoContext(): (c: HonoRequestContext, next: () => Promise<void>) => Promise<void> {
  return (c, next) => {
    const values = requestContext(c.req.raw.headers);
    c.header(REQUEST_ID_HEADER, values.requestId as string);
    return runInContext(values, next);
  };
}
