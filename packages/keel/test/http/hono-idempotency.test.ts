import { Hono } from 'hono';
import { setCookie } from 'hono/cookie';
import { honoIdempotency } from 'keel/hono';
import { type IdempotencyEngine, type IdempotencyLease, idempotency, memoryStore } from 'keel/idempotency';
import { describe, expect, it } from 'vitest';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

interface Body {
  type?: string;
  user?: string;
  id?: number;
  stored?: boolean;
}

function setup() {
  const store = memoryStore();
  const calls = { count: 0 };
  const control = { failNext: false, gate: undefined as Promise<void> | undefined };
  const app = new Hono<{ Variables: { idempotency: IdempotencyLease } }>();
  app.onError((err, c) => c.json({ error: err.message }, 500));
  app.use(
    '/api/*',
    honoIdempotency({ engine: idempotency({ store }), principal: (c) => c.req.header('x-user') ?? 'nobody' }),
  );
  app.post('/api/orders/:shop', async (c) => {
    calls.count++;
    const n = calls.count;
    if (control.gate) await control.gate;
    if (control.failNext) {
      control.failNext = false;
      throw new Error('database went away');
    }
    setCookie(c, 'session', String(n), { httpOnly: true });
    c.header('location', `/api/orders/${c.req.param('shop')}/${n}`);
    return c.json({ id: n, order: await c.req.json(), user: c.req.header('x-user') }, 201);
  });
  app.post('/api/notes', async (c) => {
    calls.count++;
    return c.text(`note ${calls.count}: ${await c.req.text()}`, 201);
  });
  app.post('/api/self-completing', async (c) => {
    calls.count++;
    await c
      .get('idempotency')
      .complete({ status: 202, headers: { 'content-type': 'application/json' }, body: '{"stored":true}' });
    return c.json({ stored: false }, 202);
  });
  const post = (key: string | undefined, body: unknown, user = 'alice', path = '/api/orders/main') =>
    app.request(path, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        'x-user': user,
        ...(key === undefined ? {} : { 'idempotency-key': key }),
      },
      body: typeof body === 'string' ? body : JSON.stringify(body),
    });
  return { app, store, calls, control, post };
}

const bodyOf = async (res: Response) => (await res.json()) as Body;

