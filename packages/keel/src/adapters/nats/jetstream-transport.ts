/**
 * The outbox {@link Transport} over NATS JetStream. Events go to one stream, on the subject
 * `<subjectPrefix>.<event type>`, with the event id as JetStream's message id, so a re-publish
 * within the stream's duplicate window is stored once. Each consumer group is a durable pull
 * consumer with explicit acks: the stream keeps every event for every group, and members of a group
 * share its consumer. Keel declares the few calls it makes on the objects `jetstream(nc)` and
 * `jetstreamManager(nc)` return, and never imports the driver.
 *
 * @module
 */
import { InvalidOptionError, KeelError } from '../../errors/keel-error.ts';
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
import { TransportClosedError } from '../../outbox/transport-errors.ts';
import { checkFunction, checkInteger, checkNumber } from '../../policy/options.ts';

/** JetStream's answer to a publish. */
export interface NatsPubAck {
  readonly stream: string;
  readonly seq: number;
  /** True when the stream already held a message with this id (within its duplicate window). */
  readonly duplicate: boolean;
}

/** One message delivered by a pull consumer (a `JsMsg`). */
export interface NatsJsMsg {
  readonly subject: string;
  readonly data: Uint8Array;
  readonly info: { readonly deliveryCount: number };
  ack(): void;
  nak(millis?: number): void;
  term(): void;
}

/** The running pull of one consumer (`ConsumerMessages`). */
export interface NatsConsumerMessages extends AsyncIterable<NatsJsMsg> {
  close(): Promise<unknown>;
}

/**
 * The part of the JetStream client (`jetstream(nc)` from `@nats-io/jetstream`) the transport calls.
 *
 * @example
 * import { connect } from '@nats-io/transport-node';
 * import { jetstream } from '@nats-io/jetstream';
 * const client: NatsJetStreamClient = jetstream(await connect({ servers: process.env.NATS_URL }));
 */
export interface NatsJetStreamClient {
  publish(
    subject: string,
    payload: Uint8Array,
    options: { msgID: string; timeout: number },
  ): Promise<NatsPubAck>;
  readonly consumers: {
    get(
      stream: string,
      name: string,
    ): Promise<{ consume(options: { max_messages: number }): Promise<NatsConsumerMessages> }>;
  };
}

/** The configuration the transport gives a durable consumer. */
export interface NatsConsumerConfig {
  durable_name?: string;
  ack_policy?: 'explicit';
  deliver_policy?: 'all';
  ack_wait?: number;
  max_deliver?: number;
  max_ack_pending?: number;
  filter_subject?: string;
  filter_subjects?: string[];
}

/**
 * The part of the JetStream manager (`await jetstreamManager(nc)`) the transport calls: it creates
 * the stream when asked, and each group's durable consumer.
 *
 * @example
 * import { jetstreamManager } from '@nats-io/jetstream';
 * const manager: NatsJetStreamManager = await jetstreamManager(nc);
 */
export interface NatsJetStreamManager {
  readonly streams: {
    info(stream: string): Promise<unknown>;
    add(config: {
      name: string;
      subjects: string[];
      duplicate_window: number;
      max_age: number;
      storage: 'file';
      retention: 'limits';
    }): Promise<unknown>;
  };
  readonly consumers: {
    add(stream: string, config: NatsConsumerConfig): Promise<unknown>;
    update(stream: string, durable: string, config: NatsConsumerConfig): Promise<unknown>;
  };
}

