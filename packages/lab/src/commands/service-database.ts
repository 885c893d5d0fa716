/**
 * @module
 * Opens the payments service's database for a one-shot command (`keel check`, `keel backfill`) from
 * the same `--db` the service takes: a sqlite file path or a `postgres://` URL. Unlike the service,
 * a command never creates a database: a missing file, a refused connection or a database without
 * the service's tables is a {@link DatabaseOpenError} with a message that names it, and nothing is
 * written. A read-only open (`keel check`) keeps it so: sqlite opens the file read-only, Postgres
 * sessions default to read-only transactions.
 */
import { existsSync } from 'node:fs';
import { DatabaseSync } from 'node:sqlite';
import { KeelError } from 'keel';
import pg from 'pg';
import type { DatabaseDriver } from '../service/database.ts';
import { OUTBOX_TABLE } from '../service/event-outbox.ts';
import { INBOX_TABLE } from '../service/invoice-consumer.ts';

/** The database named by `--db` cannot be used: it is missing, unreachable or not the service's. */
export class DatabaseOpenError extends KeelError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('KEEL_LAB_DATABASE_OPEN', message, options);
  }
}

/** Tables a command looks for; the first three must be there. */
const SERVICE_TABLES = ['orders', 'payments', 'invoices'] as const;
const KEEL_TABLES = [OUTBOX_TABLE, INBOX_TABLE] as const;

export interface ServiceDatabase {
  readonly driver: DatabaseDriver;
  /** The database as a person reads it, without a password: `sqlite payments.db`. */
  readonly label: string;
  /** Which of Keel's tables exist: the outbox and inbox only where the guarded service ran. */
  readonly has: (table: (typeof KEEL_TABLES)[number]) => boolean;
  close(): Promise<void>;
}

/** `target` without the password of a URL. */
export function redactedTarget(target: string): string {
  return target.replace(/\/\/([^:@/]*):[^@/]*@/, '//$1:…@');
}

async function presentTables(driver: DatabaseDriver): Promise<Set<string>> {
  const names = [...SERVICE_TABLES, ...KEEL_TABLES];
  if (driver.dialect === 'sqlite') {
    const rows = driver.db
      .prepare(
        `SELECT name FROM sqlite_master WHERE type = 'table' AND name IN (${names.map(() => '?').join(', ')})`,
      )
      .all(...names) as { name: string }[];
    return new Set(rows.map((row) => row.name));
  }
  const { rows } = await driver.pool.query<{ name: string }>(
    'SELECT name FROM unnest($1::text[]) AS name WHERE to_regclass(name) IS NOT NULL',
    [names],
  );
  return new Set(rows.map((row) => row.name));
}

function openDriver(target: string, readOnly: boolean): DatabaseDriver {
  if (/^postgres(ql)?:\/\//.test(target)) {
    const pool = new pg.Pool({
      connectionString: target,
      max: 2,
      connectionTimeoutMillis: 5_000,
      ...(readOnly && { options: '-c default_transaction_read_only=on' }),
    });
    // An idle connection the server ends is dropped by the pool; the next query opens another.
    pool.on('error', () => undefined);
    return { dialect: 'postgres', pool };
  }
  if (target.includes('://')) {
    throw new DatabaseOpenError(
      `--db must be a sqlite file or a postgres:// URL, got ${redactedTarget(target)}`,
    );
  }
  if (!existsSync(target)) throw new DatabaseOpenError(`no database at ${target}: the file does not exist`);
  const db = new DatabaseSync(target, { readOnly, timeout: 5_000 });
  return { dialect: 'sqlite', db };
}

/**
 * Opens `target` and checks it holds the service's tables.
 *
 * @example
 * const database = await openServiceDatabase('payments.db', { readOnly: true });
 * try { … database.driver … } finally { await database.close(); }
 */
export async function openServiceDatabase(
  target: string,
  options: { readonly readOnly: boolean },
): Promise<ServiceDatabase> {
  const label = `${target.includes('://') ? 'postgres' : 'sqlite'} ${redactedTarget(target)}`;
  let driver: DatabaseDriver | undefined;
  const close = async () => {
    if (driver?.dialect === 'sqlite') driver.db.close();
    else await driver?.pool.end();
  };
  try {
    driver = openDriver(target, options.readOnly);
    const tables = await presentTables(driver);
    const missing = SERVICE_TABLES.filter((table) => !tables.has(table));
    if (missing.length > 0) {
      throw new DatabaseOpenError(
        `${label} is not the payments service's database: no table ${missing.join(', ')}`,
      );
    }
    return { driver, label, has: (table) => tables.has(table), close };
  } catch (error) {
    await close().catch(() => undefined);
    if (error instanceof DatabaseOpenError) throw error;
    const reason = error instanceof Error ? error.message : String(error);
    throw new DatabaseOpenError(`cannot open ${label}: ${reason}`, { cause: error });
  }
}
