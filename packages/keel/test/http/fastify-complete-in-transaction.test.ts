import { randomUUID } from 'node:crypto';
import { DatabaseSync } from 'node:sqlite';
import Fastify, { type FastifyInstance } from 'fastify';
import { InvalidOptionError } from 'keel';
import { completeInTransaction, idempotencyPlugin } from 'keel/fastify';
import { idempotency } from 'keel/idempotency';
import { postgresStore } from 'keel/postgres';
import { sqliteStore } from 'keel/sqlite';
import pg from 'pg';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { describeWithService } from '../support/services.ts';

const apps: FastifyInstance[] = [];
afterEach(async () => {
  await Promise.all(apps.splice(0).map((app) => app.close()));
});

const post = (app: FastifyInstance, url: string, key: string, body: unknown) =>
  app.inject({
    method: 'POST',
    url,
    headers: { 'idempotency-key': key, 'content-type': 'application/json' },
    payload: JSON.stringify(body),
  });

/** A Fastify app over one SQLite handle whose `/orders` writes its row and response in one transaction. */
async function sqliteApp(options: { failBeforeCommit?: () => boolean } = {}) {
  const db = new DatabaseSync(':memory:');
  db.exec('CREATE TABLE orders (id TEXT PRIMARY KEY, item TEXT NOT NULL)');
  const store = sqliteStore({ db });
  const app = Fastify();
  apps.push(app);
  await app.register(idempotencyPlugin, { engine: idempotency({ store }), routes: (r) => r !== '/plain' });
  let runs = 0;
  app.post('/orders', async (request, reply) => {
    runs++;
    const { item } = request.body as { item: string };
    db.exec('BEGIN IMMEDIATE');
    try {
      const id = `order-${runs}`;
      db.prepare('INSERT INTO orders VALUES (?, ?)').run(id, item);
      reply.code(201).header('location', `/orders/${id}`);
      const body = await completeInTransaction(request, reply, { id, item, secret: 's3' }, { tx: db });
      if (options.failBeforeCommit?.()) throw new Error('the commit never happened');
      db.exec('COMMIT');
      return body;
    } catch (error) {
      db.exec('ROLLBACK');
      throw error;
    }
  });
  app.post(
    '/schema',
    { schema: { response: { 201: { type: 'object', properties: { id: { type: 'string' } } } } } },
    async (request, reply) => {
      runs++;
      return completeInTransaction(request, reply.code(201), { id: 'o-1', secret: 'hidden' }, { tx: db });
    },
  );
  app.post('/text', async (request, reply) =>
    completeInTransaction(request, reply, 'plain words', { tx: db }),
  );
  app.post('/plain', async (request, reply) =>
    completeInTransaction(request, reply.code(200), { ok: true }, { tx: db }),
  );
  const orders = () => db.prepare('SELECT id, item FROM orders ORDER BY id').all();
  return { app, store, orders, runs: () => runs };
}

