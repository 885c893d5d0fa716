import amqplib from 'amqplib';
import { afterAll, beforeAll, describe, it } from 'vitest';
import { serviceUrl } from '../../../keel/test/support/services.ts';
import type { Service } from '../../src/service/service-app.ts';
import {
  chargeThroughToInvoice,
  type Providers,
  scratchDirectory,
  startProviders,
  startService,
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
    await chargeThroughToInvoice(service, 4_200, 'eur');
  });
});
