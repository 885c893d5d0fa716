import { type ChannelModel, connect } from 'amqplib';
import { isKeelError } from 'keel';
import { amqpTransport, delayStepMs, type InvalidDelivery, InvalidEventBodyError } from 'keel/amqp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { describeWithService } from '../support/services.ts';
import { makeEvent, Recorder, uniqueSuffix, waitFor } from './broker-test-kit.ts';
import { TcpProxy } from './tcp-proxy.ts';

describeWithService('AMQP_URL', 'RabbitMQ', (url) => {
  const exchange = `keel.test.${uniqueSuffix()}`;
  let connection: ChannelModel;
  const opened: { close(): Promise<unknown> }[] = [];
  const groups: string[] = [];

  function transport(extra: Partial<Parameters<typeof amqpTransport>[0]> = {}) {
    const created = amqpTransport({ connection, exchange, confirmTimeoutMs: 2_000, ...extra });
    opened.push(created);
    return created;
  }

  function group(name: string): string {
    groups.push(name);
    return name;
  }

  beforeAll(async () => {
    connection = await connect(url);
  });

  afterAll(async () => {
    for (const closable of opened) await closable.close();
    if (connection === undefined) return;
    const channel = await connection.createChannel();
    for (const name of groups) {
      const queue = `${exchange}.${name}`;
      for (const suffix of ['', '.parked', ...[0, 100, 200].map((ms) => `.retry.${delayStepMs(ms)}`)]) {
        await channel.deleteQueue(`${queue}${suffix}`);
      }
    }
    await channel.deleteExchange(exchange);
    await channel.close();
    await connection.close();
  });

  it('delivers a published event intact, with deliveryCount 1', async () => {
    const amqp = transport();
    const event = makeEvent('payment.completed');
    const recorder = new Recorder();
    await amqp.subscribe(
      { group: group('roundtrip'), types: ['payment.completed'] },
      recorder.handler('one'),
    );
    await amqp.publish(event);
    await waitFor(() => recorder.received.length === 1, 'the delivery');
    expect(recorder.received[0]?.event).toEqual(event);
    expect(recorder.received[0]?.deliveryCount).toBe(1);
  });

  it('shares a group between two subscriptions, each event going to one of them once', async () => {
    const amqp = transport();
    const recorder = new Recorder();
    const slowAck = async (delivery: { ack(): Promise<void> }) => {
      await new Promise((resolve) => setTimeout(resolve, 5));
      await delivery.ack();
    };
    const shared = group('shared');
    await amqp.subscribe(
      { group: shared, types: ['order.placed'], prefetch: 2 },
      recorder.handler('a', slowAck),
    );
    await amqp.subscribe(
      { group: shared, types: ['order.placed'], prefetch: 2 },
      recorder.handler('b', slowAck),
    );
    const events = Array.from({ length: 40 }, (_, i) => makeEvent('order.placed', `order-${i}`, i));
    await Promise.all(events.map((event) => amqp.publish(event)));
    await waitFor(() => recorder.received.length >= events.length, 'every event');
    expect(recorder.ids().sort()).toEqual(events.map((event) => event.id).sort());
    expect(new Set(recorder.received.map((entry) => entry.member))).toEqual(new Set(['a', 'b']));
  });

  it('gives every event to each of two groups', async () => {
    const amqp = transport();
    const invoices = new Recorder();
    const audit = new Recorder();
    await amqp.subscribe({ group: group('invoices'), types: ['invoice.sent'] }, invoices.handler('invoices'));
    await amqp.subscribe({ group: group('audit') }, audit.handler('audit'));
    const events = Array.from({ length: 10 }, (_, i) => makeEvent('invoice.sent', `invoice-${i}`, i));
    for (const event of events) await amqp.publish(event);
    await waitFor(() => invoices.received.length === 10 && audit.ids().length >= 10, 'both groups');
    const ids = events.map((event) => event.id).sort();
    expect(invoices.ids().sort()).toEqual(ids);
    expect(
      audit
        .ids()
        .filter((id) => ids.includes(id))
        .sort(),
    ).toEqual(ids);
  });

  it('redelivers after retry(delay) through the delay queue, with deliveryCount one higher each time', async () => {
    const amqp = transport();
    const recorder = new Recorder();
    await amqp.subscribe(
      { group: group('retry'), types: ['payment.failed'] },
      recorder.handler('one', (delivery) =>
        delivery.deliveryCount < 3 ? delivery.retry(100) : delivery.ack(),
      ),
    );
    const event = makeEvent('payment.failed');
    await amqp.publish(event);
    await waitFor(() => recorder.received.length === 3, 'three deliveries');
    expect(recorder.received.map((entry) => entry.deliveryCount)).toEqual([1, 2, 3]);
    expect(recorder.received.every((entry) => entry.event.id === event.id)).toBe(true);
    expect(recorder.received[2]?.event).toEqual(event);
  });

  it('counts a delivery abandoned by a dead consumer (quorum x-delivery-count) and a throw as retry(0)', async () => {
    const amqp = transport();
    const name = group('abandoned');
    // Declares the group's queues, then leaves.
    await (await amqp.subscribe({ group: name, types: ['payment.stuck'] }, async () => undefined)).close();
    await amqp.publish(makeEvent('payment.stuck'));
    // A member that dies holding the message: its channel closes without an ack.
    const doomed = await connection.createChannel();
    let taken = false;
    await doomed.consume(`${exchange}.${name}`, () => {
      taken = true;
    });
    await waitFor(() => taken, 'the doomed member to take the message');
    await doomed.close();
    const recorder = new Recorder();
    await amqp.subscribe(
      { group: name, types: ['payment.stuck'] },
      recorder.handler('survivor', async (delivery) => {
        if (delivery.deliveryCount < 3) throw new Error('still failing');
        await delivery.ack();
      }),
    );
    await waitFor(() => recorder.received.length === 2, 'the redeliveries');
    expect(recorder.received.map((entry) => entry.deliveryCount)).toEqual([2, 3]);
  });

  it('rounds delays up to a few steps, never shorter than asked', () => {
    expect([0, 1, 10, 11, 100, 101, 250, 499, 4_000, 69_000].map(delayStepMs)).toEqual([
      0, 10, 10, 20, 100, 200, 300, 500, 5_000, 70_000,
    ]);
  });

  it('rejects a publish while the broker is unreachable, and publishes again after recovering', async () => {
    const proxy = new TcpProxy(url);
    await proxy.start();
    const target = new URL(url);
    target.host = `127.0.0.1:${proxy.port}`;
    const recovering = await connect(target.toString(), {
      recovery: { initialDelay: 20, maxDelay: 100 },
    });
    recovering.on('error', () => undefined);
    try {
      const amqp = transport({ connection: recovering, confirmTimeoutMs: 500 });
      const recorder = new Recorder();
      await transport().subscribe(
        { group: group('reconnect'), types: ['payment.refunded'] },
        recorder.handler('one'),
      );
      await amqp.publish(makeEvent('payment.refunded', 'a-1', 0));
      await proxy.stop();
      await expect(amqp.publish(makeEvent('payment.refunded', 'a-1', 1))).rejects.toThrow();
      await proxy.start();
      const after = makeEvent('payment.refunded', 'a-1', 2);
      let published = false;
      for (let attempt = 0; attempt < 50 && !published; attempt++) {
        published = await amqp.publish(after).then(
          () => true,
          async () => {
            await new Promise((resolve) => setTimeout(resolve, 50));
            return false;
          },
        );
      }
      expect(published).toBe(true);
      await waitFor(() => recorder.ids().includes(after.id), 'the event published after recovering');
    } finally {
      await proxy.stop();
      await Promise.race([
        recovering.close().catch(() => undefined),
        new Promise((r) => setTimeout(r, 1_000)),
      ]);
    }
  });

  it('recreates its publishing channel after a channel error', async () => {
    const amqp = transport({ exchange: `${exchange}.missing-type` });
    // Declaring the existing exchange as another type fails the channel; the next publish opens a new one.
    const channel = await connection.createChannel();
    await channel.assertExchange(`${exchange}.missing-type`, 'fanout', { durable: false, autoDelete: true });
    await channel.close();
    await expect(amqp.publish(makeEvent('payment.completed'))).rejects.toThrow(
      /PRECONDITION_FAILED|inequivalent/,
    );
    const cleanup = await connection.createChannel();
    await cleanup.deleteExchange(`${exchange}.missing-type`);
    await cleanup.close();
    await expect(amqp.publish(makeEvent('payment.completed'))).resolves.toBeUndefined();
    const gone = await connection.createChannel();
    await gone.deleteExchange(`${exchange}.missing-type`);
    await gone.close();
  });

  it('delivers sequential publishes of one aggregate in order', async () => {
    const amqp = transport();
    const events = Array.from({ length: 60 }, (_, i) => makeEvent('ledger.posted', 'account-7', i));
    const recorder = new Recorder();
    await amqp.subscribe(
      { group: group('ordered'), types: ['ledger.posted'], prefetch: 16 },
      recorder.handler('one'),
    );
    for (const event of events) await amqp.publish(event);
    await waitFor(() => recorder.received.length === events.length, 'every event');
    expect(recorder.ids()).toEqual(events.map((event) => event.id));
  });

  it('parks and reports a message that is not an event, and keeps delivering', async () => {
    const invalid: InvalidDelivery[] = [];
    const amqp = transport({ onInvalid: (entry) => invalid.push(entry) });
    const name = group('invalid');
    const recorder = new Recorder();
    await amqp.subscribe({ group: name, types: ['payment.garbled'] }, recorder.handler('one'));
    const raw = await connection.createChannel();
    raw.publish(exchange, 'payment.garbled', Buffer.from('not json {'));
    raw.publish(
      exchange,
      'payment.garbled',
      Buffer.from(JSON.stringify({ id: 'x', type: 'payment.garbled' })),
    );
    await raw.close();
    const valid = makeEvent('payment.garbled');
    await amqp.publish(valid);
    await waitFor(
      () => recorder.received.length === 1 && invalid.length === 2,
      'the valid event and both reports',
    );
    expect(recorder.ids()).toEqual([valid.id]);
    expect(invalid.map((entry) => [entry.transport, entry.group, entry.source])).toEqual([
      ['amqp', name, 'payment.garbled'],
      ['amqp', name, 'payment.garbled'],
    ]);
    expect(invalid[0]?.error).toBeInstanceOf(InvalidEventBodyError);
    expect(new TextDecoder().decode(invalid[0]?.error.body)).toBe('not json {');
    const check = await connection.createChannel();
    let parked = 0;
    for (let poll = 0; poll < 100 && parked < 2; poll++) {
      parked = (await check.checkQueue(`${exchange}.${name}.parked`)).messageCount;
      if (parked < 2) await new Promise((resolve) => setTimeout(resolve, 20));
    }
    await check.close();
    expect(parked).toBe(2);
  });

  describe('bad input', () => {
    it('refuses a connection that cannot open confirm channels, and a bad exchange', () => {
      expect(() => amqpTransport({} as never)).toThrow(/connection/);
      expect(() => amqpTransport({ connection, exchange: '' })).toThrow(/exchange/);
      expect(() => amqpTransport({ connection, confirmTimeoutMs: 0 })).toThrow(/confirmTimeoutMs/);
    });

    it('rejects wildcard types and an out-of-range prefetch', async () => {
      const amqp = transport();
      const handler = async () => undefined;
      await expect(amqp.subscribe({ group: 'g', types: ['payment.#'] }, handler)).rejects.toThrow(/types/);
      await expect(amqp.subscribe({ group: 'g', prefetch: 0 }, handler)).rejects.toThrow(/prefetch/);
      await expect(amqp.subscribe({ group: '' }, handler)).rejects.toThrow(/group/);
    });

    it('rejects a publish after close with a stable code', async () => {
      const amqp = transport();
      await amqp.close();
      const error = await amqp.publish(makeEvent('payment.completed')).catch((caught: unknown) => caught);
      expect(isKeelError(error) && error.code).toBe('KEEL_OUTBOX_TRANSPORT_CLOSED');
    });
  });
});
