/**
 * The consuming end of the outbox: subscribes a consumer group to a transport and handles each
 * delivery exactly once through an inbox. A duplicate is acknowledged without running the handler; a
 * success commits the handler's writes with the inbox row and then acknowledges; a failure rolls
 * back, counts the attempt and asks the broker to redeliver after a back-off — so a poison event
 * waits in the broker, not in front of other entities' events — and after `maxAttempts` (or at once,
 * for an unknown type or a non-retryable error) parks the event as a dead letter to be re-driven.
 *
 * @module
 */
import { InvalidOptionError, isKeelError } from '../errors/keel-error.ts';
import type { WallClock } from '../idempotency/store.ts';
import { wallClock } from '../idempotency/store.ts';
import { contextFromHeaders, runInContext } from '../observe/context.ts';
import { type Backoff, exponentialBackoff } from '../policy/backoff.ts';
import { checkFunction, checkInteger, checkNumber, checkOneOf } from '../policy/options.ts';
import { UnknownEventTypeError } from './consumer-errors.ts';
import { emitSafely, telemetryBase } from './consumer-telemetry.ts';
import type { OutboxEvent } from './event.ts';
import type { DeadLetter, DeadLetterFilter, InboxStore } from './inbox-store.ts';
import { describeFailure, MAX_SELECTION_LIMIT } from './inbox-store.ts';
import { type RedriveFilter, type RedriveReport, redriveDeadLetters } from './replay.ts';
import type { OutboxTelemetry, OutboxTelemetryEvent } from './telemetry.ts';
import type { Delivery, Subscription, Transport } from './transport.ts';

/** What a handler learns about the delivery besides the event. */
export interface EventContext {
  /** The consumer group handling the event. */
  readonly group: string;
  /**
   * 1 on the first try: the broker's delivery count, or for a re-drive the dead letter's attempts
   * plus one.
   */
  readonly attempt: number;
  /** True when the event is re-driven from the dead letters rather than delivered by the broker. */
  readonly redrive: boolean;
}

/**
 * Handles one event inside the inbox transaction. `tx` is the driver's own transaction handle (the
 * `node:sqlite` database, a `pg` client): write through it so the effect commits with the inbox row.
 * Throwing rolls both back.
 */
export type EventHandler<Tx = unknown> = (
  event: OutboxEvent,
  tx: Tx,
  context: EventContext,
) => Promise<void> | void;

/** Handlers by event type. */
export type EventHandlers<Tx = unknown> = Readonly<Record<string, EventHandler<Tx>>>;

/** What to do with an event whose type has no handler. */
export type UnknownEventPolicy = 'dead-letter' | 'skip';

/** Options of {@link outboxConsumer}. */
export interface OutboxConsumerOptions<Tx = unknown> {
  /** Where events come from. */
  transport: Transport;
  /** Where processed ids, failed attempts and dead letters are kept; hands handlers their `tx`. */
  inbox: InboxStore<Tx>;
  /** The consumer group: members share the work, and the inbox dedups per group. Non-empty. */
  group: string;
  /** One handler per event type, at least one. */
  handlers: EventHandlers<Tx>;
  /**
   * Attempts before an event is parked as a dead letter, counting the first.
   * @default 5
   */
  maxAttempts?: number;
  /**
   * Delay before the broker redelivers a failed event, from the attempt that failed. The previous
   * delay passed to it is always 0: redeliveries may land on other members, which do not know it.
   * @default exponentialBackoff({ initialMs: 500, maxMs: 60_000, jitter: 'full' })
   */
  backoff?: Backoff;
  /**
   * Uniform source in [0, 1) for the back-off's jitter.
   * @default Math.random
   */
  random?: () => number;
  /** Unacknowledged deliveries at once, passed to the transport. @default the transport's (64) */
  prefetch?: number;
  /**
   * An event of a type without a handler: park it at once with an {@link UnknownEventTypeError}
   * (nothing is lost silently), or acknowledge and drop it (for a group reading a shared stream).
   * @default 'dead-letter'
   */
  onUnknown?: UnknownEventPolicy;
  /**
   * Errors no retry can fix, parked at once. A `NonRetryableEventError` always is; this adds more.
   * @default none besides `NonRetryableEventError`
   */
  nonRetryable?: (error: unknown, event: OutboxEvent) => boolean;
  /** Receives `consumed`, `duplicate-skipped`, `consume-failed` and `dead-lettered`. */
  telemetry?: OutboxTelemetry;
  /**
   * Wall time for lag and failure times.
   * @default wallClock
   */
  clock?: WallClock;
}

