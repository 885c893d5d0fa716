import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { fastifyIdempotency, idempotencyLease, idempotencyPlugin } from 'keel/fastify';
import {
  type IdempotencyEngine,
  idempotency,
  type MemoryIdempotencyStore,
  memoryStore,
} from 'keel/idempotency';
import { afterEach, describe, expect, it } from 'vitest';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

interface Harness {
  app: FastifyInstance;
  store: MemoryIdempotencyStore;
  engine: IdempotencyEngine;
  calls: { count: number };
  control: { failNext: boolean; gate: Promise<void> | undefined; delayMs: number };
  completeErrors: unknown[];
}

const apps: FastifyInstance[] = [];
afterEach(async () => {
  await Promise.all(apps.splice(0).map((app) => app.close()));
});

async function setup(engineOptions: { leaseMs?: number } = {}): Promise<Harness> {
  const store = memoryStore();
  const engine = idempotency({ store, ...engineOptions });
  const app = Fastify({ bodyLimit: 1024 });
  apps.push(app);
  const calls = { count: 0 };
  const control = { failNext: false, gate: undefined as Promise<void> | undefined, delayMs: 0 };
  const completeErrors: unknown[] = [];
  await app.register(idempotencyPlugin, {
    engine,
    principal: (request) => String(request.headers['x-user'] ?? 'nobody'),
    routes: (route) => route !== '/unkeyed',
    onCompleteError: (error) => completeErrors.push(error),
  });
  app.post('/orders', async (request: FastifyRequest, reply: FastifyReply) => {
    calls.count++;
    const n = calls.count;
    if (control.delayMs > 0) await sleep(control.delayMs);
    if (control.gate) await control.gate;
    if (control.failNext) {
      control.failNext = false;
      throw new Error('database went away');
    }
    reply.header('set-cookie', `session=${n}; HttpOnly`);
    reply.header('location', `/orders/${n}`);
    return reply.code(201).send({ id: n, order: request.body, user: request.headers['x-user'] });
  });
  app.post('/notes', async (request: FastifyRequest, reply: FastifyReply) => {
    calls.count++;
    return reply
      .code(201)
      .type('text/plain')
      .send(`note ${calls.count}: ${String(request.body)}`);
  });
  app.post('/self-completing', async (request: FastifyRequest, reply: FastifyReply) => {
    calls.count++;
    const lease = idempotencyLease(request);
    await lease?.complete({
      status: 202,
      headers: { 'content-type': 'application/json' },
      body: '{"stored":true}',
    });
    return reply.code(202).send({ stored: false, derived: lease?.derivedKey('charge') });
  });
  app.post('/unkeyed', async (_request: FastifyRequest, reply: FastifyReply) => {
    calls.count++;
    return reply.code(201).send({ ok: true });
  });
  return { app, store, engine, calls, control, completeErrors };
}

function post(app: FastifyInstance, key: string | undefined, body: unknown, user = 'alice', url = '/orders') {
  return app.inject({
    method: 'POST',
    url,
    headers: { ...(key === undefined ? {} : { 'idempotency-key': key }), 'x-user': user },
    payload: body as Record<string, unknown>,
  });
}

