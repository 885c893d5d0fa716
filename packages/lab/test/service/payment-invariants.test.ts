import { setTimeout as sleep } from 'node:timers/promises';
import type { AlertNotification } from 'keel/observe';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
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
const CHARGE_LEASE_MS = 300;
const COMPLETER_INTERVAL_MS = 200;
const CONSUMER_TICK_MS = 300;
/** Past every grace above: the invoice grace, and the reconciliation's lease + one sweep. */
const PAST_GRACE_MS = CHARGE_LEASE_MS + COMPLETER_INTERVAL_MS + 100;

describe('the payments invariants and heartbeats (guarded, sqlite)', () => {
  const scratch = scratchDirectory('payment-invariants');
  let providers: Providers;
  let service: Service;
  let user: Awaited<ReturnType<typeof signIn>>;

  /** A paid order, its payment and its invoice, all recorded. */
  const paidOrder = async () => {
    const order = await createOrder(service, user.authorization);
    const paid = await charge(service, user.authorization, order.id, uniqueKey('inv'));
    expect(paid.statusCode).toBe(201);
    const payment = paid.json() as { id: string };
    await eventually(
      () =>
        service.db
          .reader('api')
          .get<{ id: string }>('SELECT id FROM invoices WHERE payment_id = ?', [payment.id]),
      (row) => row !== undefined,
    );
    return { order, payment };
  };

  /** Runs one round and returns the firing notification of `name` sent in it. */
  const round = async (name: string): Promise<AlertNotification | undefined> => {
    const before = service.alerts.length;
    await service.invariants?.evaluateOnce();
    return service.alerts.slice(before).find((n) => n.name === name && n.status === 'firing');
  };

  const write = (sql: string, params: (string | number)[]) =>
    service.db.transaction('api', (tx) => tx.run(sql, params));

  beforeAll(async () => {
    providers = await startProviders(scratch.path);
    service = await startService(scratch.path, providers, {
      invariantIntervalMs: 3_600_000,
      invoiceGraceMs: INVOICE_GRACE_MS,
      chargeLeaseMs: CHARGE_LEASE_MS,
      completerIntervalMs: COMPLETER_INTERVAL_MS,
      consumerHeartbeatMs: CONSUMER_TICK_MS,
      abandonedLimit: 1,
      logAlerts: false,
    });
    user = await signIn(service);
  });

  afterAll(async () => {
    await service?.stop();
    await providers?.stop();
    scratch.remove();
  });

  it('stays quiet in a clean run: every check holds and no alert is sent', async () => {
    await paidOrder();
    await paidOrder();
    await sleep(PAST_GRACE_MS);
    const results = (await service.invariants?.evaluateOnce()) ?? [];
    expect(results.map((r) => [r.name, r.status])).toEqual([
      ['paid_orders_without_payment', 'ok'],
      ['payments_without_invoice', 'ok'],
      ['payment_events_consumed', 'ok'],
      ['abandoned_payments', 'ok'],
      ['provider_charges_without_payment', 'ok'],
      ['invoice_consumer', 'ok'],
      ['sales_report', 'ok'],
    ]);
    expect(service.alerts).toEqual([]);
    const metrics = await (await service.app.inject({ url: '/metrics' })).body;
    expect(metrics).toContain('keel_invariant_breached{invariant="payment_events_consumed"} 0');
    expect((await service.app.inject({ url: '/health/ready' })).statusCode).toBe(200);
  });

  it('names the payment whose invoice row is gone, with the four parts and the query', async () => {
    const { payment } = await paidOrder();
    await write('DELETE FROM invoices WHERE payment_id = ?', [payment.id]);
    await sleep(INVOICE_GRACE_MS);
    const alert = await round('payments_without_invoice');
    expect(alert?.evidence.ids).toContain(payment.id);
    expect(alert?.evidence.query).toContain('FROM payments p');
    expect(alert?.alert.next).toContain('keel backfill invoices');
    expect(alert?.alert).toMatchObject({
      what: expect.any(String),
      where: expect.any(String),
      impact: expect.any(String),
    });
  });

  it('names a paid order that has no payment row', async () => {
    const order = await createOrder(service, user.authorization);
    await write("UPDATE orders SET status = 'paid' WHERE id = ?", [order.id]);
    const alert = await round('paid_orders_without_payment');
    expect(alert?.evidence.ids).toEqual([order.id]);
    expect(alert?.alert.severity).toBe('critical');
  });

  it('keeps naming a breach in later rounds, which look only at recent rows, until it is repaired', async () => {
    const paidWithout = async () =>
      ((await service.invariants?.evaluateOnce()) ?? []).find(
        (r) => r.name === 'paid_orders_without_payment',
      );
    // Earlier tests left orders of their own in this state: repair them first.
    await write(
      "UPDATE orders SET status = 'pending' WHERE status = 'paid' AND id NOT IN (SELECT order_id FROM payments)",
      [],
    );
    expect((await paidWithout())?.status).toBe('ok');
    const order = await createOrder(service, user.authorization);
    await write("UPDATE orders SET status = 'paid' WHERE id = ?", [order.id]);
    for (let round = 0; round < 3; round++) {
      await paidOrder();
      const found = await paidWithout();
      expect(found?.status).toBe('breached');
      expect(found?.evidence?.ids).toEqual([order.id]);
    }
    await write("UPDATE orders SET status = 'pending' WHERE id = ?", [order.id]);
    expect((await paidWithout())?.status).toBe('ok');
  });

  it('names a charge a provider made that the service has no payment for', async () => {
    const reference = `ord_${uniqueKey('ghost')}`;
    const made = await fetch(`${providers.b.url}/charges`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'idempotency-key': uniqueKey('ghost') },
      body: JSON.stringify({ amount: 1_234, currency: 'eur', reference }),
    });
    expect(made.status).toBe(201);
    const { id } = (await made.json()) as { id: string };
    expect(await round('provider_charges_without_payment')).toBeUndefined();
    await sleep(PAST_GRACE_MS);
    const alert = await round('provider_charges_without_payment');
    expect(alert?.alert.what).toBe('Provider charges without a payment');
    expect(alert?.evidence.ids).toEqual([`${id} (order ${reference})`]);
    expect(alert?.alert.next).toMatch(/keel backfill payments/);
  });

  it('names the orders stuck in charging once there are more than the limit', async () => {
    const first = await createOrder(service, user.authorization);
    const second = await createOrder(service, user.authorization);
    const stale = Date.now() - 10 * CHARGE_LEASE_MS;
    await write("UPDATE orders SET status = 'charging', updated_at = ? WHERE id = ?", [stale, first.id]);
    expect(await round('abandoned_payments')).toBeUndefined();
    await write("UPDATE orders SET status = 'charging', updated_at = ? WHERE id = ?", [stale, second.id]);
    const alert = await round('abandoned_payments');
    expect([...(alert?.evidence.ids ?? [])].sort()).toEqual([first.id, second.id].sort());
  });

  it('raises the consumer heartbeat and the unconsumed events once the invoice consumer stops', async () => {
    await service.stopInvoiceConsumers();
    const order = await createOrder(service, user.authorization);
    const paid = await charge(service, user.authorization, order.id, uniqueKey('stopped'));
    expect(paid.statusCode).toBe(201);
    const payment = paid.json() as { id: string };
    // The event waits in the outbox: the in-process transport confirms only once a consumer settled it.
    const event = await service.db
      .reader('api')
      .get<{ id: string; published_at: number | null }>(
        'SELECT id, published_at FROM keel_outbox WHERE aggregate_id = ?',
        [payment.id],
      );
    expect(event?.published_at).toBeNull();
    await sleep(INVOICE_GRACE_MS + 3 * CONSUMER_TICK_MS);
    const before = service.alerts.length;
    await service.invariants?.evaluateOnce();
    const fired = service.alerts.slice(before).filter((n) => n.status === 'firing');
    const flow = fired.find((n) => n.name === 'payment_events_consumed');
    expect(flow?.evidence.ids).toContain(event?.id);
    expect(flow?.alert.next).toMatch(/`keel replay --db \S+ --missing-invoices`/);
    const heartbeat = fired.find((n) => n.name === 'invoice_consumer');
    expect(heartbeat?.evidence.ids).toContain('late');

    const ready = await service.app.inject({ url: '/health/ready' });
    expect(ready.statusCode).toBe(503);
    expect(ready.body).toContain('payment_events_consumed');
    const metrics = (await service.app.inject({ url: '/metrics' })).body;
    expect(metrics).toContain('keel_invariant_breached{invariant="payment_events_consumed"} 1');
    expect(metrics).toContain('keel_invariant_breached{invariant="invoice_consumer"} 1');
  });
});
