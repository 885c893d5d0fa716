import { randomUUID } from 'node:crypto';
import { InvalidOptionError } from 'keel';
import { postgresInbox, postgresInboxDdl } from 'keel/postgres';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { describeWithService } from '../support/services.ts';
import { eventFixture, runInboxConformance } from './inbox-conformance.ts';

function uniqueTable(): string {
  return `keel_inbox_${process.pid}_${randomUUID().replaceAll('-', '').slice(0, 8)}`;
}

describe('postgresInbox options', () => {
  const pool = { query: async () => ({ rows: [], rowCount: 0 }), connect: async () => ({}) as never };

  it('refuses a pool without query and connect, naming the option', () => {
    expect(() => postgresInbox({ pool: {} as never })).toThrow(InvalidOptionError);
    expect(() => postgresInbox({ pool: { query: pool.query } as never })).toThrow(/^pool: /);
  });

  it('refuses table and schema names that are not plain identifiers', () => {
    for (const table of ['', 'inbox; DROP TABLE users', 'a"b', '1abc', 'x'.repeat(33)]) {
      expect(() => postgresInbox({ pool, table }), table).toThrow(/^table: /);
    }
    expect(() => postgresInbox({ pool, schema: 'public.x' })).toThrow(/^schema: /);
    expect(() => postgresInbox({ pool, clock: {} as never })).toThrow(/^clock: /);
  });

  it('exports the DDL for migrations, quoted and schema-qualified when asked', () => {
    const ddl = postgresInboxDdl({ table: 'inbox', schema: 'billing' });
    expect(ddl).toContain('CREATE TABLE IF NOT EXISTS "billing"."inbox" (');
    expect(ddl).toContain('CREATE TABLE IF NOT EXISTS "billing"."inbox_attempts" (');
    expect(ddl).toContain('CREATE TABLE IF NOT EXISTS "billing"."inbox_dead_letters" (');
    expect(postgresInbox({ pool, table: 'inbox', schema: 'billing' }).ddl).toBe(ddl);
  });
});

describeWithService('DATABASE_URL', 'postgresInbox against Postgres', (url) => {
  let pool: pg.Pool;
  const tables: string[] = [];

  beforeAll(() => {
    pool = new pg.Pool({ connectionString: url, max: 16 });
  });
  afterAll(async () => {
    for (const table of tables) {
      await pool.query(
        `DROP TABLE IF EXISTS "${table}", "${table}_attempts", "${table}_dead_letters", "${table}_effects"`,
      );
    }
    await pool.end();
  });

  async function freshInbox(clock?: { now(): number }) {
    const table = uniqueTable();
    tables.push(table);
    const inbox = postgresInbox<pg.PoolClient>(
      clock === undefined ? { pool, table } : { pool, table, clock },
    );
    await inbox.ensureSchema();
    await pool.query(`CREATE TABLE "${table}_effects" (key text NOT NULL)`);
    const countEffects = async (key: string) => {
      const { rows } = await pool.query(`SELECT count(*)::int AS n FROM "${table}_effects" WHERE key = $1`, [
        key,
      ]);
      return (rows[0] as { n: number }).n;
    };
    const writeEffect = async (tx: pg.PoolClient, key: string) => {
      await tx.query(`INSERT INTO "${table}_effects" (key) VALUES ($1)`, [key]);
    };
    return { inbox, table, countEffects, writeEffect };
  }

  runInboxConformance<pg.PoolClient>('postgres', async (clock) => {
    const { inbox, countEffects, writeEffect } = await freshInbox(clock);
    return { inbox, countEffects, writeEffect, close: async () => {} };
  });

  it('creates its tables idempotently, even from many callers at once', async () => {
    const { inbox } = await freshInbox();
    await Promise.all([inbox.ensureSchema(), inbox.ensureSchema(), inbox.ensureSchema()]);
    expect(await inbox.countDeadLetters()).toBe(0);
  });

  it('hands the handler a pooled client inside BEGIN, returned to the pool afterwards', async () => {
    const { inbox } = await freshInbox();
    const result = await inbox.process('g', randomUUID(), async (tx) => {
      const { rows } = await tx.query('SELECT now() = statement_timestamp() AS single_statement');
      return (rows[0] as { single_statement: boolean }).single_statement;
    });
    // Inside a transaction now() is the transaction's start, earlier than the statement's.
    expect(result).toEqual({ duplicate: false, value: false });
    expect(pool.totalCount - pool.idleCount).toBe(0);
  });

  it('makes one effect from 32 deliveries of one event racing on 16 connections', async () => {
    const { inbox, countEffects, writeEffect } = await freshInbox();
    const event = eventFixture();
    let runs = 0;
    const results = await Promise.all(
      Array.from({ length: 32 }, () =>
        inbox.process('invoices', event.id, async (tx) => {
          runs++;
          await writeEffect(tx, event.id);
          // Hold the uncommitted inbox row while the others arrive and wait on it.
          await tx.query('SELECT pg_sleep(0.05)');
        }),
      ),
    );
    expect(results.filter((result) => !result.duplicate)).toHaveLength(1);
    expect(runs).toBe(1);
    expect(await countEffects(event.id)).toBe(1);
  });

  it('makes one effect each for many events delivered twice, all at once', async () => {
    const { inbox, countEffects, writeEffect } = await freshInbox();
    const events = Array.from({ length: 20 }, () => eventFixture());
    const deliveries = [...events, ...events].map((event) =>
      inbox.process('invoices', event.id, (tx) => writeEffect(tx, event.id)),
    );
    const results = await Promise.all(deliveries);
    expect(results.filter((result) => result.duplicate)).toHaveLength(20);
    for (const event of events) expect(await countEffects(event.id)).toBe(1);
  });
});
