/**
 * NATS JetStream adapter for Keel's outbox. `natsTransport({ jetstream, manager })` publishes each
 * event to `keel.events.<type>` in one stream with the event id as the message id, so JetStream's
 * duplicate window drops a re-publish, and resolves on the PubAck. Each consumer group is a durable
 * pull consumer with explicit acks; a retry is a delayed `nak`, and `deliveryCount` is JetStream's own
 * count of deliveries to the group. Keel declares the calls it makes on the objects `jetstream(nc)`
 * and `jetstreamManager(nc)` return, and never imports the driver.
 *
 * @module
 */

export {
  type InvalidDelivery,
  type InvalidDeliveryHandler,
  InvalidEventBodyError,
} from '../../outbox/event-codec.ts';
export { TransportClosedError } from '../../outbox/transport-errors.ts';
export * from './jetstream-transport.ts';
