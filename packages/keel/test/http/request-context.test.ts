import { serve } from '@hono/node-server';
import express from 'express';
import Fastify from 'fastify';
import { Hono } from 'hono';
import { expressContext } from 'keel/express';
import { fastifyContext } from 'keel/fastify';
import { honoContext } from 'keel/hono';
import { bindEntity, currentContext } from 'keel/observe';
import { afterAll, describe, expect, it } from 'vitest';

/** What a handler saw after an await: the context must still be its own request's. */
async function seen(orderId: string) {
  bindEntity({ orderId });
  await new Promise((resolve) => setTimeout(resolve, Math.random() * 20));
  const context = currentContext();
  return {
    requestId: context?.requestId,
    correlationId: context?.correlationId,
    idempotencyKey: context?.idempotencyKey,
    orderId: context?.entities.orderId,
  };
}

const closers: Array<() => Promise<void>> = [];
afterAll(async () => {
  for (const close of closers) await close();
});

async function startFastify(): Promise<string> {
  const app = Fastify();
  app.addHook('onRequest', fastifyContext());
  app.get('/orders/:id', async (request) => seen((request.params as { id: string }).id));
  await app.listen({ port: 0, host: '127.0.0.1' });
  closers.push(() => app.close());
  const address = app.server.address();
  return `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`;
}

async function startExpress(): Promise<string> {
  const app = express();
  app.use(expressContext());
  app.get('/orders/:id', async (req, res) => void res.json(await seen(req.params.id)));
  const server = app.listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  closers.push(() => new Promise((resolve) => server.close(() => resolve())));
  const address = server.address();
  return `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`;
}

async function startHono(): Promise<string> {
  const app = new Hono();
  app.use(honoContext());
  app.get('/orders/:id', async (c) => c.json(await seen(c.req.param('id'))));
  const server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' });
  await new Promise((resolve) => server.once('listening', resolve));
  closers.push(() => new Promise((resolve) => server.close(() => resolve())));
  const address = server.address();
  return `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`;
}

describe.each([
  ['Fastify', startFastify],
  ['Express', startExpress],
  ['Hono', startHono],
])('%s request context', (_name, start) => {
  it('gives each of many concurrent requests its own ids, through awaits, and echoes the request id', async () => {
    const base = await start();
    const responses = await Promise.all(
      Array.from({ length: 40 }, async (_, i) => {
        const response = await fetch(`${base}/orders/o-${i}`, {
          headers: { 'x-request-id': `req-${i}`, 'idempotency-key': `key-${i}` },
        });
        return { i, header: response.headers.get('x-request-id'), body: await response.json() };
      }),
    );
    for (const { i, header, body } of responses) {
      expect(header).toBe(`req-${i}`);
      expect(body).toEqual({
        requestId: `req-${i}`,
        correlationId: `req-${i}`,
        idempotencyKey: `key-${i}`,
        orderId: `o-${i}`,
      });
    }
  });

  it('makes up a request id when the client sends none', async () => {
    const base = await start();
    const response = await fetch(`${base}/orders/o-1`);
    const body = (await response.json()) as { requestId: string };
    expect(body.requestId).toMatch(/^[0-9a-f-]{36}$/);
    expect(response.headers.get('x-request-id')).toBe(body.requestId);
  });
});
