import { afterAll, beforeAll, describe, expect, it } from 'vitest';
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

/**
 * A guarded instance runs a bounded number of charges at once; the others wait their turn, and one
 * that waits too long is refused with a 503 before it writes anything, so its client's retry with
 * the same key starts afresh.
 */
describe('guarded charges beyond the instance limit', () => {
  const scratch = scratchDirectory('charge-admission');
  let providers: Providers;
  let service: Service;
  let user: Awaited<ReturnType<typeof signIn>>;

  beforeAll(async () => {
    providers = await startProviders(scratch.path);
    service = await startService(scratch.path, providers, {
      maxConcurrentCharges: 1,
      requestTimeoutMs: 8_000,
      providerTimeoutMs: 4_000,
    });
    user = await signIn(service);
  });

  afterAll(async () => {
    await service?.stop();
    await providers?.stop();
    scratch.remove();
  });

  it('refuses the charge that waited past its turn with a 503, writes nothing, and charges it on retry', async () => {
    // Provider A answers every charge after 1.8 s: the one running charge holds the only turn.
    await providers.a.faults.set({ latency: { p50Ms: 1_800, p99Ms: 1_800 } });
    const first = await createOrder(service, user.authorization);
    const second = await createOrder(service, user.authorization);
    const secondKey = uniqueKey('admission');
    const [running, refused] = await Promise.all([
      charge(service, user.authorization, first.id, uniqueKey('admission')),
      new Promise((resolve) => setTimeout(resolve, 100)).then(() =>
        charge(service, user.authorization, second.id, secondKey),
      ),
    ]);
    expect(running.statusCode).toBe(201);
    expect(refused.statusCode).toBe(503);
    expect(refused.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(refused.headers['retry-after']).toBeDefined();

    // Nothing was written for the refused charge: its order is still pending, no provider saw it.
    const order = await service.app.inject({
      url: `/orders/${second.id}`,
      headers: { authorization: user.authorization },
    });
    expect((order.json() as { status: string }).status).toBe('pending');
    for (const provider of [providers.a, providers.b]) {
      const listed = await fetch(`${provider.url}/charges?reference=${encodeURIComponent(second.id)}`);
      expect(((await listed.json()) as { data: unknown[] }).data).toEqual([]);
    }

    // The refusal released the key: the client's retry with it runs the charge.
    await providers.a.faults.clear();
    const retried = await charge(service, user.authorization, second.id, secondKey);
    expect(retried.statusCode).toBe(201);
    expect(retried.headers['idempotent-replayed']).toBeUndefined();
  }, 30_000);
});
