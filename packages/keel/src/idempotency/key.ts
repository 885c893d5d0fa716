import { IdempotencyKeyInvalidError } from './errors.ts';

/** The longest key accepted, as in the IETF Idempotency-Key draft's guidance and Stripe's limit. */
export const MAX_KEY_LENGTH = 255;

/**
 * Checks an `Idempotency-Key`: 1–255 printable ASCII characters (space allowed inside, not at
 * either end). Throws {@link IdempotencyKeyInvalidError} with the reason otherwise.
 *
 * @example
 * validateIdempotencyKey(req.headers['idempotency-key']);
 */
export function validateIdempotencyKey(key: string): string {
  if (key.length === 0) throw new IdempotencyKeyInvalidError('The Idempotency-Key is empty');
  if (key.length > MAX_KEY_LENGTH) {
    throw new IdempotencyKeyInvalidError(
      `The Idempotency-Key is ${key.length} characters long; at most ${MAX_KEY_LENGTH} are allowed`,
    );
  }
  for (let i = 0; i < key.length; i++) {
    const c = key.charCodeAt(i);
    if (c < 0x20 || c > 0x7e) {
      throw new IdempotencyKeyInvalidError(
        `The Idempotency-Key holds a character outside printable ASCII at position ${i + 1}`,
      );
    }
  }
  if (key.charCodeAt(0) === 0x20 || key.charCodeAt(key.length - 1) === 0x20) {
    throw new IdempotencyKeyInvalidError('The Idempotency-Key starts or ends with a space');
  }
  return key;
}
