/**
 * A checkpointed, resumable repair: walk a table (or any ordered source) in small batches by a
 * keyset cursor, apply each batch, and save the cursor after it — in the same transaction as the
 * batch's writes where the checkpoint store allows — so that a backfill killed at any point resumes
 * where it stopped, with nothing skipped and nothing applied twice. A dry run walks the same batches
 * in transactions that always roll back and writes nothing, not even the checkpoint table, and says
 * how many items a real run would apply and which come first.
 *
 * @module
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { InvalidOptionError } from '../errors/keel-error.ts';
import type { TransactionHandle, WallClock } from '../idempotency/store.ts';
import { wallClock as defaultWallClock } from '../idempotency/store.ts';
import { checkFunction, checkInteger, checkNumber } from '../policy/options.ts';
import type { BackfillCheckpoint, BackfillCursor, CheckpointStore } from './checkpoint-store.ts';

/** What `nextBatch` and `apply` receive with each batch. */
export interface BackfillBatchContext {
  /** The handle inside the batch's transaction: read and write through it. */
  readonly tx: TransactionHandle;
  /** Items to return at most. */
  readonly limit: number;
  /** True in a dry run: `apply` is not called and the transaction rolls back. */
  readonly dryRun: boolean;
}

/** Told after each batch: committed, or (dry run) counted. */
export interface BackfillProgress {
  readonly name: string;
  readonly dryRun: boolean;
  /** Batches of this run so far. */
  readonly batches: number;
  /** Items of this run so far (applied, or that a real run would apply). */
  readonly items: number;
  /** Items in the batch just done. */
  readonly batchItems: number;
  /** The cursor after the batch just done. */
  readonly cursor: BackfillCursor;
  /** The checkpoint as saved after the batch; unchanged in a dry run. */
  readonly checkpoint: BackfillCheckpoint | undefined;
}

/** Options of {@link backfill}. */
export interface BackfillOptions<Item, Cursor extends BackfillCursor> {
  /** Names the backfill: the key of its checkpoint. 1 to 200 characters. */
  readonly name: string;
  /** Where the cursor is kept between batches and runs. */
  readonly checkpoints: CheckpointStore;
  /**
   * Items read and applied per transaction: small, so each batch holds its locks briefly.
   * @default 100
   */
  readonly batchSize?: number;
  /**
   * The next items after `after` (`undefined`: from the start), in cursor order, at most
   * `context.limit`; fewer than the limit means there are no more. A keyset query:
   * `WHERE (created_at, id) > (?, ?) ORDER BY created_at, id LIMIT ?`.
   */
  readonly nextBatch: (
    after: Cursor | undefined,
    context: BackfillBatchContext,
  ) => readonly Item[] | Promise<readonly Item[]>;
  /** The cursor of an item (the keyset columns of its row); it must grow along the walk. */
  readonly cursorOf: (item: Item) => Cursor;
  /** Repairs one batch, writing through `context.tx`. Not called in a dry run. */
  readonly apply: (batch: readonly Item[], context: BackfillBatchContext) => void | Promise<void>;
  /** How an item is named in the report's sample. @default the JSON of its cursor */
  readonly idOf?: (item: Item) => string;
  /**
   * Walk and count without writing: transactions roll back, `apply` and the checkpoint save are skipped.
   * @default false
   */
  readonly dryRun?: boolean;
  /**
   * Walk from the start rather than from the checkpoint (the checkpoint keeps counting).
   * @default false
   */
  readonly restart?: boolean;
  /**
   * Pause between batches, leaving the database to live traffic.
   * @default 0
   */
  readonly pauseMs?: number;
  /**
   * Items named in the report.
   * @default 20
   */
  readonly sampleSize?: number;
  /** Stops the walk between batches; the batch in flight commits first. */
  readonly signal?: AbortSignal;
  /** Called after each batch. A throwing listener does not stop the backfill. */
  readonly onProgress?: (progress: BackfillProgress) => void;
  /** Stamps the checkpoint's `updatedAt`. @default Date.now */
  readonly clock?: WallClock;
}

/** What a run of {@link backfill} did. */
export interface BackfillReport<Cursor extends BackfillCursor> {
  readonly name: string;
  readonly dryRun: boolean;
  /** Where the walk started: the checkpoint's cursor, or `null` from the start. */
  readonly resumedFrom: Cursor | null;
  /** The cursor after the last batch of this run (`resumedFrom` when there was none). */
  readonly cursor: Cursor | null;
  /** Batches of this run. */
  readonly batches: number;
  /** Items applied by this run, or that a real run would apply (dry run). */
  readonly items: number;
  /** The first items of this run, named by `idOf`. */
  readonly sample: readonly string[];
  /** True when the walk reached the end; false when `signal` stopped it first. */
  readonly finished: boolean;
  /** The checkpoint after the run (in a dry run, as it was). */
  readonly checkpoint: BackfillCheckpoint | undefined;
}

const DEFAULTS = Object.freeze({ batchSize: 100, pauseMs: 0, sampleSize: 20 });

