import { randomBytes } from 'node:crypto';
import { DatabaseSync } from 'node:sqlite';
import { FakeClock } from 'keel';
import {
  type AlertNotification,
  dataCheck,
  defineAlert,
  flowCheck,
  formatAlert,
  invariants,
  postgresFinding,
  sqliteFinding,
} from 'keel/observe';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { describeWithService } from '../support/services.ts';

const alert = defineAlert({
  what: 'Paid orders without a payment',
  where: 'table orders; logs: event="order.paid"',
  impact: 'Customers were charged but their orders are not fulfilled',
  next: 'keel replay --type payment.completed --since 1h',
  severity: 'critical',
  group: 'payments',
});

const MINUTE = 60_000;

function memorySink() {
  const sent: AlertNotification[] = [];
  return { sent, sink: { name: 'memory', send: async (n: AlertNotification) => void sent.push(n) } };
}

describe('data checks on node:sqlite', () => {
  const db = new DatabaseSync(':memory:');
  db.exec(`CREATE TABLE orders (id TEXT PRIMARY KEY, status TEXT NOT NULL, paid_at INTEGER);
           CREATE TABLE payments (id INTEGER PRIMARY KEY, order_id TEXT NOT NULL);
           CREATE TABLE outbox (id TEXT PRIMARY KEY, type TEXT NOT NULL, published_at INTEGER NOT NULL);
           CREATE TABLE inbox (event_id TEXT PRIMARY KEY, consumed_at INTEGER NOT NULL);`);
  const now = Date.now();
  const insertOrder = db.prepare('INSERT INTO orders (id, status, paid_at) VALUES (?, ?, ?)');
  const paidOrdersSql = `SELECT o.id, unixepoch('subsec') * 1000 - o.paid_at AS age_ms, count(*) OVER () AS total
    FROM orders o
    WHERE o.status = 'paid' AND o.paid_at < unixepoch('subsec') * 1000 - 300000
      AND NOT EXISTS (SELECT 1 FROM payments p WHERE p.order_id = o.id)
    ORDER BY o.paid_at LIMIT 3`;

  it('lists offending ids, their total and the oldest age, and resolves once payments exist', async () => {
    for (let i = 1; i <= 5; i++) insertOrder.run(`o-${i}`, 'paid', now - (5 + i) * MINUTE);
    insertOrder.run('o-recent', 'paid', now - MINUTE); // within its 5 minutes
    insertOrder.run('o-open', 'open', null);
    insertOrder.run('o-ok', 'paid', now - 30 * MINUTE);
    db.prepare('INSERT INTO payments (order_id) VALUES (?)').run('o-ok');
    const { sent, sink } = memorySink();
    const evaluator = invariants({
      checks: [
        dataCheck({
          name: 'paid_orders_have_payments',
          sql: paidOrdersSql,
          query: sqliteFinding({ db, sql: paidOrdersSql }),
          alert,
        }),
      ],
      clock: new FakeClock(),
      sinks: [sink],
    });
    await evaluator.evaluateOnce();
    expect(sent).toHaveLength(1);
    const evidence = sent[0]?.evidence;
    expect(evidence?.ids).toEqual(['o-5', 'o-4', 'o-3']);
    expect(evidence?.total).toBe(5);
    expect(evidence?.oldestAgeMs).toBeGreaterThanOrEqual(10 * MINUTE);
    expect(evidence?.oldestAgeMs).toBeLessThan(11 * MINUTE);
    expect(evidence?.query).toBe(paidOrdersSql);
    const text = formatAlert(sent[0] as AlertNotification);
    expect(text).toContain('ids: o-5, o-4, o-3 (3 of 5)');
    expect(text).toContain('next: keel replay --type payment.completed --since 1h');

    for (let i = 1; i <= 5; i++) db.prepare('INSERT INTO payments (order_id) VALUES (?)').run(`o-${i}`);
    await evaluator.evaluateOnce();
    expect(sent.map((n) => n.status)).toEqual(['firing', 'resolved']);
  });

  it('matches published and consumed events by id and alerts on the oldest unconsumed one', async () => {
    const publish = db.prepare('INSERT INTO outbox (id, type, published_at) VALUES (?, ?, ?)');
    const consume = db.prepare('INSERT INTO inbox (event_id, consumed_at) VALUES (?, ?)');
    for (let i = 1; i <= 6; i++) publish.run(`evt-${i}`, 'payment.completed', now - (10 - i) * MINUTE);
    for (const id of ['evt-1', 'evt-3', 'evt-5', 'evt-6']) consume.run(id, now);
    // A consumed id that was never published must not hide an unconsumed one.
    consume.run('evt-stray', now);
    const unconsumedSql = `SELECT e.id, unixepoch('subsec') * 1000 - e.published_at AS age_ms, count(*) OVER () AS total
      FROM outbox e LEFT JOIN inbox i ON i.event_id = e.id
      WHERE i.event_id IS NULL ORDER BY e.published_at LIMIT 20`;
    const unconsumed = sqliteFinding({ db, sql: unconsumedSql });
    const counts = db.prepare(
      'SELECT (SELECT count(*) FROM outbox) AS published, (SELECT count(*) FROM outbox e JOIN inbox i ON i.event_id = e.id) AS consumed',
    );
    const check = flowCheck({
      name: 'payment_events_consumed',
      sql: unconsumedSql,
      maxAgeMs: 2 * MINUTE,
      query: () => {
        const { published, consumed } = counts.get() as { published: number; consumed: number };
        return { published, consumed, ...unconsumed() };
      },
      alert: defineAlert({ ...alert, what: 'payment.completed events not consumed' }),
    });
    const { sent, sink } = memorySink();
    const evaluator = invariants({ checks: [check], clock: new FakeClock(), sinks: [sink] });
    await evaluator.evaluateOnce();
    expect(sent).toHaveLength(1);
    expect(sent[0]?.evidence).toMatchObject({ ids: ['evt-2', 'evt-4'], total: 2 });
    expect(sent[0]?.evidence.detail).toMatch(/^6 published, 4 consumed, 2 unconsumed, oldest 8m/);
    consume.run('evt-2', now);
    consume.run('evt-4', now);
    publish.run('evt-7', 'payment.completed', Date.now()); // young: within maxAgeMs
    await evaluator.evaluateOnce();
    expect(sent.map((n) => n.status)).toEqual(['firing', 'resolved']);
  });

  it('computes its parameters at each evaluation, so a cut-off follows the clock', () => {
    const db = new DatabaseSync(':memory:');
    db.exec('CREATE TABLE orders (id TEXT, paid_at INTEGER)');
    db.prepare('INSERT INTO orders VALUES (?, ?)').run('o-1', 1_000);
    let now = 1_000;
    const paidLongAgo = sqliteFinding({
      db,
      sql: 'SELECT id FROM orders WHERE paid_at < ?',
      params: () => [now - 300_000],
    });
    expect(paidLongAgo().ids).toEqual([]);
    now += 300_001;
    expect(paidLongAgo().ids).toEqual(['o-1']);
    expect(() => sqliteFinding({ db, sql: 'SELECT id FROM orders', params: 5 as never })).toThrow(
      /^params: /,
    );
    db.close();
  });

  it('refuses rows without an id column and a check without its SQL', () => {
    expect(() => sqliteFinding({ db, sql: 'SELECT 1 AS nope' })()).toThrow(/`id` column/);
    expect(() => dataCheck({ name: 'x', sql: ' ', query: () => ({ ids: [], total: 0 }), alert })).toThrow(
      /sql/,
    );
  });
});

