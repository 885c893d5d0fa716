/**
 * Idempotency for Fastify. `idempotencyPlugin` (registered on an instance, with a route filter) or
 * `fastifyIdempotency(options)` (hooks for one route) replays a finished `Idempotency-Key` without
 * running the handler, refuses missing, invalid, reused and in-flight keys with
 * `application/problem+json`, and stores the response the handler sent — or releases the key when
 * it failed with a 5xx, so the retry runs again. Keel declares the few Fastify shapes it touches and
 * never imports Fastify.
 *
 * @module
 */
export * from '../../http/idempotent-handler.ts';
export * from './health.ts';
export * from './idempotency-plugin.ts';
export * from './request-context.ts';