/** Options of {@link natsTransport}. */
export interface NatsTransportOptions {
  /** The user's JetStream client, from `jetstream(nc)`. */
  jetstream: NatsJetStreamClient;
  /** The user's JetStream manager, from `await jetstreamManager(nc)`. */
  manager: NatsJetStreamManager;
  /**
   * The stream that holds the events.
   * @default 'KEEL_EVENTS'
   */
  stream?: string;
  /**
   * Events are published to `<subjectPrefix>.<event type>`.
   * @default 'keel.events'
   */
  subjectPrefix?: string;
  /**
   * Create the stream (on `<subjectPrefix>.>`) before the first publish or subscribe if it does not
   * exist. An existing stream is used as it is.
   * @default true
   */
  ensureStream?: boolean;
  /**
   * How long JetStream remembers event ids to drop re-publishes, for a stream it creates. Cover the
   * longest time the relay may take to re-publish an event whose confirmation was lost.
   * @default 120_000 (JetStream's own default)
   */
  duplicateWindowMs?: number;
  /**
   * How long a stream it creates keeps events; 0 keeps them until removed by hand. Every group must
   * have consumed an event before it ages out.
   * @default 0
   */
  maxAgeMs?: number;
  /**
   * How long to wait for the PubAck before rejecting the publish.
   * @default 5_000
   */
  publishTimeoutMs?: number;
  /**
   * How long a delivery may stay unsettled before JetStream gives it to another member (and counts
   * another delivery). Longer than the slowest handler.
   * @default 30_000
   */
  ackWaitMs?: number;
  /**
   * Receives each message whose body is not an event. Such a message is terminated (`term`): never
   * redelivered to the group, yet still in the stream for inspection.
   */
  onInvalid?: InvalidDeliveryHandler;
}

const DEFAULTS = Object.freeze({
  stream: 'KEEL_EVENTS',
  subjectPrefix: 'keel.events',
  ensureStream: true,
  duplicateWindowMs: 120_000,
  maxAgeMs: 0,
  publishTimeoutMs: 5_000,
  ackWaitMs: 30_000,
  prefetch: 64,
});

const NANOS_PER_MS = 1_000_000;
const STREAM_NOT_FOUND = 10059;
/** A name JetStream accepts for a stream or durable consumer. */
const NAME = /^[^\s.*>/\\]+$/;
/** One or more dot-separated subject tokens without wildcards or whitespace. */
const SUBJECT = /^[^\s.*>]+(\.[^\s.*>]+)*$/;

/**
 * An event whose type cannot be a NATS subject token sequence (it is empty, or holds whitespace, a
 * wildcard or an empty token). Publishing it again cannot succeed.
 *
 * @example
 * await transport.publish({ ...event, type: 'payment completed' }); // rejects with KEEL_OUTBOX_UNROUTABLE_EVENT
 */
export class UnroutableEventError extends KeelError {
  readonly eventType: string;
  constructor(eventType: string, reason: string) {
    super('KEEL_OUTBOX_UNROUTABLE_EVENT', `Event type '${eventType}' cannot be routed: ${reason}`);
    this.eventType = eventType;
  }
}

interface RunningSubscription {
  close(): Promise<void>;
}

/**
 * Publishes and consumes outbox events through NATS JetStream. Build it with {@link natsTransport}.
 *
 * @example
 * const transport = natsTransport({ jetstream: jetstream(nc), manager: await jetstreamManager(nc) });
 */
export class NatsJetStreamTransport implements Transport {
  readonly name = 'nats';
  readonly stream: string;
  readonly subjectPrefix: string;
  readonly #jetstream: NatsJetStreamClient;
  readonly #manager: NatsJetStreamManager;
  readonly #ensureStream: boolean;
  readonly #duplicateWindowMs: number;
  readonly #maxAgeMs: number;
  readonly #publishTimeoutMs: number;
  readonly #ackWaitMs: number;
  readonly #onInvalid: InvalidDeliveryHandler | undefined;
  readonly #subscriptions = new Set<RunningSubscription>();
  #streamReady: Promise<void> | undefined;
  #closed = false;