describe('hono idempotency middleware', () => {
  it('refuses a request without a key with a 400 problem and does not run the handler', async () => {
    const { post, calls, store } = setup();
    const res = await post(undefined, { item: 'book' });
    expect(res.status).toBe(400);
    expect(res.headers.get('content-type')).toBe('application/problem+json');
    expect(await res.json()).toMatchObject({
      type: 'urn:keel:problem:idempotency-key-missing',
      instance: '/api/orders/main',
    });
    expect(calls.count).toBe(0);
    expect(store.size).toBe(0);
  });

  it('refuses a key longer than 255 characters and a key with a control character', async () => {
    const { post, calls } = setup();
    const long = await post('k'.repeat(256), { item: 'book' });
    expect(long.status).toBe(400);
    expect((await bodyOf(long)).type).toBe('urn:keel:problem:idempotency-key-invalid');
    const control = await post('abc\tdef', { item: 'book' });
    expect(control.status).toBe(400);
    expect((await bodyOf(control)).type).toBe('urn:keel:problem:idempotency-key-invalid');
    expect(calls.count).toBe(0);
  });

  it('runs the handler once and replays its status and body with Idempotent-Replayed, without set-cookie', async () => {
    const { post, calls } = setup();
    const first = await post('key-1', { item: 'book', qty: 2 });
    const firstBody = await first.text();
    expect(first.status).toBe(201);
    expect(JSON.parse(firstBody)).toEqual({ id: 1, order: { item: 'book', qty: 2 }, user: 'alice' });
    expect(first.headers.get('set-cookie')).toMatch(/^session=1/);
    const again = await post('key-1', { item: 'book', qty: 2 });
    expect(again.status).toBe(201);
    expect(await again.text()).toBe(firstBody);
    expect(again.headers.get('idempotent-replayed')).toBe('true');
    expect(again.headers.get('location')).toBe('/api/orders/main/1');
    expect(again.headers.get('content-type')).toBe(first.headers.get('content-type'));
    expect(again.headers.get('set-cookie')).toBeNull();
    expect(calls.count).toBe(1);
  });

  it('treats JSON with the same members in another order as the same request', async () => {
    const { post, calls } = setup();
    await post('key-order', '{"a":1,"b":{"c":2,"d":3}}');
    const reordered = await post('key-order', '{"b":{"d":3,"c":2},"a":1}');
    expect(reordered.status).toBe(201);
    expect(reordered.headers.get('idempotent-replayed')).toBe('true');
    expect(calls.count).toBe(1);
  });

  it('answers 422 when the key is reused with another body', async () => {
    const { post, calls } = setup();
    await post('key-2', { item: 'book' });
    const other = await post('key-2', { item: 'lamp' });
    expect(other.status).toBe(422);
    expect((await bodyOf(other)).type).toBe('urn:keel:problem:idempotency-key-reused');
    expect(calls.count).toBe(1);
  });

  it('scopes the key to the route pattern, so another shop with the same key is the same route', async () => {
    const { post, calls } = setup();
    await post('key-route', { item: 'book' });
    // Same pattern (/api/orders/:shop), same body, other concrete path: the stored answer replays.
    const other = await post('key-route', { item: 'book' }, 'alice', '/api/orders/outlet');
    expect(other.headers.get('idempotent-replayed')).toBe('true');
    // Another route pattern with the same key is independent.
    const notes = await post('key-route', { item: 'book' }, 'alice', '/api/notes');
    expect(notes.status).toBe(201);
    expect(notes.headers.get('idempotent-replayed')).toBeNull();
    expect(calls.count).toBe(2);
  });

  it('answers 409 with Retry-After while the first request with the key is in flight', async () => {
    const { post, calls, control } = setup();
    let open!: () => void;
    control.gate = new Promise((resolve) => (open = resolve));
    const first = post('key-3', { item: 'book' });
    while (calls.count === 0) await sleep(1);
    const second = await post('key-3', { item: 'book' });
    expect(second.status).toBe(409);
    expect((await bodyOf(second)).type).toBe('urn:keel:problem:idempotency-key-in-flight');
    expect(Number(second.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    open();
    expect((await first).status).toBe(201);
    expect((await post('key-3', { item: 'book' })).headers.get('idempotent-replayed')).toBe('true');
    expect(calls.count).toBe(1);
  });

  it('releases the key when the handler throws, so the retry runs the handler again', async () => {
    const { post, calls, control, store } = setup();
    control.failNext = true;
    expect((await post('key-4', { item: 'book' })).status).toBe(500);
    expect(store.size).toBe(0);
    const retried = await post('key-4', { item: 'book' });
    expect(retried.status).toBe(201);
    expect(retried.headers.get('idempotent-replayed')).toBeNull();
    expect(calls.count).toBe(2);
  });

  it('keeps the keys of different principals apart', async () => {
    const { post, calls } = setup();
    await post('shared', { item: 'book' }, 'alice');
    const bob = await post('shared', { item: 'book' }, 'bob');
    expect(bob.status).toBe(201);
    expect(bob.headers.get('idempotent-replayed')).toBeNull();
    expect((await bodyOf(bob)).user).toBe('bob');
    expect(calls.count).toBe(2);
  });

  it('stores nothing when malformed JSON makes the handler fail', async () => {
    const { post, calls, store } = setup();
    const res = await post('bad-json', '{"item": ');
    expect(res.status).toBe(500);
    expect(calls.count).toBe(1);
    expect(store.size).toBe(0);
  });

  it('fingerprints a text body as its raw text', async () => {
    const { app, calls } = setup();
    const send = (text: string) =>
      app.request('/api/notes', {
        method: 'POST',
        headers: { 'content-type': 'text/plain', 'idempotency-key': 'note' },
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
    const { post, calls } = setup();
    expect(await bodyOf(await post('self', {}, 'alice', '/api/self-completing'))).toEqual({ stored: false });
    const again = await post('self', {}, 'alice', '/api/self-completing');
    expect(await bodyOf(again)).toEqual({ stored: true });
    expect(again.headers.get('idempotent-replayed')).toBe('true');
    expect(calls.count).toBe(1);
  });

  it('rejects options that are not usable, naming the option', () => {
    expect(() => honoIdempotency({ engine: null as unknown as IdempotencyEngine })).toThrow(/^engine:/);
    expect(() =>
      honoIdempotency({
        engine: idempotency({ store: memoryStore() }),
        methods: ['POST', 3 as unknown as string],
      }),
    ).toThrow(/^methods:/);
  });
});
