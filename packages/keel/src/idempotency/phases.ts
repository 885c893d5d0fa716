/**
 * Multi-step operations as named phases (Stripe's "atomic phases"). Each local phase commits its
 * business write and its recovery point in one transaction; an external phase (a payment provider)
 * runs outside any transaction, with a key derived from the request's so the downstream deduplicates
 * too. A retry with the same Idempotency-Key resumes after the last committed phase. When an
 * external call's outcome is unknown (it timed out, the response was lost), the phase says so, and
 * the next attempt first looks the operation up at the downstream by its derived key and records
 * what really happened — a lost response never becomes a second charge.
 *
 * @module
 */

import type { CrashPoints } from '../chaos/crash-point.ts';
import { isTransient } from '../errors/is-transient.ts';
import { isRejection } from '../errors/keel-error.ts';
import type { IdempotencyLease } from './engine.ts';
import type { StoredResponse, TransactionHandle } from './store.ts';

/** What a phase can see. */
export interface PhaseContext {
  readonly lease: IdempotencyLease;
  /** Results of the phases committed so far, in this attempt or an earlier one. */
  readonly results: Readonly<Record<string, unknown>>;
  /** True when this attempt took over from one that stopped before finishing. */
  readonly resumed: boolean;
}

/** A phase that writes to the database: its result and recovery point commit together. */
export interface LocalPhase<R = unknown> {
  readonly name: string;
  readonly kind?: 'local';
  run(context: PhaseContext, tx: TransactionHandle): Promise<R> | R;
}

/** A phase that calls another system, outside any transaction. */
export interface ExternalPhase<R = unknown> {
  readonly name: string;
  readonly kind: 'external';
  /** Makes the call, passing `lease.derivedKey(name)` (or a key derived from it) downstream. */
  run(context: PhaseContext, key: string): Promise<R>;
  /**
   * Asks the downstream what happened to the call with `key` (a provider's listing endpoint).
   * Returns the result if the call took effect, `undefined` if it did not.
   */
  lookup(context: PhaseContext, key: string): Promise<R | undefined>;
  /**
   * Which failures leave the outcome unknown (the call may or may not have taken effect).
   * @default timeouts and network errors (`isTransient`), but not local rejections, which never sent it
   */
  isOutcomeUnknown?: (error: unknown) => boolean;
}

export type Phase = LocalPhase | ExternalPhase;

/** The final step: builds the response, committed with the stored response in one transaction. */
export interface ResponsePhase {
  run(context: PhaseContext, tx: TransactionHandle): Promise<StoredResponse> | StoredResponse;
}

/** Options of {@link runPhases}. */
export interface RunPhasesOptions {
  /**
   * Runs `fn` inside one database transaction and passes the driver's handle (a `pg` client after
   * BEGIN, the sqlite handle). Local phases, their recovery points, the final response and its stored
   * copy commit through it.
   * @default runs `fn(undefined)`: each write commits on its own (memory store, tests)
   */
  transaction?: <T>(fn: (tx: TransactionHandle) => Promise<T>) => Promise<T>;
  /** Crash points for recovery tests: `before:<phase>`, `after:<phase>`, `after:<phase>#pending`. */
  crash?: CrashPoints;
}

/** Recovery point names an external phase records before and after an uncertain call. */
export const pendingMarker = (phase: string): string => `${phase}#pending`;
export const unknownMarker = (phase: string): string => `${phase}#unknown`;

/**
 * Runs the phases in order, skipping those already committed, then completes the key with the
 * response built by `respond`. On failure the lease is suspended (recovery points kept) and the
 * error rethrown; the next request with the key resumes.
 *
 * @example
 * const response = await runPhases(lease, [
 *   { name: 'attempt', run: (_c, tx) => payments.recordAttempt(tx, orderId) },
 *   { name: 'charge', kind: 'external',
 *     run: (_c, key) => provider.charge({ amount, idempotencyKey: key }),
 *     lookup: (_c, key) => provider.findCharge(key) },
 * ], { run: (c, tx) => payments.recordCharge(tx, orderId, c.results.charge) }, { transaction: db.transaction });
 */
export async function runPhases(
  lease: IdempotencyLease,
  phases: readonly Phase[],
  respond: ResponsePhase,
  options: RunPhasesOptions = {},
): Promise<StoredResponse> {
  const transaction = options.transaction ?? ((fn) => fn(undefined));
  const crash = options.crash;
  const results: Record<string, unknown> = { ...lease.phases };
  const context: PhaseContext = { lease, results, resumed: lease.resumed };
  try {
    for (const phase of phases) {
      if (Object.hasOwn(results, phase.name)) continue;
      crash?.reached(`before:${phase.name}`);
      if (phase.kind === 'external') {
        results[phase.name] = await runExternal(lease, phase, context, results, crash);
      } else {
        results[phase.name] = await transaction(async (tx) => {
          const result = (await phase.run(context, tx)) ?? null;
          await lease.checkpoint(phase.name, result, { tx });
          return result;
        });
      }
      crash?.reached(`after:${phase.name}`);
    }
    crash?.reached('before:respond');
    const response = await transaction(async (tx) => {
      const built = await respond.run(context, tx);
      await lease.complete(built, { tx });
      return built;
    });
    crash?.reached('after:respond');
    return response;
  } catch (error) {
    await settleAfterFailure(lease);
    throw error;
  }
}

async function runExternal(
  lease: IdempotencyLease,
  phase: ExternalPhase,
  context: PhaseContext,
  results: Record<string, unknown>,
  crash: CrashPoints | undefined,
): Promise<unknown> {
  const key = lease.derivedKey(phase.name);
  const uncertain =
    Object.hasOwn(results, pendingMarker(phase.name)) || Object.hasOwn(results, unknownMarker(phase.name));
  if (uncertain) {
    // An earlier attempt may have made the call: ask the downstream before calling again.
    const found = await phase.lookup(context, key);
    if (found !== undefined) {
      await lease.checkpoint(phase.name, found);
      return found;
    }
  } else {
    await lease.checkpoint(pendingMarker(phase.name), { key });
    results[pendingMarker(phase.name)] = { key };
    crash?.reached(`after:${pendingMarker(phase.name)}`);
  }
  let result: unknown;
  try {
    result = await phase.run(context, key);
  } catch (error) {
    const unknown = phase.isOutcomeUnknown ?? defaultOutcomeUnknown;
    if (unknown(error)) {
      await lease.checkpoint(unknownMarker(phase.name), { key, error: String(error) }).catch(() => {});
    }
    throw error;
  }
  await lease.checkpoint(phase.name, result ?? null);
  return result ?? null;
}

function defaultOutcomeUnknown(error: unknown): boolean {
  return isTransient(error) && !isRejection(error);
}

async function settleAfterFailure(lease: IdempotencyLease): Promise<void> {
  try {
    if (lease.recoveryPoint !== null) await lease.suspend();
    else await lease.release();
  } catch {
    // The lease was lost to another attempt, which now owns the key; nothing is left to settle here.
  }
}