  constructor(options: NatsTransportOptions) {
    if (
      typeof options?.jetstream?.publish !== 'function' ||
      typeof options.jetstream.consumers?.get !== 'function'
    ) {
      throw new InvalidOptionError('jetstream', 'must be a JetStream client, from jetstream(nc)');
    }
    if (
      typeof options.manager?.streams?.add !== 'function' ||
      typeof options.manager.consumers?.add !== 'function'
    ) {
      throw new InvalidOptionError('manager', 'must be a JetStream manager, from await jetstreamManager(nc)');
    }
    const stream = options.stream ?? DEFAULTS.stream;
    if (typeof stream !== 'string' || !NAME.test(stream)) {
      throw new InvalidOptionError(
        'stream',
        `must be a stream name without spaces, '.', '*', '>' or slashes, got ${JSON.stringify(stream)}`,
      );
    }
    const subjectPrefix = options.subjectPrefix ?? DEFAULTS.subjectPrefix;
    if (typeof subjectPrefix !== 'string' || !SUBJECT.test(subjectPrefix)) {
      throw new InvalidOptionError(
        'subjectPrefix',
        `must be dot-separated subject tokens without wildcards, got ${JSON.stringify(subjectPrefix)}`,
      );
    }
    if (options.onInvalid !== undefined) checkFunction('onInvalid', options.onInvalid);
    this.stream = stream;
    this.subjectPrefix = subjectPrefix;
    this.#jetstream = options.jetstream;
    this.#manager = options.manager;
    this.#ensureStream = options.ensureStream ?? DEFAULTS.ensureStream;
    this.#duplicateWindowMs = checkInteger(
      'duplicateWindowMs',
      options.duplicateWindowMs ?? DEFAULTS.duplicateWindowMs,
    );
    this.#maxAgeMs = checkInteger('maxAgeMs', options.maxAgeMs ?? DEFAULTS.maxAgeMs, 0);
    if (this.#maxAgeMs !== 0 && this.#maxAgeMs < this.#duplicateWindowMs) {
      throw new InvalidOptionError(
        'maxAgeMs',
        `must be 0 or ≥ duplicateWindowMs (${this.#duplicateWindowMs}), got ${this.#maxAgeMs}`,
      );
    }
    this.#publishTimeoutMs = checkInteger(
      'publishTimeoutMs',
      options.publishTimeoutMs ?? DEFAULTS.publishTimeoutMs,
    );
    this.#ackWaitMs = checkInteger('ackWaitMs', options.ackWaitMs ?? DEFAULTS.ackWaitMs);
    this.#onInvalid = options.onInvalid;
  }

  /** The subject an event of `type` is published to. */
  subjectOf(type: string): string {
    return `${this.subjectPrefix}.${type}`;
  }

  async publish(event: OutboxEvent): Promise<void> {
    if (this.#closed) throw new TransportClosedError('nats');
    if (typeof event.type !== 'string' || !SUBJECT.test(event.type)) {
      throw new UnroutableEventError(
        String(event.type),
        'a NATS subject needs dot-separated tokens without spaces or wildcards',
      );
    }
    await this.#ready();
    // A duplicate ack means the stream already holds this event id: published, as far as the relay is concerned.
    await this.#jetstream.publish(this.subjectOf(event.type), encodeEvent(event), {
      msgID: event.id,
      timeout: this.#publishTimeoutMs,
    });
  }

  async subscribe(options: SubscribeOptions, handler: DeliveryHandler): Promise<Subscription> {
    if (this.#closed) throw new TransportClosedError('nats');
    const group = options?.group;
    if (typeof group !== 'string' || !NAME.test(group)) {
      throw new InvalidOptionError(
        'group',
        `must be a durable consumer name without spaces, '.', '*', '>' or slashes, got ${JSON.stringify(group)}`,
      );
    }
    const types = options.types;
    if (types !== undefined) {
      if (!Array.isArray(types) || types.length === 0) {
        throw new InvalidOptionError('types', 'must be a non-empty array of event types, or omitted for all');
      }
      for (const type of types) {
        if (typeof type !== 'string' || !SUBJECT.test(type)) {
          throw new InvalidOptionError(
            'types',
            `must be event types without spaces or wildcards, got ${JSON.stringify(type)}`,
          );
        }
      }
    }
    const prefetch = checkInteger('prefetch', options.prefetch ?? DEFAULTS.prefetch);
    checkFunction('handler', handler);
    await this.#ready();
    await this.#ensureConsumer(group, types, prefetch);
    const consumer = await this.#jetstream.consumers.get(this.stream, group);
    const messages = await consumer.consume({ max_messages: prefetch });
    const running = new PullLoop(messages, {
      group,
      types: types === undefined ? undefined : new Set(types),
      prefetch,
      handler,
      onInvalid: this.#onInvalid,
    });
    const entry: RunningSubscription = {
      close: async () => {
        this.#subscriptions.delete(entry);
        await running.close();
      },
    };
    this.#subscriptions.add(entry);
    return { close: () => entry.close() };
  }

  async close(): Promise<void> {
    this.#closed = true;
    await Promise.all([...this.#subscriptions].map((subscription) => subscription.close()));
  }

  /** Creates the stream once, when asked to; a failed attempt is tried again on the next call. */
  #ready(): Promise<void> {
    if (!this.#ensureStream) return Promise.resolve();
    if (this.#streamReady === undefined) {
      this.#streamReady = this.#createStreamIfMissing();
      this.#streamReady.catch(() => {
        this.#streamReady = undefined;
      });
    }
    return this.#streamReady;
  }

  async #createStreamIfMissing(): Promise<void> {
    try {
      await this.#manager.streams.info(this.stream);
      return;
    } catch (error) {
      if (apiErrorCode(error) !== STREAM_NOT_FOUND) throw error;
    }
    try {
      await this.#manager.streams.add({
        name: this.stream,
        subjects: [`${this.subjectPrefix}.>`],
        duplicate_window: this.#duplicateWindowMs * NANOS_PER_MS,
        max_age: this.#maxAgeMs * NANOS_PER_MS,
        storage: 'file',
        // Limits retention keeps each event until it ages out, so every group reads every event.
        retention: 'limits',
      });
    } catch (error) {
      // Another process may have created it between our two calls: it exists now or it never will.
      await this.#manager.streams.info(this.stream).catch(() => {
        throw error;
      });
    }
  }

  /** Creates the group's durable consumer, or brings an existing one to this configuration. */
  async #ensureConsumer(
    group: string,
    types: readonly string[] | undefined,
    prefetch: number,
  ): Promise<void> {
    const base: NatsConsumerConfig = {
      ack_wait: this.#ackWaitMs * NANOS_PER_MS,
      // The consumer parks events after its own attempts; the broker never gives up on one.
      max_deliver: -1,
      // JetStream counts unacknowledged deliveries per consumer, that is per group.
      max_ack_pending: prefetch,
    };
    const filters: NatsConsumerConfig[] =
      types === undefined
        ? [{ filter_subject: `${this.subjectPrefix}.>` }]
        : types.length === 1
          ? [{ filter_subject: this.subjectOf(types[0] as string) }]
          : // Several filter subjects need NATS 2.10; older servers get every event and the
            // subscription acknowledges the other types itself.
            [
              { filter_subjects: types.map((type) => this.subjectOf(type)) },
              { filter_subject: `${this.subjectPrefix}.>` },
            ];
    let lastError: unknown;
    for (const filter of filters) {
      const config: NatsConsumerConfig = { ...base, ...filter };
      try {
        await this.#manager.consumers.add(this.stream, {
          durable_name: group,
          ack_policy: 'explicit',
          deliver_policy: 'all',
          ...config,
        });
        return;
      } catch (error) {
        lastError = error;
      }
      try {
        await this.#manager.consumers.update(this.stream, group, config);
        return;
      } catch (error) {
        lastError = error;
      }
    }
    throw lastError;
  }
}

