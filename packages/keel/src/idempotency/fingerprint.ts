/**
 * The fingerprint of a request: a SHA-256 over its canonical JSON (object keys sorted, so key order
 * does not matter) and any request parts the route names. Same key with another fingerprint means
 * the client reused a key for a different request.
 *
 * @module
 */
import { createHash } from 'node:crypto';
import { IdempotencyPayloadError } from './errors.ts';

/**
 * Canonical JSON: objects with sorted keys, no whitespace, `undefined` members dropped. Throws for
 * values JSON cannot represent faithfully (functions, symbols, bigints, non-finite numbers, cycles).
 *
 * @example
 * canonicalJson({ b: 1, a: [2, { d: 3, c: 4 }] }) // '{"a":[2,{"c":4,"d":3}],"b":1}'
 */
export function canonicalJson(value: unknown): string {
  return write(value, new Set());
}

function write(value: unknown, seen: Set<object>): string {
  switch (typeof value) {
    case 'string':
      return JSON.stringify(value);
    case 'number':
      if (!Number.isFinite(value))
        throw new IdempotencyPayloadError(400, `The payload holds a non-finite number (${value})`);
      return JSON.stringify(value);
    case 'boolean':
      return value ? 'true' : 'false';
    case 'object': {
      if (value === null) return 'null';
      if (seen.has(value)) throw new IdempotencyPayloadError(400, 'The payload holds a cycle');
      seen.add(value);
      let out: string;
      if (Array.isArray(value)) {
        out = `[${value.map((v) => (v === undefined ? 'null' : write(v, seen))).join(',')}]`;
      } else if (value instanceof Date) {
        out = JSON.stringify(value.toISOString());
      } else {
        const keys = Object.keys(value).sort();
        const parts: string[] = [];
        for (const k of keys) {
          const v = (value as Record<string, unknown>)[k];
          if (v !== undefined) parts.push(`${JSON.stringify(k)}:${write(v, seen)}`);
        }
        out = `{${parts.join(',')}}`;
      }
      seen.delete(value);
      return out;
    }
    default:
      throw new IdempotencyPayloadError(
        400,
        `The payload holds a ${typeof value}, which JSON cannot represent`,
      );
  }
}

/**
 * SHA-256 (hex) of the canonical payload and the named request parts.
 *
 * @example
 * fingerprint(req.body, { path: req.url }) === fingerprint(reorderedBody, { path: req.url })
 */
export function fingerprint(payload: unknown, parts: Readonly<Record<string, unknown>> = {}): string {
  return fingerprintOfCanonical(canonicalJson(payload ?? null), parts);
}

/**
 * {@link fingerprint} of a payload already in canonical JSON, for callers that measured it first.
 * The hashed text is exactly `canonicalJson({ payload, parts })`: members in key order.
 */
export function fingerprintOfCanonical(
  payloadJson: string,
  parts: Readonly<Record<string, unknown>> = {},
): string {
  return createHash('sha256')
    .update(`{"parts":${canonicalJson(parts)},"payload":${payloadJson}}`)
    .digest('hex');
}

/** SHA-256 (hex) of the caller's scope and key: the store never sees a raw key next to its owner. */
export function scopedKey(principal: string, method: string, route: string, key: string): string {
  return createHash('sha256')
    .update(`${principal}\u0000${method.toUpperCase()}\u0000${route}\u0000${key}`)
    .digest('hex');
}
