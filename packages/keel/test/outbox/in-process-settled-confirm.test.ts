import { DatabaseSync } from 'node:sqlite';
import { isKeelError } from 'keel';
import {
  type Delivery,
  inProcessTransport,
  NonRetryableEventError,
  type OutboxEvent,
  outboxConsumer,
} from 'keel/outbox';
import { sqliteInbox } from 'keel/sqlite';
import { describe, expect, it } from 'vitest';

const event = (id: string, type = 't'): OutboxEvent => ({
  id,
  type,
  aggregateType: 'a',
  aggregateId: id,
  payload: null,
  headers: {},
  createdAt: 0,
});

const until = (check: () => boolean) =>
  new Promise<void>((resolve) => {
    const poll = () => (check() ? resolve() : setTimeout(poll, 2));
    poll();
  });

/** Tracks a promise's outcome without awaiting it. */
function watch(promise: Promise<void>) {
  const state: { outcome: 'pending' | 'resolved' | 'rejected'; error?: unknown } = { outcome: 'pending' };
  promise.then(
    () => {
      state.outcome = 'resolved';
    },
    (error: unknown) => {
      state.outcome = 'rejected';
      state.error = error;
    },
  );
  return state;
}

const codeOf = (error: unknown) => (isKeelError(error) ? error.code : undefined);

