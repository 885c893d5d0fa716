import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Service } from '../../src/service/service-app.ts';
import {
  charge,
  createOrder,
  type Providers,
  scratchDirectory,
  signIn,
  startProviders,
  startService,
  uniqueKey,
} from './service-harness.ts';

async function chargesAt(
  url: string,
  reference: string,
): Promise<{ id: string; idempotency_key: string | null }[]> {
  const response = await fetch(`${url}/charges?reference=${encodeURIComponent(reference)}`);
  return ((await response.json()) as { data: { id: string; idempotency_key: string | null }[] }).data;
}

describe('guarded charges when a provider fails', () => {
  const scratch = scratchDirectory('provider-failover');
  let providers: Providers;
  let service: Service;
  let user: Awaited<ReturnType<typeof signIn>>;

  beforeAll(async () => {
    providers = await startProviders(scratch.path);
    service = await startService(scratch.path, providers);
    user = await signIn(service);
  });

  afterEach(async () => {
    await Promise.all([providers.a.faults.clear(), providers.b.faults.clear()]);
  });

  afterAll(async () => {
    await service?.stop();
    await providers?.stop();
    scratch.remove();
  });

  it('completes charges on provider B while A is down, and shows A’s breaker open in /metrics', async () => {
    await providers.a.faults.set({ outage: { untilMs: Date.now() + 120_000 } });
    const orders: string[] = [];
    for (let i = 0; i < 6; i++) {
      const order = await createOrder(service, user.authorization, { amount: 1_000 + i, currency: 'gbp' });
      const response = await charge(service, user.authorization, order.id, uniqueKey('failover'));
      expect(response.statusCode).toBe(201);
      expect(response.json()).toMatchObject({ provider: 'b', amount: 1_000 + i });
      orders.push(order.id);
    }
    for (const orderId of orders) {
      expect(await chargesAt(providers.a.url, orderId)).toHaveLength(0);
      expect(await chargesAt(providers.b.url, orderId)).toHaveLength(1);
    }
    const stats = await providers.a.stats();
    // The breaker opened after a few refusals: later charges went to B without calling A at all.
    expect(stats.outageRejections).toBeGreaterThan(0);
    expect(stats.outageRejections).toBeLessThan(orders.length);
    expect(service.routing?.breakers.get('a')?.state).toBe('open');

    const metrics = (await service.app.inject({ url: '/metrics' })).body;
    expect(metrics).toMatch(/^keel_breaker_state\{name="provider-a"\} 2$/m);
    expect(metrics).toMatch(/^keel_failovers_total\{name="providers"\} [1-9]/m);
    expect(metrics).toMatch(/^payments_charges_completed_total\{provider="b"\} 6$/m);
  });

  it('looks a charge up by its key after a lost response instead of charging again', async () => {
    // Provider A charges and then drops every response; the service cannot know what happened.
    await providers.b.faults.set({ outage: { untilMs: Date.now() + 120_000 } });
    service.routing?.breakers.get('a')?.reset();
    await providers.a.faults.set({ dropResponseRate: 1 });
    const order = await createOrder(service, user.authorization, { amount: 777, currency: 'chf' });
    const key = uniqueKey('lost');
    const lost = await charge(service, user.authorization, order.id, key);
    expect(lost.statusCode).toBe(503);
    expect(lost.json()).toMatchObject({ type: 'urn:payments:problem:providers-unavailable' });
    const charged = await chargesAt(providers.a.url, order.id);
    expect(charged).toHaveLength(1);
    const midway = await service.app.inject({
      url: `/orders/${order.id}`,
      headers: { authorization: user.authorization },
    });
    expect(midway.json()).toMatchObject({ status: 'charging' });
    expect(await chargesAt(providers.b.url, order.id)).toHaveLength(0);

    await providers.a.faults.clear();
    const retried = await charge(service, user.authorization, order.id, key);
    expect(retried.statusCode).toBe(201);
    expect(retried.json()).toMatchObject({ provider: 'a', providerChargeId: charged[0]?.id });
    expect(await chargesAt(providers.a.url, order.id)).toHaveLength(1);
  });
});
