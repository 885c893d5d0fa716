import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import express, { type NextFunction, type Request, type Response } from 'express';
import { expressIdempotency, idempotencyLease } from 'keel/express';
import { type IdempotencyEngine, idempotency, memoryStore } from 'keel/idempotency';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

const store = memoryStore();
const calls = { count: 0 };
const control = { failNext: false, gate: undefined as Promise<void> | undefined };
let server: Server;
let base: string;

beforeAll(async () => {
  const app = express();
  const keyed = expressIdempotency({
    engine: idempotency({ store }),
    principal: (req) => String(req.headers['x-user'] ?? 'nobody'),
    parts: (req) => ({ params: (req as unknown as Request).params }),
  });
  app.post('/orders/:shop', express.json(), keyed, async (req: Request, res: Response) => {
    calls.count++;
    const n = calls.count;
    if (control.gate) await control.gate;
    if (control.failNext) {
      control.failNext = false;
      throw new Error('database went away');
    }
    res.cookie('session', String(n), { httpOnly: true });
    res.location(`/orders/${req.params.shop}/${n}`);
    res.status(201).json({ id: n, shop: req.params.shop, order: req.body, user: req.headers['x-user'] });
  });
  app.post('/notes', express.text(), keyed, (req: Request, res: Response) => {
    calls.count++;
    res
      .status(201)
      .type('text/plain')
      .send(`note ${calls.count}: ${String(req.body)}`);
  });
  app.post('/self-completing', express.json(), keyed, async (_req: Request, res: Response) => {
    calls.count++;
    const lease = idempotencyLease(res);
    await lease?.complete({
      status: 202,
      headers: { 'content-type': 'application/json' },
      body: '{"stored":true}',
    });
    res.status(202).json({ stored: false });
  });
  app.use((err: Error & { status?: number }, _req: Request, res: Response, _next: NextFunction) => {
    res.status(err.status ?? 500).json({ error: err.message });
  });
  server = app.listen(0, '127.0.0.1');
  await new Promise<void>((resolve) => server.once('listening', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await new Promise<void>((resolve, reject) => server.close((e) => (e ? reject(e) : resolve())));
});

beforeEach(() => {
  calls.count = 0;
  control.failNext = false;
  control.gate = undefined;
});

interface Body {
  type?: string;
  user?: string;
}
const problemOf = async (res: { json(): Promise<unknown> }) => (await res.json()) as Body;

let unique = 0;
const freshKey = () => `express-${++unique}-${Date.now()}`;

function post(key: string | undefined, body: unknown, user = 'alice', path = '/orders/main') {
  return fetch(`${base}${path}`, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      'x-user': user,
      ...(key === undefined ? {} : { 'idempotency-key': key }),
    },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
}

describe('express idempotency middleware', () => {
  it('refuses a request without a key with a 400 problem and does not run the handler', async () => {
    const res = await post(undefined, { item: 'book' });
    expect(res.status).toBe(400);
    expect(res.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    expect(await res.json()).toMatchObject({
      type: 'urn:keel:problem:idempotency-key-missing',
      status: 400,
      instance: '/orders/main',
    });
    expect(calls.count).toBe(0);
  });

  it('refuses a key longer than 255 characters and a key with a control character', async () => {
    const long = await post('k'.repeat(256), { item: 'book' });
    expect(long.status).toBe(400);
    expect((await problemOf(long)).type).toBe('urn:keel:problem:idempotency-key-invalid');
    // fetch refuses to send control characters in a header; a raw request can.
    const { request } = await import('node:http');
    const raw = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = request(`${base}/orders/main`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
      });
      req.setHeader('idempotency-key', 'abc\tdef');
      req.on('response', (res) => {
        let body = '';
        res.on('data', (c) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      });
      req.on('error', reject);
      req.end('{}');
    });
    expect(raw.status).toBe(400);
    expect(JSON.parse(raw.body).type).toBe('urn:keel:problem:idempotency-key-invalid');
    expect(calls.count).toBe(0);
  });

  it('runs the handler once and replays its status and body with Idempotent-Replayed, without set-cookie', async () => {
    const key = freshKey();
    const first = await post(key, { item: 'book', qty: 2 });
    const firstBody = await first.text();
    expect(first.status).toBe(201);
    expect(JSON.parse(firstBody)).toEqual({
      id: 1,
      shop: 'main',
      order: { item: 'book', qty: 2 },
      user: 'alice',
    });
    expect(first.headers.get('set-cookie')).toMatch(/^session=1/);
    expect(first.headers.get('idempotent-replayed')).toBeNull();

    const again = await post(key, { item: 'book', qty: 2 });
    expect(again.status).toBe(201);
    expect(await again.text()).toBe(firstBody);
    expect(again.headers.get('idempotent-replayed')).toBe('true');
    expect(again.headers.get('location')).toBe('/orders/main/1');
    expect(again.headers.get('content-type')).toBe(first.headers.get('content-type'));
    expect(again.headers.get('set-cookie')).toBeNull();
    expect(calls.count).toBe(1);
  });

  it('treats JSON with the same members in another order as the same request', async () => {
    const key = freshKey();
    await post(key, { a: 1, b: { c: 2, d: 3 } });
    const reordered = await post(key, '{"b":{"d":3,"c":2},"a":1}');
    expect(reordered.status).toBe(201);
    expect(reordered.headers.get('idempotent-replayed')).toBe('true');
    expect(calls.count).toBe(1);
  });

  it('answers 422 when the key is reused with another body or another path parameter', async () => {
    const key = freshKey();
    await post(key, { item: 'book' });
    const other = await post(key, { item: 'lamp' });
    expect(other.status).toBe(422);
    expect((await problemOf(other)).type).toBe('urn:keel:problem:idempotency-key-reused');
    expect((await post(key, { item: 'book' }, 'alice', '/orders/outlet')).status).toBe(422);
    expect(calls.count).toBe(1);
  });

  it('answers 409 with Retry-After while the first request with the key is in flight', async () => {
    const key = freshKey();
    let open!: () => void;
    control.gate = new Promise((resolve) => (open = resolve));
    const first = post(key, { item: 'book' });
    while (calls.count === 0) await sleep(1);
    const second = await post(key, { item: 'book' });
    expect(second.status).toBe(409);
    expect((await problemOf(second)).type).toBe('urn:keel:problem:idempotency-key-in-flight');
    expect(Number(second.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    open();
    expect((await first).status).toBe(201);
    // The response went out only after it was stored: an immediate retry replays it.
    expect((await post(key, { item: 'book' })).headers.get('idempotent-replayed')).toBe('true');
    expect(calls.count).toBe(1);
  });

  it('releases the key when the handler throws, so the retry runs the handler again', async () => {
    const key = freshKey();
    control.failNext = true;
    const failed = await post(key, { item: 'book' });
    expect(failed.status).toBe(500);
    const retried = await post(key, { item: 'book' });
    expect(retried.status).toBe(201);
    expect(retried.headers.get('idempotent-replayed')).toBeNull();
    expect(calls.count).toBe(2);
  });

  it('keeps the keys of different principals apart', async () => {
    const key = freshKey();
    await post(key, { item: 'book' }, 'alice');
    const bob = await post(key, { item: 'book' }, 'bob');
    expect(bob.status).toBe(201);
    expect(bob.headers.get('idempotent-replayed')).toBeNull();
    expect((await problemOf(bob)).user).toBe('bob');
    expect(calls.count).toBe(2);
  });

  it('leaves malformed JSON to the body parser, which answers 400, and stores nothing', async () => {
    const before = store.size;
    const res = await post(freshKey(), '{"item": ');
    expect(res.status).toBe(400);
    expect(calls.count).toBe(0);
    expect(store.size).toBe(before);
  });

  it('fingerprints a text body as its raw text', async () => {
    const key = freshKey();
    const send = (text: string) =>
      fetch(`${base}/notes`, {
        method: 'POST',
        headers: { 'content-type': 'text/plain', 'idempotency-key': key },
        body: text,
      });
    expect(await (await send('buy milk')).text()).toBe('note 1: buy milk');
    const again = await send('buy milk');
    expect(await again.text()).toBe('note 1: buy milk');
    expect(again.headers.get('idempotent-replayed')).toBe('true');
    expect((await send('buy bread')).status).toBe(422);
    expect(calls.count).toBe(1);
  });

  it('does not complete a second time when the handler completed the lease itself', async () => {
    const key = freshKey();
    const first = await post(key, { item: 'x' }, 'alice', '/self-completing');
    expect(await first.json()).toEqual({ stored: false });
    const again = await post(key, { item: 'x' }, 'alice', '/self-completing');
    expect(await again.json()).toEqual({ stored: true });
    expect(again.headers.get('idempotent-replayed')).toBe('true');
    expect(calls.count).toBe(1);
  });

  it('rejects options that are not usable, naming the option', () => {
    expect(() => expressIdempotency({ engine: undefined as unknown as IdempotencyEngine })).toThrow(
      /^engine:/,
    );
    expect(() =>
      expressIdempotency({ engine: idempotency({ store }), principal: 'alice' as unknown as () => string }),
    ).toThrow(/^principal:/);
  });
});
