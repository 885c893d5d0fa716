/**
 * The outbox {@link Transport} over RabbitMQ (AMQP 0-9-1). Events are published persistent to a
 * durable topic exchange, routed by their type, through a confirm channel: a publish resolves on
 * the broker's ack and rejects on a nack, a closed channel or a timeout. Each consumer group is a
 * durable quorum queue bound to its types, consumed with manual acks; members of a group share it.
 * Keel declares the channel calls it makes and never imports `amqplib`.
 *
 * Retries and delivery counts. A retry never requeues the message in place. It publishes a copy,
 * carrying `x-keel-delivery-count` (deliveries so far), to a per-group delay queue whose queue-wide
 * TTL is the delay rounded up to a 1-2-3-5-7 step, and which dead-letters expired messages back to
 * the group queue; only once the broker has confirmed the copy is the original acknowledged. A
 * process that dies between the two steps leaves both (the original comes back at once, the copy
 * after the delay) — a duplicate the inbox absorbs, never a loss. One TTL per delay queue means a
 * long delay never holds a short one behind it, and quorum queues with at-least-once
 * dead-lettering keep the copy safe on its way back. The broker's own redeliveries (a consumer that
 * died holding a message) are counted by the quorum queue in `x-delivery-count`, so
 * `deliveryCount = x-keel-delivery-count + x-delivery-count + 1` stays exact.
 *
 * @module
 */
import { InvalidOptionError } from '../../errors/keel-error.ts';
import type { OutboxEvent } from '../../outbox/event.ts';
import {
  decodeEvent,
  encodeEvent,
  type InvalidDeliveryHandler,
  type InvalidEventBodyError,
  reportInvalid,
} from '../../outbox/event-codec.ts';
import type {
  Delivery,
  DeliveryHandler,
  SubscribeOptions,
  Subscription,
  Transport,
} from '../../outbox/transport.ts';
import { PublishNotConfirmedError, TransportClosedError } from '../../outbox/transport-errors.ts';
import { checkFunction, checkInteger, checkNumber } from '../../policy/options.ts';

/** A message as `amqplib` delivers it. */
export interface AmqpMessage {
  readonly content: Buffer;
  readonly fields: { readonly routingKey: string; readonly deliveryTag: number };
  readonly properties: {
    readonly headers?: Readonly<Record<string, unknown>> | undefined;
    readonly messageId?: unknown;
    readonly timestamp?: unknown;
  };
}

/** Message properties the transport sets on a publish. */
export interface AmqpPublishOptions {
  persistent: boolean;
  messageId: string;
  contentType: string;
  timestamp: number;
  headers?: Record<string, unknown>;
}

/** A queue declaration the transport makes. */
export interface AmqpQueueOptions {
  durable: boolean;
  arguments: Record<string, unknown>;
}

/** The part of an `amqplib` confirm channel the transport calls. */
export interface AmqpConfirmChannel {
  assertExchange(exchange: string, type: 'topic', options: { durable: boolean }): Promise<unknown>;
  assertQueue(queue: string, options: AmqpQueueOptions): Promise<unknown>;
  bindQueue(queue: string, exchange: string, pattern: string): Promise<unknown>;
  publish(
    exchange: string,
    routingKey: string,
    content: Buffer,
    options: AmqpPublishOptions,
    callback: (error: unknown) => void,
  ): boolean;
  prefetch(count: number): Promise<unknown>;
  consume(
    queue: string,
    onMessage: (message: AmqpMessage | null) => void,
    options: { noAck: boolean },
  ): Promise<{ consumerTag: string }>;
  cancel(consumerTag: string): Promise<unknown>;
  ack(message: AmqpMessage): void;
  nack(message: AmqpMessage, allUpTo: boolean, requeue: boolean): void;
  close(): Promise<void>;
  on(event: 'close' | 'error', listener: (error?: unknown) => void): unknown;
}

/**
 * The part of an `amqplib` connection (promise API: `await connect(url)`, or a recovering one) the
 * transport calls. It opens its own channels and never closes the connection.
 *
 * @example
 * import { connect } from 'amqplib';
 * const connection: AmqpConnection = await connect(process.env.AMQP_URL);
 */
export interface AmqpConnection {
  createConfirmChannel(): Promise<AmqpConfirmChannel>;
}

