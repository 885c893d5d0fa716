import express from 'express';
import Fastify from 'fastify';
import { Hono } from 'hono';
import { expressIdempotency } from 'keel/express';
import { idempotencyPlugin } from 'keel/fastify';
import { honoIdempotency } from 'keel/hono';
import { idempotency, memoryStore } from 'keel/idempotency';
import { afterAll, describe, expect, it } from 'vitest';

/** Sends `POST /orders/:id/charge` with an empty body and one key; answers status and body. */
type Charge = (orderId: string, key: string) => Promise<{ status: number; body: string }>;

const closers: Array<() => Promise<void>> = [];
afterAll(async () => {
  for (const close of closers) await close();
});

async function fastifyCharge(): Promise<Charge> {
  const app = Fastify();
  await app.register(idempotencyPlugin, { engine: idempotency({ store: memoryStore() }) });
  app.post('/orders/:id/charge', async (request, reply) => {
    reply.code(201);
    return { charged: (request.params as { id: string }).id };
  });
  closers.push(() => app.close());
  return async (id, key) => {
    const res = await app.inject({
      method: 'POST',
      url: `/orders/${id}/charge`,
      headers: { 'idempotency-key': key },
    });
    return { status: res.statusCode, body: res.body };
  };
}

async function expressCharge(): Promise<Charge> {
  const app = express();
  app.post(
    '/orders/:id/charge',
    expressIdempotency({ engine: idempotency({ store: memoryStore() }) }),
    (req, res) => {
      res.status(201).json({ charged: req.params.id });
    },
  );
  const server = app.listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  closers.push(() => new Promise((resolve) => server.close(() => resolve())));
  const address = server.address();
  const base = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`;
  return async (id, key) => {
    const res = await fetch(`${base}/orders/${id}/charge`, {
      method: 'POST',
      headers: { 'idempotency-key': key },
    });
    return { status: res.status, body: await res.text() };
  };
}

async function honoCharge(): Promise<Charge> {
  const app = new Hono();
  app.post('/orders/:id/charge', honoIdempotency({ engine: idempotency({ store: memoryStore() }) }), (c) =>
    c.json({ charged: c.req.param('id') }, 201),
  );
  return async (id, key) => {
    const res = await app.request(`/orders/${id}/charge`, {
      method: 'POST',
      headers: { 'idempotency-key': key },
    });
    return { status: res.status, body: await res.text() };
  };
}

describe.each([
  ['Fastify', fastifyCharge],
  ['Express', expressCharge],
  ['Hono', honoCharge],
])('%s: path parameters are part of the fingerprint', (_name, build) => {
  it("refuses one key reused on another order instead of replaying the first order's answer", async () => {
    const charge = await build();
    const first = await charge('1', 'key-1');
    expect(first).toEqual({ status: 201, body: JSON.stringify({ charged: '1' }) });
    // The same order again: a replay.
    expect(await charge('1', 'key-1')).toEqual(first);
    // Another order with the same key: never the first order's answer.
    const other = await charge('2', 'key-1');
    expect(other.status).toBe(422);
    expect(JSON.parse(other.body).type).toBe('urn:keel:problem:idempotency-key-reused');
  });
});
