/**
 * @module
 * Password hashing with scrypt, on libuv's thread pool (`crypto.scrypt`, async): each login costs
 * real CPU time, which is what makes login a fair canary — when everything else is slow, login is
 * the first to show it. Hashes carry their parameters, so the cost can change without a migration.
 */
import { randomBytes, type ScryptOptions, scrypt, timingSafeEqual } from 'node:crypto';

const KEY_LENGTH = 32;

function derive(password: string, salt: Buffer, cost: number): Promise<Buffer> {
  const options: ScryptOptions = { N: cost, r: 8, p: 1, maxmem: 256 * cost * 8 };
  return new Promise((resolve, reject) =>
    scrypt(password, salt, KEY_LENGTH, options, (error, key) => (error ? reject(error) : resolve(key))),
  );
}

/**
 * `scrypt$<N>$<salt>$<key>`, base64url.
 *
 * @example
 * const stored = await hashPassword('correct horse', 16_384);
 */
export async function hashPassword(password: string, cost: number): Promise<string> {
  const salt = randomBytes(16);
  const key = await derive(password, salt, cost);
  return `scrypt$${cost}$${salt.toString('base64url')}$${key.toString('base64url')}`;
}

/**
 * Whether `password` matches `stored`, compared in constant time.
 *
 * @example
 * if (!(await verifyPassword(body.password, user.password_hash))) throw new InvalidCredentialsError();
 */
export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const [scheme, cost, salt, key] = stored.split('$');
  if (scheme !== 'scrypt' || cost === undefined || salt === undefined || key === undefined) return false;
  const expected = Buffer.from(key, 'base64url');
  const actual = await derive(password, Buffer.from(salt, 'base64url'), Number(cost));
  return actual.length === expected.length && timingSafeEqual(actual, expected);
}