/** Options of {@link amqpTransport}. */
export interface AmqpTransportOptions {
  /** The user's connection; the transport opens channels on it and leaves it open on `close()`. */
  connection: AmqpConnection;
  /**
   * The durable topic exchange events are published to, routed by event type. Group queues are
   * named `<exchange>.<group>`, their delay queues `<exchange>.<group>.retry.<ms>`, and messages no
   * consumer can read are parked in `<exchange>.<group>.parked`.
   * @default 'keel.events'
   */
  exchange?: string;
  /**
   * How long to wait for the broker's confirmation before rejecting the publish.
   * @default 10_000
   */
  confirmTimeoutMs?: number;
  /**
   * After a subscription's channel closes unexpectedly, the first wait before re-opening it; it
   * doubles up to 30 s while the broker stays away.
   * @default 250
   */
  reopenDelayMs?: number;
  /**
   * Receives each message whose body is not an event. Such a message is rejected into the group's
   * parked queue (`<exchange>.<group>.parked`), never redelivered and never lost.
   */
  onInvalid?: InvalidDeliveryHandler;
}

const DEFAULTS = Object.freeze({
  exchange: 'keel.events',
  confirmTimeoutMs: 10_000,
  reopenDelayMs: 250,
  prefetch: 64,
});

const MAX_REOPEN_DELAY_MS = 30_000;
/** Delays are rounded up to these steps (× a power of ten) so a group has few delay queues. */
const DELAY_STEPS = [1, 2, 3, 5, 7] as const;
/** The shortest and longest delay queue. */
const MIN_DELAY_MS = 10;
const MAX_DELAY_MS = 7 * 24 * 60 * 60 * 1000;
const KEEL_DELIVERY_COUNT = 'x-keel-delivery-count';
const BROKER_DELIVERY_COUNT = 'x-delivery-count';
/** A topic word sequence without wildcards, as a binding key that matches one event type. */
const EVENT_TYPE = /^[^\s.*#]+(\.[^\s.*#]+)*$/;

/** The delay queue a retry after `delayMs` goes to: its TTL, or 0 for "back to the group queue now". */
export function delayStepMs(delayMs: number): number {
  if (delayMs <= 0) return 0;
  const wanted = Math.min(Math.max(delayMs, MIN_DELAY_MS), MAX_DELAY_MS);
  for (let scale = MIN_DELAY_MS; ; scale *= 10) {
    for (const step of DELAY_STEPS) {
      if (step * scale >= wanted) return Math.min(step * scale, MAX_DELAY_MS);
    }
  }
}

/** The queues of one consumer group. */
function groupQueues(exchange: string, group: string) {
  const queue = `${exchange}.${group}`;
  return { queue, parked: `${queue}.parked`, retry: (stepMs: number) => `${queue}.retry.${stepMs}` };
}

// Quorum queues: replicated, they count the broker's redeliveries in `x-delivery-count`, and with
// at-least-once dead-lettering (which needs reject-publish overflow) a message moves between them
// only once the target has it.
const QUORUM = Object.freeze({
  'x-queue-type': 'quorum',
  'x-dead-letter-strategy': 'at-least-once',
  'x-overflow': 'reject-publish',
});

/**
 * Publishes and consumes outbox events through RabbitMQ. Build it with {@link amqpTransport}.
 *
 * @example
 * const transport = amqpTransport({ connection: await connect(process.env.AMQP_URL) });
 */
export class AmqpTransport implements Transport {
  readonly name = 'amqp';
  readonly exchange: string;
  readonly #connection: AmqpConnection;
  readonly #confirmTimeoutMs: number;
  readonly #reopenDelayMs: number;
  readonly #onInvalid: InvalidDeliveryHandler | undefined;
  readonly #subscriptions = new Set<GroupConsumer>();
  #publisher: Promise<AmqpConfirmChannel> | undefined;
  #closed = false;

  constructor(options: AmqpTransportOptions) {
    if (typeof options?.connection?.createConfirmChannel !== 'function') {
      throw new InvalidOptionError('connection', 'must be an amqplib connection (await connect(url))');
    }
    const exchange = options.exchange ?? DEFAULTS.exchange;
    if (typeof exchange !== 'string' || exchange === '' || exchange.length > 200) {
      throw new InvalidOptionError(
        'exchange',
        `must be a non-empty name of at most 200 characters, got ${JSON.stringify(exchange)}`,
      );
    }
    if (options.onInvalid !== undefined) checkFunction('onInvalid', options.onInvalid);
    this.exchange = exchange;
    this.#connection = options.connection;
    this.#confirmTimeoutMs = checkInteger(
      'confirmTimeoutMs',
      options.confirmTimeoutMs ?? DEFAULTS.confirmTimeoutMs,
    );
    this.#reopenDelayMs = checkInteger('reopenDelayMs', options.reopenDelayMs ?? DEFAULTS.reopenDelayMs);
    this.#onInvalid = options.onInvalid;
  }

  async publish(event: OutboxEvent): Promise<void> {
    if (this.#closed) throw new TransportClosedError('amqp');
    const channel = await withinTimeout(this.#publishChannel(), this.#confirmTimeoutMs, () => {
      // A recovering connection waits for the broker to come back before it opens a channel.
      return new PublishNotConfirmedError(event.id, `no channel within ${this.#confirmTimeoutMs} ms`);
    });
    await confirmedPublish(channel, this.exchange, event.type, Buffer.from(encodeEvent(event)), {
      eventId: event.id,
      createdAt: event.createdAt,
      headers: undefined,
      timeoutMs: this.#confirmTimeoutMs,
    });
  }

  async subscribe(options: SubscribeOptions, handler: DeliveryHandler): Promise<Subscription> {
    if (this.#closed) throw new TransportClosedError('amqp');
    const group = options?.group;
    if (typeof group !== 'string' || group === '' || group.length > 200) {
      throw new InvalidOptionError(
        'group',
        `must be a non-empty name of at most 200 characters, got ${JSON.stringify(group)}`,
      );
    }
    const types = options.types;
    if (types !== undefined) {
      if (!Array.isArray(types) || types.length === 0) {
        throw new InvalidOptionError('types', 'must be a non-empty array of event types, or omitted for all');
      }
      for (const type of types) {
        if (typeof type !== 'string' || !EVENT_TYPE.test(type)) {
          throw new InvalidOptionError(
            'types',
            `must be event types without spaces, '*' or '#', got ${JSON.stringify(type)}`,
          );
        }
      }
    }
    const prefetch = checkInteger('prefetch', options.prefetch ?? DEFAULTS.prefetch, 1, 65_535);
    checkFunction('handler', handler);
    const consumer = new GroupConsumer(this.#connection, {
      exchange: this.exchange,
      group,
      types: types === undefined ? undefined : new Set(types),
      prefetch,
      handler,
      onInvalid: this.#onInvalid,
      confirmTimeoutMs: this.#confirmTimeoutMs,
      reopenDelayMs: this.#reopenDelayMs,
    });
    await consumer.open();
    this.#subscriptions.add(consumer);
    return {
      close: async () => {
        this.#subscriptions.delete(consumer);
        await consumer.close();
      },
    };
  }

  async close(): Promise<void> {
    this.#closed = true;
    const subscriptions = [...this.#subscriptions];
    this.#subscriptions.clear();
    await Promise.all(subscriptions.map((subscription) => subscription.close()));
    const publisher = this.#publisher;
    this.#publisher = undefined;
    if (publisher !== undefined) {
      await publisher
        .then(
          (channel) => channel.close(),
          () => undefined,
        )
        .catch(() => undefined);
    }
  }

  /** The publishing channel, opened on first use and again after it closed (a channel error). */
  #publishChannel(): Promise<AmqpConfirmChannel> {
    if (this.#publisher === undefined) {
      const opening = (async () => {
        const channel = await this.#connection.createConfirmChannel();
        const forget = () => {
          if (this.#publisher === opening) this.#publisher = undefined;
        };
        channel.on('error', forget);
        channel.on('close', forget);
        await channel.assertExchange(this.exchange, 'topic', { durable: true });
        return channel;
      })();
      this.#publisher = opening;
      opening.catch(() => {
        if (this.#publisher === opening) this.#publisher = undefined;
      });
    }
    return this.#publisher;
  }
}

interface ConfirmedPublishOptions {
  readonly eventId: string;
  readonly createdAt: number;
  readonly headers: Record<string, unknown> | undefined;
  readonly timeoutMs: number;
}

/** Publishes persistent and resolves on the broker's ack; a nack, a close or silence rejects. */
function confirmedPublish(
  channel: AmqpConfirmChannel,
  exchange: string,
  routingKey: string,
  content: Buffer,
  options: ConfirmedPublishOptions,
): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      reject(new PublishNotConfirmedError(options.eventId, `no confirmation within ${options.timeoutMs} ms`));
    }, options.timeoutMs);
    try {
      channel.publish(
        exchange,
        routingKey,
        content,
        {
          persistent: true,
          messageId: options.eventId,
          contentType: 'application/json',
          timestamp: Math.floor(options.createdAt / 1000),
          ...(options.headers === undefined ? {} : { headers: options.headers }),
        },
        (error) => {
          clearTimeout(timer);
          if (error === null || error === undefined) resolve();
          else reject(new PublishNotConfirmedError(options.eventId, describe(error), { cause: error }));
        },
      );
    } catch (error) {
      // amqplib throws at once on a closed channel.
      clearTimeout(timer);
      reject(new PublishNotConfirmedError(options.eventId, describe(error), { cause: error }));
    }
  });
}

