/**
 * How the consumer and the re-drive report what they did, shared so both speak the same telemetry
 * and a throwing sink can never turn a handled event into a failed one. Internal to `outbox/`.
 *
 * @module
 */
import type { OutboxEvent } from './event.ts';
import type { OutboxTelemetry, OutboxTelemetryEvent } from './telemetry.ts';

/** Emits `event`, swallowing whatever the sink throws. */
export function emitSafely(telemetry: OutboxTelemetry | undefined, event: OutboxTelemetryEvent): void {
  if (telemetry === undefined) return;
  try {
    telemetry.emit(event);
  } catch {
    // A broken metrics sink must not turn a handled event into a failed one.
  }
}

/** The ids of an event that every telemetry event carries. */
export function telemetryBase(event: OutboxEvent): {
  eventId: string;
  eventType: string;
  aggregateType: string;
  aggregateId: string;
} {
  return {
    eventId: event.id,
    eventType: event.type,
    aggregateType: event.aggregateType,
    aggregateId: event.aggregateId,
  };
}
