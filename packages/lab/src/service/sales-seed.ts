/**
 * @module
 * Fills the sales table the report reads with deterministic rows — hundreds of thousands by default,
 * a few hundred in tests — so the report is genuinely heavy and two runs with one seed report the
 * same figures. Rows go in batches inside one transaction: one commit, one fsync.
 */
import type { DatabaseDriver } from './database.ts';

const REGIONS = ['north', 'south', 'east', 'west', 'central', 'islands'] as const;
const PRODUCTS = Array.from({ length: 40 }, (_, i) => `sku-${String(i + 1).padStart(3, '0')}`);
/** Sales spread over this many days before 2026-01-01. */
const DAYS = 730;
const BATCH = 500;
const EPOCH = Date.UTC(2026, 0, 1);

/** A small, fast, seeded generator (mulberry32). */
function generator(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

type SaleRow = [id: number, day: string, region: string, product: string, quantity: number, amount: number];

function rowsOf(seed: number, count: number): () => SaleRow | undefined {
  const random = generator(seed);
  let id = 0;
  return () => {
    if (id >= count) return undefined;
    id++;
    const day = new Date(EPOCH - Math.floor(random() * DAYS) * 86_400_000).toISOString().slice(0, 10);
    const quantity = 1 + Math.floor(random() * 9);
    return [
      id,
      day,
      REGIONS[Math.floor(random() * REGIONS.length)] as string,
      PRODUCTS[Math.floor(random() * PRODUCTS.length)] as string,
      quantity,
      quantity * (199 + Math.floor(random() * 9_800)),
    ];
  };
}

/**
 * Seeds `rows` sales unless the table already has rows; returns how many it inserted.
 *
 * @example
 * await seedSales(db.driver, { rows: 300_000, seed: 1 });
 */
export async function seedSales(
  driver: DatabaseDriver,
  options: { rows: number; seed: number },
): Promise<number> {
  // Nothing to seed takes no lock: a restart must not queue behind another instance's writes.
  if (options.rows === 0) return 0;
  const next = rowsOf(options.seed, options.rows);
  if (driver.dialect === 'sqlite') {
    const { db } = driver;
    if (db.prepare('SELECT 1 FROM sales LIMIT 1').get() !== undefined) return 0;
    const insert = db.prepare('INSERT INTO sales VALUES (?, ?, ?, ?, ?, ?)');
    db.exec('BEGIN IMMEDIATE');
    try {
      for (let row = next(); row !== undefined; row = next()) insert.run(...row);
      db.exec('COMMIT');
    } catch (error) {
      db.exec('ROLLBACK');
      throw error;
    }
    return options.rows;
  }
  const client = await driver.pool.connect();
  try {
    await client.query('BEGIN');
    await client.query('LOCK TABLE sales IN EXCLUSIVE MODE');
    const existing = await client.query('SELECT 1 FROM sales LIMIT 1');
    if ((existing.rowCount ?? 0) > 0) {
      await client.query('ROLLBACK');
      return 0;
    }
    let row = next();
    while (row !== undefined) {
      const values: unknown[] = [];
      const tuples: string[] = [];
      while (row !== undefined && tuples.length < BATCH) {
        const base = values.length;
        tuples.push(`($${base + 1}, $${base + 2}, $${base + 3}, $${base + 4}, $${base + 5}, $${base + 6})`);
        values.push(...row);
        row = next();
      }
      await client.query(`INSERT INTO sales VALUES ${tuples.join(', ')}`, values);
    }
    await client.query('COMMIT');
    return options.rows;
  } catch (error) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw error;
  } finally {
    client.release();
  }
}
