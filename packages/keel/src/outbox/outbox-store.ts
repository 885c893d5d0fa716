/**
 * The storage contract of the outbox. `append` writes events through the caller's open transaction
 * so they commit or roll back with the state change; the relay then claims, publishes and marks
 * them. A store implements these primitives on one database (`keel/sqlite`, `keel/postgres`); the
 * relay owns retries, back-off and telemetry.
 *
 * @module
 */
import type { TransactionHandle } from '../idempotency/store.ts';
import type { NewOutboxEvent, OutboxEvent } from './event.ts';
import type { OutboxGauges } from './telemetry.ts';

/** An event as the outbox keeps it. */
export interface StoredOutboxEvent extends OutboxEvent {
  /** When the broker confirmed it; `null` while unpublished. */
  readonly publishedAt: number | null;
  /** Failed publish attempts since it was appended (or requeued). */
  readonly attempts: number;
  /** The last publish error's message, if any. */
  readonly lastError: string | null;
}

/** An event as {@link OutboxStore.claim} hands it to the relay: with its failed attempts so far. */
export interface ClaimedOutboxEvent extends OutboxEvent {
  /** Failed publish attempts before this claim; the relay's back-off and telemetry count from it. */
  readonly attempts: number;
}

/**
 * A claimed event whose own properties are exactly an {@link OutboxEvent}'s: `attempts` is read
 * through the prototype, so spreading it, `JSON.stringify` and `structuredClone` see the event as
 * appended. The relay hands such an event to the transport as it is, where a claimed event of
 * another shape is first copied without the store's bookkeeping: one object an event instead of two.
 * The SQL stores build their claims with it; the arguments are positional so that building one
 * allocates nothing else.
 *
 * @example
 * const claimed = new ClaimedEvent(id, 'payment.completed', 'payment', 'p-1', { amount: 1500 }, {}, Date.now(), 0);
 * claimed.attempts; // 0
 * JSON.stringify(claimed); // the event's fields only
 */
export class ClaimedEvent<P = unknown> implements ClaimedOutboxEvent, OutboxEvent<P> {
  readonly id: string;
  readonly type: string;
  readonly aggregateType: string;
  readonly aggregateId: string;
  readonly payload: P;
  readonly headers: Readonly<Record<string, string>>;
  readonly createdAt: number;
  readonly #attempts: number;

  constructor(
    id: string,
    type: string,
    aggregateType: string,
    aggregateId: string,
    payload: P,
    headers: Readonly<Record<string, string>>,
    createdAt: number,
    attempts: number,
  ) {
    this.id = id;
    this.type = type;
    this.aggregateType = aggregateType;
    this.aggregateId = aggregateId;
    this.payload = payload;
    this.headers = headers;
    this.createdAt = createdAt;
    this.#attempts = attempts;
  }

  /** Failed publish attempts before this claim. */
  get attempts(): number {
    return this.#attempts;
  }
}

/** Selects stored events for inspection and replay. Criteria combine with AND. */
export interface OutboxFilter {
  readonly ids?: readonly string[];
  /** Appended at or after (epoch ms). */
  readonly since?: number;
  /** Appended before (epoch ms). */
  readonly until?: number;
  readonly type?: string;
  readonly aggregateType?: string;
  readonly aggregateId?: string;
  /** Only published (`true`) or only unpublished (`false`) events. */
  readonly published?: boolean;
  /** At most this many, oldest first. Default 1000. */
  readonly limit?: number;
}

/** The primitives an outbox store implements. */
export interface OutboxStore {
  /**
   * Validates and writes events inside `tx` (the caller's open transaction: a `pg` client inside
   * `BEGIN`, or the `node:sqlite` database inside `BEGIN`). Nothing is written when any event is
   * invalid. Returns the events as stored, with their ids and times.
   */
  append(tx: TransactionHandle, events: NewOutboxEvent | readonly NewOutboxEvent[]): Promise<OutboxEvent[]>;
  /**
   * Claims up to `limit` unpublished events for `relayId` for `leaseMs`, oldest first, skipping
   * events claimed by another live relay and never returning an event while an earlier event of
   * the same aggregate is unpublished and not in the same batch. Events whose retry time has not
   * come are skipped.
   */
  claim(relayId: string, limit: number, leaseMs: number): Promise<ClaimedOutboxEvent[]>;
  /** Marks events as published, if `relayId` still holds their claim. */
  markPublished(relayId: string, ids: readonly string[]): Promise<void>;
  /** Gives up the claim on a failed event, counting the attempt; it is claimable again at `retryAt`. */
  release(relayId: string, id: string, error: string, retryAt: number): Promise<void>;
  /**
   * Gives up the claim on events that were not attempted (the rest of an aggregate's chain after a
   * failure, a batch cut short by a stop), counting nothing: they are claimable again at once.
   */
  unclaim(relayId: string, ids: readonly string[]): Promise<void>;
  /**
   * The relay is stopping, with nothing in flight: gives up what the store holds for it beyond its
   * events' claims (SQLite's lease on the whole outbox), so the next relay need not wait for it to
   * run out. Stores whose claims are only per event leave it out.
   */
  relinquish?(relayId: string): Promise<void>;
  /** Events matching `filter`, oldest first. */
  find(filter: OutboxFilter): Promise<StoredOutboxEvent[]>;
  /** Marks published events unpublished again, keeping their ids, so the relay publishes them anew. */
  requeue(ids: readonly string[]): Promise<number>;
  /** Deletes up to `limit` events published before `before`; returns how many. */
  prunePublished(before: number, limit: number): Promise<number>;
  /** Unpublished count and the oldest unpublished event's age. */
  gauges(): Promise<OutboxGauges>;
  /**
   * Resolves when events may have been appended (a Postgres `NOTIFY`, a same-process append), or
   * when `signal` aborts. Stores without a wake-up resolve only on abort and the relay polls.
   */
  appended(signal: AbortSignal): Promise<void>;
}
