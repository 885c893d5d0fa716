/**
 * What the idempotency engine reports. Like policies, the engine never imports metrics or loggers:
 * it emits these events, and `keel/observe` (or your own listener) turns them into metrics and logs
 * — replays that prove clients retry, conflicts that show double-submits, mismatches that reveal a
 * client reusing keys, and leases lost to a takeover.
 *
 * @module
 */

interface IdempotencyEventBase {
  /** The engine's name (usually the route or service it guards). */
  readonly name: string;
  /** The client's key as sent, so a log line can name it. Never a metric label. */
  readonly key: string;
}

/** Everything the idempotency engine reports. Switch on `type`. */
export type IdempotencyTelemetryEvent =
  /** A key seen for the first time (or taken over after its holder's lease ran out) runs the handler. */
  | (IdempotencyEventBase & { readonly type: 'executed'; readonly resumed: boolean })
  /** A finished key answered from the stored response, without running the handler. */
  | (IdempotencyEventBase & { readonly type: 'replayed'; readonly status: number })
  /** The same key arrived while its first request was still in flight (409). */
  | (IdempotencyEventBase & { readonly type: 'in-flight-conflict' })
  /** The same key arrived with another payload (422). */
  | (IdempotencyEventBase & { readonly type: 'mismatch' })
  /** Latest-wins: an older sequence arrived after a newer one (409). */
  | (IdempotencyEventBase & { readonly type: 'superseded' })
  /** The handler's outcome was stored for replay. */
  | (IdempotencyEventBase & { readonly type: 'completed'; readonly status: number })
  /** The key was released so a retry runs again (a transient failure). */
  | (IdempotencyEventBase & { readonly type: 'released' })
  /** A write found the lease taken over by another worker: this worker's result was discarded. */
  | (IdempotencyEventBase & { readonly type: 'lease-lost' });

/** The type names of {@link IdempotencyTelemetryEvent}. */
export type IdempotencyTelemetryType = IdempotencyTelemetryEvent['type'];

/** A sink for idempotency events. A throwing sink never breaks a request. */
export interface IdempotencyTelemetry {
  emit(event: IdempotencyTelemetryEvent): void;
}
