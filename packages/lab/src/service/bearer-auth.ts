/**
 * @module
 * The bearer-token check the authenticated routes share: an `onRequest` hook, so a request without
 * a valid token is refused before its body is parsed or any idempotency key is taken, and the user
 * id it found, kept beside the request for the handler and for the idempotency plugin's `principal`.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { TokenSigner } from './auth-tokens.ts';
import { UnauthorizedError } from './domain-errors.ts';

const users = new WeakMap<object, string>();

/**
 * @example
 * app.post('/orders', { onRequest: bearerAuth(tokens) }, handler);
 */
export function bearerAuth(tokens: TokenSigner) {
  return async (request: FastifyRequest, _reply: FastifyReply): Promise<void> => {
    users.set(request, tokens.verify(request.headers.authorization));
  };
}

/** The user the request's token named; only on routes behind {@link bearerAuth}. */
export function requestUser(request: object): string {
  const user = users.get(request);
  if (user === undefined)
    throw new UnauthorizedError('This route needs an Authorization: Bearer <token> header.');
  return user;
}