describe('fastify idempotency plugin', () => {
  it('refuses a request without a key with a 400 problem and does not run the handler', async () => {
    const { app, calls, store } = await setup();
    const res = await post(app, undefined, { item: 'book' });
    expect(res.statusCode).toBe(400);
    expect(res.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(res.json()).toMatchObject({
      type: 'urn:keel:problem:idempotency-key-missing',
      status: 400,
      instance: '/orders',
    });
    expect(calls.count).toBe(0);
    expect(store.size).toBe(0);
  });

  it('refuses a key longer than 255 characters and a key with a control character', async () => {
    const { app, calls } = await setup();
    const long = await post(app, 'k'.repeat(256), { item: 'book' });
    expect(long.statusCode).toBe(400);
    expect(long.json().type).toBe('urn:keel:problem:idempotency-key-invalid');
    const control = await post(app, 'abc\u0001def', { item: 'book' });
    expect(control.statusCode).toBe(400);
    expect(control.json().type).toBe('urn:keel:problem:idempotency-key-invalid');
    expect(calls.count).toBe(0);
  });

  it('runs the handler once and replays its status and body with Idempotent-Replayed, without set-cookie', async () => {
    const { app, calls } = await setup();
    const first = await post(app, 'key-1', { item: 'book', qty: 2 });
    expect(first.statusCode).toBe(201);
    expect(first.json()).toEqual({ id: 1, order: { item: 'book', qty: 2 }, user: 'alice' });
    expect(first.headers['set-cookie']).toBe('session=1; HttpOnly');
    expect(first.headers['idempotent-replayed']).toBeUndefined();

    const again = await post(app, 'key-1', { item: 'book', qty: 2 });
    expect(again.statusCode).toBe(201);
    expect(again.body).toBe(first.body);
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(again.headers.location).toBe('/orders/1');
    expect(again.headers['content-type']).toBe(first.headers['content-type']);
    expect(again.headers['set-cookie']).toBeUndefined();
    expect(calls.count).toBe(1);
  });

  it('treats JSON with the same members in another order as the same request', async () => {
    const { app, calls } = await setup();
    await post(app, 'key-order', { a: 1, b: { c: 2, d: 3 } });
    const reordered = await post(app, 'key-order', { b: { d: 3, c: 2 }, a: 1 });
    expect(reordered.statusCode).toBe(201);
    expect(reordered.headers['idempotent-replayed']).toBe('true');
    expect(calls.count).toBe(1);
  });

  it('answers 422 when the key is reused with another body', async () => {
    const { app, calls } = await setup();
    await post(app, 'key-2', { item: 'book' });
    const other = await post(app, 'key-2', { item: 'lamp' });
    expect(other.statusCode).toBe(422);
    expect(other.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(other.json().type).toBe('urn:keel:problem:idempotency-key-reused');
    expect(calls.count).toBe(1);
  });

  it('answers 409 with Retry-After while the first request with the key is in flight', async () => {
    const { app, calls, control } = await setup();
    let open!: () => void;
    control.gate = new Promise((resolve) => (open = resolve));
    const first = post(app, 'key-3', { item: 'book' });
    while (calls.count === 0) await sleep(1);
    const second = await post(app, 'key-3', { item: 'book' });
    expect(second.statusCode).toBe(409);
    expect(second.json().type).toBe('urn:keel:problem:idempotency-key-in-flight');
    expect(Number(second.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    open();
    expect((await first).statusCode).toBe(201);
    expect((await post(app, 'key-3', { item: 'book' })).headers['idempotent-replayed']).toBe('true');
    expect(calls.count).toBe(1);
  });

  it('releases the key when the handler throws, so the retry runs the handler again', async () => {
    const { app, calls, control, store } = await setup();
    control.failNext = true;
    const failed = await post(app, 'key-4', { item: 'book' });
    expect(failed.statusCode).toBe(500);
    expect(store.size).toBe(0);
    const retried = await post(app, 'key-4', { item: 'book' });
    expect(retried.statusCode).toBe(201);
    expect(retried.headers['idempotent-replayed']).toBeUndefined();
    expect(calls.count).toBe(2);
  });

  it('keeps the keys of different principals apart', async () => {
    const { app, calls } = await setup();
    const alice = await post(app, 'shared-key', { item: 'book' }, 'alice');
    const bob = await post(app, 'shared-key', { item: 'book' }, 'bob');
    expect(bob.statusCode).toBe(201);
    expect(bob.headers['idempotent-replayed']).toBeUndefined();
    expect(bob.json().user).toBe('bob');
    expect(bob.body).not.toBe(alice.body);
    expect(calls.count).toBe(2);
    // Bob reusing the key with another body is his own affair: Alice's record does not answer him.
    expect((await post(app, 'shared-key', { item: 'lamp' }, 'bob')).statusCode).toBe(422);
    expect((await post(app, 'shared-key', { item: 'book' }, 'alice')).json().user).toBe('alice');
  });

  it('runs the handler exactly once for 200 concurrent requests with one key', async () => {
    const { app, calls, control } = await setup();
    control.delayMs = 5;
    const responses = await Promise.all(
      Array.from({ length: 200 }, () => post(app, 'hot-key', { item: 'book' })),
    );
    const executed = responses.filter(
      (r) => r.statusCode === 201 && r.headers['idempotent-replayed'] === undefined,
    );
    const replayed = responses.filter(
      (r) => r.statusCode === 201 && r.headers['idempotent-replayed'] === 'true',
    );
    const inFlight = responses.filter((r) => r.statusCode === 409);
    expect(calls.count).toBe(1);
    expect(executed).toHaveLength(1);
    expect(executed.length + replayed.length + inFlight.length).toBe(200);
    expect(inFlight.length).toBeGreaterThan(0);
    for (const r of inFlight) expect(r.headers['retry-after']).toBeDefined();
    for (const r of replayed) expect(r.body).toBe(executed[0]?.body);
  });

  it('answers 413 for a body over bodyLimit and stores nothing', async () => {
    const { app, calls, store } = await setup();
    const res = await post(app, 'big-key', { blob: 'x'.repeat(4096) });
    expect(res.statusCode).toBe(413);
    expect(calls.count).toBe(0);
    expect(store.size).toBe(0);
  });

  it('leaves malformed JSON to Fastify, which answers 400, and stores nothing', async () => {
    const { app, calls, store } = await setup();
    const res = await app.inject({
      method: 'POST',
      url: '/orders',
      headers: { 'idempotency-key': 'bad-json', 'content-type': 'application/json' },
      payload: '{"item": ',
    });
    expect(res.statusCode).toBe(400);
    expect(calls.count).toBe(0);
    expect(store.size).toBe(0);
  });

  it('fingerprints a text body as its raw text', async () => {
    const { app, calls } = await setup();
    const send = (text: string) =>
      app.inject({
        method: 'POST',
        url: '/notes',
        headers: { 'idempotency-key': 'note-key', 'content-type': 'text/plain' },
        payload: text,
      });
    const first = await send('buy milk');
    expect(first.statusCode).toBe(201);
    expect(first.body).toBe('note 1: buy milk');
    const again = await send('buy milk');
    expect(again.body).toBe('note 1: buy milk');
    expect(again.headers['content-type']).toBe(first.headers['content-type']);
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect((await send('buy bread')).statusCode).toBe(422);
    expect(calls.count).toBe(1);
  });

  it('does not complete a second time when the handler completed the lease itself', async () => {
    const { app, calls } = await setup();
    const first = await post(app, 'self-key', { item: 'x' }, 'alice', '/self-completing');
    expect(first.statusCode).toBe(202);
    expect(first.json().stored).toBe(false);
    expect(first.json().derived).toMatch(/^[0-9a-f]{48}$/);
    const again = await post(app, 'self-key', { item: 'x' }, 'alice', '/self-completing');
    expect(again.json()).toEqual({ stored: true });
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(calls.count).toBe(1);
  });

  it('sends the response of a handler that lost its lease and reports nothing; the retry replays the winner', async () => {
    const { app, calls, control, completeErrors } = await setup({ leaseMs: 20 });
    let open!: () => void;
    control.gate = new Promise((resolve) => (open = resolve));
    const slow = post(app, 'lease-key', { item: 'book' });
    while (calls.count === 0) await sleep(1);
    control.gate = undefined;
    await sleep(40); // past the 20 ms lease
    const takeover = await post(app, 'lease-key', { item: 'book' });
    expect(takeover.statusCode).toBe(201);
    expect(takeover.json().id).toBe(2);
    open();
    const late = await slow;
    expect(late.statusCode).toBe(201);
    expect(late.json().id).toBe(1);
    expect(completeErrors).toEqual([]);
    const retry = await post(app, 'lease-key', { item: 'book' });
    expect(retry.headers['idempotent-replayed']).toBe('true');
    expect(retry.json().id).toBe(2);
    expect(calls.count).toBe(2);
  });

  it('leaves routes outside the filter and other methods alone', async () => {
    const { app, calls, store } = await setup();
    expect((await post(app, undefined, {}, 'alice', '/unkeyed')).statusCode).toBe(201);
    expect(calls.count).toBe(1);
    expect(store.size).toBe(0);
  });

  it('works as route-level hooks and rejects a missing engine naming the option', async () => {
    const store = memoryStore();
    const app = Fastify();
    apps.push(app);
    let count = 0;
    app.post('/pay', { ...fastifyIdempotency({ engine: idempotency({ store }) }) }, async (_req, reply) => {
      count++;
      return reply.code(201).send({ count });
    });
    const first = await app.inject({
      method: 'POST',
      url: '/pay',
      headers: { 'idempotency-key': 'p' },
      payload: {},
    });
    const again = await app.inject({
      method: 'POST',
      url: '/pay',
      headers: { 'idempotency-key': 'p' },
      payload: {},
    });
    expect(first.json()).toEqual({ count: 1 });
    expect(again.json()).toEqual({ count: 1 });
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(() => fastifyIdempotency({ engine: {} as IdempotencyEngine })).toThrow(/^engine:/);
    expect(() => fastifyIdempotency({ engine: idempotency({ store }), methods: [] })).toThrow(/^methods:/);
  });
});