describe('completeInTransaction (Fastify)', () => {
  it('commits the stored response with the business row, and the retry replays what was sent', async () => {
    const { app, orders, runs } = await sqliteApp();
    const first = await post(app, '/orders', 'k-1', { item: 'book' });
    expect(first.statusCode).toBe(201);
    expect(first.headers['content-type']).toBe('application/json; charset=utf-8');
    expect(first.json()).toEqual({ id: 'order-1', item: 'book', secret: 's3' });
    const replay = await post(app, '/orders', 'k-1', { item: 'book' });
    expect(replay.statusCode).toBe(201);
    expect(replay.headers['idempotent-replayed']).toBe('true');
    expect(replay.headers.location).toBe('/orders/order-1');
    expect(replay.headers['content-type']).toBe(first.headers['content-type']);
    expect(replay.body).toBe(first.body);
    expect(runs()).toBe(1);
    expect(orders()).toEqual([{ id: 'order-1', item: 'book' }]);
  });

  it('rolls the stored response back with the business row, leaving the key in flight', async () => {
    let fail = true;
    const { app, orders } = await sqliteApp({ failBeforeCommit: () => fail });
    const failed = await post(app, '/orders', 'k-2', { item: 'lamp' });
    expect(failed.statusCode).toBe(500);
    expect(orders()).toEqual([]);
    fail = false;
    // Nothing was stored, and the rolled-back attempt still holds its lease: the retry waits it out.
    const retry = await post(app, '/orders', 'k-2', { item: 'lamp' });
    expect(retry.statusCode).toBe(409);
    expect(retry.headers['retry-after']).toBeDefined();
  });

  it("serialises through the route's response schema, so the stored copy is the copy sent", async () => {
    const { app, runs } = await sqliteApp();
    const first = await post(app, '/schema', 'k-3', {});
    expect(first.json()).toEqual({ id: 'o-1' });
    const replay = await post(app, '/schema', 'k-3', {});
    expect(replay.headers['idempotent-replayed']).toBe('true');
    expect(replay.body).toBe(first.body);
    expect(runs()).toBe(1);
  });

  it('sends text as text/plain, as Fastify would', async () => {
    const { app } = await sqliteApp();
    const first = await post(app, '/text', 'k-4', {});
    expect(first.headers['content-type']).toBe('text/plain; charset=utf-8');
    const replay = await post(app, '/text', 'k-4', {});
    expect(replay.body).toBe('plain words');
    expect(replay.headers['content-type']).toBe('text/plain; charset=utf-8');
  });

  it('only serialises on a route without a lease, and stores nothing', async () => {
    const { app, store } = await sqliteApp();
    const res = await post(app, '/plain', 'k-5', {});
    expect(res.json()).toEqual({ ok: true });
    expect(await store.expiredLeases(Date.now() + 86_400_000 * 2, 10)).toEqual([]);
    const count = store.db.prepare(`SELECT count(*) AS n FROM ${store.table}`).get() as { n: number };
    expect(count.n).toBe(0);
  });

  it('refuses a missing tx, naming the option', async () => {
    const reply = {} as Parameters<typeof completeInTransaction>[1];
    await expect(completeInTransaction({}, reply, {}, { tx: undefined })).rejects.toBeInstanceOf(
      InvalidOptionError,
    );
    await expect(completeInTransaction({}, reply, {}, { tx: null })).rejects.toThrow(/^tx: /);
  });
});

describeWithService('DATABASE_URL', 'completeInTransaction (Fastify) on Postgres', (url) => {
  const pool = new pg.Pool({ connectionString: url, max: 4 });
  const table = `keel_cit_${randomUUID().replaceAll('-', '').slice(0, 12)}`;
  afterAll(async () => {
    await pool.query(`DROP TABLE IF EXISTS "${table}"; DROP TABLE IF EXISTS "${table}_orders"`);
    await pool.end();
  });

  it('commits the order and the stored response in one transaction on a pg client', async () => {
    const store = postgresStore({ pool, table });
    await store.ensureSchema();
    await pool.query(`CREATE TABLE "${table}_orders" (id text PRIMARY KEY)`);
    const app = Fastify();
    apps.push(app);
    await app.register(idempotencyPlugin, { engine: idempotency({ store }) });
    let runs = 0;
    app.post('/orders', async (request, reply) => {
      runs++;
      const client = await pool.connect();
      try {
        await client.query('BEGIN');
        await client.query(`INSERT INTO "${table}_orders" VALUES ($1)`, [`o-${runs}`]);
        const body = await completeInTransaction(
          request,
          reply.code(201),
          { id: `o-${runs}` },
          { tx: client },
        );
        await client.query('COMMIT');
        return body;
      } catch (error) {
        await client.query('ROLLBACK');
        throw error;
      } finally {
        client.release();
      }
    });
    const first = await post(app, '/orders', 'pg-1', { amount: 5 });
    expect(first.statusCode).toBe(201);
    const replay = await post(app, '/orders', 'pg-1', { amount: 5 });
    expect(replay.headers['idempotent-replayed']).toBe('true');
    expect(replay.body).toBe(first.body);
    expect(runs).toBe(1);
    const { rows } = await pool.query(`SELECT state FROM "${table}"`);
    expect(rows).toEqual([{ state: 'completed' }]);
  });
});
