/**
 * Postgres adapters for Keel. `postgresStore({ pool })` keeps idempotency records in one table of
 * your database, through the `pg` pool you already have (Keel declares the `query` method it calls
 * and never imports `pg`). Because the store can join your transaction, `lease.complete(response,
 * { tx: client })` commits the stored response together with the business write, so a crash between
 * them can neither lose the response of a committed operation nor replay one that rolled back.
 *
 * @module
 */
export * from './checkpoint-store.ts';
export * from './idempotency-store.ts';
export * from './inbox-store.ts';
export * from './outbox-store.ts';
export * from './pool-guard.ts';
