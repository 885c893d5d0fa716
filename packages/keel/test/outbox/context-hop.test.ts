import { randomUUID } from 'node:crypto';
import { DatabaseSync } from 'node:sqlite';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { natsTransport } from 'keel/nats';
import { bindEntity, currentContext, type KeelContext, runInContext } from 'keel/observe';
import { inProcessTransport, outboxConsumer, outboxRelay, type Transport } from 'keel/outbox';
import { sqliteInbox, sqliteOutbox } from 'keel/sqlite';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { describeWithService } from '../support/services.ts';

/**
 * A payment completes inside a request's context; the invoice consumer, on the other side of the
 * relay and the broker, must see the same request and correlation ids and the order it was about.
 */
async function hop(transport: Transport): Promise<{ seen: KeelContext | undefined; eventHeaders: object }> {
  const payments = new DatabaseSync(':memory:');
  const invoices = new DatabaseSync(':memory:');
  const outbox = sqliteOutbox({ db: payments });
  const relay = outboxRelay({ store: outbox, transport, pollIntervalMs: 10 });
  let seen: KeelContext | undefined;
  let eventHeaders: object = {};
  const received = Promise.withResolvers<void>();
  const consumer = outboxConsumer({
    transport,
    inbox: sqliteInbox({ db: invoices }),
    group: `invoices-${randomUUID().slice(0, 8)}`,
    onUnknown: 'skip',
    handlers: {
      'payment.completed': async (event) => {
        seen = currentContext();
        eventHeaders = event.headers;
        received.resolve();
      },
    },
  });
  await consumer.start();
  relay.start();
  try {
    await runInContext({ requestId: 'req-7', correlationId: 'corr-7', idempotencyKey: 'key-7' }, async () => {
      bindEntity({ orderId: 'o-7' });
      payments.exec('BEGIN IMMEDIATE');
      await outbox.append(payments, {
        type: 'payment.completed',
        aggregateType: 'payment',
        aggregateId: 'p-7',
        payload: { amount: 100 },
      });
      payments.exec('COMMIT');
    });
    await received.promise;
    return { seen, eventHeaders };
  } finally {
    await relay.stop();
    await consumer.stop();
  }
}

function expectCarried(result: { seen: KeelContext | undefined; eventHeaders: object }) {
  expect(result.seen?.requestId).toBe('req-7');
  expect(result.seen?.correlationId).toBe('corr-7');
  expect(result.seen?.idempotencyKey).toBe('key-7');
  // The order came from the producer's context; the payment from the event's own aggregate.
  expect(result.seen?.entities).toEqual({ orderId: 'o-7', paymentId: 'p-7' });
  expect(result.eventHeaders).toMatchObject({ 'x-request-id': 'req-7', 'keel-entity-order-id': 'o-7' });
}

describe('context across the broker hop', () => {
  it('reaches the consumer through the outbox, the relay and the in-process transport', async () => {
    expectCarried(await hop(inProcessTransport()));
  });

  it('leaves headers the producer set explicitly as they were', async () => {
    const db = new DatabaseSync(':memory:');
    const outbox = sqliteOutbox({ db });
    db.exec('BEGIN IMMEDIATE');
    const [event] = await runInContext({ requestId: 'from-context' }, () =>
      outbox.append(db, {
        type: 't',
        aggregateType: 'a',
        aggregateId: '1',
        payload: null,
        headers: { 'x-request-id': 'explicit' },
      }),
    );
    db.exec('COMMIT');
    expect(event?.headers['x-request-id']).toBe('explicit');
  });
});

describeWithService('NATS_URL', 'context across NATS JetStream', (url) => {
  let nc: NatsConnection;
  const stream = `KEEL_CTX_${process.pid}_${randomUUID().slice(0, 6)}`;
  beforeAll(async () => {
    nc = await connect({ servers: url });
  });
  afterAll(async () => {
    await (await jetstreamManager(nc)).streams.delete(stream).catch(() => {});
    await nc.close();
  });

  it('reaches the consumer through the outbox, the relay and JetStream', async () => {
    const transport = natsTransport({
      jetstream: jetstream(nc),
      manager: await jetstreamManager(nc),
      stream,
      subjectPrefix: `keel.ctx.${process.pid}`,
    });
    try {
      expectCarried(await hop(transport));
    } finally {
      await transport.close();
    }
  });
});
