/**
 * Wraps the in-process transport for the consumer tests: every delivery's `ack` and `retry` is
 * recorded (with the delivery count and the delay the consumer asked for), and `drained()` resolves
 * once each group has received every event published through the wrapper plus every redelivery it
 * asked for, and settled them all. It assumes each group subscribes before the events it should get
 * are published, as the tests do.
 */
import type {
  Delivery,
  DeliveryHandler,
  OutboxEvent,
  SubscribeOptions,
  Subscription,
  Transport,
} from 'keel/outbox';
import { type InProcessTransport, inProcessTransport } from 'keel/outbox';

export interface Settlement {
  readonly group: string;
  readonly eventId: string;
  readonly deliveryCount: number;
  readonly outcome: 'ack' | 'retry';
  readonly delayMs?: number;
}

interface GroupCounts {
  delivered: number;
  retries: number;
  unsettled: number;
}

export class RecordingTransport implements Transport {
  readonly inner: InProcessTransport;
  readonly name: string;
  readonly settlements: Settlement[] = [];
  readonly #groups = new Map<string, GroupCounts>();
  #published = 0;

  constructor(inner: InProcessTransport = inProcessTransport({ confirm: 'accepted' })) {
    this.inner = inner;
    this.name = inner.name;
  }

  async publish(event: OutboxEvent): Promise<void> {
    await this.inner.publish(event);
    this.#published++;
  }

  subscribe(options: SubscribeOptions, handler: DeliveryHandler): Promise<Subscription> {
    let counts = this.#groups.get(options.group);
    if (counts === undefined) {
      counts = { delivered: 0, retries: 0, unsettled: 0 };
      this.#groups.set(options.group, counts);
    }
    const group = counts;
    return this.inner.subscribe(options, async (delivery) => {
      group.delivered++;
      group.unsettled++;
      let settled = false;
      const record = (outcome: 'ack' | 'retry', delayMs?: number) => {
        if (settled) throw new Error(`delivery of ${delivery.event.id} settled twice`);
        settled = true;
        group.unsettled--;
        if (outcome === 'retry') group.retries++;
        this.settlements.push({
          group: options.group,
          eventId: delivery.event.id,
          deliveryCount: delivery.deliveryCount,
          outcome,
          ...(delayMs === undefined ? {} : { delayMs }),
        });
      };
      const recorded: Delivery = {
        event: delivery.event,
        deliveryCount: delivery.deliveryCount,
        ack: async () => {
          record('ack');
          await delivery.ack();
        },
        retry: async (delayMs) => {
          record('retry', delayMs);
          await delivery.retry(delayMs);
        },
      };
      try {
        await handler(recorded);
      } catch (error) {
        if (!settled) record('retry', 0); // the transport turns a throw into retry(0)
        throw error;
      }
    });
  }

  close(): Promise<void> {
    return this.inner.close();
  }

  /** Resolves once every group has had and settled every delivery it is owed. */
  async drained(): Promise<void> {
    const owed = () =>
      [...this.#groups.values()].some(
        (group) => group.unsettled > 0 || group.delivered < this.#published + group.retries,
      );
    while (owed()) await new Promise((resolve) => setTimeout(resolve, 2));
  }
}