describeWithService('DATABASE_URL', 'data checks on PostgreSQL', (url) => {
  const suffix = `${process.pid}_${randomBytes(3).toString('hex')}`;
  const orders = `inv_orders_${suffix}`;
  const payments = `inv_payments_${suffix}`;
  const pool = new pg.Pool({ connectionString: url, max: 2 });

  beforeAll(async () => {
    await pool.query(
      `CREATE TABLE ${orders} (id text PRIMARY KEY, status text NOT NULL, paid_at timestamptz)`,
    );
    await pool.query(`CREATE TABLE ${payments} (id serial PRIMARY KEY, order_id text NOT NULL)`);
  });
  afterAll(async () => {
    await pool.query(`DROP TABLE IF EXISTS ${orders}, ${payments}`);
    await pool.end();
  });

  it('lists paid orders without a payment after 5 minutes, then resolves', async () => {
    await pool.query(
      `INSERT INTO ${orders} VALUES ('p-1', 'paid', now() - interval '20 minutes'), ('p-2', 'paid', now() - interval '7 minutes'),
        ('p-3', 'paid', now() - interval '1 minute'), ('p-4', 'open', NULL), ('p-5', 'paid', now() - interval '1 hour')`,
    );
    await pool.query(`INSERT INTO ${payments} (order_id) VALUES ('p-5')`);
    const sql = `SELECT o.id, extract(epoch FROM now() - o.paid_at) * 1000 AS age_ms, count(*) OVER () AS total
      FROM ${orders} o
      WHERE o.status = 'paid' AND o.paid_at < now() - $1::interval
        AND NOT EXISTS (SELECT 1 FROM ${payments} p WHERE p.order_id = o.id)
      ORDER BY o.paid_at LIMIT 20`;
    const { sent, sink } = memorySink();
    const evaluator = invariants({
      checks: [
        dataCheck({
          name: 'paid_orders_have_payments',
          sql,
          query: postgresFinding({ pool, sql, params: ['5 minutes'] }),
          alert,
        }),
      ],
      clock: new FakeClock(),
      sinks: [sink],
    });
    await evaluator.evaluateOnce();
    expect(sent).toHaveLength(1);
    expect(sent[0]?.evidence).toMatchObject({ ids: ['p-1', 'p-2'], total: 2, query: sql });
    expect(sent[0]?.evidence.oldestAgeMs).toBeGreaterThanOrEqual(20 * MINUTE);
    await pool.query(`INSERT INTO ${payments} (order_id) VALUES ('p-1'), ('p-2')`);
    await evaluator.evaluateOnce();
    expect(sent.map((n) => n.status)).toEqual(['firing', 'resolved']);
  });
});
