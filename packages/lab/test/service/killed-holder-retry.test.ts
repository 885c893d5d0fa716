import { idempotency } from 'keel/idempotency';
import { sqliteStore } from 'keel/sqlite';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CHARGE_PHASE } from '../../src/service/guarded-charge.ts';
import { moveOrder } from '../../src/service/payment-records.ts';
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

interface Listed {
  data: { id: string }[];
}

/**
 * The lab's `partial` run kills an instance in the middle of charges. Its clients' retries reach the
 * other instance while the dead one's lease on their key still runs; they must get the charge the
 * dead instance made, never a 409 they would have to retry past the lease.
 */
describe('a retry whose key a killed instance still holds (guarded, sqlite)', () => {
  const scratch = scratchDirectory('killed-holder');
  const leaseMs = 600;
  let providers: Providers;
  let service: Service;

  beforeAll(async () => {
    providers = await startProviders(scratch.path);
    service = await startService(scratch.path, providers, {
      chargeLeaseMs: leaseMs,
      requestTimeoutMs: 3_000,
      // The sweep stays out of the way: the retry itself must cope with the dead holder.
      completerIntervalMs: 60_000,
    });
  });

  afterAll(async () => {
    await service?.stop();
    await providers?.stop();
    scratch.remove();
  });

  /** What the killed instance did before SIGKILL: it took the key, committed `attempt`, charged. */
  async function killedMidCharge(userId: string, order: { id: string; amount: number }, key: string) {
    const driver = service.db.driver;
    if (driver.dialect !== 'sqlite') throw new Error('this test runs on sqlite');
    const dead = idempotency({ store: sqliteStore({ db: driver.db }), leaseMs });
    const decision = await dead.begin({
      key,
      principal: userId,
      method: 'POST',
      route: `/orders/${order.id}/charge`,
      parts: { params: { id: order.id } },
    });
    if (decision.kind !== 'execute') throw new Error(`the dead instance got ${decision.kind}`);
    const lease = decision.lease;
    await service.db.transaction('api', async (tx) => {
      await moveOrder(tx, order.id, ['pending'], 'charging');
      await lease.checkpoint(
        'attempt',
        { orderId: order.id, amount: order.amount, currency: 'eur' },
        { tx: tx.handle },
      );
    });
    await lease.checkpoint(`${CHARGE_PHASE}#pending`, { key: lease.derivedKey(CHARGE_PHASE) });
    const routing = service.routing;
    if (routing === undefined) throw new Error('guarded mode has provider routing');
    // The provider charged; its answer died with the instance, which never writes again.
    return routing.charge(
      { amount: order.amount, currency: 'eur', reference: order.id },
      lease.derivedKey(CHARGE_PHASE),
    );
  }

  it('gets the charge the dead instance made, then replays it', async () => {
    const user = await signIn(service);
    const order = await createOrder(service, user.authorization, { amount: 4_200, currency: 'eur' });
    const key = uniqueKey('killed');
    const made = await killedMidCharge(user.userId, order, key);

    const retry = await charge(service, user.authorization, order.id, key);
    expect(retry.json()).toMatchObject({ orderId: order.id, providerChargeId: made.id });
    expect(retry.statusCode).toBe(201);

    const again = await charge(service, user.authorization, order.id, key);
    expect(again.statusCode).toBe(201);
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(again.body).toBe(retry.body);

    const atA = (await (await fetch(`${providers.a.url}/charges?reference=${order.id}`)).json()) as Listed;
    expect(atA.data.map((c) => c.id)).toEqual([made.id]);
  });

  it('refuses the held key with another payload at once, with a 422', async () => {
    const user = await signIn(service);
    const order = await createOrder(service, user.authorization);
    const key = uniqueKey('killed-other');
    await killedMidCharge(user.userId, order, key);
    const response = await service.app.inject({
      method: 'POST',
      url: `/orders/${order.id}/charge`,
      headers: { authorization: user.authorization, 'idempotency-key': key },
      payload: { amount: 1 },
    });
    expect(response.statusCode).toBe(422);
  });
});
