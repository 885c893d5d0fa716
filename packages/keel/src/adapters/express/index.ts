/**
 * Idempotency for Express. `expressIdempotency(options)` is a route middleware that replays a
 * finished `Idempotency-Key` without running the handler, refuses missing, invalid, reused and
 * in-flight keys with `application/problem+json`, and stores the response the handler wrote — or
 * releases the key when it failed with a 5xx, so the retry runs again. Keel declares the few Express
 * shapes it touches and never imports Express.
 *
 * @module
 */
export * from '../../http/idempotent-handler.ts';
export * from './health.ts';
export * from './idempotency-middleware.ts';
export * from './request-context.ts';
