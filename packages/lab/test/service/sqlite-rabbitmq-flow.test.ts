import amqplib from 'amqplib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { serviceUrl } from '../../../keel/test/support/services.ts';
import type { Service } from '../../src/service/service-app.ts';
import {
  charge,
  createOrder,
  eventually,
  type Providers,
  scratchDirectory,
  signIn,
  startProviders,
  startService,
  uniqueKey,
} from './service-harness.ts';

const amqpUrl = serviceUrl('AMQP_URL');
const channel = `payments_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;

describe.skipIf(amqpUrl === undefined)('a guarded charge on SQLite and RabbitMQ (needs AMQP_URL)', () => {
  const scratch = scratchDirectory('sqlite-rabbitmq');
  let providers: Providers;
  let service: Service;

  beforeAll(async () => {
    providers = await startProviders(scratch.path);
    service = await startService(scratch.path, providers, {
      broker: amqpUrl as string,
      eventChannel: channel,
    });
  });

  afterAll(async () => {
    await service?.stop();
    await providers?.stop();
    const connection = await amqplib.connect(amqpUrl as string);
    const admin = await connection.createChannel();
    for (const group of ['invoices', 'mail']) {
      for (const queue of [`${channel}.events.${group}`, `${channel}.events.${group}.parked`]) {
        await admin.deleteQueue(queue).catch(() => undefined);
      }
    }
    await admin.deleteExchange(`${channel}.events`).catch(() => undefined);
    await connection.close();
    scratch.remove();
  });

  it('charges once, relays the event through RabbitMQ, and writes and mails one invoice', async () => {
    const user = await signIn(service);
    const order = await createOrder(service, user.authorization, { amount: 4_200, currency: 'eur' });
    const key = uniqueKey('amqp');
    const paid = await charge(service, user.authorization, order.id, key);
    expect(paid.statusCode).toBe(201);
    const payment = paid.json() as { id: string };
    expect((await charge(service, user.authorization, order.id, key)).headers['idempotent-replayed']).toBe(
      'true',
    );

    const invoices = await eventually(
      async () =>
        (
          await service.app.inject({
            url: `/orders/${order.id}/invoices`,
            headers: { authorization: user.authorization },
          })
        ).json() as { data: { paymentId: string }[] },
      (body) => body.data.length > 0,
      10_000,
    );
    expect(invoices.data).toEqual([expect.objectContaining({ paymentId: payment.id })]);
    const mailed = await eventually(
      () => service.mail.sent().filter((m) => m.to === user.email),
      (sent) => sent.length > 0,
      10_000,
    );
    expect(mailed).toHaveLength(1);
  });
});
