import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import Fastify from 'fastify';
import { Hono } from 'hono';
import { circuitBreaker, FakeClock } from 'keel';
import { expressHealth } from 'keel/express';
import { fastifyHealth } from 'keel/fastify';
import { honoHealth } from 'keel/hono';
import { defineAlert, healthChecks, invariants, threshold } from 'keel/observe';
import { Counter, Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';

function alertOf(severity: 'critical' | 'warning') {
  return defineAlert({
    what: `A ${severity} invariant`,
    where: 'logs: component="checkout"',
    impact: 'Checkout is affected',
    next: 'keel replay --type payment.completed --since 1h',
    severity,
    group: 'checkout',
  });
}

function setup() {
  const clock = new FakeClock();
  const provider = circuitBreaker({ name: 'payment-provider', clock });
  const values = { critical: 0, warning: 0 };
  const evaluator = invariants({
    checks: [
      threshold({
        name: 'paid_orders_unpaid',
        read: () => values.critical,
        above: 0,
        alert: alertOf('critical'),
      }),
      threshold({ name: 'slow_invoices', read: () => values.warning, above: 0, alert: alertOf('warning') }),
    ],
    clock,
  });
  const registry = new Registry();
  new Counter({ name: 'shop_orders_created_total', help: 'Orders created', registers: [registry] }).inc(3);
  const health = healthChecks({ critical: { 'payment-provider': provider }, invariants: evaluator });
  return { provider, values, evaluator, health, registry };
}

describe('healthChecks()', () => {
  it('is ready while breakers are closed and only non-critical invariants fail', async () => {
    const { values, evaluator, health } = setup();
    values.warning = 5;
    await evaluator.evaluateOnce();
    const ready = await health.ready();
    expect(ready.status).toBe(200);
    expect(ready.body).toEqual({
      status: 'ok',
      checks: [{ name: 'payment-provider', kind: 'breaker', ready: true, detail: 'breaker closed' }],
    });
    expect(health.live().status).toBe(200);
  });

  it('answers 503 with a problem naming the open breaker and the failing critical invariant', async () => {
    const { provider, values, evaluator, health } = setup();
    const hold = provider.isolate();
    values.critical = 2;
    await evaluator.evaluateOnce();
    const ready = await health.ready();
    expect(ready.status).toBe(503);
    expect(ready.contentType).toBe('application/problem+json');
    expect(ready.body).toMatchObject({
      type: 'urn:keel:problem:not-ready',
      title: 'Service not ready',
      status: 503,
      detail:
        'breaker payment-provider: breaker isolated; invariant paid_orders_unpaid: critical invariant failing',
    });
    expect(health.live().status).toBe(200);
    hold.dispose();
    values.critical = 0;
    await evaluator.evaluateOnce();
    expect((await health.ready()).status).toBe(200);
  });

  it('counts a throwing extra check as not ready', async () => {
    const health = healthChecks({
      checks: { migrations: () => true, cache: async () => Promise.reject(new Error('redis timeout')) },
    });
    const ready = await health.ready();
    expect(ready.status).toBe(503);
    expect(ready.body).toMatchObject({ detail: 'check cache: threw: redis timeout' });
  });

  it('refuses a critical dependency without a state', () => {
    expect(() => healthChecks({ critical: { db: {} as { state: string } } })).toThrow(/critical\.db/);
  });
});

describe('framework helpers', () => {
  it('serves live, ready and metrics on Fastify', async () => {
    const { provider, health, registry } = setup();
    const app = Fastify();
    fastifyHealth(app, health, { metrics: registry });
    expect((await app.inject({ url: '/health/live' })).json()).toEqual({ status: 'ok', checks: [] });
    expect((await app.inject({ url: '/health/ready' })).statusCode).toBe(200);
    const hold = provider.isolate();
    const notReady = await app.inject({ url: '/health/ready' });
    expect(notReady.statusCode).toBe(503);
    expect(notReady.headers['content-type']).toContain('application/problem+json');
    expect(notReady.json()).toMatchObject({ type: 'urn:keel:problem:not-ready' });
    hold.dispose();
    const metrics = await app.inject({ url: '/metrics' });
    expect(metrics.headers['content-type']).toBe(registry.contentType);
    expect(metrics.body).toContain('shop_orders_created_total 3');
    await app.close();
  });

  it('serves live, ready and metrics on Express over a real port', async () => {
    const { provider, health, registry } = setup();
    const app = express();
    expressHealth(app, health, { metrics: registry, paths: { ready: '/ready' } });
    const server: Server = app.listen(0, '127.0.0.1');
    await new Promise<void>((resolve) => server.once('listening', resolve));
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    try {
      expect((await fetch(`${base}/health/live`)).status).toBe(200);
      expect((await fetch(`${base}/ready`)).status).toBe(200);
      const hold = provider.isolate();
      const notReady = await fetch(`${base}/ready`);
      expect(notReady.status).toBe(503);
      expect(notReady.headers.get('content-type')).toContain('application/problem+json');
      expect(await notReady.json()).toMatchObject({ detail: 'breaker payment-provider: breaker isolated' });
      hold.dispose();
      expect(await (await fetch(`${base}/metrics`)).text()).toContain('shop_orders_created_total 3');
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });

  it('serves live, ready and metrics on Hono', async () => {
    const { values, evaluator, health, registry } = setup();
    const app = new Hono();
    honoHealth(app, health, { metrics: registry });
    expect((await app.request('/health/live')).status).toBe(200);
    values.critical = 1;
    await evaluator.evaluateOnce();
    const notReady = await app.request('/health/ready');
    expect(notReady.status).toBe(503);
    expect(await notReady.json()).toMatchObject({
      detail: 'invariant paid_orders_unpaid: critical invariant failing',
    });
    expect(await (await app.request('/metrics')).text()).toContain('shop_orders_created_total 3');
  });
});
