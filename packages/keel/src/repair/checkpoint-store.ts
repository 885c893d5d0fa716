/**
 * Where a backfill remembers how far it got. A checkpoint is one row per backfill name: the keyset
 * cursor of the last item applied, how many items and batches it has applied, and when. A store that
 * can (SQLite, Postgres) runs each batch's writes and the checkpoint that follows them in one
 * transaction, so a crash anywhere leaves either both or neither — a restarted backfill neither
 * skips a batch nor applies one twice. Every save is a compare-and-set on the batch count, so two
 * runs of one backfill racing on one database cannot both move the cursor.
 *
 * @module
 */
import type { TransactionHandle } from '../idempotency/store.ts';

/** A keyset cursor as a checkpoint keeps it: any JSON value. */
export type BackfillCursor =
  | string
  | number
  | boolean
  | null
  | BackfillCursor[]
  | { [key: string]: BackfillCursor };

/** How far one backfill got. */
export interface BackfillCheckpoint {
  /** The backfill's name, the checkpoint's key. */
  readonly name: string;
  /** The cursor of the last item applied; `null` before the first batch (or after a restart). */
  readonly cursor: BackfillCursor | null;
  /** Items applied over every run of this backfill. */
  readonly applied: number;
  /** Batches committed over every run; the version a save compares against. */
  readonly batches: number;
  /** Wall time of the last save, epoch ms. */
  readonly updatedAt: number;
}

/**
 * Storage for checkpoints. Adapters: `sqliteCheckpoints` (`keel/sqlite`), `postgresCheckpoints`
 * (`keel/postgres`), and {@link memoryCheckpoints} for tests and one-process jobs.
 *
 * @example
 * const checkpoints: CheckpointStore = sqliteCheckpoints({ db });
 * await checkpoints.transaction(async (tx) => checkpoints.save(tx, next, previous));
 */
export interface CheckpointStore {
  /** True when a batch's writes and its checkpoint commit together in {@link transaction}. */
  readonly atomic: boolean;
  /** The checkpoint of `name`, or `undefined`; writes nothing (a missing table reads as none). */
  read(name: string): Promise<BackfillCheckpoint | undefined>;
  /**
   * Runs `fn` in one transaction on the store's database and commits when it resolves; `readOnly`
   * always rolls back. `fn` receives the driver's handle inside `BEGIN`.
   */
  transaction<T>(
    fn: (tx: TransactionHandle) => Promise<T>,
    options?: { readonly readOnly?: boolean },
  ): Promise<T>;
  /**
   * Inside `tx`: replaces `previous` (the checkpoint as this run last read or wrote it, `undefined`
   * when there was none) with `next`. Throws `BackfillConflictError` when the stored checkpoint is
   * no longer `previous`: another run moved it.
   */
  save(
    tx: TransactionHandle,
    next: BackfillCheckpoint,
    previous: BackfillCheckpoint | undefined,
  ): Promise<void>;
}