function apiErrorCode(error: unknown): number | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'number' ? code : undefined;
}

interface PullLoopOptions {
  readonly group: string;
  readonly types: ReadonlySet<string> | undefined;
  readonly prefetch: number;
  readonly handler: DeliveryHandler;
  readonly onInvalid: InvalidDeliveryHandler | undefined;
}

/** Feeds one subscription's messages to its handler, at most `prefetch` at a time. */
class PullLoop {
  readonly #messages: NatsConsumerMessages;
  readonly #options: PullLoopOptions;
  readonly #active = new Set<Promise<void>>();
  readonly #done: Promise<void>;
  #slotFreed: (() => void) | undefined;
  #closing = false;

  constructor(messages: NatsConsumerMessages, options: PullLoopOptions) {
    this.#messages = messages;
    this.#options = options;
    this.#done = this.#run();
  }

  async close(): Promise<void> {
    if (!this.#closing) {
      this.#closing = true;
      this.#slotFreed?.();
      await this.#messages.close();
    }
    await this.#done;
    await Promise.allSettled([...this.#active]);
  }

  async #run(): Promise<void> {
    try {
      for await (const message of this.#messages) {
        while (this.#active.size >= this.#options.prefetch && !this.#closing) {
          await new Promise<void>((resolve) => {
            this.#slotFreed = resolve;
          });
        }
        if (this.#closing) {
          // Pulled but never handed over: give it back now rather than after the ack wait.
          settleQuietly(() => message.nak());
          continue;
        }
        const handling = this.#handle(message);
        this.#active.add(handling);
        void handling.finally(() => {
          this.#active.delete(handling);
          this.#slotFreed?.();
        });
      }
    } catch {
      // The pull ended (connection closed, consumer deleted): unsettled messages are redelivered.
    }
  }

  async #handle(message: NatsJsMsg): Promise<void> {
    let event: OutboxEvent;
    try {
      event = decodeEvent(message.data);
    } catch (error) {
      const invalid = error as InvalidEventBodyError;
      // No reason string: servers before 2.11 do not read `+TERM <reason>` as a term.
      settleQuietly(() => message.term());
      reportInvalid(this.#options.onInvalid, {
        transport: 'nats',
        group: this.#options.group,
        source: message.subject,
        error: invalid,
      });
      return;
    }
    if (this.#options.types !== undefined && !this.#options.types.has(event.type)) {
      settleQuietly(() => message.ack());
      return;
    }
    let settled = false;
    const delivery: Delivery = {
      event,
      deliveryCount: message.info.deliveryCount,
      ack: async () => {
        if (settled) return;
        settled = true;
        message.ack();
      },
      retry: async (delayMs: number) => {
        checkNumber('delayMs', delayMs);
        if (settled) return;
        settled = true;
        message.nak(Math.round(delayMs));
      },
    };
    try {
      await this.#options.handler(delivery);
    } catch {
      // A throwing handler asks for a redelivery, as the contract says.
    }
    if (!settled) settleQuietly(() => delivery.retry(0));
  }
}

function settleQuietly(settle: () => unknown): void {
  try {
    const result = settle();
    if (result instanceof Promise) result.catch(() => undefined);
  } catch {
    // The connection is gone: JetStream redelivers the message after its ack wait.
  }
}

/**
 * A transport that publishes outbox events to NATS JetStream and delivers them to durable pull
 * consumers, one per consumer group.
 *
 * @example
 * import { connect } from '@nats-io/transport-node';
 * import { jetstream, jetstreamManager } from '@nats-io/jetstream';
 * const nc = await connect({ servers: process.env.NATS_URL });
 * const transport = natsTransport({ jetstream: jetstream(nc), manager: await jetstreamManager(nc) });
 * await transport.publish(event);
 */
export function natsTransport(options: NatsTransportOptions): NatsJetStreamTransport {
  return new NatsJetStreamTransport(options);
}