function withinTimeout<T>(work: Promise<T>, timeoutMs: number, onTimeout: () => Error): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(onTimeout()), timeoutMs);
  });
  return Promise.race([work, timeout]).finally(() => clearTimeout(timer));
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function headerCount(headers: Readonly<Record<string, unknown>> | undefined, name: string): number {
  const value = Number(headers?.[name] ?? 0);
  return Number.isSafeInteger(value) && value > 0 ? value : 0;
}

interface GroupConsumerOptions {
  readonly exchange: string;
  readonly group: string;
  readonly types: ReadonlySet<string> | undefined;
  readonly prefetch: number;
  readonly handler: DeliveryHandler;
  readonly onInvalid: InvalidDeliveryHandler | undefined;
  readonly confirmTimeoutMs: number;
  readonly reopenDelayMs: number;
}

/** One subscription: its own confirm channel, re-opened after an unexpected close. */
class GroupConsumer {
  readonly #connection: AmqpConnection;
  readonly #options: GroupConsumerOptions;
  readonly #queues: ReturnType<typeof groupQueues>;
  readonly #active = new Set<Promise<void>>();
  #channel: AmqpConfirmChannel | undefined;
  #consumerTag: string | undefined;
  /** Delay queues declared on the current channel. */
  #delayQueues = new Map<number, Promise<unknown>>();
  #reopenTimer: ReturnType<typeof setTimeout> | undefined;
  #reopenDelayMs: number;
  #closing = false;

