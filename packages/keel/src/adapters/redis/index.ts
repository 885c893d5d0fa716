/**
 * Redis adapters for Keel. `redisStore({ client })` keeps idempotency records as JSON strings with a
 * TTL that runs to their retention, through the ioredis client you already have (Keel declares the
 * `eval` and `get` it calls and never imports ioredis). Every write that must check the lease token is
 * a Lua script, so fencing is atomic; a sorted set indexes in-flight keys by lease end so expired
 * leases are found without scanning. Redis cannot join a SQL transaction: pass `tx` to a SQL store
 * when the stored response must commit with a business write.
 *
 * @module
 */
export * from './idempotency-store.ts';