describe("in-process transport with confirm: 'settled'", () => {
  it('is the default, and confirms only once every group has acknowledged the event', async () => {
    const transport = inProcessTransport();
    expect(transport.confirm).toBe('settled');
    const held: Delivery[] = [];
    await transport.subscribe({ group: 'invoices' }, (d) => d.ack());
    await transport.subscribe({ group: 'mailer' }, async (d) => {
      held.push(d);
    });
    const publish = watch(transport.publish(event('e1')));
    await until(() => held.length === 1);
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(publish.outcome).toBe('pending');
    expect(transport.stats()).toMatchObject({ published: 0, awaitingSettlement: 1 });
    await held[0]?.ack();
    await until(() => publish.outcome !== 'pending');
    expect(publish.outcome).toBe('resolved');
    expect(transport.stats()).toMatchObject({ published: 1, awaitingSettlement: 0, failedPublishes: 0 });
    await transport.close();
  });

  it('keeps waiting through retries and handler throws, and confirms on the ack that follows', async () => {
    const transport = inProcessTransport();
    const counts: number[] = [];
    await transport.subscribe({ group: 'g' }, async (d) => {
      counts.push(d.deliveryCount);
      if (d.deliveryCount === 1) await d.retry(5);
      else if (d.deliveryCount === 2) throw new Error('handler failed');
      else await d.ack();
    });
    await transport.publish(event('e1'));
    expect(counts).toEqual([1, 2, 3]);
    await transport.close();
  });

  it('confirms an event whose consumer parked it as a dead letter', async () => {
    const db = new DatabaseSync(':memory:');
    const inbox = sqliteInbox({ db });
    const transport = inProcessTransport();
    const consumer = outboxConsumer({
      transport,
      inbox,
      group: 'invoices',
      handlers: {
        poison: () => {
          throw new NonRetryableEventError('cannot invoice this');
        },
      },
    });
    await consumer.start();
    await transport.publish(event('p1', 'poison'));
    expect(await consumer.countDeadLetters()).toBe(1);
    await consumer.stop();
    await transport.close();
  });

  it('counts a group none of whose members takes the type as settled', async () => {
    const transport = inProcessTransport();
    await transport.subscribe({ group: 'g', types: ['other'] }, (d) => d.ack());
    await transport.publish(event('e1', 't'));
    expect(transport.stats().deliveries).toBe(0);
    await transport.close();
  });

  it('does not wait for a group that subscribes after the publish', async () => {
    const transport = inProcessTransport();
    const held: Delivery[] = [];
    await transport.subscribe({ group: 'early' }, async (d) => {
      held.push(d);
    });
    const publish = watch(transport.publish(event('e1')));
    await until(() => held.length === 1);
    // A group that joins now never acknowledges anything: the publish owes it nothing.
    await transport.subscribe({ group: 'late' }, async () => {});
    await held[0]?.ack();
    await until(() => publish.outcome !== 'pending');
    expect(publish.outcome).toBe('resolved');
    await transport.close();
  });

  it('rejects once confirmTimeoutMs passes while a group has no member, and a republish joins the queued event', async () => {
    const transport = inProcessTransport({ confirmTimeoutMs: 30 });
    const seen: number[] = [];
    const handler = async (d: Delivery) => {
      seen.push(d.deliveryCount);
      await d.ack();
    };
    const first = await transport.subscribe({ group: 'g' }, handler);
    await first.close();
    const error = await transport.publish(event('e1')).catch((e: unknown) => e);
    expect(codeOf(error)).toBe('KEEL_OUTBOX_PUBLISH_UNCONFIRMED');
    expect(String(error)).toMatch(/group 'g' did not settle it within 30 ms/);
    expect(transport.stats()).toMatchObject({
      confirmTimeouts: 1,
      failedPublishes: 1,
      awaitingSettlement: 0,
    });
    // The relay publishes again after its back-off; the member is back meanwhile.
    const again = transport.publish(event('e1'));
    await transport.subscribe({ group: 'g' }, handler);
    await again;
    // One delivery: the republish waited on the event already queued rather than queuing a copy.
    expect(seen).toEqual([1]);
    await transport.close();
  });

  it('waits for the first group to subscribe when none exists, and rejects when none comes', async () => {
    const transport = inProcessTransport({ confirmTimeoutMs: 30 });
    const error = await transport.publish(event('lonely')).catch((e: unknown) => e);
    expect(codeOf(error)).toBe('KEEL_OUTBOX_PUBLISH_UNCONFIRMED');
    expect(String(error)).toMatch(/no consumer group has subscribed/);

    const early = watch(transport.publish(event('early')));
    const seen: string[] = [];
    await transport.subscribe({ group: 'g' }, async (d) => {
      seen.push(d.event.id);
      await d.ack();
    });
    await until(() => early.outcome !== 'pending');
    expect(early.outcome).toBe('resolved');
    // The group starts at the oldest retained event, the one that timed out included.
    expect(seen).toEqual(['lonely', 'early']);
    await transport.close();
  });

  it('rejects the publishes still waiting when the transport closes', async () => {
    const transport = inProcessTransport();
    await transport.subscribe({ group: 'g' }, async () => {});
    const publish = transport.publish(event('e1')).catch((e: unknown) => e);
    await new Promise((resolve) => setTimeout(resolve, 5));
    await transport.close();
    expect(codeOf(await publish)).toBe('KEEL_OUTBOX_TRANSPORT_CLOSED');
    expect(codeOf(await transport.publish(event('e2')).catch((e: unknown) => e))).toBe(
      'KEEL_OUTBOX_TRANSPORT_CLOSED',
    );
  });

  it('rejects a waiting publish whose event is dropped beyond maxRetained', async () => {
    const transport = inProcessTransport({ maxRetained: 1 });
    const first = await transport.subscribe({ group: 'g' }, (d) => d.ack());
    await first.close();
    const dropped = transport.publish(event('e1')).catch((e: unknown) => e);
    const kept = watch(transport.publish(event('e2')));
    expect(String(await dropped)).toMatch(/maxRetained/);
    await transport.subscribe({ group: 'g' }, (d) => d.ack());
    await until(() => kept.outcome !== 'pending');
    expect(kept.outcome).toBe('resolved');
    expect(transport.stats()).toMatchObject({ dropped: 1, published: 1, failedPublishes: 1 });
    await transport.close();
  });

  it('confirms many concurrent publishes of one group with one shared timeout', async () => {
    const transport = inProcessTransport({ confirmTimeoutMs: 60_000 });
    await transport.subscribe({ group: 'g', prefetch: 8 }, (d) => d.ack());
    await Promise.all(Array.from({ length: 500 }, (_, i) => transport.publish(event(`e${i}`))));
    expect(transport.stats()).toMatchObject({ published: 500, awaitingSettlement: 0, deliveries: 500 });
    await transport.close();
  });

  it('validates confirm and confirmTimeoutMs at construction', () => {
    expect(() => inProcessTransport({ confirm: 'durable' as 'settled' })).toThrow(/confirm/);
    expect(() => inProcessTransport({ confirmTimeoutMs: 0 })).toThrow(/confirmTimeoutMs/);
    expect(() => inProcessTransport({ confirmTimeoutMs: 1.5 })).toThrow(/confirmTimeoutMs/);
    expect(inProcessTransport({ confirm: 'accepted' }).confirm).toBe('accepted');
  });
});
