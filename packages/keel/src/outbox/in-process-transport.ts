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
 * That is why `publish` confirms, by default, only once the event's effect is durable: a real broker
 * confirms after persisting, but this one's memory dies with the process, so an event confirmed on
 * arrival and marked published by the relay would be lost by a kill -9 before its consumers
 * committed it. With `confirm: 'settled'` the publish resolves once every consumer group has settled
 * the event (its handler committed the inbox or dead-letter row and acknowledged), and until then the
 * outbox row stays unpublished, so a crash leaves the event to the next relay.
 *
 * @module
 */
import { InvalidOptionError } from '../errors/keel-error.ts';
import { checkFraction, checkFunction, checkInteger, checkOneOf } from '../policy/options.ts';
import type { OutboxEvent } from './event.ts';
import { type DeliverySettler, InProcessDelivery } from './in-process-delivery.ts';
import type { DeliveryHandler, SubscribeOptions, Subscription, Transport } from './transport.ts';
import { PublishNotConfirmedError, TransportClosedError } from './transport-errors.ts';

/**
 * When an {@link InProcessTransport} confirms a publish:
 * - `'settled'`: once every consumer group that exists at publish time has settled the event — its
 *   handler acknowledged it after committing the inbox row, or parked it as a dead letter. A kill -9
 *   loses nothing: whatever was not settled is still unpublished in the outbox. A publish takes as
 *   long as the slowest group's handling (redeliveries included), so the relay's throughput is
 *   bounded by the consumers' — the relay publishes up to `concurrency` aggregates at once, so that
 *   is back-pressure rather than a queue.
 * - `'accepted'`: as soon as the event is in the transport's memory, like a broker's confirm but
 *   without its durability: events confirmed and not yet handled die with the process. For tests
 *   and for events whose loss is acceptable.
 */
export type InProcessConfirm = 'accepted' | 'settled';

/** Options of {@link inProcessTransport}. */
export interface InProcessTransportOptions {
  /**
   * The transport's name in telemetry.
   * @default 'in-process'
   */
  name?: string;
  /**
   * When `publish` resolves; see {@link InProcessConfirm}. With `'settled'` and no consumer group
   * subscribed yet, the publish waits for the first group to subscribe and settle the event.
   * @default 'settled'
   */
  confirm?: InProcessConfirm;
  /**
   * With `confirm: 'settled'`, how long a publish waits for the groups to settle the event before it
   * rejects with `KEEL_OUTBOX_PUBLISH_UNCONFIRMED` (a group without members, a consumer stuck or
   * retrying): the relay then leaves the event unpublished and tries again after its back-off. The
   * event stays queued for the groups meanwhile, and publishing it again waits on the same delivery
   * instead of queuing a copy. Keep it below the relay's `leaseMs`.
   * @default 10_000
   */
  confirmTimeoutMs?: number;
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
  /**
   * Publishes that failed (`beforePublish` threw, the transport was closed, or with `'settled'` the
   * groups did not settle the event in time).
   */
  readonly failedPublishes: number;
  /** Of `failedPublishes`, those that ran out of `confirmTimeoutMs`. */
  readonly confirmTimeouts: number;
  /** Publishes waiting for the groups to settle their event now. */
  readonly awaitingSettlement: number;
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
  /** Deliveries whose handler is still running. */
  readonly active: Set<MemberDelivery>;
  unsettled: number;
  closed: boolean;
}

type MemberDelivery = InProcessDelivery<Group, Member>;

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

/** An event published with `confirm: 'settled'` that some group has not settled yet. */
interface Unsettled {
  readonly event: OutboxEvent;
  /**
   * The groups that existed when it was first published and have not settled it; empty while no
   * group exists at all, until the first one subscribes.
   */
  readonly groups: Group[];
  /** Publishes of the event waiting for it (a republish joins the first rather than queuing a copy). */
  readonly waiters: Waiter[];
}

/** One publish call waiting for its event to be settled. */
interface Waiter {
  readonly unsettled: Unsettled;
  readonly resolve: () => void;
  readonly reject: (error: unknown) => void;
  /** `performance.now()` after which it rejects. */
  readonly deadline: number;
  done: boolean;
}

/** No member of a group accepts an event's type (see `#pickMember`). */
const NO_TAKER = Symbol('no member takes the type');

