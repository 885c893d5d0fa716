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

  it('validates its options', () => {
    const db = new DatabaseSync(':memory:');
    expect(() => sqliteOutbox({ db, table: '1bad' })).toThrow(/table/);
    expect(() => sqliteOutbox({ db: {} as DatabaseSync })).toThrow(/db/);
  });
});
