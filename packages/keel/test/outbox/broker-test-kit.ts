/**
 * Small pieces the broker transport tests share: events with unique ids and types, a recorder of
 * deliveries, and a wait that polls a condition instead of sleeping a guessed time.
 */
import { randomUUID } from 'node:crypto';
import type { Delivery, DeliveryHandler, OutboxEvent } from 'keel/outbox';

/** A suffix that keeps names of one test run apart from every other run on the same broker. */
export function uniqueSuffix(): string {
  return `${process.pid}_${randomUUID().slice(0, 8)}`;
}

export function makeEvent(type: string, aggregateId = 'a-1', sequence = 0): OutboxEvent {
  return {
    id: randomUUID(),
    type,
    aggregateType: 'payment',
    aggregateId,
    payload: { sequence, amount: { currency: 'EUR', cents: 1250 }, note: 'naïve ✓' },
    headers: { 'correlation-id': randomUUID(), 'idempotency-key': `key-${sequence}` },
    createdAt: 1_700_000_000_000 + sequence,
  };
}

/** Resolves once `check()` is true; fails naming `what` if it is not within `limitMs`. */
export async function waitFor(
  check: () => boolean | Promise<boolean>,
  what: string,
  limitMs = 8_000,
): Promise<void> {
  const until = Date.now() + limitMs;
  while (!(await check())) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

export interface Received {
  readonly event: OutboxEvent;
  readonly deliveryCount: number;
  readonly member: string;
}

/** Records every delivery, then lets `settle` decide (ack by default). */
export class Recorder {
  readonly received: Received[] = [];

  handler(member: string, settle: (delivery: Delivery) => Promise<void> = (d) => d.ack()): DeliveryHandler {
    return async (delivery) => {
      this.received.push({ event: delivery.event, deliveryCount: delivery.deliveryCount, member });
      await settle(delivery);
    };
  }

  ids(): string[] {
    return this.received.map((entry) => entry.event.id);
  }
}
