/**
 * Turns the events of policies, the idempotency engine and the outbox into standard metrics, so a
 * service gets breaker state, rejections, retry storms, replays and outbox lag on its dashboards
 * by passing one sink as `telemetry`. Labels are bounded: policy kind, policy name, outcome, event
 * type, consumer — never a key, an event id or an entity id.
 *
 * Metrics (counters are zero-initialised for each policy name, event type or consumer the first
 * time it reports anything, so `increase()` sees its first failure, rejection or dead letter):
 *
 * | metric | labels | from |
 * |---|---|---|
 * | `keel_policy_calls_total` | policy, name, outcome (`success`/`failure`) | `success`, `failure` |
 * | `keel_policy_call_duration_seconds` (histogram) | policy, name, outcome | `success`, `failure` |
 * | `keel_rejections_total` | policy, name, reason (`breaker-open`, `bulkhead-full`, …) | `rejection` |
 * | `keel_timeouts_total` | policy, name | `timeout` |
 * | `keel_retries_total` | name | `retry` |
 * | `keel_retry_budget_exhausted_total` | name | `budget-exhausted` |
 * | `keel_breaker_state` (gauge: 0 closed, 1 half-open, 2 open, 3 isolated) | name | `state-change` |
 * | `keel_breaker_transitions_total` | name, to | `state-change` |
 * | `keel_limiter_limit`, `keel_limiter_inflight` (gauges) | name | `limit-change` |
 * | `keel_hedges_total`, `keel_failovers_total`, `keel_fallbacks_total` | name | `hedge`, `failover`, `fallback` |
 * | `keel_idempotency_requests_total` | name, outcome (`executed`, `resumed`, `replayed`, `conflict`, `mismatch`, `superseded`) | engine |
 * | `keel_idempotency_completions_total` | name, outcome (`completed`, `released`, `lease-lost`) | engine |
 * | `keel_outbox_appended_total`, `keel_outbox_published_total`, `keel_outbox_publish_failures_total` | type | outbox, relay |
 * | `keel_outbox_lag_seconds` (histogram) | stage (`published`, `consumed`) | `published`, `consumed` |
 * | `keel_consumer_consumed_total`, `keel_consumer_duplicates_total`, `keel_consumer_failures_total` | consumer, type | consumers |
 * | `keel_outbox_dead_letters_total` | consumer, type | `dead-lettered` |
 * | `keel_outbox_unpublished`, `keel_outbox_oldest_unpublished_age_seconds`, `keel_outbox_dead_letters` (gauges read on scrape) | — | {@link observeOutbox} |
 *
 * @module
 */
import type { IdempotencyTelemetry, IdempotencyTelemetryEvent } from '../idempotency/telemetry.ts';
import type { OutboxGauges, OutboxTelemetry, OutboxTelemetryEvent } from '../outbox/telemetry.ts';
import { checkFunction, checkInteger } from '../policy/options.ts';
import type { PolicyEvent, PolicyKind, Telemetry } from '../policy/telemetry.ts';
import type { MetricsFacade } from './metrics.ts';

/** Options of {@link keelMetrics}. */
export interface KeelMetricsOptions {
  /**
   * Distinct policy names, idempotency engine names and consumers accepted as label values.
   * @default 100
   */
  maxNames?: number;
  /**
   * Distinct outbox event types accepted as label values.
   * @default 100
   */
  maxEventTypes?: number;
  /**
   * Upper bounds of the call-duration and outbox-lag histograms, in seconds.
   * @default [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300]
   */
  buckets?: readonly number[];
}

const DEFAULTS = Object.freeze({
  maxNames: 100,
  maxEventTypes: 100,
  buckets: Object.freeze([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300]),
});

/** The sinks to pass as `telemetry` to policies, the idempotency engine and the outbox. */
export interface KeelMetrics {
  /** For every policy's `telemetry` option (one sink serves them all). */
  readonly policy: Telemetry;
  /** For the idempotency engine's `telemetry` option. */
  readonly idempotency: IdempotencyTelemetry;
  /** For the outbox's, the relay's and the consumers' `telemetry` option. */
  readonly outbox: OutboxTelemetry;
}

const OUTCOMES = ['success', 'failure'] as const;
const REJECTION_REASONS = [
  'deadline-exceeded',
  'breaker-open',
  'breaker-isolated',
  'bulkhead-full',
  'limit-exceeded',
  'rate-limited',
  'throttled',
  'other',
] as const;
type RejectionReason = (typeof REJECTION_REASONS)[number];
const BREAKER_STATES = ['closed', 'half-open', 'open', 'isolated'] as const;
const REQUEST_OUTCOMES = ['executed', 'resumed', 'replayed', 'conflict', 'mismatch', 'superseded'] as const;
const COMPLETION_OUTCOMES = ['completed', 'released', 'lease-lost'] as const;
const LAG_STAGES = ['published', 'consumed'] as const;
/**
 * Every policy kind (a `Record` so the compiler insists on all of them). The `policy` label is
 * bounded by their number rather than enumerated, so a policy name is zero-initialised only under
 * its own kind, not under all of them.
 */
