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

const PROBLEM = 'application/problem+json';

describe('payments service routes', () => {
  const scratch = scratchDirectory('service-routes');
  let providers: Providers;
  let service: Service;
  let user: Awaited<ReturnType<typeof signIn>>;

  beforeAll(async () => {
    providers = await startProviders(scratch.path);
    service = await startService(scratch.path, providers);
    user = await signIn(service);
  });

  afterAll(async () => {
    await service?.stop();
    await providers?.stop();
    scratch.remove();
  });

  function count(table: 'users' | 'orders' | 'payments' | 'invoices' | 'keel_outbox'): number {
    const driver = service.db.driver;
    if (driver.dialect !== 'sqlite') throw new Error('these tests run on sqlite');
    return Number((driver.db.prepare(`SELECT count(*) AS n FROM ${table}`).get() as { n: number }).n);
  }

  function rowCounts() {
    return {
      users: count('users'),
      orders: count('orders'),
      payments: count('payments'),
      invoices: count('invoices'),
      outbox: count('keel_outbox'),
    };
  }

  function expectProblem(
    response: { statusCode: number; headers: Record<string, unknown>; json(): unknown },
    status: number,
    type: string,
  ) {
    expect(response.statusCode).toBe(status);
    expect(String(response.headers['content-type'])).toContain(PROBLEM);
    expect(response.json()).toMatchObject({ status, type });
  }

  it('signs up, logs in, and refuses a taken email, a malformed one and a wrong password', async () => {
    const email = `r${Date.now()}@example.com`;
    const created = await service.app.inject({
      method: 'POST',
      url: '/signup',
      payload: { email, password: 'long enough' },
    });
    expect(created.statusCode).toBe(201);
    expect(created.json()).toMatchObject({ email });
    const before = rowCounts();

    const again = await service.app.inject({
      method: 'POST',
      url: '/signup',
      payload: { email, password: 'long enough' },
    });
    expectProblem(again, 409, 'urn:payments:problem:email-taken');
    const malformed = await service.app.inject({
      method: 'POST',
      url: '/signup',
      payload: { email: 'nope', password: 'long enough' },
    });
    expectProblem(malformed, 400, 'urn:payments:problem:validation-failed');
    expect(rowCounts()).toEqual(before);

    const login = await service.app.inject({
      method: 'POST',
      url: '/login',
      payload: { email, password: 'long enough' },
    });
    expect(login.statusCode).toBe(200);
    expect(login.json()).toMatchObject({ token: expect.any(String) });
    const wrong = await service.app.inject({
      method: 'POST',
      url: '/login',
      payload: { email, password: 'not the one' },
    });
    expectProblem(wrong, 401, 'urn:payments:problem:invalid-credentials');
    const unknown = await service.app.inject({
      method: 'POST',
      url: '/login',
      payload: { email: 'nobody@example.com', password: 'not the one' },
    });
    expectProblem(unknown, 401, 'urn:payments:problem:invalid-credentials');
  });

  it('creates an order and reads it back', async () => {
    const created = await service.app.inject({
      method: 'POST',
      url: '/orders',
      headers: { authorization: user.authorization },
      payload: { amount: 1_999, currency: 'usd', description: 'two mugs' },
    });
    expect(created.statusCode).toBe(201);
    const order = created.json() as { id: string };
    expect(created.headers.location).toBe(`/orders/${order.id}`);
    const read = await service.app.inject({
      url: `/orders/${order.id}`,
      headers: { authorization: user.authorization },
    });
    expect(read.statusCode).toBe(200);
    expect(read.json()).toMatchObject({ id: order.id, amount: 1_999, currency: 'usd', status: 'pending' });
  });

  it.each([
    ['a negative amount', { amount: -5, currency: 'eur' }, 400, 'validation-failed'],
    ['a zero amount', { amount: 0, currency: 'eur' }, 400, 'validation-failed'],
    ['a non-integer amount', { amount: 12.5, currency: 'eur' }, 400, 'validation-failed'],
    ['an amount given as text', { amount: 'ten', currency: 'eur' }, 400, 'validation-failed'],
    ['a missing currency', { amount: 100 }, 400, 'validation-failed'],
    ['an unknown field', { amount: 100, currency: 'eur', discount: 5 }, 400, 'validation-failed'],
    ['an unsupported currency', { amount: 100, currency: 'xyz' }, 400, 'unsupported-currency'],
  ])('refuses an order with %s and writes nothing', async (_label, payload, status, type) => {
    const before = rowCounts();
    const response = await service.app.inject({
      method: 'POST',
      url: '/orders',
      headers: { authorization: user.authorization },
      payload,
    });
    expectProblem(response, status, `urn:payments:problem:${type}`);
    expect(rowCounts()).toEqual(before);
  });

  it('refuses malformed JSON and an oversized body as problems, writing nothing', async () => {
    const before = rowCounts();
    const malformed = await service.app.inject({
      method: 'POST',
      url: '/orders',
      headers: { authorization: user.authorization, 'content-type': 'application/json' },
      payload: '{"amount": 100, "currency": ',
    });
    expectProblem(malformed, 400, 'urn:payments:problem:malformed-body');
    const oversized = await service.app.inject({
      method: 'POST',
      url: '/orders',
      headers: { authorization: user.authorization, 'content-type': 'application/json' },
      payload: JSON.stringify({ amount: 100, currency: 'eur', description: 'x'.repeat(40_000) }),
    });
    expectProblem(oversized, 413, 'urn:payments:problem:body-too-large');
    expect(rowCounts()).toEqual(before);
  });

  it('refuses a missing, malformed, forged or foreign token', async () => {
    const before = rowCounts();
    const payload = { amount: 100, currency: 'eur' };
    const missing = await service.app.inject({ method: 'POST', url: '/orders', payload });
    expectProblem(missing, 401, 'urn:payments:problem:unauthorized');
    expect(missing.headers['www-authenticate']).toBe('Bearer');
    const malformed = await service.app.inject({
      method: 'POST',
      url: '/orders',
      headers: { authorization: 'Bearer nonsense' },
      payload,
    });
    expectProblem(malformed, 401, 'urn:payments:problem:unauthorized');
    const forged = user.authorization.slice(0, -2) + (user.authorization.endsWith('AA') ? 'BB' : 'AA');
    const forgedAnswer = await service.app.inject({
      method: 'POST',
      url: '/orders',
      headers: { authorization: forged },
      payload,
    });
    expectProblem(forgedAnswer, 401, 'urn:payments:problem:unauthorized');
    expect(rowCounts()).toEqual(before);

    const order = await createOrder(service, user.authorization);
    const stranger = await signIn(service);
    const foreign = await service.app.inject({
      url: `/orders/${order.id}`,
      headers: { authorization: stranger.authorization },
    });
    expectProblem(foreign, 404, 'urn:payments:problem:order-not-found');
  });

  it('answers 404 for an unknown order, payment, invoice list and route', async () => {
    const headers = { authorization: user.authorization };
    expectProblem(
      await service.app.inject({ url: '/orders/ord_missing', headers }),
      404,
      'urn:payments:problem:order-not-found',
    );
    expectProblem(
      await service.app.inject({ url: '/payments/pay_missing', headers }),
      404,
      'urn:payments:problem:payment-not-found',
    );
    expectProblem(
      await service.app.inject({ url: '/orders/ord_missing/invoices', headers }),
      404,
      'urn:payments:problem:order-not-found',
    );
    expectProblem(await service.app.inject({ url: '/nowhere' }), 404, 'urn:payments:problem:route-not-found');
  });

  it('refuses to charge an unknown order, an order without a key, and a paid order, charging nothing', async () => {
    const before = rowCounts();
    const unknown = await charge(service, user.authorization, 'ord_missing', uniqueKey('unknown'));
    expectProblem(unknown, 404, 'urn:payments:problem:order-not-found');
    const order = await createOrder(service, user.authorization);
    const keyless = await charge(service, user.authorization, order.id);
    expectProblem(keyless, 400, 'urn:keel:problem:idempotency-key-missing');
    expect(rowCounts().payments).toBe(before.payments);

    const paid = await charge(service, user.authorization, order.id, uniqueKey('pay'));
    expect(paid.statusCode).toBe(201);
    const afterPaid = rowCounts();
    const again = await charge(service, user.authorization, order.id, uniqueKey('again'));
    expectProblem(again, 409, 'urn:payments:problem:order-already-paid');
    expect(rowCounts().payments).toBe(afterPaid.payments);
    const atProvider = (await (await fetch(`${providers.a.url}/charges?reference=${order.id}`)).json()) as {
      data: unknown[];
    };
    expect(atProvider.data).toHaveLength(1);
  });

  it('runs the sales report over the seeded table and validates its query', async () => {
    const headers = { authorization: user.authorization };
    const report = await service.app.inject({
      url: '/reports/sales?from=2024-01-01&to=2025-12-31&limit=5',
      headers,
    });
    expect(report.statusCode).toBe(200);
    const body = report.json() as { lines: { revenue: number }[] };
    expect(body.lines.length).toBeGreaterThan(0);
    expect(body.lines.length).toBeLessThanOrEqual(5);
    const revenues = body.lines.map((line) => line.revenue);
    expect(revenues).toEqual([...revenues].sort((a, b) => b - a));
    expectProblem(
      await service.app.inject({ url: '/reports/sales?limit=0', headers }),
      400,
      'urn:payments:problem:validation-failed',
    );
    expectProblem(
      await service.app.inject({ url: '/reports/sales' }),
      401,
      'urn:payments:problem:unauthorized',
    );
  });

  it('serves health and metrics', async () => {
    expect((await service.app.inject({ url: '/health/live' })).statusCode).toBe(200);
    expect((await service.app.inject({ url: '/health/ready' })).statusCode).toBe(200);
    const metrics = await service.app.inject({ url: '/metrics' });
    expect(metrics.statusCode).toBe(200);
    expect(metrics.body).toMatch(/^payments_orders_created_total \d+/m);
    expect(metrics.body).toContain('payments_charges_completed_total{provider="b"} 0');
    expect(metrics.body).toContain('keel_idempotency_requests_total');
  });
});
