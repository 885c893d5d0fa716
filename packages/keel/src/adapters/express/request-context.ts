/**
 * Starts Keel's async context for each Express request, so every log line, metric exemplar and
 * outbox event made while handling it carries the request id, correlation id and idempotency key.
 * The request id comes from `x-request-id` (a fresh UUID when absent) and is echoed on the response.
 *
 * @module
 */
import { REQUEST_ID_HEADER, requestContext, runInContext } from '../../observe/context.ts';

/** The parts of an Express request and response the middleware touches. */
export interface ExpressContextRequest {
  readonly headers: Readonly<Record<string, string | readonly string[] | undefined>>;
}
/** @see ExpressContextRequest */
export interface ExpressContextResponse {
  setHeader(name: string, value: string): unknown;
}

/**
 * Middleware that runs the rest of the request inside a Keel context.
 *
 * @example
 * app.use(expressContext());
 */
export function expressContext(): (
  req: ExpressContextRequest,
  res: ExpressContextResponse,
  next: () => void,
) => void {
  return (req, res, next) => {
    const values = requestContext(req.headers);
    res.setHeader(REQUEST_ID_HEADER, values.requestId as string);
    runInContext(values, next);
  };
}
