/**
 * @module
 * The lab's switch for silent event faults, around whichever transport the service runs on
 * (in-process, NATS JetStream, RabbitMQ), so every broker shows the same fault without a change to
 * Keel's transports. Two faults, each on a share of the events of the chosen types:
 *
 * - **drop**: the publish resolves as confirmed and nothing is sent — a message the broker lost.
 *   The outbox marks it published; only an invariant can tell it never arrived.
 * - **redeliver**: the consumer gets the event, acknowledges it, and gets it again — a broker
 *   redelivery after a lost acknowledgement. It is played on the consuming side because a broker
 *   that deduplicates by message id (JetStream does) would swallow a second publish.
 *
 * Draws come from a seeded source, so a lab run with the same seed drops the same events.
 */
import { checkFraction, InvalidOptionError } from 'keel';
import type { Delivery, OutboxEvent, Transport } from 'keel/outbox';
import { seededRandom } from '../seeded-random.ts';

/** The silent faults in force, as `POST /lab/faults` sets them. */
export interface EventFaults {
  /** Share of publishes confirmed and never sent, from 0 to 1. */
  readonly dropShare: number;
  /** Share of deliveries handed to the consumer a second time after it acknowledged, from 0 to 1. */
  readonly redeliverShare: number;
  /** Event types the faults apply to; every type when empty. */
  readonly types: readonly string[];
}

/** What the faults did so far. */
export interface EventFaultCounts {
  /** Publishes confirmed and not sent. */
  readonly dropped: number;
  /** Deliveries handed over a second time. */
  readonly redelivered: number;
}

/** A transport with the lab's fault switch. */
export interface LabTransport extends Transport {
  /** The faults in force now. */
  readonly faults: EventFaults;
  /** Replaces the faults (`NO_EVENT_FAULTS` lifts them); `seed` restarts the draws. */
  setFaults(faults: EventFaults, seed?: number): void;
  counts(): EventFaultCounts;
}

/** No fault: every event is sent once and delivered once. */
export const NO_EVENT_FAULTS: EventFaults = Object.freeze({ dropShare: 0, redeliverShare: 0, types: [] });

function checkFaults(faults: EventFaults): EventFaults {
  const types = faults.types;
  if (!Array.isArray(types) || types.some((type) => typeof type !== 'string' || type === '')) {
    throw new InvalidOptionError('types', 'must be a list of event types');
  }
  return Object.freeze({
    dropShare: checkFraction('dropShare', faults.dropShare),
    redeliverShare: checkFraction('redeliverShare', faults.redeliverShare),
    types: Object.freeze([...types]),
  });
}

/**
 * Wraps `inner`; with no fault set it passes every call through unchanged.
 *
 * @example
 * const transport = labTransport(inProcessTransport(), { seed: 7 });
 * transport.setFaults({ dropShare: 0.05, redeliverShare: 0, types: ['payment.completed'] });
 * transport.counts().dropped; // publishes confirmed and never sent
 */
export function labTransport(inner: Transport, options: { seed?: number } = {}): LabTransport {
  let faults = NO_EVENT_FAULTS;
  let random = seededRandom(options.seed ?? 1);
  let dropped = 0;
  let redelivered = 0;
  const applies = (event: OutboxEvent) => faults.types.length === 0 || faults.types.includes(event.type);

  /** The first delivery's settlement is kept back; the second one settles the broker's delivery. */
  const twice = async (delivery: Delivery, handler: (delivery: Delivery) => Promise<void>) => {
    let acknowledged = false;
    const first: Delivery = {
      event: delivery.event,
      deliveryCount: delivery.deliveryCount,
      ack: async () => {
        acknowledged = true;
      },
      retry: (delayMs) => delivery.retry(delayMs),
    };
    await handler(first);
    if (!acknowledged) return;
    redelivered++;
    await handler({
      event: delivery.event,
      deliveryCount: delivery.deliveryCount + 1,
      ack: () => delivery.ack(),
      retry: (delayMs) => delivery.retry(delayMs),
    });
  };

  return {
    name: inner.name,
    get faults() {
      return faults;
    },
    setFaults(next, seed) {
      faults = checkFaults(next);
      if (seed !== undefined) random = seededRandom(seed);
    },
    counts: () => ({ dropped, redelivered }),
    async publish(event) {
      if (faults.dropShare > 0 && applies(event) && random() < faults.dropShare) {
        dropped++;
        return;
      }
      await inner.publish(event);
    },
    subscribe(subscription, handler) {
      return inner.subscribe(subscription, async (delivery) => {
        if (faults.redeliverShare > 0 && applies(delivery.event) && random() < faults.redeliverShare) {
          await twice(delivery, handler);
          return;
        }
        await handler(delivery);
      });
    },
    close: () => inner.close(),
  };
}
