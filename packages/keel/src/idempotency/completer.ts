/**
 * The completer: a sweep that finds operations whose worker stopped (crashed, was killed, hung past
 * its lease) and finishes or fails each one, so nothing stays "in between" forever. The final
 * response is stored, so the client's next retry with the same key gets it.
 *
 * @module
 */
import { randomUUID } from 'node:crypto';
import { checkInteger } from '../policy/options.ts';
import { type IdempotencyEngine, IdempotencyLease } from './engine.ts';
import type { IdempotencyRecord, StoredResponse } from './store.ts';

/** What the application decides for one abandoned operation. */
export type AbandonedOutcome = StoredResponse | 'release';

/** Options of {@link completeAbandoned}. */
export interface CompleterOptions {
  /**
   * Finishes one abandoned operation: typically runs its phases again with `runPhases` (which resumes
   * after the last recovery point and reconciles uncertain external calls), or builds a final
   * failure response. Return `'release'` to forget the key so the client's retry starts afresh.
   * A throw leaves the operation for the next sweep.
   */
  finish(lease: IdempotencyLease, record: IdempotencyRecord): Promise<AbandonedOutcome>;
  /** At most this many operations per sweep. @default 100 */
  limit?: number;
}

/** What one sweep did. */
export interface CompleterReport {
  /** Abandoned operations found. */
  readonly found: number;
  /** Finished with a stored response. */
  readonly completed: number;
  /** Released for a fresh retry. */
  readonly released: number;
  /** `finish` threw; left for the next sweep. */
  readonly failed: number;
  /** Another worker took the key over first. */
  readonly skipped: number;
}

/**
 * Sweeps abandoned operations once.
 *
 * @example
 * const report = await completeAbandoned(engine, {
 *   finish: (lease) => runPhases(lease, chargePhases(lease), respondWithCharge, { transaction }),
 * });
 * log.info(report, 'completer sweep');
 */
export async function completeAbandoned(
  engine: IdempotencyEngine,
  options: CompleterOptions,
): Promise<CompleterReport> {
  const limit = checkInteger('limit', options.limit ?? 100);
  const now = engine.clock.now();
  const abandoned = await engine.store.expiredLeases(now, limit);
  let completed = 0;
  let released = 0;
  let failed = 0;
  let skipped = 0;
  for (const record of abandoned) {
    const takeover: IdempotencyRecord = {
      ...record,
      token: randomUUID(),
      leaseUntil: engine.clock.now() + engine.leaseMs,
      updatedAt: engine.clock.now(),
    };
    if (!(await engine.store.replace(record.token, takeover))) {
      skipped++;
      continue;
    }
    const lease = new IdempotencyLease(engine, takeover, true);
    try {
      const outcome = await options.finish(lease, takeover);
      if (outcome === 'release') {
        await lease.release();
        released++;
      } else {
        const current = await engine.store.get(record.key);
        // `finish` may have completed the key itself (runPhases does); complete it only if not.
        if (current?.state !== 'completed') await lease.complete(outcome);
        completed++;
      }
    } catch {
      failed++;
    }
  }
  return { found: abandoned.length, completed, released, failed, skipped };
}
