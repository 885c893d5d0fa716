/**
 * What the outbox tells the outside world. Like policies, the outbox never imports metrics or
 * loggers: it emits these events, and `keel/observe` (or your own listener) turns them into
 * metrics, logs and invariants.
 *
 * @module
 */

interface OutboxEventBase {
  /** The event's id, type and ordering key, so a log line can name the entity. */
  readonly eventId: string;
  readonly eventType: string;
  readonly aggregateType: string;
  readonly aggregateId: string;
}

/** Everything the outbox, its relay and its consumers report. Switch on `type`. */
export type OutboxTelemetryEvent =
  | (OutboxEventBase & { readonly type: 'appended' })
  | (OutboxEventBase & {
      readonly type: 'published';
      readonly transport: string;
      /** From append to the broker's confirmation. */
      readonly lagMs: number;
    })
  | (OutboxEventBase & {
      readonly type: 'publish-failed';
      readonly transport: string;
      readonly attempt: number;
      readonly error: unknown;
    })
  | (OutboxEventBase & {
      readonly type: 'consumed';
      readonly consumer: string;
      /** From append to the consumer's commit. */
      readonly lagMs: number;
    })
  | (OutboxEventBase & { readonly type: 'duplicate-skipped'; readonly consumer: string })
  | (OutboxEventBase & {
      readonly type: 'consume-failed';
      readonly consumer: string;
      readonly attempt: number;
      readonly error: unknown;
    })
  | (OutboxEventBase & {
      readonly type: 'dead-lettered';
      readonly consumer: string;
      readonly attempts: number;
      readonly error: unknown;
    });

/** The type names of {@link OutboxTelemetryEvent}. */
export type OutboxTelemetryType = OutboxTelemetryEvent['type'];

/** A sink for outbox events (a metrics binder, a logger). A throwing sink never breaks the outbox. */
export interface OutboxTelemetry {
  emit(event: OutboxTelemetryEvent): void;
}

/** Gauges a relay or consumer can be asked for at any time (an invariant, a `/metrics` scrape). */
export interface OutboxGauges {
  /** Events appended and not yet confirmed by the broker. */
  readonly unpublished: number;
  /** Age of the oldest unpublished event, 0 when there is none. */
  readonly oldestUnpublishedAgeMs: number;
}
