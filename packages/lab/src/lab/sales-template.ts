/**
 * @module
 * The seeded sales table a report scenario reads, made once per lab run: the schema and the rows go
 * into a template SQLite file in the run's work directory, and each mode starts from a copy of it,
 * so both modes read the same hundreds of thousands of rows without paying for the seeding twice.
 * The service finds the table full and seeds nothing. (Postgres keeps its table between runs; the
 * service seeds it there once, when it is empty.)
 */
import { copyFileSync, existsSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { checkInteger } from 'keel';
import { seedSales } from '../service/sales-seed.ts';
import { migrateSchema } from '../service/schema.ts';

export interface SalesTemplateOptions {
  /** The lab run's work directory, where the template is kept. */
  readonly workDirectory: string;
  /** Sales rows to seed. */
  readonly rows: number;
  /** Seed of the rows: the service's `--seed`, so the template holds what it would have seeded. */
  readonly seed: number;
}

/** A service database copied from the template. */
export interface SeededCopy {
  readonly path: string;
  /** Time spent seeding the template now, in ms; 0 when an earlier run of this lab made it. */
  readonly seedMs: number;
}

/**
 * Copies the template (making it first, if this lab run has none yet) to `path`.
 *
 * @example
 * const { path, seedMs } = await copySalesTemplate(join(work, 'cascade-naive.db'), { workDirectory: work, rows: 300_000, seed: 7 });
 */
export async function copySalesTemplate(path: string, options: SalesTemplateOptions): Promise<SeededCopy> {
  const rows = checkInteger('rows', options.rows, 0);
  const seed = checkInteger('seed', options.seed, 0);
  const template = join(options.workDirectory, `sales-template-${rows}-${seed}.db`);
  let seedMs = 0;
  if (!existsSync(template)) {
    const started = performance.now();
    // Written under another name and renamed once whole, so a failed seeding leaves no template.
    const partial = `${template}.partial`;
    rmSync(partial, { force: true });
    const db = new DatabaseSync(partial);
    try {
      await migrateSchema({ dialect: 'sqlite', db });
      await seedSales({ dialect: 'sqlite', db }, { rows, seed });
    } finally {
      db.close();
    }
    renameSync(partial, template);
    seedMs = Math.round(performance.now() - started);
  }
  copyFileSync(template, path);
  return { path, seedMs };
}
