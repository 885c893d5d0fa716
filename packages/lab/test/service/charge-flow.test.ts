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

describe('a guarded charge on sqlite and in-process events', () => {
  const scratch = scratchDirectory('charge-flow');
  let providers: Providers;
  let service: Service;

  beforeAll(async () => {
    providers = await startProviders(scratch.path);
    service = await startService(scratch.path, providers);
  });

  afterAll(async () => {
    await service?.stop();
    await providers?.stop();
    scratch.remove();
  });

  it('charges an order once, records the payment, writes the invoice and mails it', async () => {
    const user = await signIn(service);
    const order = await createOrder(service, user.authorization, { amount: 4_200, currency: 'EUR' });
    const key = uniqueKey('flow');
    const first = await charge(service, user.authorization, order.id, key);
    expect(first.statusCode).toBe(201);
    const payment = first.json() as { id: string; orderId: string; provider: string; amount: number };
    expect(payment).toMatchObject({ orderId: order.id, provider: 'a', amount: 4_200, currency: 'eur' });

    const replay = await charge(service, user.authorization, order.id, key);
    expect(replay.statusCode).toBe(201);
    expect(replay.headers['idempotent-replayed']).toBe('true');
    expect(replay.json()).toEqual(payment);

    const read = await service.app.inject({
      url: `/orders/${order.id}`,
      headers: { authorization: user.authorization },
    });
    expect(read.json()).toMatchObject({ id: order.id, status: 'paid' });
    const readPayment = await service.app.inject({
      url: `/payments/${payment.id}`,
      headers: { authorization: user.authorization },
    });
    expect(readPayment.json()).toEqual(payment);

    const invoices = await eventually(
      async () =>
        (
          await service.app.inject({
            url: `/orders/${order.id}/invoices`,
            headers: { authorization: user.authorization },
          })
        ).json() as { data: { paymentId: string; email: string }[] },
      (body) => body.data.length > 0,
    );
    expect(invoices.data).toEqual([expect.objectContaining({ paymentId: payment.id, email: user.email })]);
    const mailed = await eventually(
      () => service.mail.sent().filter((m) => m.to === user.email),
      (sent) => sent.length > 0,
    );
    expect(mailed).toHaveLength(1);

    const atProvider = (await (await fetch(`${providers.a.url}/charges?reference=${order.id}`)).json()) as {
      data: unknown[];
    };
    expect(atProvider.data).toHaveLength(1);
    expect(
      await eventually(
        () => service.outbox.unpublished(),
        (n) => n === 0,
      ),
    ).toBe(0);
  });
});
