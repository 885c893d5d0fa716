import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import pg from 'pg';
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

const databaseUrl = serviceUrl('DATABASE_URL');
const natsUrl = serviceUrl('NATS_URL');
const suffix = `${process.pid}_${Math.random().toString(36).slice(2, 8)}`;

describe.skipIf(databaseUrl === undefined || natsUrl === undefined)(
  'a guarded charge on Postgres and NATS JetStream (needs DATABASE_URL and NATS_URL)',
  () => {
    const scratch = scratchDirectory('postgres-nats');
    const database = `lab_service_${suffix}`;
    const channel = `payments_${suffix}`;
    let admin: pg.Client;
    let providers: Providers;
    let service: Service;

    beforeAll(async () => {
      admin = new pg.Client({ connectionString: databaseUrl });
      await admin.connect();
      await admin.query(`CREATE DATABASE ${database}`);
      const url = new URL(databaseUrl as string);
      url.pathname = `/${database}`;
      providers = await startProviders(scratch.path);
      service = await startService(scratch.path, providers, {
        db: url.toString(),
        broker: natsUrl as string,
        eventChannel: channel,
      });
    });

    afterAll(async () => {
      await service?.stop();
      await providers?.stop();
      if (natsUrl !== undefined) {
        const connection = await connect({ servers: natsUrl });
        const manager = await jetstreamManager(connection);
        await manager.streams.delete(`${channel.toUpperCase()}_EVENTS`).catch(() => false);
        await connection.close();
      }
      await admin?.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`);
      await admin?.end();
      scratch.remove();
    });

    it('charges once, records the payment, relays the event and writes and mails the invoice', async () => {
      const user = await signIn(service);
      const order = await createOrder(service, user.authorization, { amount: 3_100, currency: 'usd' });
      const key = uniqueKey('pg');
      const paid = await charge(service, user.authorization, order.id, key);
      expect(paid.statusCode).toBe(201);
      const payment = paid.json() as { id: string };
      const replay = await charge(service, user.authorization, order.id, key);
      expect(replay.headers['idempotent-replayed']).toBe('true');

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
      const report = await service.app.inject({
        url: '/reports/sales?limit=3',
        headers: { authorization: user.authorization },
      });
      expect((report.json() as { lines: unknown[] }).lines).toHaveLength(3);
    });
  },
);
