/**
 * @module
 * Sign-up and login. Both cost a real scrypt derivation on libuv's thread pool; login reads through
 * the `login` route class, whose connections a report can never take in guarded mode — so login
 * latency is the lab's canary for everything else.
 */
import { randomUUID } from 'node:crypto';
import type { TokenSigner } from './auth-tokens.ts';
import type { Database } from './database.ts';
import { InvalidCredentialsError } from './domain-errors.ts';
import { hashPassword, verifyPassword } from './password-hash.ts';
import { CredentialsSchema } from './route-schemas.ts';
import type { ServiceApp } from './service-types.ts';
import { findUserByEmail, insertUser } from './user-records.ts';

export interface AccountRoutesOptions {
  readonly db: Database;
  readonly tokens: TokenSigner;
  readonly scryptCost: number;
}

/** A hash to compare against when the email is unknown, so both answers cost the same. */
function noSuchUser(cost: number): string {
  return `scrypt$${cost}$${'A'.repeat(22)}$${'A'.repeat(43)}`;
}

/** @example accountRoutes(app, { db, tokens, scryptCost: 16_384 }); */
export function accountRoutes(app: ServiceApp, options: AccountRoutesOptions): void {
  const { db, tokens } = options;
  const decoy = noSuchUser(options.scryptCost);
  app.post('/signup', { schema: { body: CredentialsSchema } }, async (request, reply) => {
    const email = request.body.email.toLowerCase();
    const passwordHash = await hashPassword(request.body.password, options.scryptCost);
    const id = `usr_${randomUUID()}`;
    await db.transaction('login', (tx) => insertUser(tx, { id, email, passwordHash }));
    return reply.code(201).send({ id, email });
  });

  app.post('/login', { schema: { body: CredentialsSchema } }, async (request) => {
    const user = await findUserByEmail(db.reader('login'), request.body.email.toLowerCase());
    const matches = await verifyPassword(request.body.password, user?.password_hash ?? decoy);
    if (user === undefined || !matches) throw new InvalidCredentialsError();
    return { token: tokens.issue(user.id), userId: user.id };
  });
}
