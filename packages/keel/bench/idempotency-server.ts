/**
 * The service the idempotency benchmark loads: one Fastify app that inserts one row per request,
 * on three routes. `/bare` runs without idempotency. `/keyed` runs the same handler behind the
 * idempotency plugin, which stores the response after the handler's own commit. `/keyed-tx` is the
 * atomic configuration: the handler inserts the row and stores the response with
 * `completeInTransaction` in one transaction, so both commit together. Prints its port once
 * listening.
 *
 *   node --conditions=keel-source bench/idempotency-server.ts sqlite|postgres [database-url]
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync, type StatementSync } from 'node:sqlite';
import Fastify, { type FastifyReply, type FastifyRequest } from 'fastify';
import { completeInTransaction, idempotencyPlugin } from 'keel/fastify';
import { type IdempotencyStore, idempotency } from 'keel/idempotency';
import { postgresStore } from 'keel/postgres';
import { sqliteStore } from 'keel/sqlite';
import pg from 'pg';

const [backend = 'sqlite', databaseUrl = process.env.DATABASE_URL] = process.argv.slice(2);

/** Inserts the row on its own (autocommit). */
let insertOrder: (id: string, amount: number) => Promise<void>;
/** Inserts the row and runs `store` in the same transaction, then commits; returns what `store` returned. */
let inTransaction: <T>(id: string, amount: number, store: (tx: unknown) => Promise<T>) => Promise<T>;
let store: IdempotencyStore;

if (backend === 'postgres') {
  // Both routes share one pool, so the keyed route's extra statements compete with the bare route's
  // on equal terms.
  const pool = new pg.Pool({ connectionString: databaseUrl, max: 10 });
  const table = `keel_bench_${process.pid}`;
  const pgStore = postgresStore({ pool, table: `${table}_idem` });
  await pgStore.ensureSchema();
  await pool.query(`CREATE TABLE IF NOT EXISTS ${table} (id text PRIMARY KEY, amount integer NOT NULL)`);
  process.on('SIGTERM', async () => {
    await pool.query(`DROP TABLE IF EXISTS ${table}; DROP TABLE IF EXISTS ${table}_idem`);
    process.exit(0);
  });
  const insert = `INSERT INTO ${table} VALUES ($1, $2)`;
  store = pgStore;
  insertOrder = async (id, amount) => void (await pool.query(insert, [id, amount]));
  inTransaction = async (id, amount, run) => {
    const client = await pool.connect();
    try {
      await client.query('BEGIN');
      await client.query(insert, [id, amount]);
      const result = await run(client);
      await client.query('COMMIT');
      return result;
    } catch (error) {
      await client.query('ROLLBACK');
      throw error;
    } finally {
      client.release();
    }
  };
} else {
  const db = new DatabaseSync(join(mkdtempSync(join(tmpdir(), 'keel-bench-')), 'bench.db'));
  db.exec('PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL');
  db.exec('CREATE TABLE orders (id TEXT PRIMARY KEY, amount INTEGER NOT NULL)');
  const insert = db.prepare('INSERT INTO orders VALUES (?, ?)');
  const [begin, commit, rollback] = ['BEGIN IMMEDIATE', 'COMMIT', 'ROLLBACK'].map((sql) =>
    db.prepare(sql),
  ) as [StatementSync, StatementSync, StatementSync];
  store = sqliteStore({ db });
  insertOrder = async (id, amount) => void insert.run(id, amount);
  // One handle holds one transaction at a time, and other requests' code runs at every `await`
  // inside it: transactions on the handle take turns.
  let turn: Promise<unknown> = Promise.resolve();
  inTransaction = (id, amount, run) => {
    const transaction = turn.then(async () => {
      begin.run();
      try {
        insert.run(id, amount);
        const result = await run(db);
        commit.run();
        return result;
      } catch (error) {
        rollback.run();
        throw error;
      }
    });
    turn = transaction.catch(() => {});
    return transaction;
  };
  process.on('SIGTERM', () => process.exit(0));
}

const app = Fastify();
await app.register(idempotencyPlugin, {
  engine: idempotency({ store }),
  principal: (request) => String(request.headers['x-user'] ?? 'anonymous'),
  routes: (route) => route !== '/bare',
});
const amountOf = (request: FastifyRequest) => (request.body as { amount: number }).amount;
const insertAlone = async (request: FastifyRequest, reply: FastifyReply) => {
  const id = randomUUID();
  await insertOrder(id, amountOf(request));
  reply.code(201);
  return { id };
};
app.post('/bare', insertAlone);
app.post('/keyed', insertAlone);
app.post('/keyed-tx', async (request, reply) => {
  const id = randomUUID();
  return inTransaction(id, amountOf(request), (tx) =>
    completeInTransaction(request, reply.code(201), { id }, { tx }),
  );
});
await app.listen({ port: 0, host: '127.0.0.1' });
const address = app.server.address();
process.stdout.write(`${typeof address === 'object' && address ? address.port : ''}\n`);
