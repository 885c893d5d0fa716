/**
 * Repair tools for what went wrong silently: a checkpointed, resumable `backfill()` that walks a
 * table by a keyset cursor in small transactions, with a dry run, and the checkpoint stores it
 * keeps its cursor in (memory here; SQLite in `keel/sqlite`, Postgres in `keel/postgres`). Replay
 * of published events lives in `keel/outbox`.
 *
 * @module
 */
export * from './backfill.ts';
export * from './backfill-errors.ts';
export * from './checkpoint-store.ts';
export * from './memory-checkpoints.ts';