function checkName(name: unknown): string {
  if (typeof name !== 'string' || name.length === 0 || name.length > 200) {
    throw new InvalidOptionError(
      'name',
      `must be a string of 1 to 200 characters, got ${JSON.stringify(name)}`,
    );
  }
  return name;
}

function checkStore(store: CheckpointStore): CheckpointStore {
  const methods = ['read', 'transaction', 'save'] as const;
  if (typeof store !== 'object' || store === null || methods.some((m) => typeof store[m] !== 'function')) {
    throw new InvalidOptionError('checkpoints', 'must be a checkpoint store (read, transaction, save)');
  }
  return store;
}

/**
 * Walks `nextBatch` from the checkpoint of `name` to the end, applying each batch and saving the
 * cursor after it; resolves with what this run did.
 *
 * @example
 * const report = await backfill({
 *   name: 'payment-events',
 *   checkpoints: sqliteCheckpoints({ db }),
 *   batchSize: 50,
 *   nextBatch: (after, { limit }) =>
 *     db.prepare(`SELECT id, created_at FROM payments WHERE (created_at, id) > (?, ?)
 *       AND NOT EXISTS (SELECT 1 FROM keel_outbox e WHERE e.aggregate_id = payments.id)
 *       ORDER BY created_at, id LIMIT ?`).all(...(after ?? [0, '']), limit),
 *   cursorOf: (row) => [row.created_at, row.id],
 *   apply: (rows, { tx }) => outbox.append(tx, rows.map(paymentCompleted)),
 * });
 * console.log(`${report.items} events appended, finished: ${report.finished}`);
 */
export async function backfill<Item, Cursor extends BackfillCursor>(
  options: BackfillOptions<Item, Cursor>,
): Promise<BackfillReport<Cursor>> {
  const name = checkName(options.name);
  const store = checkStore(options.checkpoints);
  const batchSize = checkInteger('batchSize', options.batchSize ?? DEFAULTS.batchSize, 1, 100_000);
  const nextBatch = checkFunction('nextBatch', options.nextBatch);
  const cursorOf = checkFunction('cursorOf', options.cursorOf);
  const apply = checkFunction('apply', options.apply);
  const idOf =
    options.idOf === undefined
      ? (item: Item) => JSON.stringify(cursorOf(item))
      : checkFunction('idOf', options.idOf);
  const dryRun = options.dryRun ?? false;
  const pauseMs = checkNumber('pauseMs', options.pauseMs ?? DEFAULTS.pauseMs);
  const sampleSize = checkInteger('sampleSize', options.sampleSize ?? DEFAULTS.sampleSize, 0);
  const clock = options.clock ?? defaultWallClock;
  const { signal, onProgress } = options;

  let checkpoint = await store.read(name);
  const resumedFrom = (options.restart === true ? null : (checkpoint?.cursor ?? null)) as Cursor | null;
  let after = resumedFrom;
  let batches = 0;
  let items = 0;
  const sample: string[] = [];
  let finished = false;

  while (signal?.aborted !== true) {
    const previous = checkpoint;
    const done = await store.transaction(
      async (tx) => {
        const context: BackfillBatchContext = { tx, limit: batchSize, dryRun };
        const batch = await nextBatch(after ?? undefined, context);
        if (batch.length > batchSize) {
          throw new InvalidOptionError(
            'nextBatch',
            `returned ${batch.length} items, more than the limit ${batchSize}`,
          );
        }
        const last = batch.at(-1);
        if (last === undefined) return { batch, cursor: after, saved: previous };
        const cursor = cursorOf(last);
        if (JSON.stringify(cursor) === JSON.stringify(after)) {
          throw new InvalidOptionError('cursorOf', `the cursor did not move past ${JSON.stringify(after)}`);
        }
        if (dryRun) return { batch, cursor, saved: previous };
        await apply(batch, context);
        const saved: BackfillCheckpoint = {
          name,
          cursor,
          applied: (previous?.applied ?? 0) + batch.length,
          batches: (previous?.batches ?? 0) + 1,
          updatedAt: clock.now(),
        };
        await store.save(tx, saved, previous);
        return { batch, cursor, saved };
      },
      { readOnly: dryRun },
    );
    if (done.batch.length === 0) {
      finished = true;
      break;
    }
    checkpoint = done.saved;
    after = done.cursor;
    batches++;
    items += done.batch.length;
    for (const item of done.batch) {
      if (sample.length >= sampleSize) break;
      sample.push(idOf(item));
    }
    report(onProgress, {
      name,
      dryRun,
      batches,
      items,
      batchItems: done.batch.length,
      cursor: after as BackfillCursor,
      checkpoint,
    });
    if (done.batch.length < batchSize) {
      finished = true;
      break;
    }
    if (pauseMs > 0) await sleep(pauseMs, undefined, { signal }).catch(() => undefined);
  }
  return { name, dryRun, resumedFrom, cursor: after, batches, items, sample, finished, checkpoint };
}

function report(
  listener: ((progress: BackfillProgress) => void) | undefined,
  progress: BackfillProgress,
): void {
  try {
    listener?.(progress);
  } catch (error) {
    process.emitWarning(`A backfill progress listener threw: ${String(error)}`, {
      code: 'KEEL_BACKFILL_PROGRESS_FAILED',
    });
  }
}
