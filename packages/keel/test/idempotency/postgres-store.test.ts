import { randomUUID } from 'node:crypto';
import { InvalidOptionError } from 'keel';
import { IdempotencyLeaseLostError, type IdempotencyRecord, idempotency } from 'keel/idempotency';
import { POSTGRES_IDEMPOTENCY_DDL, postgresIdempotencyDdl, postgresStore } from 'keel/postgres';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { describeWithService } from '../support/services.ts';
import { recordFixture } from './record-fixture.ts';
import { runStoreConformance } from './store-conformance.ts';
import { raceTwoProcesses } from './two-process-race.ts';

function uniqueTable(): string {
  return `keel_idem_${randomUUID().replaceAll('-', '').slice(0, 12)}`;
}

const record = recordFixture;

const request = (key: string) => ({
  key,
  principal: 'user-1',
  method: 'POST',
  route: '/charges',
  payload: { amount: 100 },
});

describe('postgresStore options', () => {
  const pool = { query: async () => ({ rows: [], rowCount: 0 }) };

  it('refuses a pool without a query method, naming the option', () => {
    expect(() => postgresStore({ pool: {} as never })).toThrow(InvalidOptionError);
    expect(() => postgresStore({ pool: {} as never })).toThrow(/^pool: /);
  });

  it('refuses table and schema names that are not plain identifiers', () => {
    for (const table of ['', 'idem; DROP TABLE users', 'a"b', '1abc', 'a-b', 'x'.repeat(49)]) {
      expect(() => postgresStore({ pool, table }), table).toThrow(/^table: /);
    }
    expect(() => postgresStore({ pool, schema: 'public.x' })).toThrow(/^schema: /);
    expect(() => postgresIdempotencyDdl({ table: 'bad name' })).toThrow(/^table: /);
  });

  it('exports the DDL for migrations, quoted and schema-qualified when asked', () => {
    expect(POSTGRES_IDEMPOTENCY_DDL).toContain('CREATE TABLE IF NOT EXISTS "keel_idempotency"');
    const ddl = postgresIdempotencyDdl({ table: 'idem', schema: 'billing' });
    expect(ddl).toContain('CREATE TABLE IF NOT EXISTS "billing"."idem"');
    expect(ddl).toContain('ON "billing"."idem" (state, lease_until)');
    expect(ddl).toContain('ON "billing"."idem" (expires_at)');
    expect(postgresStore({ pool, table: 'idem', schema: 'billing' }).ddl).toBe(ddl);
  });

  it('refuses a namedStatements that is not a boolean', () => {
    expect(() => postgresStore({ pool, namedStatements: 'yes' as never })).toThrow(InvalidOptionError);
    expect(() => postgresStore({ pool, namedStatements: 1 as never })).toThrow(/^namedStatements: /);
  });

  it('refuses a negative or fractional limit before querying', async () => {
    const store = postgresStore({ pool });
    await expect(store.expiredLeases(0, -1)).rejects.toThrow(/^limit: /);
    await expect(store.purgeExpired(0, 1.5)).rejects.toThrow(/^limit: /);
  });
});

