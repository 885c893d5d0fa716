/**
 * @module
 * Bearer tokens for the service's routes: `<userId>.<expiry>.<hmac>`, signed with the service's
 * secret, so checking one costs an HMAC and no database read — the database is kept for the work
 * the lab measures. Tokens expire; a forged, truncated or expired one is refused the same way.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { UnauthorizedError } from './domain-errors.ts';

/** How long a token is valid. */
export const TOKEN_LIFETIME_MS = 12 * 60 * 60 * 1000;

export interface TokenSigner {
  issue(userId: string): string;
  /** The user id of a valid token; throws {@link UnauthorizedError} otherwise. */
  verify(authorization: string | undefined): string;
}

/**
 * @example
 * const tokens = tokenSigner('secret', () => Date.now());
 * const userId = tokens.verify(request.headers.authorization);
 */
export function tokenSigner(secret: string, now: () => number = Date.now): TokenSigner {
  const sign = (payload: string) => createHmac('sha256', secret).update(payload).digest('base64url');
  return {
    issue(userId) {
      const payload = `${userId}.${now() + TOKEN_LIFETIME_MS}`;
      return `${payload}.${sign(payload)}`;
    },
    verify(authorization) {
      if (authorization === undefined || authorization === '') {
        throw new UnauthorizedError('This route needs an Authorization: Bearer <token> header.');
      }
      const match = /^Bearer ([A-Za-z0-9_-]+)\.(\d{1,15})\.([A-Za-z0-9_-]{43})$/.exec(authorization);
      if (match === null) throw new UnauthorizedError('The bearer token is malformed.');
      const [, userId, expiry, signature] = match as unknown as [string, string, string, string];
      const expected = Buffer.from(sign(`${userId}.${expiry}`));
      const given = Buffer.from(signature);
      if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
        throw new UnauthorizedError('The bearer token is not valid.');
      }
      if (Number(expiry) <= now()) throw new UnauthorizedError('The bearer token has expired.');
      return userId;
    },
  };
}
