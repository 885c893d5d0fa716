/**
 * The contract between the outbox and a message broker. A transport takes the user's own client
 * (a NATS connection, an AMQP channel) and does two things: publish one event and resolve only
 * once the broker has confirmed it, and deliver events to a named consumer group with explicit
 * acknowledgement. Retries, ordering and dead letters are the relay's and the consumer's job, so
 * every transport behaves the same under failure.
 *
 * @module
 */
import type { OutboxEvent } from './event.ts';

/** Publishing and subscribing, over one broker. */
export interface Transport {
  /** A short name for telemetry and errors: `'in-process'`, `'nats'`, `'amqp'`. */
  readonly name: string;
  /**
   * Publishes one event. Resolves once the broker has confirmed it (a JetStream ack, a RabbitMQ
   * publisher confirm); rejects when it did not, in which case the event may or may not have been
   * published — the relay publishes it again and the consumer's inbox absorbs the duplicate.
   * Concurrent calls are allowed; the relay never has two events of one aggregate in flight.
   */
  publish(event: OutboxEvent): Promise<void>;
  /** Delivers events to `handler`, load-balanced across every subscription of the same group. */
  subscribe(options: SubscribeOptions, handler: DeliveryHandler): Promise<Subscription>;
  /** Stops everything the transport itself started; the user's client stays open. */
  close(): Promise<void>;
}

/** Which events a subscription receives. */
export interface SubscribeOptions {
  /** The consumer group (durable consumer, queue): members share the work, each event goes to one. */
  readonly group: string;
  /** Event types to receive; all when omitted. */
  readonly types?: readonly string[];
  /** How many deliveries may be unacknowledged at once. Default 64. */
  readonly prefetch?: number;
}

/** One delivery of one event. Exactly one of `ack` or `retry` settles it. */
export interface Delivery {
  readonly event: OutboxEvent;
  /** How many times the broker has delivered this event to the group, counting this one (≥ 1). */
  readonly deliveryCount: number;
  /** The event was handled (or deliberately skipped): the broker forgets it. */
  ack(): Promise<void>;
  /** Deliver the event again after `delayMs` (the broker's own redelivery). */
  retry(delayMs: number): Promise<void>;
}

/** Handles one delivery; it settles the delivery itself. A throw counts as `retry(0)`. */
export type DeliveryHandler = (delivery: Delivery) => Promise<void>;

/** A running subscription. */
export interface Subscription {
  /** Stops receiving; deliveries in progress finish first. */
  close(): Promise<void>;
}
