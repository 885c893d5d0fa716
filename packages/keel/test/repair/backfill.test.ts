import { DatabaseSync } from 'node:sqlite';
import { postgresCheckpoints } from 'keel/postgres';
import {
  type BackfillProgress,
  backfill,
  type CheckpointStore,
  isBackfillConflict,
  memoryCheckpoints,
} from 'keel/repair';
import { sqliteCheckpoints } from 'keel/sqlite';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { describeWithService } from '../support/services.ts';

interface CopyOptions {
  failAtBatch?: number;
  dryRun?: boolean;
  batchSize?: number;
  restart?: boolean;
  onProgress?: (progress: BackfillProgress) => void;
}

/** A source table and a target table on one database, and the walk that copies one into the other. */
interface Harness {
  readonly store: CheckpointStore;
  seed(count: number): Promise<void>;
  copied(): Promise<number[]>;
  checkpointTable(): Promise<boolean>;
  /** The backfill that copies source rows with id > cursor into target. */
  copy(options?: CopyOptions): ReturnType<typeof backfill<{ id: number }, number>>;
}

function sqliteHarness(): Harness {
  const db = new DatabaseSync(':memory:');
  db.exec('CREATE TABLE source (id INTEGER PRIMARY KEY); CREATE TABLE target (id INTEGER PRIMARY KEY)');
  const store = sqliteCheckpoints({ db, table: 'copy_checkpoints' });
  return {
    store,
    async seed(count) {
      for (let id = 1; id <= count; id++) db.prepare('INSERT INTO source VALUES (?)').run(id);
    },
    async copied() {
      return (db.prepare('SELECT id FROM target ORDER BY id').all() as { id: number }[]).map((r) => r.id);
    },
    async checkpointTable() {
      return db.prepare("SELECT 1 FROM sqlite_master WHERE name = 'copy_checkpoints'").get() !== undefined;
    },
    copy(options = {}) {
      let batch = 0;
      return backfill<{ id: number }, number>({
        name: 'copy',
        checkpoints: store,
        batchSize: options.batchSize ?? 3,
        dryRun: options.dryRun ?? false,
        restart: options.restart ?? false,
        ...(options.onProgress !== undefined && { onProgress: options.onProgress }),
        nextBatch: (after, { tx, limit }) =>
          (tx as DatabaseSync)
            .prepare('SELECT id FROM source WHERE id > ? ORDER BY id LIMIT ?')
            .all(after ?? 0, limit) as {
            id: number;
          }[],
        cursorOf: (row) => row.id,
        apply: (rows, { tx }) => {
          for (const row of rows) (tx as DatabaseSync).prepare('INSERT INTO target VALUES (?)').run(row.id);
          if (++batch === options.failAtBatch) throw new Error('crash after the writes, before the commit');
        },
      });
    },
  };
}

function conformance(name: string, make: () => Promise<Harness>) {
  describe(`backfill on ${name}`, () => {
    it('walks every item once in batches and saves the cursor after each', async () => {
      const h = await make();
      await h.seed(10);
      const progress: BackfillProgress[] = [];
      const run = await h.copy({ onProgress: (p) => progress.push(p) });
      expect(run).toMatchObject({ resumedFrom: null, cursor: 10, batches: 4, items: 10, finished: true });
      expect(run.checkpoint).toMatchObject({ name: 'copy', cursor: 10, applied: 10, batches: 4 });
      expect(await h.copied()).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
      expect(progress.map((p) => [p.batchItems, p.cursor, p.checkpoint?.applied])).toEqual([
        [3, 3, 3],
        [3, 6, 6],
        [3, 9, 9],
        [1, 10, 10],
      ]);
    });

    it('rolls a failed batch back with its checkpoint, and resumes after the last committed one', async () => {
      const h = await make();
      await h.seed(10);
      await expect(h.copy({ failAtBatch: 3 })).rejects.toThrow('crash after the writes');
      expect(await h.copied()).toEqual([1, 2, 3, 4, 5, 6]);
      const resumed = await h.copy();
      expect(resumed).toMatchObject({ resumedFrom: 6, items: 4, finished: true });
      expect(resumed.checkpoint).toMatchObject({ applied: 10, batches: 4 });
      expect(await h.copied()).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    });

    it('counts and names the first items in a dry run, and creates not even its table', async () => {
      const h = await make();
      await h.seed(7);
      const dry = await h.copy({ dryRun: true });
      expect(dry).toMatchObject({
        dryRun: true,
        items: 7,
        batches: 3,
        finished: true,
        checkpoint: undefined,
      });
      expect(dry.sample).toEqual(['1', '2', '3', '4', '5', '6', '7']);
      expect(await h.copied()).toEqual([]);
      expect(await h.checkpointTable()).toBe(false);
    });

    it('refuses to move a checkpoint another run moved since it read it', async () => {
      const h = await make();
      await h.seed(4);
      await h.copy({ batchSize: 2, failAtBatch: 2 }).catch(() => undefined);
      const stale = await h.store.read('copy');
      await h.copy();
      const error = await h.store
        .transaction(async (tx) =>
          h.store.save(tx, { ...(stale as NonNullable<typeof stale>), batches: 9, updatedAt: 0 }, stale),
        )
        .catch((e: unknown) => e);
      expect(isBackfillConflict(error)).toBe(true);
      expect(await h.store.read('copy')).toMatchObject({ cursor: 4, applied: 4 });
    });

    it('walks from the start again on restart, keeping the running totals', async () => {
      const h = await make();
      await h.seed(3);
      await h.copy();
      const again = await backfill({
        name: 'copy',
        checkpoints: h.store,
        restart: true,
        nextBatch: () => [],
        cursorOf: (n: number) => n,
        apply: () => undefined,
      });
      expect(again).toMatchObject({ resumedFrom: null, items: 0, finished: true });
      expect(again.checkpoint).toMatchObject({ applied: 3 });
    });
  });
}

