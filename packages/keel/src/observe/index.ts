/**
 * Make silent failures loud: an async context that carries request, idempotency and entity ids
 * through every await and across the broker, a log binding that stamps them on every line, and a
 * metrics facade (Prometheus or OpenTelemetry) that turns policy, idempotency and outbox events
 * into standard metrics without ever letting an id become a label.
 *
 * @module
 */
export * from './context.ts';
export * from './domain-metrics.ts';
export * from './log-binding.ts';
export * from './metrics.ts';
export * from './otel-metrics.ts';
export * from './prometheus-metrics.ts';
export * from './standard-metrics.ts';