const DEFAULTS = Object.freeze({
  maxAttempts: 5,
  onUnknown: 'dead-letter' as UnknownEventPolicy,
  retentionMs: 7 * 24 * 60 * 60 * 1_000,
  pruneBatchSize: 1_000,
});

/** Options of {@link OutboxConsumer.prune}. */
export interface InboxPruneOptions {
  /**
   * Inbox rows older than this are deleted. Keep it longer than any redelivery or republish can
   * lag: a duplicate arriving after its row is gone is handled again.
   * @default 7 days
   */
  retentionMs?: number;
  /**
   * Rows deleted per statement, so a large backlog never holds long locks.
   * @default 1_000
   */
  batchSize?: number;
}

const UNKNOWN_POLICIES: readonly UnknownEventPolicy[] = ['dead-letter', 'skip'];

function isNonRetryableEventError(error: unknown): boolean {
  return isKeelError(error) && error.code === 'KEEL_OUTBOX_NON_RETRYABLE';
}

/**
 * A consumer group member. Build it with {@link outboxConsumer}, then `start()`.
 *
 * @example
 * const consumer = outboxConsumer({ transport, inbox, group: 'invoices', handlers });
 * await consumer.start();
 * process.on('SIGTERM', () => consumer.stop());
 */
export class OutboxConsumer<Tx = unknown> {
  readonly group: string;
  readonly transport: Transport;
  readonly inbox: InboxStore<Tx>;
  readonly #handlers: EventHandlers<Tx>;
  readonly #maxAttempts: number;
  readonly #backoff: Backoff;
  readonly #random: () => number;
  readonly #prefetch: number | undefined;
  readonly #onUnknown: UnknownEventPolicy;
  readonly #nonRetryable: ((error: unknown, event: OutboxEvent) => boolean) | undefined;
  readonly #telemetry: OutboxTelemetry | undefined;
  readonly #clock: WallClock;
  #subscription: Promise<Subscription> | undefined;
  readonly #inFlight = new Set<Promise<void>>();

