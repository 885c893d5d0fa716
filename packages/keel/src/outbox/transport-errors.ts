/**
 * Errors that broker transports share, so a relay or consumer can match them by code whichever
 * broker is behind the transport.
 *
 * @module
 */
import { KeelError } from '../errors/keel-error.ts';

/**
 * Thrown by `publish` or `subscribe` after the transport was closed.
 *
 * @example
 * await transport.close();
 * await transport.publish(event); // rejects with KEEL_OUTBOX_TRANSPORT_CLOSED
 */
export class TransportClosedError extends KeelError {
  readonly transport: string;
  constructor(transport: string) {
    super('KEEL_OUTBOX_TRANSPORT_CLOSED', `The ${transport} transport is closed`);
    this.transport = transport;
  }
}

/**
 * The broker did not confirm a publish: it refused it (a nack), the channel closed first, or no
 * confirmation came in time. The event may or may not be stored; the relay publishes it again.
 *
 * @example
 * await transport.publish(event).catch((error) => {
 *   if (isKeelError(error) && error.code === 'KEEL_OUTBOX_PUBLISH_UNCONFIRMED') …
 * });
 */
export class PublishNotConfirmedError extends KeelError {
  readonly eventId: string;
  constructor(eventId: string, reason: string, options?: { cause?: unknown }) {
    super(
      'KEEL_OUTBOX_PUBLISH_UNCONFIRMED',
      `Event ${eventId} was not confirmed by the broker: ${reason}`,
      options,
    );
    this.eventId = eventId;
  }
}
