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

interface Listed {
  data: { id: string; idempotency_key: string | null }[];
}

describe('the completer sweep (guarded, sqlite)', () => {
  const scratch = scratchDirectory('abandoned-charges');
  let providers: Providers;
  let service: Service;

  const orderStatus = async (orderId: string) =>
    (
      await service.db
        .reader('api')
        .get<{ status: string }>('SELECT status FROM orders WHERE id = ?', [orderId])
    )?.status;
  const paymentsOf = (orderId: string) =>
    service.db
      .reader('api')
      .all<{ id: string; provider_charge_id: string }>(
        'SELECT id, provider_charge_id FROM payments WHERE order_id = ?',
        [orderId],
      );
  const chargesAt = async (url: string, orderId: string) =>
    ((await (await fetch(`${url}/charges?reference=${orderId}`)).json()) as Listed).data;

  beforeAll(async () => {
    providers = await startProviders(scratch.path);
    // The sweep runs only when the test asks, so each step is observed.
    service = await startService(scratch.path, providers, {
      completerIntervalMs: 3_600_000,
      invariantIntervalMs: 3_600_000,
      logAlerts: false,
    });
  });

  afterAll(async () => {
    await service?.stop();
    await providers?.stop();
    scratch.remove();
  });

  it('finishes a charge the provider made but whose response was lost, exactly once', async () => {
    const user = await signIn(service);
    const order = await createOrder(service, user.authorization, { amount: 3_100, currency: 'eur' });
    const key = uniqueKey('lost');
    await providers.a.faults.set({ dropResponseRate: 1 });
    const lost = await charge(service, user.authorization, order.id, key);
    await providers.a.faults.clear();
    expect(lost.statusCode).toBeGreaterThanOrEqual(500);
    // Abandoned mid-way: the provider charged under the derived key, the service has no payment.
    expect(await orderStatus(order.id)).toBe('charging');
    expect(await paymentsOf(order.id)).toEqual([]);
    const atProvider = await chargesAt(providers.a.url, order.id);
    expect(atProvider).toHaveLength(1);
    expect(await chargesAt(providers.b.url, order.id)).toEqual([]);

    const report = await service.sweepAbandoned();
    expect(report).toEqual({ found: 1, completed: 1, released: 0, failed: 0, skipped: 0 });
    expect(await orderStatus(order.id)).toBe('paid');
    const payments = await paymentsOf(order.id);
    expect(payments.map((p) => p.provider_charge_id)).toEqual([atProvider[0]?.id]);

    // Nothing left: a second sweep finds nothing, and the client's retry replays the stored answer.
    expect(await service.sweepAbandoned()).toEqual({
      found: 0,
      completed: 0,
      released: 0,
      failed: 0,
      skipped: 0,
    });
    const retry = await charge(service, user.authorization, order.id, key);
    expect(retry.statusCode).toBe(201);
    expect(retry.headers['idempotent-replayed']).toBe('true');
    expect(retry.json()).toMatchObject({ id: payments[0]?.id, orderId: order.id, provider: 'a' });
    expect(await chargesAt(providers.a.url, order.id)).toHaveLength(1);
    expect(await paymentsOf(order.id)).toHaveLength(1);

    const invoices = await eventually(
      () => service.db.reader('api').all('SELECT id FROM invoices WHERE order_id = ?', [order.id]),
      (rows) => rows.length > 0,
    );
    expect(invoices).toHaveLength(1);
    const metrics = (await service.app.inject({ url: '/metrics' })).body;
    expect(metrics).toMatch(/payments_sweep_abandoned_total 1\b/);
    expect(metrics).toMatch(/payments_sweep_finished_total\{outcome="completed"\} 1\b/);
  });

  it('puts an order charged nowhere back to pending and releases its key for a fresh retry', async () => {
    const user = await signIn(service);
    const order = await createOrder(service, user.authorization, { amount: 900, currency: 'eur' });
    const key = uniqueKey('refused');
    // Both providers refuse: the attempt is committed, the charge phase left pending, nothing charged.
    const down = { errorRate: 1, errorStatuses: [503 as const], retryAfterSeconds: 0 };
    await Promise.all([providers.a.faults.set(down), providers.b.faults.set(down)]);
    const refused = await charge(service, user.authorization, order.id, key);
    await Promise.all([providers.a.faults.clear(), providers.b.faults.clear()]);
    expect(refused.statusCode).toBe(503);
    expect(await orderStatus(order.id)).toBe('charging');

    const report = await service.sweepAbandoned();
    expect(report).toMatchObject({ found: 1, completed: 0, released: 1 });
    expect(await orderStatus(order.id)).toBe('pending');
    expect(await chargesAt(providers.a.url, order.id)).toEqual([]);
    expect(await chargesAt(providers.b.url, order.id)).toEqual([]);

    const retry = await charge(service, user.authorization, order.id, key);
    expect(retry.statusCode).toBe(201);
    expect(retry.headers['idempotent-replayed']).toBeUndefined();
    expect(await orderStatus(order.id)).toBe('paid');
    const charged = [
      ...(await chargesAt(providers.a.url, order.id)),
      ...(await chargesAt(providers.b.url, order.id)),
    ];
    expect(charged).toHaveLength(1);
  });
});
