/**
 * Make silent failures loud: an async context that carries request, idempotency and entity ids
 * through every await and across the broker, a log binding that stamps them on every line, a
 * metrics facade (Prometheus or OpenTelemetry) that turns policy, idempotency and outbox events
 * into standard metrics without ever letting an id become a label, invariants that assert the
 * relationships between them (metric ratios, data checks, flow checks, thresholds, absences),
 * heartbeats for background jobs, actionable alerts with their sinks, Prometheus rules generated
 * from the same declarations, and health endpoints that reflect all of it.
 *
 * @module
 */
export * from './alert.ts';
export * from './alert-sinks.ts';
export * from './context.ts';
export * from './domain-metrics.ts';
export * from './health.ts';
export * from './heartbeat.ts';
export * from './invariant.ts';
export * from './invariant-data.ts';
export * from './invariant-evaluator.ts';
export * from './invariant-metrics.ts';
export * from './log-binding.ts';
export * from './metrics.ts';
export * from './otel-metrics.ts';
export * from './prometheus-metrics.ts';
export * from './rules.ts';
export * from './standard-metrics.ts';
