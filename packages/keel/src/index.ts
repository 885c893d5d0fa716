/**
 * Keel's resilience core: deadlines that propagate, retries that cannot become storms, circuit
 * breakers with failover, bulkheads and adaptive concurrency limits — each a small policy with one
 * `execute(fn, context)`, composed with `pipeline()`, reporting through one typed event stream.
 *
 * @module
 */
export * from './errors/is-transient.ts';
export * from './errors/keel-error.ts';
export * from './errors/policy-errors.ts';
export * from './errors/pool-errors.ts';
export * from './policy/adaptive-throttle.ts';
export * from './policy/backoff.ts';
export * from './policy/bulkhead.ts';
export * from './policy/circuit-breaker.ts';
export * from './policy/clock.ts';
export * from './policy/concurrency-limiter.ts';
export * from './policy/deadline.ts';
export * from './policy/failover.ts';
export * from './policy/fake-clock.ts';
export * from './policy/fallback.ts';
export * from './policy/hedge.ts';
export * from './policy/latency-window.ts';
export * from './policy/limit-algorithms.ts';
export * from './policy/options.ts';
export * from './policy/pipeline.ts';
export * from './policy/policy.ts';
export * from './policy/pool-shares.ts';
export * from './policy/rate-limiter.ts';
export * from './policy/registry.ts';
export * from './policy/retry.ts';
export * from './policy/retry-budget.ts';
export * from './policy/telemetry.ts';
export * from './policy/timeout.ts';
export * from './policy/timer-wheel.ts';
