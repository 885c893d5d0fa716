/**
 * The error a backfill throws when its checkpoint moved under it: another run of the same backfill
 * saved a checkpoint since this one read it. The batch that found out was rolled back.
 *
 * @module
 */
import { KeelError } from '../errors/keel-error.ts';

const BACKFILL_CONFLICT = Symbol.for('keel.backfill-conflict');

/**
 * Another run of backfill `name` moved its checkpoint; this run's batch was rolled back. Run one
 * backfill of a name at a time, or let the second one restart and resume from the new checkpoint.
 *
 * @example
 * try { await backfill(options) } catch (error) { if (isBackfillConflict(error)) console.error(error.message) }
 */
export class BackfillConflictError extends KeelError {
  readonly [BACKFILL_CONFLICT] = true;
  readonly backfill: string;
  constructor(name: string) {
    super(
      'KEEL_BACKFILL_CONFLICT',
      `The checkpoint of backfill '${name}' was moved by another run; this batch was rolled back`,
    );
    this.backfill = name;
  }
}

/**
 * True when `error` is a {@link BackfillConflictError}, even from another copy of Keel.
 *
 * @example
 * if (isBackfillConflict(error)) process.exitCode = 1;
 */
export function isBackfillConflict(error: unknown): error is BackfillConflictError {
  return (
    typeof error === 'object' &&
    error !== null &&
    (error as { [BACKFILL_CONFLICT]?: boolean })[BACKFILL_CONFLICT] === true
  );
}
