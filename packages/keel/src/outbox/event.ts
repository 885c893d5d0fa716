/**
 * The shape of an event on its way from a transaction to its consumers. It follows Debezium's
 * outbox conventions — an aggregate type and id that name the entity the event is about, and which
 * order events per entity — so the rows look familiar to anyone who has run an outbox before.
 *
 * @module
 */

/** One event, as appended, relayed, delivered and replayed. Its `id` never changes on the way. */
export interface OutboxEvent<P = unknown> {
  /** Unique and time-ordered (UUIDv7): the inbox deduplicates by it, the broker's dedup window too. */
  readonly id: string;
  /** What happened, in the past tense: `'payment.completed'`. */
  readonly type: string;
  /** The kind of entity the event is about: `'payment'`. */
  readonly aggregateType: string;
  /** Which entity: events with the same aggregate type and id are published in order. */
  readonly aggregateId: string;
  /** JSON-serialisable data. */
  readonly payload: P;
  /** Correlation and request ids, entity ids, the idempotency key that caused the event. */
  readonly headers: Readonly<Record<string, string>>;
  /** Wall-clock epoch milliseconds of the append. */
  readonly createdAt: number;
}

/** What a producer hands to `append`; the outbox fills in the id (unless given) and the time. */
export interface NewOutboxEvent<P = unknown> {
  readonly type: string;
  readonly aggregateType: string;
  readonly aggregateId: string;
  readonly payload: P;
  readonly headers?: Readonly<Record<string, string>>;
  /** Only for re-creating a known event; appends normally let the outbox choose. */
  readonly id?: string;
}

/** The ordering key of an event: its aggregate type and id. */
export function orderingKey(event: Pick<OutboxEvent, 'aggregateType' | 'aggregateId'>): string {
  return `${event.aggregateType}:${event.aggregateId}`;
}