  constructor(options: OutboxConsumerOptions<Tx>) {
    const transport = options?.transport;
    if (typeof transport?.subscribe !== 'function') {
      throw new InvalidOptionError('transport', 'must implement Transport (a subscribe method)');
    }
    if (typeof options.inbox?.process !== 'function') {
      throw new InvalidOptionError('inbox', 'must implement InboxStore (sqliteInbox, postgresInbox)');
    }
    if (typeof options.group !== 'string' || options.group === '') {
      throw new InvalidOptionError(
        'group',
        `must be a non-empty string, got ${JSON.stringify(options.group)}`,
      );
    }
    const handlers = options.handlers;
    if (typeof handlers !== 'object' || handlers === null || Object.keys(handlers).length === 0) {
      throw new InvalidOptionError('handlers', 'must map at least one event type to a handler');
    }
    for (const [type, handler] of Object.entries(handlers)) checkFunction(`handlers['${type}']`, handler);
    this.transport = transport;
    this.inbox = options.inbox;
    this.group = options.group;
    this.#handlers = Object.freeze({ ...handlers });
    this.#maxAttempts = checkInteger('maxAttempts', options.maxAttempts ?? DEFAULTS.maxAttempts, 1);
    this.#backoff = checkFunction(
      'backoff',
      options.backoff ?? exponentialBackoff({ initialMs: 500, maxMs: 60_000, jitter: 'full' }),
    );
    this.#random = checkFunction('random', options.random ?? Math.random);
    this.#prefetch =
      options.prefetch === undefined ? undefined : checkInteger('prefetch', options.prefetch, 1);
    this.#onUnknown = checkOneOf('onUnknown', options.onUnknown ?? DEFAULTS.onUnknown, UNKNOWN_POLICIES);
    this.#nonRetryable =
      options.nonRetryable === undefined ? undefined : checkFunction('nonRetryable', options.nonRetryable);
    if (options.telemetry !== undefined && typeof options.telemetry?.emit !== 'function') {
      throw new InvalidOptionError('telemetry', 'must have an emit(event) method');
    }
    this.#telemetry = options.telemetry;
    if (options.clock !== undefined && typeof options.clock?.now !== 'function') {
      throw new InvalidOptionError('clock', 'must have a now() method returning epoch milliseconds');
    }
    this.#clock = options.clock ?? wallClock;
  }

  /**
   * Subscribes the group to the transport. Calling it again while started does nothing.
   *
   * @example
   * await consumer.start();
   */
  async start(): Promise<void> {
    if (this.#subscription === undefined) {
      const options =
        this.#prefetch === undefined
          ? { group: this.group }
          : { group: this.group, prefetch: this.#prefetch };
      const subscribing = this.transport.subscribe(options, (delivery) => this.#track(this.handle(delivery)));
      this.#subscription = subscribing;
      // A failed subscribe leaves the consumer stopped, so start() can be tried again.
      subscribing.catch(() => {
        if (this.#subscription === subscribing) this.#subscription = undefined;
      });
    }
    await this.#subscription;
  }

  /**
   * Stops receiving and waits for the deliveries in progress to settle. The transport and the
   * user's clients stay open.
   *
   * @example
   * await consumer.stop();
   */
  async stop(): Promise<void> {
    const subscription = this.#subscription;
    this.#subscription = undefined;
    const active = await subscription?.catch(() => undefined);
    await active?.close();
    await Promise.allSettled([...this.#inFlight]);
  }

  #track(work: Promise<void>): Promise<void> {
    this.#inFlight.add(work);
    const done = () => this.#inFlight.delete(work);
    work.then(done, done);
    return work;
  }

  /**
   * Handles one delivery and settles it (ack or retry). The subscription calls it; it is public for
   * a transport of your own that drives the consumer directly.
   *
   * @example
   * await consumer.handle({ event, deliveryCount: 1, ack: async () => {}, retry: async () => {} });
   */
  handle(delivery: Delivery): Promise<void> {
    // The producer's request id, correlation id and entity ids came along in the headers: the
    // handler's logs and the events it appends carry them on, and name the aggregate too.
    const { event } = delivery;
    const values = contextFromHeaders(event.headers);
    const entity = `${event.aggregateType}Id`;
    const entities = /^[a-z][a-zA-Z0-9]{0,63}$/.test(entity)
      ? { ...values.entities, [entity]: event.aggregateId }
      : values.entities;
    return runInContext(entities === undefined ? values : { ...values, entities }, () =>
      this.#handle(delivery),
    );
  }

  async #handle(delivery: Delivery): Promise<void> {
    const { event } = delivery;
    const handler = Object.hasOwn(this.#handlers, event.type) ? this.#handlers[event.type] : undefined;
    if (handler === undefined) {
      if (this.#onUnknown === 'skip') {
        await delivery.ack();
        return;
      }
      await this.#fail(delivery, new UnknownEventTypeError(event.type, this.group), true);
      return;
    }
    const context: EventContext = {
      group: this.group,
      attempt: delivery.deliveryCount,
      redrive: false,
    };
    let duplicate: boolean;
    try {
      const result = await this.inbox.process(this.group, event.id, async (tx) => {
        await handler(event, tx, context);
      });
      duplicate = result.duplicate;
    } catch (error) {
      const parkNow = isNonRetryableEventError(error) || this.#isNonRetryable(error, event);
      await this.#fail(delivery, error, parkNow);
      return;
    }
    const committedAt = this.#clock.now();
    await delivery.ack();
    const base = telemetryBase(event);
    if (duplicate) {
      emitSafely(this.#telemetry, { type: 'duplicate-skipped', consumer: this.group, ...base });
    } else {
      const lagMs = Math.max(0, committedAt - event.createdAt);
      emitSafely(this.#telemetry, { type: 'consumed', consumer: this.group, lagMs, ...base });
    }
  }

  #isNonRetryable(error: unknown, event: OutboxEvent): boolean {
    if (this.#nonRetryable === undefined) return false;
    try {
      return this.#nonRetryable(error, event) === true;
    } catch {
      return false;
    }
  }

  /** Counts the failure, then either parks the event or asks the broker for a later redelivery. */
  async #fail(delivery: Delivery, error: unknown, parkNow: boolean): Promise<void> {
    const { event } = delivery;
    const base = telemetryBase(event);
    let attempt = delivery.deliveryCount;
    try {
      const failed = await this.inbox.recordFailure(
        this.group,
        event.id,
        describeFailure(error),
        this.#clock.now(),
      );
      // The broker's count covers attempts whose failure was never recorded (a crash mid-handler).
      attempt = Math.max(failed.attempts, delivery.deliveryCount);
    } catch {
      // The inbox's database is unreachable too: retry on the broker's count alone.
      this.#emit({ type: 'consume-failed', consumer: this.group, attempt, error, ...base });
      await delivery.retry(this.#delay(attempt));
      return;
    }
    this.#emit({ type: 'consume-failed', consumer: this.group, attempt, error, ...base });
    if (!parkNow && attempt < this.#maxAttempts) {
      await delivery.retry(this.#delay(attempt));
      return;
    }
    let outcome: 'dead-lettered' | 'duplicate';
    try {
      outcome = await this.inbox.deadLetter(this.group, event);
    } catch {
      await delivery.retry(this.#delay(attempt));
      return;
    }
    await delivery.ack();
    if (outcome === 'duplicate') {
      // Another member processed the event meanwhile: its effect stands, there is nothing to park.
      this.#emit({ type: 'duplicate-skipped', consumer: this.group, ...base });
    } else {
      this.#emit({ type: 'dead-lettered', consumer: this.group, attempts: attempt, error, ...base });
    }
  }

  #delay(attempt: number): number {
    const delay = this.#backoff(attempt, 0, this.#random);
    return Number.isFinite(delay) && delay > 0 ? delay : 0;
  }

  #emit(event: OutboxTelemetryEvent): void {
    emitSafely(this.#telemetry, event);
  }

  /**
   * Re-drives dead letters of this group through the handlers and the inbox, by their original
   * ids; see {@link redriveDeadLetters}.
   *
   * @example
   * const plan = await consumer.redrive({ type: 'payment.completed', dryRun: true });
   * const report = await consumer.redrive({ ids: plan.redriven.map((e) => e.id) });
   */
  redrive(filter: RedriveFilter): Promise<RedriveReport> {
    const options = {
      inbox: this.inbox,
      group: this.group,
      handlers: this.#handlers,
      clock: this.#clock,
      ...(this.#telemetry === undefined ? {} : { telemetry: this.#telemetry }),
    };
    return redriveDeadLetters(options, filter);
  }

  /**
   * Deletes inbox rows (of every group sharing the inbox's tables) processed longer ago than the
   * retention, and attempt counts of events not delivered again for as long, in batches until none
   * is left. Returns how many rows went. Run it from a timer or a cron job.
   *
   * @example
   * setInterval(() => void consumer.prune({ retentionMs: 14 * DAY_MS }), HOUR_MS).unref();
   */
  async prune(options: InboxPruneOptions = {}): Promise<number> {
    const retentionMs = checkNumber('retentionMs', options.retentionMs ?? DEFAULTS.retentionMs);
    const batchSize = checkInteger(
      'batchSize',
      options.batchSize ?? DEFAULTS.pruneBatchSize,
      1,
      MAX_SELECTION_LIMIT,
    );
    const before = this.#clock.now() - retentionMs;
    let total = 0;
    for (;;) {
      const deleted = await this.inbox.prune(before, batchSize);
      total += deleted;
      if (deleted === 0) return total;
    }
  }

  /**
   * This group's dead letters matching `filter`, oldest event first.
   *
   * @example
   * const parked = await consumer.deadLetters({ type: 'payment.completed' });
   */
  deadLetters(filter: DeadLetterFilter): Promise<DeadLetter[]> {
    return this.inbox.deadLetters(this.group, filter);
  }

  /**
   * How many dead letters this group has (a gauge for `/metrics` and invariants).
   *
   * @example
   * gauge.set(await consumer.countDeadLetters());
   */
  countDeadLetters(): Promise<number> {
    return this.inbox.countDeadLetters(this.group);
  }
}

/**
 * Builds an {@link OutboxConsumer}.
 *
 * @example
 * const consumer = outboxConsumer({
 *   transport,
 *   inbox: sqliteInbox({ db }),
 *   group: 'invoices',
 *   handlers: {
 *     'payment.completed': async (event, tx) => {
 *       tx.prepare('INSERT INTO invoices (payment_id) VALUES (?)').run(event.aggregateId);
 *     },
 *   },
 *   maxAttempts: 5,
 * });
 * await consumer.start();
 */
export function outboxConsumer<Tx>(options: OutboxConsumerOptions<Tx>): OutboxConsumer<Tx> {
  return new OutboxConsumer(options);
}