describeWithService('DATABASE_URL', 'postgresStore against Postgres', (url) => {
  let pool: pg.Pool;
  const tables: string[] = [];

  async function freshStore(options: { schema?: string } = {}) {
    const table = uniqueTable();
    tables.push(options.schema === undefined ? `"${table}"` : `"${options.schema}"."${table}"`);
    const store = postgresStore({ pool, table, ...options });
    await store.ensureSchema();
    return store;
  }

  beforeAll(() => {
    pool = new pg.Pool({ connectionString: url, max: 10 });
  });

  afterAll(async () => {
    for (const table of tables) await pool.query(`DROP TABLE IF EXISTS ${table}`);
    await pool.end();
  });

  runStoreConformance('postgres', async () => {
    const store = postgresStore({ pool, table: uniqueTable() });
    await store.ensureSchema();
    return { store, close: async () => void (await pool.query(`DROP TABLE ${store.qualifiedName}`)) };
  });

  it('creates the table and its indexes once, even when many callers race', async () => {
    const store = await freshStore();
    await Promise.all(Array.from({ length: 8 }, () => store.ensureSchema()));
    const { rows } = await pool.query('SELECT indexname FROM pg_indexes WHERE tablename = $1 ORDER BY 1', [
      store.table,
    ]);
    expect(rows.map((r) => r.indexname)).toEqual([
      `${store.table}_expires_idx`,
      `${store.table}_lease_idx`,
      `${store.table}_pkey`,
    ]);
  });

  it('lives in the given schema', async () => {
    await pool.query('CREATE SCHEMA IF NOT EXISTS keel_test_schema');
    const store = await freshStore({ schema: 'keel_test_schema' });
    expect(await store.insertIfAbsent(record('k'))).toBe(true);
    const { rows } = await pool.query(`SELECT count(*)::int AS n FROM keel_test_schema."${store.table}"`);
    expect(rows[0].n).toBe(1);
  });

  it('round-trips a record with numbers as numbers and the response and phases as JSON', async () => {
    const store = await freshStore();
    const full = record('k', {
      state: 'completed',
      sequence: 9_007_199_254_740_991,
      response: { status: 201, headers: { 'content-type': 'application/json' }, body: '{"id":"ch_1"}' },
      recoveryPoint: 'charge',
      phases: { attempt: null, charge: { id: 'ch_1', nested: [1, 'two', { three: true }] } },
    });
    expect(await store.insertIfAbsent(full)).toBe(true);
    expect(await store.get('k')).toEqual(full);
    expect(await store.get('missing')).toBeUndefined();
  });

  it('lets exactly one of many concurrent inserts of a key win', async () => {
    const store = await freshStore();
    const results = await Promise.all(Array.from({ length: 20 }, () => store.insertIfAbsent(record('k'))));
    expect(results.filter(Boolean)).toHaveLength(1);
  });

  it('lets exactly one of many concurrent replaces with the same token win', async () => {
    const store = await freshStore();
    const first = record('k');
    await store.insertIfAbsent(first);
    const results = await Promise.all(
      Array.from({ length: 20 }, () => store.replace(first.token, record('k'))),
    );
    expect(results.filter(Boolean)).toHaveLength(1);
    expect(await store.delete('k', first.token)).toBe(false);
  });

  it('sends the operations of one event-loop turn as one statement per kind, each caller getting its own answer', async () => {
    const table = uniqueTable();
    tables.push(`"${table}"`);
    const statements: string[] = [];
    const store = postgresStore({ pool: recording(pool, statements), table });
    await store.ensureSchema();
    const existing = Array.from({ length: 10 }, (_, i) => record(`old-${i}`));
    await Promise.all(existing.map((r) => store.insertIfAbsent(r)));

    statements.length = 0;
    const fresh = Array.from({ length: 30 }, (_, i) => record(`new-${i}`));
    const claimed = await Promise.all([...existing, ...fresh].map((r) => store.insertIfAbsent(r)));
    expect(claimed).toEqual([...existing.map(() => false), ...fresh.map(() => true)]);
    expect(statements).toHaveLength(1);

    statements.length = 0;
    const read = await Promise.all(['new-0', 'missing', 'old-3', 'new-0'].map((k) => store.get(k)));
    expect(read.map((r) => r?.token)).toEqual([
      fresh[0]?.token,
      undefined,
      existing[3]?.token,
      fresh[0]?.token,
    ]);
    expect(statements).toHaveLength(1);

    statements.length = 0;
    const replaced = await Promise.all(
      fresh.map((r, i) => store.replace(i % 2 === 0 ? r.token : 'stale-token', { ...r, recoveryPoint: 'p' })),
    );
    expect(replaced).toEqual(fresh.map((_, i) => i % 2 === 0));
    expect(statements).toHaveLength(1);
    expect((await store.get('new-1'))?.recoveryPoint).toBeNull();
    expect((await store.get('new-2'))?.recoveryPoint).toBe('p');

    const deleted = await Promise.all(existing.map((r, i) => store.delete(r.key, i < 5 ? r.token : 'stale')));
    expect(deleted).toEqual(existing.map((_, i) => i < 5));
  });

  it('commits claims without waiting for the flush, and never leaves that setting on the connection', async () => {
    const single = new pg.Pool({ connectionString: url, max: 1 });
    const table = uniqueTable();
    tables.push(`"${table}"`);
    const statements: string[] = [];
    const store = postgresStore({ pool: recording(single, statements), table });
    try {
      await store.ensureSchema();
      const claimed = record('relaxed');
      expect(await store.insertIfAbsent(claimed)).toBe(true);
      const claim = statements.at(-1) ?? '';
      expect(claim).toContain("set_config('synchronous_commit', 'off', true)");
      // The same (only) connection afterwards: the application's own commits stay synchronous.
      expect((await single.query('SHOW synchronous_commit')).rows[0].synchronous_commit).toBe('on');
      expect(await store.replace(claimed.token, { ...claimed, state: 'completed' })).toBe(true);
      expect(statements.at(-1)).not.toContain('synchronous_commit');
    } finally {
      await single.end();
    }
  });

  it('names the claims, so a connection parses and plans them once, and leaves every other statement unnamed', async () => {
    const single = new pg.Pool({ connectionString: url, max: 1 });
    const table = uniqueTable();
    tables.push(`"${table}"`);
    const names: Array<string | undefined> = [];
    const store = postgresStore({ pool: recording(single, [], names), table });
    try {
      await store.ensureSchema();
      const claims = Array.from({ length: 3 }, (_, i) => record(`named-${i}`));
      await Promise.all(claims.map((r) => store.insertIfAbsent(r)));
      await store.insertIfAbsent(record('named-alone'));
      await store.insertIfAbsent(record('named-alone-again'));
      const claimNames = names.slice(1);
      expect(claimNames).toHaveLength(3);
      expect(claimNames.every((name) => name?.startsWith('keel_'))).toBe(true);
      // The single-row claim reuses its name; the batch has its own.
      expect(new Set(claimNames).size).toBe(2);

      names.length = 0;
      const [first] = claims as [IdempotencyRecord];
      await store.get(first.key);
      await store.replace(first.token, { ...first, state: 'completed' });
      await store.delete('named-alone', 'stale');
      expect(names).toEqual([undefined, undefined, undefined]);

      const { rows } = await single.query('SELECT name, statement FROM pg_prepared_statements');
      expect(rows.map((row) => row.name).sort()).toEqual([...new Set(claimNames)].sort());
      expect(rows.every((row) => row.statement.includes(`"${table}"`))).toBe(true);
    } finally {
      await single.end();
    }
  });

  it('names the claims of two tables apart, on one connection', async () => {
    const single = new pg.Pool({ connectionString: url, max: 1 });
    const stores = [uniqueTable(), uniqueTable()].map((table) => {
      tables.push(`"${table}"`);
      return postgresStore({ pool: single, table });
    });
    try {
      for (const store of stores) await store.ensureSchema();
      for (const store of stores) expect(await store.insertIfAbsent(record('shared-key'))).toBe(true);
      for (const store of stores) expect((await store.get('shared-key'))?.state).toBe('in-flight');
      const { rows } = await single.query('SELECT count(*)::int AS n FROM pg_prepared_statements');
      expect(rows[0].n).toBe(2);
    } finally {
      await single.end();
    }
  });

  it('sends every statement unnamed with namedStatements: false, for a driver that takes only text', async () => {
    const table = uniqueTable();
    tables.push(`"${table}"`);
    const textOnly = {
      query: (text: string, values?: unknown[]) => {
        if (typeof text !== 'string') throw new TypeError('this driver takes only text');
        return pool.query(text, values);
      },
    };
    const store = postgresStore({ pool: textOnly, table, namedStatements: false });
    await store.ensureSchema();
    const claims = Array.from({ length: 4 }, (_, i) => record(`unnamed-${i}`));
    expect(await Promise.all(claims.map((r) => store.insertIfAbsent(r)))).toEqual([true, true, true, true]);
    expect(await store.insertIfAbsent(record('unnamed-alone'))).toBe(true);
    expect(await store.insertIfAbsent(record('unnamed-alone'))).toBe(false);
  });

  it("keeps the stored token the winner's when one turn claims a key twice", async () => {
    const store = await freshStore();
    const contenders = Array.from({ length: 5 }, () => record('same'));
    const won = await Promise.all(contenders.map((r) => store.insertIfAbsent(r)));
    expect(won.filter(Boolean)).toHaveLength(1);
    expect((await store.get('same'))?.token).toBe(contenders[won.indexOf(true)]?.token);
  });

  it('fails only the caller whose row is bad, not the others sharing its statement', async () => {
    const store = await freshStore();
    const a = record('a');
    const b = record('b');
    await Promise.all([store.insertIfAbsent(a), store.insertIfAbsent(b)]);
    const results = await Promise.allSettled([
      store.replace(a.token, { ...a, recoveryPoint: 'charged' }),
      store.replace(b.token, { ...b, state: 'bogus' as 'completed' }),
      store.insertIfAbsent(record('c')),
      store.insertIfAbsent(record('d', { state: 'bogus' as 'completed' })),
    ]);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled', 'rejected']);
    expect((await store.get('a'))?.recoveryPoint).toBe('charged');
    expect((await store.get('b'))?.state).toBe('in-flight');
    expect(await store.get('c')).toBeDefined();
    expect(await store.get('d')).toBeUndefined();
  });

  it('purges in bounded batches, and parallel sweepers never purge a row twice', async () => {
    const store = await freshStore();
    for (let i = 0; i < 50; i++) await store.insertIfAbsent(record(`old-${i}`, { expiresAt: 1_000 + i }));
    await store.insertIfAbsent(record('live', { expiresAt: 10_000 }));
    const counts = await Promise.all([store.purgeExpired(5_000, 30), store.purgeExpired(5_000, 30)]);
    expect(Math.max(...counts)).toBeLessThanOrEqual(30);
    const rest = await store.purgeExpired(5_000, 30);
    expect(counts[0] + counts[1] + rest).toBe(50);
    expect(await store.get('live')).toBeDefined();
  });

  it('lists expired leases oldest first, up to the limit, skipping completed records', async () => {
    const store = await freshStore();
    await store.insertIfAbsent(record('c', { leaseUntil: 300 }));
    await store.insertIfAbsent(record('a', { leaseUntil: 100 }));
    await store.insertIfAbsent(record('done', { leaseUntil: 50, state: 'completed' }));
    await store.insertIfAbsent(record('b', { leaseUntil: 200 }));
    await store.insertIfAbsent(record('live', { leaseUntil: 5_000 }));
    expect((await store.expiredLeases(1_000, 2)).map((r) => r.key)).toEqual(['a', 'b']);
    expect((await store.expiredLeases(1_000, 10)).map((r) => r.key)).toEqual(['a', 'b', 'c']);
    expect(await store.expiredLeases(1_000, 0)).toEqual([]);
  });

  describe('complete() joining the caller transaction', () => {
    async function setup() {
      const store = await freshStore();
      const business = `${store.table}_orders`;
      tables.push(`"${business}"`);
      await pool.query(`CREATE TABLE "${business}" (id text PRIMARY KEY)`);
      const engine = idempotency({ store });
      const decision = await engine.begin(request('order-1'));
      if (decision.kind !== 'execute') throw new Error('expected to execute');
      const client = await pool.connect();
      const orders = async () => (await pool.query(`SELECT id FROM "${business}"`)).rows.map((r) => r.id);
      return { store, engine, lease: decision.lease, client, business, orders };
    }
    const response = { status: 201, headers: { 'content-type': 'text/plain' }, body: 'created' };

    it('rolls the stored response back with the business write', async () => {
      const { store, engine, lease, client, business, orders } = await setup();
      try {
        await client.query('BEGIN');
        await client.query(`INSERT INTO "${business}" (id) VALUES ('o1')`);
        await lease.complete(response, { tx: client });
        // Not visible outside the transaction before it commits.
        expect((await store.get(lease.key))?.state).toBe('in-flight');
        await client.query('ROLLBACK');
      } finally {
        client.release();
      }
      expect(await orders()).toEqual([]);
      const stored = await store.get(lease.key);
      expect(stored?.state).toBe('in-flight');
      expect(stored?.response).toBeNull();
      await expect(engine.begin(request('order-1'))).rejects.toMatchObject({ status: 409 });
    });

    it('commits the stored response with the business write, and the next request replays it', async () => {
      const { store, engine, lease, client, business, orders } = await setup();
      try {
        await client.query('BEGIN');
        await client.query(`INSERT INTO "${business}" (id) VALUES ('o1')`);
        await lease.complete(response, { tx: client });
        await client.query('COMMIT');
      } finally {
        client.release();
      }
      expect(await orders()).toEqual(['o1']);
      expect((await store.get(lease.key))?.state).toBe('completed');
      expect(await engine.begin(request('order-1'))).toEqual({ kind: 'replay', response });
    });

    it('fails the write inside the transaction when the lease was taken over', async () => {
      const { store, lease, client } = await setup();
      const current = await store.get(lease.key);
      if (!current) throw new Error('missing record');
      await store.replace(current.token, { ...current, token: 'thief' });
      try {
        await client.query('BEGIN');
        await expect(lease.complete(response, { tx: client })).rejects.toBeInstanceOf(
          IdempotencyLeaseLostError,
        );
        await client.query('ROLLBACK');
      } finally {
        client.release();
      }
    });

    it('refuses a tx that is not a client', async () => {
      const { store, client } = await setup();
      client.release();
      await expect(store.replace('t', record('x'), { notAClient: true })).rejects.toThrow(/^tx: /);
    });
  });

  it('runs each key once when two OS processes race over the same 100 keys', async () => {
    const table = uniqueTable();
    tables.push(`"${table}"`, `"${table}_effects"`);
    await postgresStore({ pool, table }).ensureSchema();
    await pool.query(`CREATE TABLE "${table}_effects" (key text NOT NULL, pid int NOT NULL)`);
    const outcomes = await raceTwoProcesses(['postgres', url, table, '100', '2']);
    for (const o of outcomes) {
      expect(o.errors).toEqual([]);
      expect(o.executed + o.replayed + o.conflicted).toBe(200);
    }
    const { rows } = await pool.query(`SELECT key, count(*)::int AS n FROM "${table}_effects" GROUP BY key`);
    expect(rows).toHaveLength(100);
    expect(rows.every((r) => r.n === 1)).toBe(true);
    expect(outcomes.reduce((sum, o) => sum + o.executed, 0)).toBe(100);
    // Both processes won some keys, so the race was real.
    const pids = await pool.query(`SELECT DISTINCT pid FROM "${table}_effects"`);
    expect(pids.rows).toHaveLength(2);
    const completed = await pool.query(`SELECT count(*)::int AS n FROM "${table}" WHERE state = 'completed'`);
    expect(completed.rows[0].n).toBe(100);
  }, 60_000);
});

/**
 * A pool that records the text (and the name, when a statement is named) of every statement it
 * runs, taking both of pg's call forms.
 */
function recording(target: pg.Pool, texts: string[], names: Array<string | undefined> = []) {
  return {
    query: (textOrConfig: string | { name: string; text: string; values: unknown[] }, values?: unknown[]) => {
      const named = typeof textOrConfig === 'object';
      texts.push(named ? textOrConfig.text : textOrConfig);
      names.push(named ? textOrConfig.name : undefined);
      return named ? target.query(textOrConfig) : target.query(textOrConfig, values);
    },
  };
}
