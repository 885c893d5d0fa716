/**
 * SQLite adapters for Keel. `sqliteStore({ db })` keeps idempotency records in one table of a SQLite
 * database, through the handle you already have — Node's built-in `node:sqlite` `DatabaseSync` or a
 * `better-sqlite3` `Database` (Keel declares the `prepare`/`exec` methods it calls and imports
 * neither). In WAL mode with a `busy_timeout`, several processes can share one database file and
 * still run each key's handler once.
 *
 * @module
 */
export * from './checkpoint-store.ts';
export * from './idempotency-store.ts';
export * from './inbox-store.ts';
export * from './outbox-store.ts';
export * from './pool-guard.ts';
export * from './worker-pool.ts';