conformance('sqlite checkpoints', async () => sqliteHarness());

describe('backfill options', () => {
  const base = {
    name: 'x',
    checkpoints: memoryCheckpoints(),
    nextBatch: () => [1],
    cursorOf: (n: number) => n,
    apply: () => undefined,
  };
  it('names the option at fault', async () => {
    await expect(backfill({ ...base, batchSize: 0 })).rejects.toThrow(
      'batchSize: must be an integer from 1 to 100000',
    );
    await expect(backfill({ ...base, name: '' })).rejects.toThrow(
      'name: must be a string of 1 to 200 characters',
    );
    await expect(backfill({ ...base, checkpoints: {} as CheckpointStore })).rejects.toThrow('checkpoints:');
    await expect(backfill({ ...base, apply: undefined as never })).rejects.toThrow(
      'apply: must be a function',
    );
    expect(() => sqliteCheckpoints({ db: new DatabaseSync(':memory:'), table: 'no-dashes' })).toThrow(
      'table:',
    );
  });

  it('stops rather than loop when the cursor does not move', async () => {
    await expect(
      backfill({ ...base, batchSize: 1, cursorOf: () => 0, nextBatch: () => [0] }),
    ).rejects.toThrow('cursorOf: the cursor did not move past 0');
  });

  it('stops between batches when its signal aborts, and resumes from there', async () => {
    const checkpoints = memoryCheckpoints();
    const stop = new AbortController();
    const walk = (signal?: AbortSignal) =>
      backfill({
        name: 'numbers',
        checkpoints,
        batchSize: 2,
        nextBatch: (after: number | undefined) =>
          [1, 2, 3, 4, 5, 6].filter((n) => n > (after ?? 0)).slice(0, 2),
        cursorOf: (n: number) => n,
        apply: () => undefined,
        onProgress: (p) => {
          if (p.batches === 2) stop.abort();
        },
        ...(signal !== undefined && { signal }),
      });
    expect(await walk(stop.signal)).toMatchObject({ items: 4, finished: false, cursor: 4 });
    expect(await walk()).toMatchObject({ resumedFrom: 4, items: 2, finished: true });
  });
});

describeWithService('DATABASE_URL', 'backfill on postgres checkpoints', (url) => {
  const suffix = `${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
  let pool: pg.Pool;
  let harnesses = 0;
  const dropped: string[] = [];
  beforeAll(() => {
    pool = new pg.Pool({ connectionString: url, max: 4 });
  });
  afterAll(async () => {
    for (const table of dropped) await pool.query(`DROP TABLE IF EXISTS ${table}`);
    await pool.end();
  });

  conformance('postgres checkpoints', async () => {
    const n = ++harnesses;
    const [source, target, checkpoints] = [
      `bf_source_${suffix}_${n}`,
      `bf_target_${suffix}_${n}`,
      `bf_cp_${suffix}_${n}`,
    ];
    dropped.push(source, target, checkpoints);
    await pool.query(
      `CREATE TABLE ${source} (id int PRIMARY KEY); CREATE TABLE ${target} (id int PRIMARY KEY)`,
    );
    const store = postgresCheckpoints({ pool, table: checkpoints });
    type Client = { query(text: string, values?: unknown[]): Promise<{ rows: unknown[] }> };
    return {
      store,
      async seed(count) {
        await pool.query(`INSERT INTO ${source} SELECT generate_series(1, $1)`, [count]);
      },
      async copied() {
        return (await pool.query(`SELECT id FROM ${target} ORDER BY id`)).rows.map(
          (r) => (r as { id: number }).id,
        );
      },
      async checkpointTable() {
        return (await pool.query('SELECT to_regclass($1) IS NOT NULL AS present', [checkpoints])).rows[0]
          .present;
      },
      copy(options = {}) {
        let batch = 0;
        return backfill<{ id: number }, number>({
          name: 'copy',
          checkpoints: store,
          batchSize: options.batchSize ?? 3,
          dryRun: options.dryRun ?? false,
          restart: options.restart ?? false,
          ...(options.onProgress !== undefined && { onProgress: options.onProgress }),
          nextBatch: async (after, { tx, limit }) =>
            (
              await (tx as Client).query(`SELECT id FROM ${source} WHERE id > $1 ORDER BY id LIMIT $2`, [
                after ?? 0,
                limit,
              ])
            ).rows as { id: number }[],
          cursorOf: (row) => row.id,
          apply: async (rows, { tx }) => {
            await (tx as Client).query(`INSERT INTO ${target} SELECT unnest($1::int[])`, [
              rows.map((r) => r.id),
            ]);
            if (++batch === options.failAtBatch) throw new Error('crash after the writes, before the commit');
          },
        });
      },
    };
  });
});
