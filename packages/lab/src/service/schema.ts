/**
 * @module
 * The service's tables, as numbered migrations that run once each (a `service_migrations` table
 * remembers which ran), written in the SQL both SQLite and Postgres accept: text ids, integer money
 * in minor units, epoch-millisecond `BIGINT` times. Orders carry their status (`pending` →
 * `charging` → `paid`), payments are unique per order, and the sales table is what the heavy report
 * reads.
 */
import type { DatabaseDriver } from './database.ts';

/** One schema change; `sql` may hold several statements. */
interface Migration {
  readonly version: number;
  readonly name: string;
  readonly sql: string;
}

const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'users, orders, payments, invoices',
    sql: `
CREATE TABLE users (
  id TEXT PRIMARY KEY,
  email TEXT NOT NULL UNIQUE,
  password_hash TEXT NOT NULL,
  created_at BIGINT NOT NULL
);
CREATE TABLE orders (
  id TEXT PRIMARY KEY,
  user_id TEXT NOT NULL REFERENCES users (id),
  amount INTEGER NOT NULL CHECK (amount > 0),
  currency TEXT NOT NULL,
  description TEXT,
  status TEXT NOT NULL CHECK (status IN ('pending', 'charging', 'paid')),
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL
);
CREATE INDEX orders_user_idx ON orders (user_id);
CREATE TABLE payments (
  id TEXT PRIMARY KEY,
  order_id TEXT NOT NULL UNIQUE REFERENCES orders (id),
  provider TEXT NOT NULL,
  provider_charge_id TEXT NOT NULL,
  amount INTEGER NOT NULL,
  currency TEXT NOT NULL,
  created_at BIGINT NOT NULL
);
CREATE TABLE invoices (
  id TEXT PRIMARY KEY,
  payment_id TEXT NOT NULL REFERENCES payments (id),
  order_id TEXT NOT NULL,
  email TEXT NOT NULL,
  amount INTEGER NOT NULL,
  currency TEXT NOT NULL,
  created_at BIGINT NOT NULL
);
CREATE INDEX invoices_order_idx ON invoices (order_id);
CREATE INDEX invoices_payment_idx ON invoices (payment_id);
`,
  },
  {
    version: 2,
    name: 'sales',
    sql: `
CREATE TABLE sales (
  id INTEGER PRIMARY KEY,
  day TEXT NOT NULL,
  region TEXT NOT NULL,
  product TEXT NOT NULL,
  quantity INTEGER NOT NULL,
  amount INTEGER NOT NULL
);
`,
  },
  {
    version: 3,
    name: 'charge targets',
    sql: `
CREATE TABLE charge_targets (
  provider_key TEXT PRIMARY KEY,
  provider TEXT NOT NULL,
  pinned_at BIGINT NOT NULL
);
`,
  },
];

/**
 * Brings the database up to the latest schema; safe to call on every start and from several
 * processes (each migration commits with its row in `service_migrations`).
 *
 * @example
 * await migrateSchema(db.driver);
 */
export async function migrateSchema(driver: DatabaseDriver): Promise<void> {
  const ledger =
    'CREATE TABLE IF NOT EXISTS service_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)';
  if (driver.dialect === 'sqlite') {
    const { db } = driver;
    db.exec(ledger);
    for (const migration of MIGRATIONS) {
      db.exec('BEGIN IMMEDIATE');
      try {
        const done = db.prepare('SELECT 1 FROM service_migrations WHERE version = ?').get(migration.version);
        if (done === undefined) {
          db.exec(migration.sql);
          db.prepare('INSERT INTO service_migrations VALUES (?, ?, ?)').run(
            migration.version,
            migration.name,
            Date.now(),
          );
        }
        db.exec('COMMIT');
      } catch (error) {
        db.exec('ROLLBACK');
        throw error;
      }
    }
    return;
  }
  const client = await driver.pool.connect();
  try {
    await client.query(ledger);
    for (const migration of MIGRATIONS) {
      await client.query('BEGIN');
      try {
        // One migrator at a time across instances; the lock ends with the transaction.
        await client.query('LOCK TABLE service_migrations IN EXCLUSIVE MODE');
        const done = await client.query('SELECT 1 FROM service_migrations WHERE version = $1', [
          migration.version,
        ]);
        if (done.rowCount === 0) {
          await client.query(migration.sql);
          await client.query('INSERT INTO service_migrations VALUES ($1, $2, $3)', [
            migration.version,
            migration.name,
            Date.now(),
          ]);
        }
        await client.query('COMMIT');
      } catch (error) {
        await client.query('ROLLBACK');
        throw error;
      }
    }
  } finally {
    client.release();
  }
}
