import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { OutboxTransactionError } from 'keel/outbox';
import { sqliteOutbox } from 'keel/sqlite';
import { afterAll, describe, expect, it } from 'vitest';
import { manualClock, type OutboxHarness, outboxStoreConformance } from './outbox-store-conformance.ts';

const scratch = mkdtempSync(join(tmpdir(), 'keel-outbox-store-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));
let files = 0;

async function harness(): Promise<OutboxHarness> {
  const db = new DatabaseSync(join(scratch, `outbox-${files++}.db`));
  db.exec('CREATE TABLE business (id TEXT PRIMARY KEY)');
  const clock = manualClock();
  const store = sqliteOutbox({ db, clock });
  return {
    store,
    clock,
    async transaction(work, businessId) {
      db.exec('BEGIN IMMEDIATE');
      try {
        db.prepare('INSERT INTO business VALUES (?)').run(businessId);
        const result = await work(db);
        db.exec('COMMIT');
        return result;
      } catch (error) {
        db.exec('ROLLBACK');
        throw error;
      }
    },
    async businessRows() {
      return (db.prepare('SELECT count(*) AS n FROM business').get() as { n: number }).n;
    },
    async dispose() {
      db.close();
    },
  };
}

outboxStoreConformance('sqlite', harness);

describe('sqlite outbox specifics', () => {
  it('refuses an append outside a transaction', async () => {
    const db = new DatabaseSync(':memory:');
    const outbox = sqliteOutbox({ db });
    await expect(
      outbox.append(db, { type: 't', aggregateType: 'a', aggregateId: '1', payload: null }),
    ).rejects.toBeInstanceOf(OutboxTransactionError);
    expect(await outbox.find({})).toEqual([]);
  });

  it('claims nothing while its own handle is inside an open transaction, then wakes after the commit', async () => {
    const db = new DatabaseSync(':memory:');
    const outbox = sqliteOutbox({ db });
    const controller = new AbortController();
    let woken = false;
    const wake = outbox.appended(controller.signal).then(() => {
      woken = true;
    });
    db.exec('BEGIN');
    await outbox.append(db, { type: 't', aggregateType: 'a', aggregateId: '1', payload: null });
    expect(await outbox.claim('r1', 10, 1_000)).toEqual([]);
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(woken).toBe(false);
    db.exec('COMMIT');
    await wake;
    expect(await outbox.claim('r1', 10, 1_000)).toHaveLength(1);
    controller.abort();
  });

  it('drops the type and publication-time indexes that earlier versions created', () => {
    const db = new DatabaseSync(':memory:');
    sqliteOutbox({ db, table: 'old_outbox' });
    db.exec(`CREATE INDEX old_outbox_type_idx ON old_outbox (type, created_at);
      CREATE INDEX old_outbox_published_idx ON old_outbox (published_at) WHERE published_at IS NOT NULL`);
    sqliteOutbox({ db, table: 'old_outbox' });
    const indexes = db
      .prepare(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'old_outbox' AND sql IS NOT NULL",
      )
      .all()
      .map((row) => (row as { name: string }).name)
      .sort();
    expect(indexes).toEqual([
      'old_outbox_aggregate_idx',
      'old_outbox_created_idx',
      'old_outbox_pending_aggregate_idx',
      'old_outbox_pending_idx',
    ]);
  });

  it('marks events published that another store instance on the same file claimed', async () => {
    const db = new DatabaseSync(':memory:');
    const claiming = sqliteOutbox({ db });
    const marking = sqliteOutbox({ db });
    db.exec('BEGIN');
    await claiming.append(db, { type: 't', aggregateType: 'a', aggregateId: '1', payload: null });
    db.exec('COMMIT');
    const [claimed] = await claiming.claim('r1', 10, 1_000);
    await marking.markPublished('r2', [claimed?.id as string]);
    expect((await marking.find({}))[0]?.publishedAt).toBeNull();
    await marking.markPublished('r1', [claimed?.id as string]);
    expect((await marking.find({}))[0]?.publishedAt).not.toBeNull();
  });

  it('validates its options', () => {
    const db = new DatabaseSync(':memory:');
    expect(() => sqliteOutbox({ db, table: '1bad' })).toThrow(/table/);
    expect(() => sqliteOutbox({ db: {} as DatabaseSync })).toThrow(/db/);
  });
});
