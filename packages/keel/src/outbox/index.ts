/**
 * Reliable events: append an event in the same transaction as the state change, relay it to a
 * broker at least once and in order per entity, consume it exactly once through an inbox, park
 * poison events as dead letters, and replay by the original ids. Stores live in `keel/sqlite` and
 * `keel/postgres`, transports in `keel/nats` and `keel/amqp`; the in-process transport is here.
 *
 * @module
 */

export * from './consumer.ts';
export * from './consumer-errors.ts';
export * from './errors.ts';
export * from './event.ts';
export * from './in-process-transport.ts';
export * from './inbox-store.ts';
export * from './new-event.ts';
export * from './outbox-store.ts';
export * from './relay.ts';
export * from './replay.ts';
export * from './telemetry.ts';
export * from './transport.ts';
export * from './uuidv7.ts';
