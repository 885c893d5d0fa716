/**
 * Checkpoints in memory, for tests and for a backfill whose writes are idempotent and whose process
 * need not survive a restart. Not atomic with the batch's writes: the checkpoint is saved after
 * `apply` resolves, so a crash in between applies that batch again.
 *
 * @module
 */
import { BackfillConflictError } from './backfill-errors.ts';
import type { BackfillCheckpoint, CheckpointStore } from './checkpoint-store.ts';

/**
 * A {@link CheckpointStore} in a `Map`; its transaction handle is `undefined`.
 *
 * @example
 * const report = await backfill({ name: 'users', checkpoints: memoryCheckpoints(), nextBatch, cursorOf, apply });
 */
export function memoryCheckpoints(): CheckpointStore {
  const rows = new Map<string, BackfillCheckpoint>();
  return {
    atomic: false,
    async read(name) {
      return rows.get(name);
    },
    async transaction(fn) {
      return fn(undefined);
    },
    async save(_tx, next, previous) {
      const stored = rows.get(next.name);
      if (stored?.batches !== previous?.batches) throw new BackfillConflictError(next.name);
      rows.set(next.name, Object.freeze({ ...next }));
    },
  };
}
