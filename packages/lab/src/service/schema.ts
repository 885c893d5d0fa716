/**
 * @module
 * The service's tables, as numbered migrations that run once each (a `service_migrations` table
 * remembers which ran), written in the SQL both SQLite and Postgres accept: text ids, integer money
 * in minor units, epoch-millisecond `BIGINT` times. Orders carry their status (`pending` →
 * `charging` → `paid`), payments are unique per order, and the sales table is what the heavy report
 * reads.
 */
import type { DatabaseSync } from 'node:sqlite';
import { setTimeout as sleep } from 'node:timers/promises';
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
  {
    // The invariants look at orders by status and time, and at payments by time, from where they
    // last found them clean: without these, each round read both tables whole.
    version: 4,
    name: 'invariant indexes',
    sql: `
CREATE INDEX orders_status_updated_idx ON orders (status, updated_at);
CREATE INDEX payments_created_idx ON payments (created_at);
`,
  },
];

/** The longest a start-up waits, in all, for another process's write lock before it fails. */
const SQLITE_LOCK_PATIENCE_MS = 30_000;

/** SQLite's answer when another connection holds the lock past the busy timeout. */
function isSqliteBusy(error: unknown): boolean {
  const { errcode, message } = (error ?? {}) as { errcode?: unknown; message?: unknown };
  // SQLITE_BUSY (5) and its extended codes (5 + n·256).
  if (typeof errcode === 'number') return (errcode & 0xff) === 5;
  return typeof message === 'string' && message.includes('database is locked');
}

/** Versions recorded as applied; none when the ledger does not exist yet. Reads only. */
function appliedSqliteVersions(db: DatabaseSync): Set<number> {
  const ledger = db
    .prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'service_migrations'")
    .get();
  if (ledger === undefined) return new Set();
  const rows = db.prepare('SELECT version FROM service_migrations').all() as { version: number }[];
  return new Set(rows.map((row) => Number(row.version)));
}

/**
 * Takes the write lock, waiting with back-off while another process holds it: a busy timeout alone
 * can lose every race to a writer that takes the lock again the moment it lets go.
 */
async function beginImmediate(db: DatabaseSync): Promise<void> {
  const started = Date.now();
  for (let attempt = 0; ; attempt++) {
    try {
      db.exec('BEGIN IMMEDIATE');
      return;
    } catch (error) {
      if (!isSqliteBusy(error) || Date.now() - started >= SQLITE_LOCK_PATIENCE_MS) throw error;
      await sleep(Math.random() * Math.min(500, 10 * 2 ** attempt));
    }
  }
}

async function migrateSqlite(db: DatabaseSync, ledger: string): Promise<void> {
  // A restart finds the schema up to date: reading it needs no lock in WAL mode, so a start-up
  // never waits on (or fails behind) another instance's writes.
  const found = appliedSqliteVersions(db);
  if (MIGRATIONS.every((migration) => found.has(migration.version))) return;
  await beginImmediate(db);
  try {
    db.exec(ledger);
    const applied = appliedSqliteVersions(db);
    for (const migration of MIGRATIONS) {
      if (applied.has(migration.version)) continue;
      db.exec(migration.sql);
      db.prepare('INSERT INTO service_migrations VALUES (?, ?, ?)').run(
        migration.version,
        migration.name,
        Date.now(),
      );
    }
    db.exec('COMMIT');
  } catch (error) {
    if (db.isTransaction) db.exec('ROLLBACK');
    throw error;
  }
}

/**
 * Brings the database up to the latest schema; safe to call on every start and from several
 * processes. On SQLite an up-to-date schema is only read; otherwise every pending migration commits
 * with its row in `service_migrations` in one transaction, taken with patience while another
 * process writes.
 *
 * @example
 * await migrateSchema(db.driver);
 */
export async function migrateSchema(driver: DatabaseDriver): Promise<void> {
  const ledger =
    'CREATE TABLE IF NOT EXISTS service_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)';
  if (driver.dialect === 'sqlite') return migrateSqlite(driver.db, ledger);
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
