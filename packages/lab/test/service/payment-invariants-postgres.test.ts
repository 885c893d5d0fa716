import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeWithService } from '../../../keel/test/support/services.ts';
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

const INVOICE_GRACE_MS = 150;

describeWithService('DATABASE_URL', 'the payments invariants on PostgreSQL', (databaseUrl) => {
  const scratch = scratchDirectory('payment-invariants-pg');
  const database = `lab_invariants_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
  let admin: pg.Client;
  let providers: Providers;
  let service: Service;

  const firing = async () => {
    const before = service.alerts.length;
    const results = (await service.invariants?.evaluateOnce()) ?? [];
    const fired = service.alerts.slice(before).filter((n) => n.status === 'firing');
    return { results, fired };
  };

  beforeAll(async () => {
    admin = new pg.Client({ connectionString: databaseUrl });
    await admin.connect();
    await admin.query(`CREATE DATABASE ${database}`);
    const url = new URL(databaseUrl);
    url.pathname = `/${database}`;
    providers = await startProviders(scratch.path);
    service = await startService(scratch.path, providers, {
      db: url.toString(),
      invariantIntervalMs: 3_600_000,
      invoiceGraceMs: INVOICE_GRACE_MS,
      chargeLeaseMs: 200,
      completerIntervalMs: 100,
      abandonedLimit: 0,
      logAlerts: false,
    });
  });

  afterAll(async () => {
    await service?.stop();
    await providers?.stop();
    await admin?.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`);
    await admin?.end();
    scratch.remove();
  });

  it('holds in a clean run, then names the broken rows from the Postgres queries', async () => {
    const user = await signIn(service);
    const order = await createOrder(service, user.authorization);
    const paid = await charge(service, user.authorization, order.id, uniqueKey('pg'));
    expect(paid.statusCode).toBe(201);
    const payment = paid.json() as { id: string };
    await eventually(
      () => service.db.reader('api').get('SELECT id FROM invoices WHERE payment_id = ?', [payment.id]),
      (row) => row !== undefined,
    );
    await sleep(400);
    const clean = await firing();
    expect(clean.results.filter((r) => r.status !== 'ok')).toEqual([]);
    expect(clean.fired).toEqual([]);

    const unpaid = await createOrder(service, user.authorization);
    const stuck = await createOrder(service, user.authorization);
    await service.db.transaction('api', async (tx) => {
      await tx.run('DELETE FROM invoices WHERE payment_id = ?', [payment.id]);
      await tx.run("UPDATE orders SET status = 'paid' WHERE id = ?", [unpaid.id]);
      await tx.run("UPDATE orders SET status = 'charging', updated_at = ? WHERE id = ?", [
        Date.now() - 60_000,
        stuck.id,
      ]);
    });
    await sleep(INVOICE_GRACE_MS);
    const broken = await firing();
    const ids = (name: string) => broken.fired.find((n) => n.name === name)?.evidence.ids;
    expect(ids('payments_without_invoice')).toEqual([payment.id]);
    expect(ids('paid_orders_without_payment')).toEqual([unpaid.id]);
    expect(ids('abandoned_payments')).toEqual([stuck.id]);
  });

  it('matches the payment events to the inbox by id once the consumer stops', async () => {
    await service.stopInvoiceConsumers();
    const user = await signIn(service);
    const order = await createOrder(service, user.authorization);
    const paid = await charge(service, user.authorization, order.id, uniqueKey('pg-stopped'));
    const payment = paid.json() as { id: string };
    // The event waits in the outbox: the in-process transport confirms only once a consumer settled it.
    const event = await service.db
      .reader('api')
      .get<{ id: string; published_at: number | null }>(
        'SELECT id, published_at FROM keel_outbox WHERE aggregate_id = ?',
        [payment.id],
      );
    expect(event?.published_at).toBeNull();
    await sleep(INVOICE_GRACE_MS + 50);
    const { fired } = await firing();
    expect(fired.find((n) => n.name === 'payment_events_consumed')?.evidence.ids).toContain(event?.id);
  });
});
