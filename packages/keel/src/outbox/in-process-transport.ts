/**
 * A broker inside one process, for the embedded set-up (one service, node:sqlite) and for tests: it
 * behaves like the real ones under the `Transport` contract — every consumer group gets every event,
 * each event goes to one member of a group, deliveries are acknowledged or retried with a delay and
 * an accurate delivery count, at most `prefetch` are unacknowledged per member, and an unsettled
 * delivery comes back after `ackWaitMs`. Events are kept in a log from which a group that
 * subscribes later starts at the oldest retained event, like a stream. Deliveries always start on a
 * later turn of the event loop, never inside `publish`. Nothing survives the process: across
 * processes, use NATS or RabbitMQ.
 *
 * @module
 */
import { InvalidOptionError } from '../errors/keel-error.ts';
import { checkFraction, checkFunction, checkInteger } from '../policy/options.ts';
import type { OutboxEvent } from './event.ts';
import type { Delivery, DeliveryHandler, SubscribeOptions, Subscription, Transport } from './transport.ts';

/** Options of {@link inProcessTransport}. */
export interface InProcessTransportOptions {
  /**
   * The transport's name in telemetry.
   * @default 'in-process'
   */
  name?: string;
  /**
   * Events kept for groups that have not subscribed yet (or are behind); beyond it the oldest are
   * dropped and counted in `stats().dropped`.
   * @default 100_000
   */
  maxRetained?: number;
  /**
   * An unsettled delivery is delivered again after this long (its first handler is not stopped).
   * @default 30_000
   */
  ackWaitMs?: number;
  /**
   * Fault injection: runs before each publish; a throw (or rejection) fails the publish, as a broker
   * that is down would. Swap it at run time with `setBeforePublish`.
   */
  beforePublish?: (event: OutboxEvent) => void | Promise<void>;
  /**
   * Fault injection: the share of publishes that resolve as confirmed but deliver nothing (a lost
   * message). Counted in `stats().lost`.
   * @default 0
   */
  dropRate?: number;
  /**
   * Uniform source in [0, 1) for `dropRate`.
   * @default Math.random
   */
  random?: () => number;
}

/** Counters of an {@link InProcessTransport}. */
export interface InProcessTransportStats {
  /** Publishes confirmed (including dropped ones). */
  readonly published: number;
  /** Publishes that failed (`beforePublish` threw, or the transport was closed). */
  readonly failedPublishes: number;
  /** Confirmed publishes dropped by `dropRate`. */
  readonly lost: number;
  /** Events dropped from the log by `maxRetained` before every group had them. */
  readonly dropped: number;
  /** Deliveries made, redeliveries included. */
  readonly deliveries: number;
}

interface Member {
  readonly handler: DeliveryHandler;
  readonly prefetch: number;
  readonly types: ReadonlySet<string> | undefined;
  readonly active: Set<Promise<void>>;
  unsettled: number;
  closed: boolean;
}

interface Redelivery {
  readonly event: OutboxEvent;
  readonly deliveryCount: number;
}

interface Group {
  readonly name: string;
  readonly members: Member[];
  /** Absolute position in the log of the next event this group has not taken yet. */
  cursor: number;
  readonly ready: Redelivery[];
  nextMember: number;
}

const DEFAULTS = Object.freeze({
  name: 'in-process',
  maxRetained: 100_000,
  ackWaitMs: 30_000,
  prefetch: 64,
  dropRate: 0,
});

/**
 * An in-process broker. Build it with {@link inProcessTransport}.
 *
 * @example
 * const transport = inProcessTransport();
 * const relay = outboxRelay({ store: sqliteOutbox({ db }), transport });
 * const consumer = outboxConsumer({ transport, inbox, group: 'invoices', handlers });
 */
export class InProcessTransport implements Transport {
  readonly name: string;
  readonly #maxRetained: number;
  readonly #ackWaitMs: number;
  readonly #dropRate: number;
  readonly #random: () => number;
  #beforePublish: ((event: OutboxEvent) => void | Promise<void>) | undefined;
  /** Retained events; `#log[0]` is at absolute position `#logStart`. */
  #log: OutboxEvent[] = [];
  #logStart = 0;
  readonly #groups = new Map<string, Group>();
  readonly #timers = new Set<ReturnType<typeof setTimeout>>();
  readonly #pumping = new Set<Group>();
  #closed = false;
  #stats = { published: 0, failedPublishes: 0, lost: 0, dropped: 0, deliveries: 0 };