  constructor(connection: AmqpConnection, options: GroupConsumerOptions) {
    this.#connection = connection;
    this.#options = options;
    this.#queues = groupQueues(options.exchange, options.group);
    this.#reopenDelayMs = options.reopenDelayMs;
  }

  /** Declares the exchange and the group's queues, and starts consuming. */
  async open(): Promise<void> {
    const channel = await this.#connection.createConfirmChannel();
    let consuming = false;
    channel.on('error', () => undefined);
    channel.on('close', () => {
      if (this.#channel === channel) this.#channel = undefined;
      if (consuming && !this.#closing) this.#scheduleReopen();
    });
    try {
      const { exchange, types, prefetch } = this.#options;
      const { queue, parked } = this.#queues;
      await channel.assertExchange(exchange, 'topic', { durable: true });
      await channel.assertQueue(parked, { durable: true, arguments: { 'x-queue-type': 'quorum' } });
      await channel.assertQueue(queue, {
        durable: true,
        arguments: { ...QUORUM, 'x-dead-letter-exchange': '', 'x-dead-letter-routing-key': parked },
      });
      // Bindings only add up: a type dropped from `types` stays bound, and its events are
      // acknowledged without reaching the handler.
      for (const pattern of types ?? ['#']) await channel.bindQueue(queue, exchange, pattern);
      await channel.prefetch(prefetch);
      this.#channel = channel;
      this.#delayQueues = new Map();
      const { consumerTag } = await channel.consume(queue, (message) => this.#receive(channel, message), {
        noAck: false,
      });
      this.#consumerTag = consumerTag;
      consuming = true;
      this.#reopenDelayMs = this.#options.reopenDelayMs;
    } catch (error) {
      await channel.close().catch(() => undefined);
      throw error;
    }
  }

  async close(): Promise<void> {
    this.#closing = true;
    clearTimeout(this.#reopenTimer);
    const channel = this.#channel;
    if (channel !== undefined && this.#consumerTag !== undefined) {
      await channel.cancel(this.#consumerTag).catch(() => undefined);
    }
    await Promise.allSettled([...this.#active]);
    this.#channel = undefined;
    await channel?.close().catch(() => undefined);
  }

  #scheduleReopen(): void {
    const delay = this.#reopenDelayMs;
    this.#reopenDelayMs = Math.min(delay * 2, MAX_REOPEN_DELAY_MS);
    this.#reopenTimer = setTimeout(() => {
      if (this.#closing) return;
      this.open().catch(() => {
        if (!this.#closing) this.#scheduleReopen();
      });
    }, delay);
  }

  #receive(channel: AmqpConfirmChannel, message: AmqpMessage | null): void {
    if (message === null) {
      // The broker cancelled the consumer (its queue was deleted): re-open, which re-declares it.
      if (!this.#closing) void channel.close().catch(() => undefined);
      return;
    }
    if (this.#closing) {
      settleQuietly(() => channel.nack(message, false, true));
      return;
    }
    const handling = this.#handle(channel, message);
    this.#active.add(handling);
    void handling.finally(() => this.#active.delete(handling));
  }

  async #handle(channel: AmqpConfirmChannel, message: AmqpMessage): Promise<void> {
    let event: OutboxEvent;
    try {
      event = decodeEvent(message.content);
    } catch (error) {
      // Rejected without requeue, the group queue dead-letters it into the parked queue.
      settleQuietly(() => channel.nack(message, false, false));
      reportInvalid(this.#options.onInvalid, {
        transport: 'amqp',
        group: this.#options.group,
        source: message.fields.routingKey,
        error: error as InvalidEventBodyError,
      });
      return;
    }
    if (this.#options.types !== undefined && !this.#options.types.has(event.type)) {
      settleQuietly(() => channel.ack(message));
      return;
    }
    const headers = message.properties.headers;
    const deliveryCount =
      headerCount(headers, KEEL_DELIVERY_COUNT) + headerCount(headers, BROKER_DELIVERY_COUNT) + 1;
    let settled = false;
    const delivery: Delivery = {
      event,
      deliveryCount,
      ack: async () => {
        if (settled) return;
        settled = true;
        channel.ack(message);
      },
      retry: async (delayMs: number) => {
        checkNumber('delayMs', delayMs);
        if (settled) return;
        settled = true;
        await this.#retry(channel, message, event, deliveryCount, delayMs);
      },
    };
    try {
      await this.#options.handler(delivery);
    } catch {
      // A throwing handler asks for a redelivery, as the contract says.
    }
    if (!settled) await delivery.retry(0).catch(() => undefined);
  }

  /** The copy first, confirmed; then the ack. A crash in between duplicates, never loses. */
  async #retry(
    channel: AmqpConfirmChannel,
    message: AmqpMessage,
    event: OutboxEvent,
    deliveryCount: number,
    delayMs: number,
  ): Promise<void> {
    const stepMs = delayStepMs(delayMs);
    const target = stepMs === 0 ? this.#queues.queue : this.#queues.retry(stepMs);
    if (stepMs !== 0) await this.#declareDelayQueue(channel, stepMs, target);
    await confirmedPublish(channel, '', target, message.content, {
      eventId: event.id,
      createdAt: event.createdAt,
      headers: { [KEEL_DELIVERY_COUNT]: deliveryCount },
      timeoutMs: this.#options.confirmTimeoutMs,
    });
    channel.ack(message);
  }

  #declareDelayQueue(channel: AmqpConfirmChannel, stepMs: number, name: string): Promise<unknown> {
    let declared = this.#delayQueues.get(stepMs);
    if (declared === undefined || this.#channel !== channel) {
      declared = channel.assertQueue(name, {
        durable: true,
        arguments: {
          ...QUORUM,
          'x-message-ttl': stepMs,
          'x-dead-letter-exchange': '',
          'x-dead-letter-routing-key': this.#queues.queue,
        },
      });
      if (this.#channel === channel) this.#delayQueues.set(stepMs, declared);
      declared.catch(() => this.#delayQueues.delete(stepMs));
    }
    return declared;
  }
}

function settleQuietly(settle: () => void): void {
  try {
    settle();
  } catch {
    // The channel is gone: the broker redelivers the message to another member.
  }
}

/**
 * A transport that publishes outbox events to a RabbitMQ topic exchange with publisher confirms
 * and delivers them from one durable queue per consumer group.
 *
 * @example
 * import { connect } from 'amqplib';
 * const connection = await connect(process.env.AMQP_URL);
 * const transport = amqpTransport({ connection });
 * await transport.subscribe({ group: 'invoices', types: ['payment.completed'] }, async (delivery) => {
 *   await handle(delivery.event);
 *   await delivery.ack();
 * });
 */
export function amqpTransport(options: AmqpTransportOptions): AmqpTransport {
  return new AmqpTransport(options);
}
