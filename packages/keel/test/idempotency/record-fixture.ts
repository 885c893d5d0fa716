import { randomUUID } from 'node:crypto';
import type { IdempotencyRecord } from 'keel/idempotency';

/** A fresh in-flight record written at `at`, with a 30 s lease and 24 h retention, for store tests. */
export function recordFixture(
  key: string,
  overrides: Partial<IdempotencyRecord> = {},
  at = 1_700_000_000_000,
): IdempotencyRecord {
  return {
    key,
    fingerprint: 'fp-1',
    state: 'in-flight',
    token: randomUUID(),
    leaseUntil: at + 30_000,
    expiresAt: at + 86_400_000,
    sequence: null,
    response: null,
    recoveryPoint: null,
    phases: {},
    createdAt: at,
    updatedAt: at,
    ...overrides,
  };
}