  constructor(options: InProcessTransportOptions = {}) {
    const name = options.name ?? DEFAULTS.name;
    if (typeof name !== 'string' || name === '') {
      throw new InvalidOptionError('name', `must be a non-empty string, got ${JSON.stringify(name)}`);
    }
    this.name = name;
    this.#maxRetained = checkInteger('maxRetained', options.maxRetained ?? DEFAULTS.maxRetained, 1);
    this.#ackWaitMs = checkInteger('ackWaitMs', options.ackWaitMs ?? DEFAULTS.ackWaitMs, 1);
    this.#dropRate = checkFraction('dropRate', options.dropRate ?? DEFAULTS.dropRate);
    this.#random = checkFunction('random', options.random ?? Math.random);
    this.#beforePublish =
      options.beforePublish === undefined ? undefined : checkFunction('beforePublish', options.beforePublish);
  }

  /**
   * Replaces the fault hook (or removes it with `undefined`): a switch for "the broker is down".
   *
   * @example
   * transport.setBeforePublish(() => { throw new Error('broker down') });
   * transport.setBeforePublish(undefined); // back up
   */
  setBeforePublish(hook: ((event: OutboxEvent) => void | Promise<void>) | undefined): void {
    this.#beforePublish = hook === undefined ? undefined : checkFunction('beforePublish', hook);
  }

