import { DatabaseSync } from 'node:sqlite';
import { InvalidOptionError } from 'keel';
import { SqliteInboxStore, sqliteInbox, sqliteInboxDdl } from 'keel/sqlite';
import { describe, expect, it } from 'vitest';
import { anonymousParametersOnly } from '../support/sqlite-driver-variants.ts';
import { eventFixture, runInboxConformance } from './inbox-conformance.ts';

for (const [name, driver] of [
  ['sqlite', (db: DatabaseSync) => db],
  ['sqlite, parameters bound as better-sqlite3 binds them', anonymousParametersOnly],
] as const) {
  runInboxConformance<DatabaseSync>(name, async (clock) => {
    const db = driver(new DatabaseSync(':memory:'));
    db.exec('CREATE TABLE effects (key TEXT NOT NULL)');
    return {
      inbox: sqliteInbox({ db, clock }),
      writeEffect: async (tx, key) => {
        tx.prepare('INSERT INTO effects (key) VALUES (?)').run(key);
      },
      countEffects: async (key) =>
        Number((db.prepare('SELECT count(*) AS n FROM effects WHERE key = ?').get(key) as { n: number }).n),
      close: async () => db.close(),
    };
  });
}

describe('sqliteInbox', () => {
  it('creates its three tables under the name given, and exports the DDL for migrations', () => {
    const db = new DatabaseSync(':memory:');
    const inbox = sqliteInbox({ db, table: 'invoice_inbox' });
    sqliteInbox({ db, table: 'invoice_inbox' }); // IF NOT EXISTS: a second store on the same tables is fine
    const tables = db
      .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
      .all()
      .map((row) => (row as { name: string }).name);
    expect(tables).toEqual(['invoice_inbox', 'invoice_inbox_attempts', 'invoice_inbox_dead_letters']);
    expect(inbox).toBeInstanceOf(SqliteInboxStore);
    expect(inbox.ddl).toBe(sqliteInboxDdl({ table: 'invoice_inbox' }));
    expect(sqliteInbox({ db }).table).toBe('keel_inbox');
    db.close();
  });

  it('refuses a handle without prepare/exec, bad table names and a clock without now()', () => {
    const db = new DatabaseSync(':memory:');
    expect(() => sqliteInbox({ db: {} as never })).toThrow(InvalidOptionError);
    expect(() => sqliteInbox({ db: {} as never })).toThrow(/^db: /);
    for (const table of ['', 'a"b', '1abc', 'x; DROP TABLE t', 'x'.repeat(33)]) {
      expect(() => sqliteInbox({ db, table }), table).toThrow(/^table: /);
    }
    expect(() => sqliteInbox({ db, clock: {} as never })).toThrow(/^clock: /);
    db.close();
  });

  it('hands the handler the very handle it was given, inside an open transaction', async () => {
    const db = new DatabaseSync(':memory:');
    const inbox = sqliteInbox({ db });
    const seen = await inbox.process('g', eventFixture().id, async (tx) => ({
      same: tx === db,
      open: db.isTransaction,
    }));
    expect(seen).toEqual({ duplicate: false, value: { same: true, open: true } });
    expect(db.isTransaction).toBe(false);
    db.close();
  });

  it('serialises work on its handle so a failure recorded meanwhile survives a rollback', async () => {
    const db = new DatabaseSync(':memory:');
    const inbox = sqliteInbox({ db });
    const event = eventFixture();
    let release = () => {};
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    const processing = inbox.process('g', 'other-event', async () => {
      await held;
      throw new Error('rolls back');
    });
    // Queued behind the open transaction rather than joining it.
    const recorded = inbox.recordFailure('g', event.id, { message: 'x', stack: null }, 1);
    release();
    await expect(processing).rejects.toThrow('rolls back');
    expect((await recorded).attempts).toBe(1);
    expect(await inbox.failedAttempts('g', event.id)).toMatchObject({ attempts: 1 });
    db.close();
  });
});