const POLICY_KINDS: Readonly<Record<PolicyKind, true>> = {
  timeout: true,
  retry: true,
  breaker: true,
  bulkhead: true,
  limiter: true,
  'rate-limiter': true,
  throttle: true,
  hedge: true,
  fallback: true,
  failover: true,
  pipeline: true,
};
const POLICY_KIND_COUNT = Object.keys(POLICY_KINDS).length;

/** Maps a rejection's stable code to a short reason. */
function rejectionReason(code: string): RejectionReason {
  const reason = code.startsWith('KEEL_') ? code.slice(5).toLowerCase().replaceAll('_', '-') : 'other';
  return (REJECTION_REASONS as readonly string[]).includes(reason) ? (reason as RejectionReason) : 'other';
}

/**
 * Declares the standard metrics on `facade` and returns the sinks that feed them.
 *
 * @example
 * const metrics = prometheusMetrics(registry, promClient);
 * const keel = keelMetrics(metrics);
 * const breaker = circuitBreaker({ name: 'provider-a', telemetry: keel.policy });
 * const engine = idempotencyEngine({ store, telemetry: keel.idempotency });
 */
export function keelMetrics(facade: MetricsFacade, options: KeelMetricsOptions = {}): KeelMetrics {
  const maxNames = checkInteger('maxNames', options.maxNames ?? DEFAULTS.maxNames);
  const maxTypes = checkInteger('maxEventTypes', options.maxEventTypes ?? DEFAULTS.maxEventTypes);
  const buckets = options.buckets ?? DEFAULTS.buckets;
  const name = { maxValues: maxNames };
  const policy = { maxValues: POLICY_KIND_COUNT };
  const type = { maxValues: maxTypes };

  const calls = facade.counter({
    name: 'keel_policy_calls_total',
    help: 'Calls through a policy, by outcome.',
    labels: { policy, name, outcome: OUTCOMES },
  });
  const durations = facade.histogram({
    name: 'keel_policy_call_duration_seconds',
    help: 'Duration of calls through a policy, by outcome.',
    labels: { policy, name, outcome: OUTCOMES },
    buckets,
  });
  const rejections = facade.counter({
    name: 'keel_rejections_total',
    help: 'Calls refused locally by a policy without reaching the dependency, by reason.',
    labels: { policy, name, reason: REJECTION_REASONS },
  });
  const timeouts = facade.counter({
    name: 'keel_timeouts_total',
    help: 'Calls a timeout policy abandoned.',
    labels: { policy, name },
  });
  const retries = facade.counter({ name: 'keel_retries_total', help: 'Retries started.', labels: { name } });
  const budgetExhausted = facade.counter({
    name: 'keel_retry_budget_exhausted_total',
    help: 'Retries refused because the retry budget was spent.',
    labels: { name },
  });
  const breakerState = facade.gauge({
    name: 'keel_breaker_state',
    help: 'Circuit breaker state: 0 closed, 1 half-open, 2 open, 3 isolated.',
    labels: { name },
  });
  const transitions = facade.counter({
    name: 'keel_breaker_transitions_total',
    help: 'Circuit breaker state changes, by the state entered.',
    labels: { name, to: BREAKER_STATES },
  });
  const limit = facade.gauge({
    name: 'keel_limiter_limit',
    help: 'Current concurrency limit of an adaptive limiter.',
    labels: { name },
  });
  const inflight = facade.gauge({
    name: 'keel_limiter_inflight',
    help: 'Calls in flight when the limiter last changed its limit.',
    labels: { name },
  });
  const hedges = facade.counter({
    name: 'keel_hedges_total',
    help: 'Hedged attempts started.',
    labels: { name },
  });
  const failovers = facade.counter({
    name: 'keel_failovers_total',
    help: 'Calls moved to the next target after a failure.',
    labels: { name },
  });
  const fallbacks = facade.counter({
    name: 'keel_fallbacks_total',
    help: 'Calls answered by a fallback.',
    labels: { name },
  });

  const seenPolicies = new Set<string>();
  /** Zero-initialises a policy's counters the first time it reports anything. */
  const touchPolicy = (event: PolicyEvent): void => {
    const key = `${event.policy}\u0000${event.name}`;
    if (seenPolicies.has(key) || seenPolicies.size >= maxNames * POLICY_KIND_COUNT) return;
    seenPolicies.add(key);
    const labels = { policy: event.policy, name: event.name };
    calls.inc({ ...labels, outcome: 'success' }, 0);
    rejections.inc({ ...labels, reason: 'other' }, 0);
    if (event.policy === 'timeout') timeouts.inc(labels, 0);
    if (event.policy === 'retry') {
      retries.inc({ name: event.name }, 0);
      budgetExhausted.inc({ name: event.name }, 0);
    }
    if (event.policy === 'breaker') transitions.inc({ name: event.name, to: 'open' }, 0);
  };

  const policySink: Telemetry = {
    emit(event) {
      touchPolicy(event);
      switch (event.type) {
        case 'success':
        case 'failure': {
          const labels = { policy: event.policy, name: event.name, outcome: event.type };
          calls.inc(labels);
          durations.observe(labels, event.durationMs / 1000);
          return;
        }
        case 'rejection':
          rejections.inc({
            policy: event.policy,
            name: event.name,
            reason: rejectionReason(event.error.code),
          });
          return;
        case 'timeout':
          timeouts.inc({ policy: event.policy, name: event.name });
          return;
        case 'retry':
          retries.inc({ name: event.name });
          return;
        case 'budget-exhausted':
          budgetExhausted.inc({ name: event.name });
          return;
        case 'state-change': {
          const to = BREAKER_STATES.indexOf(event.to as (typeof BREAKER_STATES)[number]);
          if (to < 0) return;
          breakerState.set({ name: event.name }, to);
          transitions.inc({ name: event.name, to: BREAKER_STATES[to] as (typeof BREAKER_STATES)[number] });
          return;
        }
        case 'limit-change':
          limit.set({ name: event.name }, event.limit);
          inflight.set({ name: event.name }, event.inflight);
          return;
        case 'hedge':
          hedges.inc({ name: event.name });
          return;
        case 'failover':
          failovers.inc({ name: event.name });
          return;
        case 'fallback':
          fallbacks.inc({ name: event.name });
          return;
      }
    },
  };

  return {
    policy: policySink,
    idempotency: idempotencySink(facade, name),
    outbox: outboxSink(facade, type, name, buckets, maxNames * maxTypes),
  };
}

