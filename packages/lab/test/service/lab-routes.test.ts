import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LabAlert } from '../../src/service/lab-routes.ts';
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

describe('the lab routes', () => {
  const scratch = scratchDirectory('lab-routes');
  let providers: Providers;
  let plain: Service;
  let lab: Service;
  let user: Awaited<ReturnType<typeof signIn>>;

  const faults = (body: unknown) =>
    lab.app.inject({ method: 'POST', url: '/lab/faults', payload: body as Record<string, unknown> });
  const invoicesOf = (paymentId: string) =>
    lab.db.reader('api').all<{ id: string }>('SELECT id FROM invoices WHERE payment_id = ?', [paymentId]);
  const paidOrder = async () => {
    const order = await createOrder(lab, user.authorization);
    const paid = await charge(lab, user.authorization, order.id, uniqueKey('lab'));
    expect(paid.statusCode).toBe(201);
    return paid.json() as { id: string };
  };
  const published = (paymentId: string) =>
    eventually(
      () =>
        lab.db
          .reader('api')
          .get<{ id: string }>(
            'SELECT id FROM keel_outbox WHERE aggregate_id = ? AND published_at IS NOT NULL',
            [paymentId],
          ),
      (row) => row !== undefined,
    );

  beforeAll(async () => {
    providers = await startProviders(scratch.path);
    plain = await startService(scratch.path, providers);
    lab = await startService(scratch.path, providers, {
      lab: true,
      invariantIntervalMs: 3_600_000,
      invoiceGraceMs: 0,
    });
    user = await signIn(lab);
  }, 60_000);

  afterAll(async () => {
    await Promise.allSettled([plain?.stop(), lab?.stop()]);
    await providers?.stop();
    scratch.remove();
  });

  it('answers 404 without --lab, as the providers’ fault API does', async () => {
    for (const [method, url] of [
      ['POST', '/lab/faults'],
      ['GET', '/lab/faults'],
      ['GET', '/lab/alerts'],
    ] as const) {
      const response = await plain.app.inject(
        method === 'POST' ? { method, url, payload: {} } : { method, url },
      );
      expect(response.statusCode).toBe(404);
      expect(response.headers['content-type']).toContain('application/problem+json');
    }
  });

  it('starts with no fault and the consumer running', async () => {
    const response = await lab.app.inject({ url: '/lab/faults' });
    expect(response.statusCode).toBe(200);
    expect(response.json()).toEqual({
      consumer: 'running',
      dropShare: 0,
      redeliverShare: 0,
      types: [],
      dropped: 0,
      redelivered: 0,
    });
  });

  it('drops published events silently: the charge answers 201, the outbox says published, no invoice comes', async () => {
    const set = await faults({ dropShare: 1, types: ['payment.completed'], seed: 3 });
    expect(set.statusCode).toBe(200);
    expect(set.json()).toMatchObject({ consumer: 'running', dropShare: 1, types: ['payment.completed'] });
    const payment = await paidOrder();
    expect(await published(payment.id)).toBeDefined();
    await faults({});
    // A later payment goes through, so the consumer was running all along and the first was lost.
    const later = await paidOrder();
    expect(
      await eventually(
        () => invoicesOf(later.id),
        (rows) => rows.length === 1,
      ),
    ).toHaveLength(1);
    expect(await invoicesOf(payment.id)).toEqual([]);
    expect((await lab.app.inject({ url: '/lab/faults' })).json()).toMatchObject({ dropped: 1, dropShare: 0 });
  });

  it('stops the invoice consumer and starts it again; the events it missed arrive when it is back', async () => {
    const stopped = await faults({ consumer: 'stopped' });
    expect(stopped.json()).toMatchObject({ consumer: 'stopped' });
    const payment = await paidOrder();
    await sleep(300);
    expect(await invoicesOf(payment.id)).toEqual([]);
    expect((await faults({ consumer: 'running' })).json()).toMatchObject({ consumer: 'running' });
    expect(
      await eventually(
        () => invoicesOf(payment.id),
        (rows) => rows.length === 1,
      ),
    ).toHaveLength(1);
  });

  it('redelivers events to the consumer, and the inbox keeps one invoice per payment', async () => {
    const before = (await faults({ redeliverShare: 1, types: ['payment.completed'] })).json() as {
      redelivered: number;
    };
    const payment = await paidOrder();
    // The transport confirms an event once its consumers settled it, and the fault holds the first
    // delivery's acknowledgement back: the event is marked published only once the second delivery
    // has been handled too. (A count of redeliveries alone could be reached by other events first.)
    await published(payment.id);
    await faults({});
    const after = (await lab.app.inject({ url: '/lab/faults' })).json() as { redelivered: number };
    expect(after.redelivered).toBeGreaterThan(before.redelivered);
    expect(await invoicesOf(payment.id)).toHaveLength(1);
  });

  it('lists the alerts the service sent, with the time they went out and the command to run', async () => {
    await faults({ dropShare: 1, types: ['payment.completed'] });
    const payment = await paidOrder();
    await published(payment.id);
    await faults({});
    const before = Date.now();
    await lab.invariants?.evaluateOnce();
    const response = await lab.app.inject({ url: '/lab/alerts' });
    expect(response.statusCode).toBe(200);
    const { alerts } = response.json() as { alerts: LabAlert[] };
    const missing = alerts.find((alert) => alert.name === 'payments_without_invoice');
    expect(missing).toMatchObject({ status: 'firing', severity: 'warning', total: 2 });
    expect(missing?.ids).toContain(payment.id);
    expect(missing?.sentAtMs).toBeGreaterThanOrEqual(before);
    expect(Date.parse(missing?.sentAt ?? '')).toBe(missing?.sentAtMs);
    expect(missing?.next).toContain(`\`keel replay --db ${scratch.path}/`);
    expect(missing?.next).toContain('--missing-invoices`');
    expect(missing?.text).toContain(payment.id);
  });

  it('refuses a fault it cannot apply with a 400 problem naming the field', async () => {
    for (const body of [
      { dropShare: 2 },
      { redeliverShare: -0.1 },
      { consumer: 'paused' },
      { types: [''] },
      { dropshare: 0.1 },
      { seed: 1.5 },
    ]) {
      const response = await faults(body);
      expect(response.statusCode, JSON.stringify(body)).toBe(400);
      expect(response.headers['content-type']).toContain('application/problem+json');
      expect(response.json()).toMatchObject({ status: 400, title: 'The request is not valid' });
    }
    const notJson = await lab.app.inject({
      method: 'POST',
      url: '/lab/faults',
      headers: { 'content-type': 'application/json' },
      payload: '{"dropShare":',
    });
    expect(notJson.statusCode).toBe(400);
    // Nothing was changed by the refused bodies.
    expect((await lab.app.inject({ url: '/lab/faults' })).json()).toMatchObject({
      consumer: 'running',
      dropShare: 0,
      redeliverShare: 0,
    });
  });
});
