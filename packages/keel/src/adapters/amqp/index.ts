/**
 * RabbitMQ adapter for Keel's outbox. `amqpTransport({ connection })` publishes each event
 * persistent to a durable topic exchange, routed by its type, through a confirm channel, and
 * resolves only on the broker's ack. Each consumer group is a durable quorum queue with manual
 * acks; a retry goes through a per-group delay queue that dead-letters back, carrying the delivery
 * count, so `deliveryCount` stays exact and a crash mid-retry duplicates rather than loses. Keel
 * declares the channel calls it makes and never imports `amqplib`.
 *
 * @module
 */

export {
  type InvalidDelivery,
  type InvalidDeliveryHandler,
  InvalidEventBodyError,
} from '../../outbox/event-codec.ts';
export { PublishNotConfirmedError, TransportClosedError } from '../../outbox/transport-errors.ts';
export * from './amqp-transport.ts';