function idempotencySink(facade: MetricsFacade, name: { maxValues: number }): IdempotencyTelemetry {
  const requests = facade.counter({
    name: 'keel_idempotency_requests_total',
    help: 'Requests with an idempotency key, by what the engine did with them.',
    labels: { name, outcome: REQUEST_OUTCOMES },
  });
  const completions = facade.counter({
    name: 'keel_idempotency_completions_total',
    help: 'Idempotency records finished: stored for replay, released for a retry, or lost to a takeover.',
    labels: { name, outcome: COMPLETION_OUTCOMES },
  });
  const seen = new Set<string>();
  return {
    emit(event: IdempotencyTelemetryEvent) {
      if (!seen.has(event.name) && seen.size < name.maxValues) {
        seen.add(event.name);
        requests.inc({ name: event.name, outcome: 'executed' }, 0);
        completions.inc({ name: event.name, outcome: 'completed' }, 0);
      }
      const labels = { name: event.name };
      switch (event.type) {
        case 'executed':
          requests.inc({ ...labels, outcome: event.resumed ? 'resumed' : 'executed' });
          return;
        case 'replayed':
          requests.inc({ ...labels, outcome: 'replayed' });
          return;
        case 'in-flight-conflict':
          requests.inc({ ...labels, outcome: 'conflict' });
          return;
        case 'mismatch':
          requests.inc({ ...labels, outcome: 'mismatch' });
          return;
        case 'superseded':
          requests.inc({ ...labels, outcome: 'superseded' });
          return;
        case 'completed':
          completions.inc({ ...labels, outcome: 'completed' });
          return;
        case 'released':
          completions.inc({ ...labels, outcome: 'released' });
          return;
        case 'lease-lost':
          completions.inc({ ...labels, outcome: 'lease-lost' });
          return;
      }
    },
  };
}