/** Dropped log slots beyond which the log array is compacted (when they are also its larger part). */
const LOG_COMPACT_AFTER = 1_024;

const CONFIRMS: readonly InProcessConfirm[] = ['accepted', 'settled'];

const DEFAULTS = Object.freeze({
  name: 'in-process',
  confirm: 'settled' as InProcessConfirm,
  confirmTimeoutMs: 10_000,
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
  readonly confirm: InProcessConfirm;
  readonly #confirmTimeoutMs: number;
  readonly #maxRetained: number;
  readonly #ackWaitMs: number;
  readonly #dropRate: number;
  readonly #random: () => number;
  #beforePublish: ((event: OutboxEvent) => void | Promise<void>) | undefined;
  /**
   * Retained events from `#log[#logHead]`, which is at absolute position `#logStart`. Trimming moves
   * the head instead of copying what is left, and the array is compacted only once the dropped
   * prefix outweighs the rest, so a publish costs O(1) however far behind a group is.
   */
  #log: Array<OutboxEvent | undefined> = [];
  #logHead = 0;
  #logStart = 0;
  readonly #groups = new Map<string, Group>();
  readonly #timers = new Set<ReturnType<typeof setTimeout>>();
  readonly #pumping = new Set<Group>();
  #closed = false;
  #stats = { published: 0, failedPublishes: 0, confirmTimeouts: 0, lost: 0, dropped: 0, deliveries: 0 };
  /** Events published with `'settled'` and not yet settled by every group, by id. */
  readonly #unsettled = new Map<string, Unsettled>();
  /** Unsettled events published while no group existed: the first group to subscribe owes them. */
  #orphans: Unsettled[] = [];
  /**
   * Every waiting publish in deadline order (one timeout for all, so deadlines only grow); settled
   * ones are skipped when reached. `#deadlines[#deadlineHead]` is the oldest not yet passed.
   */
  #deadlines: Waiter[] = [];
  #deadlineHead = 0;
  #deadlineTimer: ReturnType<typeof setTimeout> | undefined;
  #waiting = 0;
  /**
   * The deliveries not yet settled, in delivery order, which is also their deadline order: every
   * one waits the same `ackWaitMs`. One timer, armed for the oldest, serves them all, where a timer
   * per delivery would cost every delivery a timer's start and cancel.
   */
  readonly #awaitingAck = new Set<MemberDelivery>();
  #ackTimer: ReturnType<typeof setTimeout> | undefined;
  /**
   * Whether `#ackTimer` is unreferenced: with nothing awaiting acknowledgement it stays armed but
   * does not keep the process alive, and the next delivery references it again rather than clearing
   * it and starting another.
   */
  #ackTimerIdle = false;
  /** Settles this transport's deliveries (one object for all of them). */
  readonly #settler: DeliverySettler<Group, Member> = {
    settle: (delivery, delayMs) => this.#settleDelivery(delivery, delayMs),
  };

  constructor(options: InProcessTransportOptions = {}) {
    const name = options.name ?? DEFAULTS.name;
    if (typeof name !== 'string' || name === '') {
      throw new InvalidOptionError('name', `must be a non-empty string, got ${JSON.stringify(name)}`);
    }
    this.name = name;
    this.confirm = checkOneOf('confirm', options.confirm ?? DEFAULTS.confirm, CONFIRMS);
    this.#confirmTimeoutMs = checkInteger(
      'confirmTimeoutMs',
      options.confirmTimeoutMs ?? DEFAULTS.confirmTimeoutMs,
      1,
    );
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
    return { ...this.#stats, awaitingSettlement: this.#waiting };
  }

  /**
   * Appends the event to the log and schedules its deliveries. With `confirm: 'accepted'` it
   * resolves once the event is in the log; with `'settled'`, once every group settled it (an event
   * still unsettled from an earlier publish is not queued again: this publish waits on it). Rejects
   * when `beforePublish` throws, the transport is closed (before the settlement, too), or the
   * settlement takes longer than `confirmTimeoutMs`.
   */
  async publish(event: OutboxEvent): Promise<void> {
    try {
      if (this.#closed) throw new TransportClosedError(this.name);
      await this.#beforePublish?.(event);
      if (this.#closed) throw new TransportClosedError(this.name);
    } catch (error) {
      this.#stats.failedPublishes++;
      throw error;
    }
    if (this.#dropRate > 0 && this.#random() < this.#dropRate) {
      this.#stats.published++;
      this.#stats.lost++;
      return;
    }
    if (this.confirm === 'accepted') {
      this.#stats.published++;
      this.#append(event);
      return;
    }
    let unsettled = this.#unsettled.get(event.id);
    if (unsettled === undefined) {
      unsettled = { event, groups: [...this.#groups.values()], waiters: [] };
      this.#unsettled.set(event.id, unsettled);
      if (unsettled.groups.length === 0) this.#orphans.push(unsettled);
      this.#append(event);
    }
    return this.#waitFor(unsettled);
  }

  #append(event: OutboxEvent): void {
    this.#log.push(event);
    this.#trim();
    for (const group of this.#groups.values()) this.#schedule(group);
  }

  /** A publish's promise, settled by {@link #settled}, {@link #expire}, a drop or `close()`. */
  #waitFor(unsettled: Unsettled): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const waiter: Waiter = {
        unsettled,
        resolve,
        reject,
        deadline: performance.now() + this.#confirmTimeoutMs,
        done: false,
      };
      unsettled.waiters.push(waiter);
      this.#deadlines.push(waiter);
      this.#waiting++;
      if (this.#deadlineTimer === undefined) this.#armDeadline(this.#confirmTimeoutMs);
    });
  }

  #armDeadline(delayMs: number): void {
    this.#deadlineTimer = setTimeout(() => this.#expire(), Math.max(1, delayMs));
  }

  /** Rejects the publishes whose deadline passed, then waits for the next deadline. */
  #expire(): void {
    this.#deadlineTimer = undefined;
    const now = performance.now();
    while (this.#deadlineHead < this.#deadlines.length) {
      const waiter = this.#deadlines[this.#deadlineHead] as Waiter;
      if (!waiter.done && waiter.deadline > now) break;
      this.#deadlineHead++;
      if (waiter.done) continue;
      const { waiters, groups, event } = waiter.unsettled;
      waiters.splice(waiters.indexOf(waiter), 1);
      this.#stats.confirmTimeouts++;
      const owing =
        groups.length === 0
          ? 'no consumer group has subscribed'
          : `group ${groups.map((g) => `'${g.name}'`).join(', ')} did not settle it`;
      this.#finish(
        waiter,
        new PublishNotConfirmedError(event.id, `${owing} within ${this.#confirmTimeoutMs} ms`),
      );
    }
    if (this.#waiting === 0) return;
    // Drop the passed prefix now and then, so the queue stays as long as the waiting publishes.
    if (this.#deadlineHead > 1_024 && this.#deadlineHead * 2 > this.#deadlines.length) {
      this.#deadlines = this.#deadlines.slice(this.#deadlineHead);
      this.#deadlineHead = 0;
    }
    const next = this.#deadlines[this.#deadlineHead];
    if (next !== undefined) this.#armDeadline(next.deadline - now);
  }

  /** Resolves (`error` undefined) or rejects one waiting publish, and counts it. */
  #finish(waiter: Waiter, error?: unknown): void {
    waiter.done = true;
    this.#waiting--;
    if (error === undefined) {
      this.#stats.published++;
      waiter.resolve();
    } else {
      this.#stats.failedPublishes++;
      waiter.reject(error);
    }
    if (this.#waiting === 0) {
      // Nothing waits: no timer keeps the process alive, and the queue starts afresh.
      if (this.#deadlineTimer !== undefined) clearTimeout(this.#deadlineTimer);
      this.#deadlineTimer = undefined;
      this.#deadlines = [];
      this.#deadlineHead = 0;
    }
  }

  /** `group` settled `event` (acknowledged it, or has no member for its type). */
  #settled(group: Group, event: OutboxEvent): void {
    if (this.#unsettled.size === 0) return;
    const unsettled = this.#unsettled.get(event.id);
    if (unsettled === undefined) return;
    const index = unsettled.groups.indexOf(group);
    if (index < 0) return;
    unsettled.groups.splice(index, 1);
    if (unsettled.groups.length > 0) return;
    this.#unsettled.delete(event.id);
    for (const waiter of unsettled.waiters) this.#finish(waiter);
    unsettled.waiters.length = 0;
  }

  /** An unsettled event left the log before every group had it: no settlement will come. */
  #abandon(event: OutboxEvent): void {
    const unsettled = this.#unsettled.get(event.id);
    if (unsettled === undefined || unsettled.event !== event) return;
    this.#unsettled.delete(event.id);
    const error = new PublishNotConfirmedError(event.id, `dropped from the log beyond maxRetained`);
    for (const waiter of unsettled.waiters) this.#finish(waiter, error);
    unsettled.waiters.length = 0;
  }

  /**
   * Joins `options.group`; a group seen for the first time starts at the oldest retained event.
   * A member with `types` receives only those; an event no member of the group accepts is skipped
   * for that group.
   */
  async subscribe(options: SubscribeOptions, handler: DeliveryHandler): Promise<Subscription> {
    if (this.#closed) throw new TransportClosedError(this.name);
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
      // Events published while no group existed are settled by the first one.
      for (const orphan of this.#orphans) orphan.groups.push(group);
      this.#orphans = [];
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
        await Promise.allSettled(runningOf(member));
      },
    };
  }

  /**
   * Stops every timer and subscription; pending deliveries are dropped, and publishes waiting for
   * their settlement reject with `KEEL_OUTBOX_TRANSPORT_CLOSED`.
   */
  async close(): Promise<void> {
    this.#closed = true;
    for (const timer of this.#timers) clearTimeout(timer);
    this.#timers.clear();
    if (this.#ackTimer !== undefined) clearTimeout(this.#ackTimer);
    this.#ackTimer = undefined;
    this.#awaitingAck.clear();
    const closed = new TransportClosedError(this.name);
    for (const unsettled of this.#unsettled.values()) {
      for (const waiter of unsettled.waiters) this.#finish(waiter, closed);
    }
    this.#unsettled.clear();
    this.#orphans = [];
    const active: Promise<void>[] = [];
    for (const group of this.#groups.values()) {
      for (const member of group.members) {
        member.closed = true;
        active.push(...runningOf(member));
      }
      group.members.length = 0;
    }
    await Promise.allSettled(active);
  }

  /** Drops log entries every group has taken, and the oldest beyond `maxRetained`. */
  #trim(): void {
    const end = this.#logStart + this.#log.length - this.#logHead;
    let keepFrom = this.#groups.size === 0 ? this.#logStart : end;
    for (const group of this.#groups.values()) keepFrom = Math.min(keepFrom, group.cursor);
    if (end - keepFrom > this.#maxRetained) {
      const newStart = end - this.#maxRetained;
      this.#stats.dropped += newStart - keepFrom;
      if (this.#unsettled.size > 0) {
        for (let at = keepFrom; at < newStart; at++) this.#abandon(this.#eventAt(at) as OutboxEvent);
      }
      keepFrom = newStart;
      for (const group of this.#groups.values()) group.cursor = Math.max(group.cursor, newStart);
    }
    if (keepFrom > this.#logStart) {
      const head = this.#logHead + (keepFrom - this.#logStart);
      this.#logStart = keepFrom;
      if (head === this.#log.length) {
        // Every group has taken everything: the array starts afresh without a new allocation.
        this.#log.length = 0;
        this.#logHead = 0;
      } else if (head >= LOG_COMPACT_AFTER && head * 2 >= this.#log.length) {
        this.#log = this.#log.slice(head);
        this.#logHead = 0;
      } else {
        // Dropped events are released now, not at the next compaction.
        this.#log.fill(undefined, this.#logHead, head);
        this.#logHead = head;
      }
    }
  }

  /** The retained event at absolute position `at`, if any. */
  #eventAt(at: number): OutboxEvent | undefined {
    return at < this.#logStart ? undefined : this.#log[this.#logHead + (at - this.#logStart)];
  }

  /** Pumps `group` on a later turn: deliveries never run inside publish or subscribe. */
  #schedule(group: Group): void {
    if (this.#pumping.has(group) || this.#closed) return;
    if (this.#pumping.size === 0) setImmediate(this.#pumpScheduled);
    this.#pumping.add(group);
  }

  /**
   * One turn's pumps, for every group scheduled since the last: one immediate for all of them. A
   * group scheduled again while they run (a handler that acknowledged at once) waits for the next
   * turn, so deliveries never run on without one.
   */
  readonly #pumpScheduled = (): void => {
    const groups = [...this.#pumping];
    this.#pumping.clear();
    for (const group of groups) this.#pump(group);
  };

  #pump(group: Group): void {
    if (this.#closed) return;
    for (;;) {
      // Redeliveries first, then the log.
      const redelivery = group.ready[0];
      const event = redelivery === undefined ? this.#eventAt(group.cursor) : redelivery.event;
      if (event === undefined) break;
      const member = this.#pickMember(group, event.type);
      if (member === undefined) break; // every accepting member is at its prefetch
      if (member === NO_TAKER) {
        if (group.members.length === 0) break; // keep it for a member that joins later
        this.#take(group, redelivery); // no member of this group wants the type
        this.#settled(group, event);
        continue;
      }
      this.#take(group, redelivery);
      this.#deliver(group, member, event, redelivery === undefined ? 1 : redelivery.deliveryCount);
    }
    this.#trim();
  }

  #take(group: Group, redelivery: Redelivery | undefined): void {
    if (redelivery === undefined) group.cursor++;
    else group.ready.shift();
  }

  /**
   * The next member, round robin, that accepts `type` and is below its prefetch; `undefined` when
   * every member that accepts it is at its prefetch, {@link NO_TAKER} when none accepts it.
   */
  #pickMember(group: Group, type: string): Member | undefined | typeof NO_TAKER {
    const { members } = group;
    let accepting = false;
    for (let i = 0; i < members.length; i++) {
      const index = (group.nextMember + i) % members.length;
      const member = members[index] as Member;
      if (member.closed || (member.types !== undefined && !member.types.has(type))) continue;
      accepting = true;
      if (member.unsettled < member.prefetch) {
        group.nextMember = (index + 1) % members.length;
        return member;
      }
    }
    return accepting ? undefined : NO_TAKER;
  }

  #deliver(group: Group, member: Member, event: OutboxEvent, deliveryCount: number): void {
    this.#stats.deliveries++;
    member.unsettled++;
    const delivery = new InProcessDelivery(
      this.#settler,
      group,
      member,
      event,
      deliveryCount,
      performance.now() + this.#ackWaitMs,
    );
    this.#awaitingAck.add(delivery);
    if (this.#ackTimer === undefined) this.#armAckTimer(this.#ackWaitMs);
    else if (this.#ackTimerIdle) {
      this.#ackTimer.ref?.();
      this.#ackTimerIdle = false;
    }
    member.active.add(delivery);
    delivery.running = this.#run(member, delivery);
  }

  /** Runs the member's handler; one that throws has its delivery come back at once. */
  async #run(member: Member, delivery: MemberDelivery): Promise<void> {
    try {
      await member.handler(delivery);
    } catch {
      delivery.settle(0);
    } finally {
      member.active.delete(delivery);
    }
  }

  #settleDelivery(delivery: MemberDelivery, delayMs: number | undefined): void {
    this.#awaitingAck.delete(delivery);
    if (this.#awaitingAck.size === 0 && this.#ackTimer !== undefined && !this.#ackTimerIdle) {
      // Nothing left to come back: the timer no longer keeps the process alive.
      this.#ackTimer.unref?.();
      this.#ackTimerIdle = true;
    }
    const { group, member, event } = delivery;
    member.unsettled--;
    if (delayMs === undefined) this.#settled(group, event);
    else this.#redeliver(group, event, delivery.deliveryCount, delayMs);
    this.#schedule(group);
  }

  #armAckTimer(delayMs: number): void {
    this.#ackTimer = setTimeout(this.#expireAcks, Math.max(1, delayMs));
    this.#ackTimerIdle = false;
  }

  /** Delivers again what was not settled in time, oldest first, then waits for the next deadline. */
  readonly #expireAcks = (): void => {
    this.#ackTimer = undefined;
    const now = performance.now();
    for (const awaiting of this.#awaitingAck) {
      if (awaiting.deadline > now) {
        this.#armAckTimer(awaiting.deadline - now);
        return;
      }
      // Settling takes it off the set; iterating a Set while deleting what was visited is safe.
      awaiting.settle(0);
    }
  };

  #redeliver(group: Group, event: OutboxEvent, deliveryCount: number, delayMs: number): void {
    const again: Redelivery = { event, deliveryCount: deliveryCount + 1 };
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

/** The runs of the member's handlers still going, for a closing subscription to wait on. */
function runningOf(member: Member): Promise<void>[] {
  const running: Promise<void>[] = [];
  for (const delivery of member.active) if (delivery.running !== undefined) running.push(delivery.running);
  return running;
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
