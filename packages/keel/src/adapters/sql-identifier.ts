/**
 * Table and schema names reach SQL text as identifiers, where parameters cannot go. Every SQL store
 * takes them from options, so every store checks them the same way: plain letters, digits and
 * underscores, within a length that leaves room for the suffixes of its index names.
 *
 * @module
 */
import { InvalidOptionError } from '../errors/keel-error.ts';

const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]*$/;

/**
 * `value` when it is a plain SQL identifier of at most `max` characters; otherwise an
 * `InvalidOptionError` naming `option`.
 *
 * @example
 * const table = checkSqlIdentifier('table', options.table ?? 'keel_inbox', 32);
 */
export function checkSqlIdentifier(option: string, value: unknown, max: number): string {
  if (typeof value !== 'string' || !IDENTIFIER.test(value) || value.length > max) {
    throw new InvalidOptionError(
      option,
      `must be 1 to ${max} letters, digits or underscores, not starting with a digit, got ${JSON.stringify(value)}`,
    );
  }
  return value;
}
