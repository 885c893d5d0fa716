/**
 * Errors of the consumer side of the outbox. Both say "retrying will not help", so the consumer
 * parks the event as a dead letter at once instead of spending its attempts.
 *
 * @module
 */
import { KeelError } from '../errors/keel-error.ts';

/**
 * An event arrived whose type no handler of the group knows. Parked at once (or skipped, with
 * `onUnknown: 'skip'`); nothing was written.
 *
 * @example
 * const [letter] = await consumer.deadLetters({ all: true });
 * letter?.lastError?.message; // 'UnknownEventTypeError: No handler for event type …'
 */
export class UnknownEventTypeError extends KeelError {
  readonly eventType: string;
  readonly group: string;
  constructor(eventType: string, group: string) {
    super(
      'KEEL_OUTBOX_UNKNOWN_EVENT_TYPE',
      `No handler for event type '${eventType}' in consumer group '${group}'`,
    );
    this.eventType = eventType;
    this.group = group;
  }
}

/**
 * Thrown by a handler to say the event can never succeed as it is (a payload that fails
 * validation, a reference to an entity that does not exist): the consumer parks it at once.
 *
 * @example
 * handlers: {
 *   'payment.completed': async (event, tx) => {
 *     if (!isPayment(event.payload)) throw new NonRetryableEventError('payload is not a payment');
 *     …
 *   },
 * }
 */
export class NonRetryableEventError extends KeelError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('KEEL_OUTBOX_NON_RETRYABLE', message, options);
  }
}
