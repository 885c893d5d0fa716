import { type JetStreamManager, jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { isKeelError } from 'keel';
import { type InvalidDelivery, InvalidEventBodyError, natsTransport, UnroutableEventError } from 'keel/nats';
import type { Subscription } from 'keel/outbox';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { describeWithService } from '../support/services.ts';
import { makeEvent, Recorder, uniqueSuffix, waitFor } from './broker-test-kit.ts';
import { TcpProxy } from './tcp-proxy.ts';

describeWithService('NATS_URL', 'NATS JetStream', (url) => {
  const suffix = uniqueSuffix();
  const stream = `KEEL_TEST_${suffix}`;
  const subjectPrefix = `keel.test.${suffix}`;
  let nc: NatsConnection;
  let manager: JetStreamManager;
  const opened: { close(): Promise<unknown> }[] = [];

  function transport(extra: Partial<Parameters<typeof natsTransport>[0]> = {}) {
    const created = natsTransport({
      jetstream: jetstream(nc),
      manager,
      stream,
      subjectPrefix,
      duplicateWindowMs: 60_000,
      ...extra,
    });
    opened.push(created);
    return created;
  }

  /** A type (and so a subject) of its own for each test, as they share one stream. */
  const typeFor = (name: string) => `${name}.${uniqueSuffix()}`;

  beforeAll(async () => {
    nc = await connect({ servers: url });
    manager = await jetstreamManager(nc);
  });

  afterAll(async () => {
    for (const closable of opened) await closable.close();
    await manager?.streams.delete(stream).catch(() => undefined);
    await nc?.close();
  });

  it('delivers a published event intact, with deliveryCount 1', async () => {
    const nats = transport();
    const type = typeFor('payment.completed');
    const event = makeEvent(type);
    const recorder = new Recorder();
    await nats.subscribe({ group: `roundtrip_${suffix}`, types: [type] }, recorder.handler('one'));
    await nats.publish(event);
    await waitFor(() => recorder.received.length === 1, 'the delivery');
    expect(recorder.received[0]?.event).toEqual(event);
    expect(recorder.received[0]?.deliveryCount).toBe(1);
  });

  it('shares a group between two subscriptions, each event going to one of them once', async () => {
    const nats = transport();
    const type = typeFor('order.placed');
    const recorder = new Recorder();
    const slowAck = async (delivery: { ack(): Promise<void> }) => {
      await new Promise((resolve) => setTimeout(resolve, 5));
      await delivery.ack();
    };
    const group = `shared_${suffix}`;
    await nats.subscribe({ group, types: [type], prefetch: 2 }, recorder.handler('a', slowAck));
    await nats.subscribe({ group, types: [type], prefetch: 2 }, recorder.handler('b', slowAck));
    const events = Array.from({ length: 40 }, (_, i) => makeEvent(type, `order-${i}`, i));
    await Promise.all(events.map((event) => nats.publish(event)));
    await waitFor(() => recorder.received.length >= events.length, 'every event');
    expect(recorder.ids().sort()).toEqual(events.map((event) => event.id).sort());
    expect(new Set(recorder.received.map((entry) => entry.member))).toEqual(new Set(['a', 'b']));
  });

  it('gives every event to each of two groups', async () => {
    const nats = transport();
    const type = typeFor('invoice.sent');
    const invoices = new Recorder();
    const audit = new Recorder();
    await nats.subscribe({ group: `invoices_${suffix}`, types: [type] }, invoices.handler('invoices'));
    await nats.subscribe({ group: `audit_${suffix}`, types: [type] }, audit.handler('audit'));
    const events = Array.from({ length: 10 }, (_, i) => makeEvent(type, `invoice-${i}`, i));
    for (const event of events) await nats.publish(event);
    await waitFor(() => invoices.received.length === 10 && audit.received.length === 10, 'both groups');
    const ids = events.map((event) => event.id).sort();
    expect(invoices.ids().sort()).toEqual(ids);
    expect(audit.ids().sort()).toEqual(ids);
  });

  it('redelivers after retry(delay) with deliveryCount one higher each time', async () => {
    const nats = transport();
    const type = typeFor('payment.failed');
    const recorder = new Recorder();
    await nats.subscribe(
      { group: `retry_${suffix}`, types: [type] },
      recorder.handler('one', (delivery) =>
        delivery.deliveryCount < 3 ? delivery.retry(100) : delivery.ack(),
      ),
    );
    const event = makeEvent(type);
    await nats.publish(event);
    await waitFor(() => recorder.received.length === 3, 'three deliveries');
    expect(recorder.received.map((entry) => entry.deliveryCount)).toEqual([1, 2, 3]);
    expect(recorder.received.every((entry) => entry.event.id === event.id)).toBe(true);
  });

  it('treats a throwing handler as retry(0)', async () => {
    const nats = transport();
    const type = typeFor('payment.flaky');
    const recorder = new Recorder();
    await nats.subscribe(
      { group: `throws_${suffix}`, types: [type] },
      recorder.handler('one', async (delivery) => {
        if (delivery.deliveryCount === 1) throw new Error('handler failed');
        await delivery.ack();
      }),
    );
    await nats.publish(makeEvent(type));
    await waitFor(() => recorder.received.length === 2, 'the redelivery');
    expect(recorder.received.map((entry) => entry.deliveryCount)).toEqual([1, 2]);
  });

  it('stores a re-published event id once (JetStream deduplication)', async () => {
    const nats = transport();
    const type = typeFor('payment.captured');
    const duplicated = makeEvent(type, 'a-1', 1);
    const after = makeEvent(type, 'a-1', 2);
    await nats.publish(duplicated);
    await nats.publish(duplicated);
    await nats.publish(after);
    const recorder = new Recorder();
    await nats.subscribe({ group: `dedup_${suffix}`, types: [type] }, recorder.handler('one'));
    await waitFor(() => recorder.ids().includes(after.id), 'the event after the duplicate');
    expect(recorder.ids()).toEqual([duplicated.id, after.id]);
    const stored = await manager.streams.info(stream, { subjects_filter: `${subjectPrefix}.${type}` });
    expect(stored.state.subjects?.[`${subjectPrefix}.${type}`]).toBe(2);
  });

  it('rejects a publish while the server is unreachable, and publishes again after reconnecting', async () => {
    const proxy = new TcpProxy(url);
    await proxy.start();
    const viaProxy = await connect({
      servers: `nats://127.0.0.1:${proxy.port}`,
      reconnectTimeWait: 50,
      maxReconnectAttempts: -1,
    });
    try {
      const nats = transport({
        jetstream: jetstream(viaProxy),
        manager: await jetstreamManager(viaProxy),
        publishTimeoutMs: 300,
      });
      const type = typeFor('payment.refunded');
      await nats.publish(makeEvent(type, 'a-1', 0));
      await proxy.stop();
      await expect(nats.publish(makeEvent(type, 'a-1', 1))).rejects.toThrow();
      await proxy.start();
      const reconnected = makeEvent(type, 'a-1', 2);
      await waitFor(() => !viaProxy.isClosed() && viaProxy.getServer() !== '', 'the reconnect');
      let published = false;
      for (let attempt = 0; attempt < 30 && !published; attempt++) {
        published = await nats.publish(reconnected).then(
          () => true,
          () => false,
        );
      }
      expect(published).toBe(true);
      const recorder = new Recorder();
      await transport().subscribe({ group: `reconnect_${suffix}`, types: [type] }, recorder.handler('one'));
      await waitFor(() => recorder.ids().includes(reconnected.id), 'the event published after reconnecting');
    } finally {
      await proxy.stop();
      await viaProxy.close();
    }
  });

  it('delivers sequential publishes of one aggregate in order', async () => {
    const nats = transport();
    const type = typeFor('ledger.posted');
    const events = Array.from({ length: 60 }, (_, i) => makeEvent(type, 'account-7', i));
    for (const event of events) await nats.publish(event);
    const recorder = new Recorder();
    await nats.subscribe(
      { group: `ordered_${suffix}`, types: [type], prefetch: 16 },
      recorder.handler('one'),
    );
    await waitFor(() => recorder.received.length === events.length, 'every event');
    expect(recorder.ids()).toEqual(events.map((event) => event.id));
  });

  it('terminates and reports a message that is not an event, and keeps delivering', async () => {
    const invalid: InvalidDelivery[] = [];
    const nats = transport({ onInvalid: (entry) => invalid.push(entry) });
    const type = typeFor('payment.garbled');
    const subject = `${subjectPrefix}.${type}`;
    const js = jetstream(nc);
    await js.publish(subject, 'not json {');
    await js.publish(subject, JSON.stringify({ id: 'x', type }));
    const valid = makeEvent(type);
    await nats.publish(valid);
    const recorder = new Recorder();
    const group = `invalid_${suffix}`;
    await nats.subscribe({ group, types: [type] }, recorder.handler('one'));
    await waitFor(
      () => recorder.received.length === 1 && invalid.length === 2,
      'the valid event and both reports',
    );
    expect(recorder.ids()).toEqual([valid.id]);
    expect(invalid.map((entry) => [entry.transport, entry.group, entry.source])).toEqual([
      ['nats', group, subject],
      ['nats', group, subject],
    ]);
    expect(invalid[0]?.error).toBeInstanceOf(InvalidEventBodyError);
    expect(invalid[0]?.error.code).toBe('KEEL_OUTBOX_INVALID_EVENT_BODY');
    expect(new TextDecoder().decode(invalid[0]?.error.body)).toBe('not json {');
    expect(invalid[1]?.error.message).toContain('aggregateType');
    // Settled for good: nothing left pending or awaiting an ack (acks travel asynchronously).
    let info = await manager.consumers.info(stream, group);
    for (let poll = 0; poll < 100 && info.num_ack_pending > 0; poll++) {
      await new Promise((resolve) => setTimeout(resolve, 20));
      info = await manager.consumers.info(stream, group);
    }
    expect(info.num_ack_pending).toBe(0);
    expect(info.num_pending).toBe(0);
  });

  it('stops delivering once a subscription is closed, finishing the delivery in progress', async () => {
    const nats = transport();
    const type = typeFor('payment.slow');
    let finished = 0;
    let started = 0;
    let subscription: Subscription | undefined;
    subscription = await nats.subscribe({ group: `closing_${suffix}`, types: [type] }, async (delivery) => {
      started++;
      await new Promise((resolve) => setTimeout(resolve, 50));
      finished++;
      await delivery.ack();
    });
    await nats.publish(makeEvent(type));
    await waitFor(() => started === 1, 'the delivery to start');
    await subscription.close();
    subscription = undefined;
    expect(finished).toBe(1);
  });

  describe('bad input', () => {
    it('refuses options that are not a JetStream client and manager', () => {
      expect(() => natsTransport({} as never)).toThrow(/jetstream/);
      expect(() => natsTransport({ jetstream: jetstream(nc), manager, stream: 'a.b' })).toThrow(/stream/);
      expect(() => natsTransport({ jetstream: jetstream(nc), manager, subjectPrefix: 'a.>' })).toThrow(
        /subjectPrefix/,
      );
    });

    it('rejects a group that cannot name a durable consumer, and a wildcard type', async () => {
      const nats = transport();
      const handler = async () => undefined;
      await expect(nats.subscribe({ group: 'in.voices' }, handler)).rejects.toThrow(/group/);
      await expect(nats.subscribe({ group: `g_${suffix}`, types: ['payment.*'] }, handler)).rejects.toThrow(
        /types/,
      );
      await expect(nats.subscribe({ group: `g_${suffix}`, prefetch: 0 }, handler)).rejects.toThrow(
        /prefetch/,
      );
    });

    it('rejects an event whose type is not a subject, with a stable code', async () => {
      const nats = transport();
      const error = await nats.publish(makeEvent('payment completed')).catch((caught: unknown) => caught);
      expect(error).toBeInstanceOf(UnroutableEventError);
      expect(isKeelError(error) && error.code).toBe('KEEL_OUTBOX_UNROUTABLE_EVENT');
    });
  });
});
