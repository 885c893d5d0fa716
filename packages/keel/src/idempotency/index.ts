/**
 * Idempotency that holds across retries, crashes and instances: `Idempotency-Key` validation and
 * scoping, request fingerprints, leases with fencing, replay of stored responses, latest-wins
 * updates, and recovery points for multi-step operations. HTTP adapters (`keel/fastify`,
 * `keel/express`, `keel/hono`) and stores (`keel/sqlite`, `keel/postgres`, `keel/redis`, and the
 * memory store here) are built on this engine.
 *
 * @module
 */
export * from '../http/problem.ts';
export * from './completer.ts';
export * from './engine.ts';
export * from './errors.ts';
export * from './fingerprint.ts';
export * from './key.ts';
export * from './memory-store.ts';
export * from './phases.ts';
export * from './store.ts';
export * from './telemetry.ts';
