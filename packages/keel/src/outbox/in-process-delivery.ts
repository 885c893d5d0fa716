/**
 * One delivery of the in-process transport: the `Delivery` a handler receives, and the transport's
 * record of it until it is settled — by the handler's `ack` or `retry`, by a handler that threw, or
 * by the acknowledgement deadline. One object per delivery, its methods on the prototype: a delivery
 * built from closures cost four functions and three more objects for every event.
 *
 * @module
 */
import type { OutboxEvent } from './event.ts';
import type { Delivery } from './transport.ts';

/** What settles a delivery: the transport that made it. */
export interface DeliverySettler<Group, Member> {
  /** `delayMs` undefined: acknowledged; a number: deliver it again after that many ms. */
  settle(delivery: InProcessDelivery<Group, Member>, delayMs: number | undefined): void;
}

/** What `ack` and `retry` return: the transport settles at once, so one settled promise serves all. */
const SETTLED: Promise<void> = Promise.resolve();

/**
 * @example
 * const delivery = new InProcessDelivery(settler, group, member, event, 1, performance.now() + 30_000);
 * await handler(delivery); // the handler calls delivery.ack()
 */
export class InProcessDelivery<Group, Member> implements Delivery {
  readonly event: OutboxEvent;
  readonly deliveryCount: number;
  /** The group and member it went to. */
  readonly group: Group;
  readonly member: Member;
  /** `performance.now()` after which, unsettled, it is delivered again. */
  readonly deadline: number;
  /** The handler's run, for a closing subscription to wait on. */
  running: Promise<void> | undefined;
  #settled = false;
  readonly #settler: DeliverySettler<Group, Member>;

  constructor(
    settler: DeliverySettler<Group, Member>,
    group: Group,
    member: Member,
    event: OutboxEvent,
    deliveryCount: number,
    deadline: number,
  ) {
    this.#settler = settler;
    this.group = group;
    this.member = member;
    this.event = event;
    this.deliveryCount = deliveryCount;
    this.deadline = deadline;
  }

  ack(): Promise<void> {
    this.settle(undefined);
    return SETTLED;
  }

  retry(delayMs: number): Promise<void> {
    this.settle(Number.isFinite(delayMs) && delayMs > 0 ? delayMs : 0);
    return SETTLED;
  }

  /** Settles it once; later calls (a second `ack`, the deadline after an `ack`) do nothing. */
  settle(delayMs: number | undefined): void {
    if (this.#settled) return;
    this.#settled = true;
    this.#settler.settle(this, delayMs);
  }
}