function outboxSink(
  facade: MetricsFacade,
  type: { maxValues: number },
  consumer: { maxValues: number },
  buckets: readonly number[],
  maxPairs: number,
): OutboxTelemetry {
  const appended = facade.counter({
    name: 'keel_outbox_appended_total',
    help: 'Events appended to the outbox.',
    labels: { type },
  });
  const published = facade.counter({
    name: 'keel_outbox_published_total',
    help: 'Events confirmed by the broker.',
    labels: { type },
  });
  const publishFailures = facade.counter({
    name: 'keel_outbox_publish_failures_total',
    help: 'Failed attempts to publish an event (the relay retries them).',
    labels: { type },
  });
  const lag = facade.histogram({
    name: 'keel_outbox_lag_seconds',
    help: 'Time from append to publish, and from append to a consumer commit.',
    labels: { stage: LAG_STAGES },
    buckets,
  });
  const consumed = facade.counter({
    name: 'keel_consumer_consumed_total',
    help: 'Events a consumer handled and committed.',
    labels: { consumer, type },
  });
  const duplicates = facade.counter({
    name: 'keel_consumer_duplicates_total',
    help: 'Redelivered events the inbox skipped.',
    labels: { consumer, type },
  });
  const consumeFailures = facade.counter({
    name: 'keel_consumer_failures_total',
    help: 'Failed attempts to handle an event (it is redelivered until dead-lettered).',
    labels: { consumer, type },
  });
  const deadLetters = facade.counter({
    name: 'keel_outbox_dead_letters_total',
    help: 'Events parked as dead letters after their last failed attempt.',
    labels: { consumer, type },
  });

  const seenTypes = new Set<string>();
  const seenPairs = new Set<string>();
  /** Zero-initialises the counters of an event type and of a consumer the first time they appear. */
  const touch = (event: OutboxTelemetryEvent): void => {
    if (!seenTypes.has(event.eventType) && seenTypes.size < type.maxValues) {
      seenTypes.add(event.eventType);
      const labels = { type: event.eventType };
      appended.inc(labels, 0);
      published.inc(labels, 0);
      publishFailures.inc(labels, 0);
    }
    if (!('consumer' in event)) return;
    const key = `${event.consumer}\u0000${event.eventType}`;
    if (seenPairs.has(key) || seenPairs.size >= maxPairs) return;
    seenPairs.add(key);
    const labels = { consumer: event.consumer, type: event.eventType };
    consumed.inc(labels, 0);
    duplicates.inc(labels, 0);
    consumeFailures.inc(labels, 0);
    deadLetters.inc(labels, 0);
  };

  return {
    emit(event) {
      touch(event);
      switch (event.type) {
        case 'appended':
          appended.inc({ type: event.eventType });
          return;
        case 'published':
          published.inc({ type: event.eventType });
          lag.observe({ stage: 'published' }, Math.max(0, event.lagMs) / 1000);
          return;
        case 'publish-failed':
          publishFailures.inc({ type: event.eventType });
          return;
        case 'consumed':
          consumed.inc({ consumer: event.consumer, type: event.eventType });
          lag.observe({ stage: 'consumed' }, Math.max(0, event.lagMs) / 1000);
          return;
        case 'duplicate-skipped':
          duplicates.inc({ consumer: event.consumer, type: event.eventType });
          return;
        case 'consume-failed':
          consumeFailures.inc({ consumer: event.consumer, type: event.eventType });
          return;
        case 'dead-lettered':
          deadLetters.inc({ consumer: event.consumer, type: event.eventType });
          return;
      }
    },
  };
}

/** Readers of the outbox's state, called on every scrape or collection. */
export interface OutboxReaders {
  /** The relay's gauges (`relay.gauges()`, or a store query). */
  gauges?: () => OutboxGauges | Promise<OutboxGauges>;
  /** Dead letters waiting for a human or a replay. */
  deadLetters?: () => number | Promise<number>;
}

/**
 * Registers gauges read at scrape time: `keel_outbox_unpublished`,
 * `keel_outbox_oldest_unpublished_age_seconds` (from `gauges`) and `keel_outbox_dead_letters`
 * (from `deadLetters`). Call once per facade.
 *
 * @example
 * observeOutbox(metrics, { gauges: () => relay.gauges(), deadLetters: () => store.countDeadLetters() });
 */
export function observeOutbox(facade: MetricsFacade, readers: OutboxReaders): void {
  const { gauges, deadLetters } = readers;
  if (gauges !== undefined) {
    checkFunction('gauges', gauges);
    facade.gauge({
      name: 'keel_outbox_unpublished',
      help: 'Events appended and not yet confirmed by the broker.',
      collect: async (gauge) => gauge.set({}, (await gauges()).unpublished),
    });
    facade.gauge({
      name: 'keel_outbox_oldest_unpublished_age_seconds',
      help: 'Age of the oldest unpublished event; 0 when there is none.',
      collect: async (gauge) => gauge.set({}, (await gauges()).oldestUnpublishedAgeMs / 1000),
    });
  }
  if (deadLetters !== undefined) {
    checkFunction('deadLetters', deadLetters);
    facade.gauge({
      name: 'keel_outbox_dead_letters',
      help: 'Dead letters waiting to be replayed or discarded.',
      collect: async (gauge) => gauge.set({}, await deadLetters()),
    });
  }
}
