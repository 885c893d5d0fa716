/**
 * Real payments databases for the command tests: the service's own schema (its migrations), then
 * rows written as the two configurations leave them — a guarded payment with its outbox event, its
 * inbox row and its invoice; a naive one whose fire-and-forget publish was lost (no event, no
 * invoice); a naive one whose publish got through (an invoice, no event) — and the command run as
 * a child process the way a person or cron runs it.
 */
import { spawn } from 'node:child_process';
import { DatabaseSync } from 'node:sqlite';
import { postgresInbox, postgresOutbox } from 'keel/postgres';
import { sqliteInbox, sqliteOutbox } from 'keel/sqlite';
import pg from 'pg';
import type { DatabaseDriver } from '../../src/service/database.ts';
import { OUTBOX_TABLE } from '../../src/service/event-outbox.ts';
import { INBOX_TABLE, INVOICE_GROUP } from '../../src/service/invoice-consumer.ts';
import { paymentCompleted } from '../../src/service/payment-events.ts';
import { migrateSchema } from '../../src/service/schema.ts';

/** The `keel` command under test. */
export const CLI = new URL('../../src/cli.ts', import.meta.url).pathname;

export interface CommandRun {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs `keel …args` to its end. */
export function runKeel(args: readonly string[]): Promise<CommandRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--conditions=keel-source', CLI, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk) => {
      stdout += chunk;
    });
    child.stderr.on('data', (chunk) => {
      stderr += chunk;
    });
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

/** How the service left a payment. */
export type PaymentShape = 'guarded' | 'lost' | 'invoiced';

/** A payments database on either driver, with statements written once with `?`. */
export interface PaymentsDb {
  readonly driver: DatabaseDriver;
  rows<T>(sql: string, params?: readonly (string | number)[]): Promise<T[]>;
  run(sql: string, params?: readonly (string | number)[]): Promise<void>;
  close(): Promise<void>;
}

export function sqlitePayments(path: string): PaymentsDb {
  const db = new DatabaseSync(path);
  db.exec('PRAGMA journal_mode = WAL');
  return {
    driver: { dialect: 'sqlite', db },
    rows: async <T>(sql: string, params: readonly (string | number)[] = []) =>
      db.prepare(sql).all(...params) as T[],
    run: async (sql, params = []) => void db.prepare(sql).run(...params),
    close: async () => db.close(),
  };
}

export function postgresPayments(url: string): PaymentsDb {
  const pool = new pg.Pool({ connectionString: url, max: 3 });
  // Dropping the test database terminates idle connections the pool may still be closing.
  pool.on('error', () => undefined);
  const numbered = (sql: string) => {
    let n = 0;
    return sql.replace(/\?/g, () => `$${++n}`);
  };
  return {
    driver: { dialect: 'postgres', pool },
    rows: async <T>(sql: string, params: readonly (string | number)[] = []) =>
      (await pool.query(numbered(sql), [...params])).rows as T[],
    run: async (sql, params = []) => void (await pool.query(numbered(sql), [...params])),
    close: () => pool.end(),
  };
}

/** Creates a fresh Postgres database next to the one `url` names; returns its URL and a drop. */
export async function freshPostgresDatabase(url: string, label: string) {
  const name = `lab_${label}_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
  const admin = new pg.Client({ connectionString: url });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  const own = new URL(url);
  own.pathname = `/${name}`;
  return {
    url: own.toString(),
    async drop() {
      await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await admin.end();
    },
  };
}

/**
 * The service's schema, Keel's outbox and inbox (unless `keelTables` is false, as on a database only
 * the naive configuration ran on), and `shapes.length` paid orders, each payment `ageMs` old.
 * Resolves with the payment ids in order.
 */
export async function seedPayments(
  db: PaymentsDb,
  shapes: readonly PaymentShape[],
  options: { readonly keelTables?: boolean; readonly ageMs?: number } = {},
): Promise<string[]> {
  const { driver } = db;
  await migrateSchema(driver);
  const keelTables = options.keelTables ?? true;
  const outbox =
    driver.dialect === 'sqlite'
      ? keelTables
        ? sqliteOutbox({ db: driver.db, table: OUTBOX_TABLE })
        : undefined
      : keelTables
        ? postgresOutbox({ pool: driver.pool, table: OUTBOX_TABLE })
        : undefined;
  if (keelTables) {
    if (driver.dialect === 'sqlite') sqliteInbox({ db: driver.db, table: INBOX_TABLE });
    else {
      await (outbox as ReturnType<typeof postgresOutbox>).ensureSchema();
      await postgresInbox({ pool: driver.pool, table: INBOX_TABLE }).ensureSchema();
    }
  }
  const at = Date.now() - (options.ageMs ?? 3_600_000);
  await db.run("INSERT INTO users VALUES ('usr_1', 'ada@example.com', 'x', ?)", [at]);
  const ids: string[] = [];
  for (const [i, shape] of shapes.entries()) {
    const n = String(i).padStart(5, '0');
    const payment = {
      id: `pay_${n}`,
      orderId: `ord_${n}`,
      provider: 'a',
      providerChargeId: `ch_${n}`,
      amount: 1_000 + i,
      currency: 'EUR',
      createdAt: at + i,
    };
    ids.push(payment.id);
    await db.run("INSERT INTO orders VALUES (?, 'usr_1', ?, 'EUR', NULL, 'paid', ?, ?)", [
      payment.orderId,
      payment.amount,
      at,
      at + i,
    ]);
    await db.run('INSERT INTO payments VALUES (?, ?, ?, ?, ?, ?, ?)', [
      payment.id,
      payment.orderId,
      payment.provider,
      payment.providerChargeId,
      payment.amount,
      payment.currency,
      payment.createdAt,
    ]);
    if (shape === 'guarded' && outbox !== undefined) {
      let appended: readonly { id: string }[];
      if (driver.dialect === 'sqlite') {
        driver.db.exec('BEGIN IMMEDIATE');
        appended = await outbox.append(driver.db, paymentCompleted(payment));
        driver.db.exec('COMMIT');
      } else {
        const client = await driver.pool.connect();
        await client.query('BEGIN');
        appended = await outbox.append(client, paymentCompleted(payment));
        await client.query('COMMIT');
        client.release();
      }
      const eventId = appended[0]?.id as string;
      await db.run(`UPDATE ${OUTBOX_TABLE} SET published_at = ? WHERE id = ?`, [at + i, eventId]);
      await db.run(`INSERT INTO ${INBOX_TABLE} (group_name, event_id, processed_at) VALUES (?, ?, ?)`, [
        INVOICE_GROUP,
        eventId,
        at + i,
      ]);
    }
    if (shape === 'guarded' || shape === 'invoiced') {
      await db.run("INSERT INTO invoices VALUES (?, ?, ?, 'ada@example.com', ?, 'EUR', ?)", [
        `inv_${n}`,
        payment.id,
        payment.orderId,
        payment.amount,
        at + i,
      ]);
    }
  }
  if (outbox !== undefined && 'close' in outbox) await outbox.close();
  return ids;
}
