/**
 * @module
 * The users table, as the sign-up and login routes read and write it.
 */
import type { SqlRunner } from './database.ts';
import { EmailTakenError } from './domain-errors.ts';

export interface UserRow {
  readonly id: string;
  readonly email: string;
  readonly password_hash: string;
}

/** SQLite's and Postgres' ways of saying a UNIQUE constraint refused a row. */
export function isUniqueViolation(error: unknown): boolean {
  const { code, message } = (error ?? {}) as { code?: unknown; message?: unknown };
  return code === '23505' || (typeof message === 'string' && message.includes('UNIQUE constraint failed'));
}

/**
 * Inserts a user; a taken email is an {@link EmailTakenError}, whichever request got there first.
 *
 * @example
 * await insertUser(tx, { id: randomUUID(), email, passwordHash });
 */
export async function insertUser(
  tx: SqlRunner,
  user: { id: string; email: string; passwordHash: string },
): Promise<void> {
  try {
    await tx.run('INSERT INTO users (id, email, password_hash, created_at) VALUES (?, ?, ?, ?)', [
      user.id,
      user.email,
      user.passwordHash,
      Date.now(),
    ]);
  } catch (error) {
    if (isUniqueViolation(error)) throw new EmailTakenError();
    throw error;
  }
}

/** @example const user = await findUserByEmail(db.reader('login'), email); */
export function findUserByEmail(runner: SqlRunner, email: string): Promise<UserRow | undefined> {
  return runner.get<UserRow>('SELECT id, email, password_hash FROM users WHERE email = ?', [email]);
}