  /** Counters since the transport was built. */
  stats(): InProcessTransportStats {
    return { ...this.#stats };
  }

  /**
   * Appends the event to the log and schedules its deliveries; resolves once it is in the log.
   * Rejects when `beforePublish` throws or the transport is closed.
   */
  async publish(event: OutboxEvent): Promise<void> {
    try {
      if (this.#closed) throw new Error(`transport '${this.name}' is closed`);
      await this.#beforePublish?.(event);
      if (this.#closed) throw new Error(`transport '${this.name}' is closed`);
    } catch (error) {
      this.#stats.failedPublishes++;
      throw error;
    }
    this.#stats.published++;
    if (this.#dropRate > 0 && this.#random() < this.#dropRate) {
      this.#stats.lost++;
      return;
    }
    this.#log.push(event);
    this.#trim();
    for (const group of this.#groups.values()) this.#schedule(group);
  }

  /**
   * Joins `options.group`; a group seen for the first time starts at the oldest retained event.
   * A member with `types` receives only those; an event no member of the group accepts is skipped
   * for that group.
   */
  async subscribe(options: SubscribeOptions, handler: DeliveryHandler): Promise<Subscription> {
    if (this.#closed) throw new Error(`transport '${this.name}' is closed`);
    if (typeof options?.group !== 'string' || options.group === '') {
      throw new InvalidOptionError(
        'group',
        `must be a non-empty string, got ${JSON.stringify(options?.group)}`,
      );
    }
    checkFunction('handler', handler);
    const prefetch = checkInteger('prefetch', options.prefetch ?? DEFAULTS.prefetch, 1);
    let group = this.#groups.get(options.group);
    if (group === undefined) {
      group = { name: options.group, members: [], cursor: this.#logStart, ready: [], nextMember: 0 };
      this.#groups.set(options.group, group);
    }
    const member: Member = {
      handler,
      prefetch,
      types: options.types === undefined ? undefined : new Set(options.types),
      active: new Set(),
      unsettled: 0,
      closed: false,
    };
    group.members.push(member);
    this.#schedule(group);
    const joined = group;
    return {
      close: async () => {
        if (member.closed) return;
        member.closed = true;
        const index = joined.members.indexOf(member);
        if (index >= 0) joined.members.splice(index, 1);
        await Promise.allSettled([...member.active]);
      },
    };
  }

  /** Stops every timer and subscription; pending deliveries are dropped. */
  async close(): Promise<void> {
    this.#closed = true;
    for (const timer of this.#timers) clearTimeout(timer);
    this.#timers.clear();
    const active: Promise<void>[] = [];
    for (const group of this.#groups.values()) {
      for (const member of group.members) {
        member.closed = true;
        active.push(...member.active);
      }
      group.members.length = 0;
    }
    await Promise.allSettled(active);
  }

  /** Drops log entries every group has taken, and the oldest beyond `maxRetained`. */
  #trim(): void {
    const end = this.#logStart + this.#log.length;
    let keepFrom = this.#groups.size === 0 ? this.#logStart : end;
    for (const group of this.#groups.values()) keepFrom = Math.min(keepFrom, group.cursor);
    if (end - keepFrom > this.#maxRetained) {
      const newStart = end - this.#maxRetained;
      this.#stats.dropped += newStart - keepFrom;
      keepFrom = newStart;
      for (const group of this.#groups.values()) group.cursor = Math.max(group.cursor, newStart);
    }
    if (keepFrom > this.#logStart) {
      this.#log = this.#log.slice(keepFrom - this.#logStart);
      this.#logStart = keepFrom;
    }
  }

  /** Pumps `group` on a later turn: deliveries never run inside publish or subscribe. */
  #schedule(group: Group): void {
    if (this.#pumping.has(group) || this.#closed) return;
    this.#pumping.add(group);
    setImmediate(() => {
      this.#pumping.delete(group);
      this.#pump(group);
    });
  }

  #pump(group: Group): void {
    if (this.#closed) return;
    for (;;) {
      const next = this.#peek(group);
      if (next === undefined) break;
      const accepting = group.members.filter(
        (member) => !member.closed && (member.types === undefined || member.types.has(next.event.type)),
      );
      if (accepting.length === 0) {
        if (group.members.length === 0) break; // keep it for a member that joins later
        this.#take(group, next); // no member of this group wants the type
        continue;
      }
      const member = this.#pickMember(group, accepting);
      if (member === undefined) break; // every accepting member is at its prefetch
      this.#take(group, next);
      this.#deliver(group, member, next);
    }
    this.#trim();
  }

  #peek(group: Group): (Redelivery & { fromLog: boolean }) | undefined {
    const redelivery = group.ready[0];
    if (redelivery !== undefined) return { ...redelivery, fromLog: false };
    const event = this.#log[group.cursor - this.#logStart];
    return event === undefined ? undefined : { event, deliveryCount: 1, fromLog: true };
  }

  #take(group: Group, next: { fromLog: boolean }): void {
    if (next.fromLog) group.cursor++;
    else group.ready.shift();
  }

  #pickMember(group: Group, accepting: readonly Member[]): Member | undefined {
    for (let i = 0; i < accepting.length; i++) {
      const member = accepting[(group.nextMember + i) % accepting.length] as Member;
      if (member.unsettled < member.prefetch) {
        group.nextMember = (group.nextMember + i + 1) % accepting.length;
        return member;
      }
    }
    return undefined;
  }

  #deliver(group: Group, member: Member, next: Redelivery): void {
    this.#stats.deliveries++;
    member.unsettled++;
    let settled = false;
    const settle = (delayMs: number | undefined) => {
      if (settled) return;
      settled = true;
      clearTimeout(ackWait);
      this.#timers.delete(ackWait);
      member.unsettled--;
      if (delayMs !== undefined) this.#redeliver(group, next, delayMs);
      this.#schedule(group);
    };
    const ackWait = setTimeout(() => settle(0), this.#ackWaitMs);
    this.#timers.add(ackWait);
    const delivery: Delivery = {
      event: next.event,
      deliveryCount: next.deliveryCount,
      ack: async () => settle(undefined),
      retry: async (delayMs) => settle(Number.isFinite(delayMs) && delayMs > 0 ? delayMs : 0),
    };
    const run = (async () => {
      try {
        await member.handler(delivery);
      } catch {
        settle(0);
      }
    })();
    member.active.add(run);
    void run.finally(() => member.active.delete(run));
  }

  #redeliver(group: Group, previous: Redelivery, delayMs: number): void {
    const again = { event: previous.event, deliveryCount: previous.deliveryCount + 1 };
    if (delayMs === 0) {
      group.ready.push(again);
      return;
    }
    const timer = setTimeout(() => {
      this.#timers.delete(timer);
      group.ready.push(again);
      this.#schedule(group);
    }, delayMs);
    this.#timers.add(timer);
  }
}

/**
 * Builds an {@link InProcessTransport}.
 *
 * @example
 * const transport = inProcessTransport();
 * await transport.subscribe({ group: 'invoices' }, async (delivery) => {
 *   await handle(delivery.event);
 *   await delivery.ack();
 * });
 * await transport.publish(event);
 */
export function inProcessTransport(options: InProcessTransportOptions = {}): InProcessTransport {
  return new InProcessTransport(options);
}
