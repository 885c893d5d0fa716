/**
 * Starts Keel's async context for each Fastify request, so every log line, metric exemplar and
 * outbox event made while handling it carries the request id, correlation id and idempotency key
 * without passing them around. The request id comes from `x-request-id` (a fresh UUID when absent)
 * and is echoed on the response so a client's report can be matched to the logs.
 *
 * @module
 */
import { REQUEST_ID_HEADER, requestContext, runInContext } from '../../observe/context.ts';

/** The parts of a Fastify request and reply the hook touches. */
export interface FastifyContextRequest {
  readonly headers: Readonly<Record<string, string | readonly string[] | undefined>>;
}
/** @see FastifyContextRequest */
export interface FastifyContextReply {
  header(name: string, value: string): unknown;
}

/**
 * An `onRequest` hook that runs the rest of the request inside a Keel context. It is the
 * callback form on purpose: the context must enclose `done`, which an async hook cannot do.
 *
 * @example
 * app.addHook('onRequest', fastifyContext());
 * app.get('/orders/:id', async (req) => {
 *   bindEntity({ orderId: req.params.id }); // every later log line names the order
 * });
 */
export function fastifyContext(): (
  request: FastifyContextRequest,
  reply: FastifyContextReply,
  done: () => void,
) => void {
  return (request, reply, done) => {
    const values = requestContext(request.headers);
    reply.header(REQUEST_ID_HEADER, values.requestId as string);
    runInContext(values, done);
  };
}
