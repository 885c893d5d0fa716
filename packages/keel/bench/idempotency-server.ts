/**
 * The service the idempotency benchmark loads: one Fastify app with the same handler — insert one
 * row — on `/bare` and, behind the idempotency plugin, on `/keyed`. Prints its port once listening.
 *
 *   node --conditions=keel-source bench/idempotency-server.ts sqlite|postgres [database-url]
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import Fastify from 'fastify';
import { idempotencyPlugin } from 'keel/fastify';
import { type IdempotencyStore, idempotency } from 'keel/idempotency';
import { postgresStore } from 'keel/postgres';
import { sqliteStore } from 'keel/sqlite';
import pg from 'pg';

const [backend = 'sqlite', databaseUrl = process.env.DATABASE_URL] = process.argv.slice(2);

let store: IdempotencyStore;
let insertOrder: (id: string, amount: number) => Promise<void>;
if (backend === 'postgres') {
  const pool = new pg.Pool({ connectionString: databaseUrl, max: 10 });
  const table = `keel_bench_${process.pid}`;
  const pgStore = postgresStore({ pool, table: `${table}_idem` });
  await pgStore.ensureSchema();
  await pool.query(`CREATE TABLE IF NOT EXISTS ${table} (id text PRIMARY KEY, amount integer NOT NULL)`);
  process.on('SIGTERM', async () => {
    await pool.query(`DROP TABLE IF EXISTS ${table}; DROP TABLE IF EXISTS ${table}_idem`);
    process.exit(0);
  });
  store = pgStore;
  insertOrder = async (id, amount) =>
    void (await pool.query(`INSERT INTO ${table} VALUES ($1, $2)`, [id, amount]));
} else {
  const db = new DatabaseSync(join(mkdtempSync(join(tmpdir(), 'keel-bench-')), 'bench.db'));
  db.exec('PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL');
  db.exec('CREATE TABLE orders (id TEXT PRIMARY KEY, amount INTEGER NOT NULL)');
  const insert = db.prepare('INSERT INTO orders VALUES (?, ?)');
  store = sqliteStore({ db });
  insertOrder = async (id, amount) => void insert.run(id, amount);
  process.on('SIGTERM', () => process.exit(0));
}

const app = Fastify();
await app.register(idempotencyPlugin, {
  engine: idempotency({ store }),
  principal: (request) => String(request.headers['x-user'] ?? 'anonymous'),
  routes: (route) => route === '/keyed',
});
const handler = async (request: { body: unknown }, reply: { code(n: number): unknown }) => {
  const id = randomUUID();
  await insertOrder(id, (request.body as { amount: number }).amount);
  reply.code(201);
  return { id };
};
app.post('/bare', handler);
app.post('/keyed', handler);
await app.listen({ port: 0, host: '127.0.0.1' });
const address = app.server.address();
process.stdout.write(`${typeof address === 'object' && address ? address.port : ''}\n`);
