import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { serviceUrl } from '../../../keel/test/support/services.ts';
import type { Service } from '../../src/service/service-app.ts';
import {
  chargeThroughToInvoice,
  type Providers,
  scratchDirectory,
  startProviders,
  startService,
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
      const { user } = await chargeThroughToInvoice(service, 3_100, 'usd');
      const report = await service.app.inject({
        url: '/reports/sales?limit=3',
        headers: { authorization: user.authorization },
      });
      expect((report.json() as { lines: unknown[] }).lines).toHaveLength(3);
    });
  },
);
