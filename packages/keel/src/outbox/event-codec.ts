/**
 * How an event travels over a broker: the whole {@link OutboxEvent} as one JSON body, so a broker
 * transport needs no header factory of its driver and a consumer sees exactly what was appended.
 * Decoding checks the shape field by field, because anything can arrive on a subject or a queue.
 *
 * @module
 */
import { KeelError } from '../errors/keel-error.ts';
import type { OutboxEvent } from './event.ts';

/**
 * A message arrived whose body is not an encoded event (not JSON, or a field missing or of the
 * wrong type). Retrying cannot fix it, so transports settle it at once and report it.
 *
 * @example
 * natsTransport({ jetstream, manager, onInvalid: ({ error }) => log.error(error.message) });
 */
export class InvalidEventBodyError extends KeelError {
  /** The raw body, to keep for inspection. */
  readonly body: Uint8Array;
  constructor(reason: string, body: Uint8Array, options?: { cause?: unknown }) {
    super('KEEL_OUTBOX_INVALID_EVENT_BODY', `Message body is not an outbox event: ${reason}`, options);
    this.body = body;
  }
}

/** A message a broker transport could not decode, as handed to its `onInvalid` callback. */
export interface InvalidDelivery {
  /** The transport's name: `'nats'`, `'amqp'`. */
  readonly transport: string;
  /** The consumer group it was delivered to. */
  readonly group: string;
  /** Where it came from: the NATS subject, or the AMQP routing key. */
  readonly source: string;
  readonly error: InvalidEventBodyError;
}

/** Receives messages that could not be decoded. A throwing callback is ignored. */
export type InvalidDeliveryHandler = (invalid: InvalidDelivery) => void;

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

/**
 * The JSON body of `event`, with exactly the fields of {@link OutboxEvent}.
 *
 * @example
 * await jetstream.publish(subject, encodeEvent(event), { msgID: event.id });
 */
export function encodeEvent(event: OutboxEvent): Uint8Array {
  return encoder.encode(
    JSON.stringify({
      id: event.id,
      type: event.type,
      aggregateType: event.aggregateType,
      aggregateId: event.aggregateId,
      payload: event.payload,
      headers: event.headers,
      createdAt: event.createdAt,
    }),
  );
}

/**
 * The event in a body made by {@link encodeEvent}; throws {@link InvalidEventBodyError} otherwise.
 *
 * @example
 * const event = decodeEvent(message.data);
 */
export function decodeEvent(body: Uint8Array): OutboxEvent {
  let value: unknown;
  try {
    value = JSON.parse(decoder.decode(body));
  } catch (error) {
    throw new InvalidEventBodyError('not UTF-8 JSON', body, { cause: error });
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new InvalidEventBodyError('not a JSON object', body);
  }
  const fields = value as Record<string, unknown>;
  for (const name of ['id', 'type', 'aggregateType', 'aggregateId'] as const) {
    if (typeof fields[name] !== 'string' || fields[name] === '') {
      throw new InvalidEventBodyError(`'${name}' must be a non-empty string`, body);
    }
  }
  if (!Number.isFinite(fields.createdAt)) {
    throw new InvalidEventBodyError(`'createdAt' must be a number`, body);
  }
  if (!('payload' in fields)) throw new InvalidEventBodyError(`'payload' is missing`, body);
  const headers = fields.headers;
  if (
    typeof headers !== 'object' ||
    headers === null ||
    Array.isArray(headers) ||
    Object.values(headers).some((header) => typeof header !== 'string')
  ) {
    throw new InvalidEventBodyError(`'headers' must be an object of strings`, body);
  }
  return {
    id: fields.id as string,
    type: fields.type as string,
    aggregateType: fields.aggregateType as string,
    aggregateId: fields.aggregateId as string,
    payload: fields.payload,
    headers: headers as Record<string, string>,
    createdAt: fields.createdAt as number,
  };
}

/** Calls `onInvalid` if given, never letting it throw into the transport's delivery loop. */
export function reportInvalid(onInvalid: InvalidDeliveryHandler | undefined, invalid: InvalidDelivery): void {
  if (onInvalid === undefined) return;
  try {
    onInvalid(invalid);
  } catch {
    // The callback is the user's reporting hook; a failure there must not stop deliveries.
  }
}
