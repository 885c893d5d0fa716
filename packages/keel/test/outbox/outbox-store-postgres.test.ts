import { postgresOutbox } from 'keel/postgres';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { describeWithService } from '../support/services.ts';
import { manualClock, type OutboxHarness, outboxStoreConformance } from './outbox-store-conformance.ts';

describeWithService('DATABASE_URL', 'PostgreSQL', (url) => {
  const prefix = `ob_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
  let pool: pg.Pool;
  let tables = 0;
  const created: string[] = [];
  beforeAll(() => {
    pool = new pg.Pool({ connectionString: url, max: 6 });
  });
  afterAll(async () => {
    for (const table of created) await pool.query(`DROP TABLE IF EXISTS "${table}"`);
    await pool.end();
  });

  async function harness(): Promise<OutboxHarness> {
    const table = `${prefix}_${tables++}`;
    created.push(table, `${table}_business`);
    const clock = manualClock();
    const store = postgresOutbox({ pool, table, clock });
    await store.ensureSchema();
    await pool.query(`CREATE TABLE "${table}_business" (id text PRIMARY KEY)`);
    return {
      store,
      clock,
      async transaction(work, businessId) {
        const client = await pool.connect();
        try {
          await client.query('BEGIN');
          await client.query(`INSERT INTO "${table}_business" VALUES ($1)`, [businessId]);
          const result = await work(client);
          await client.query('COMMIT');
          return result;
        } catch (error) {
          await client.query('ROLLBACK');
          throw error;
        } finally {
          client.release();
        }
      },
      async businessRows() {
        const { rows } = await pool.query(`SELECT count(*)::int AS n FROM "${table}_business"`);
        return (rows[0] as { n: number }).n;
      },
      async dispose() {
        await store.close();
      },
    };
  }

  outboxStoreConformance('postgres', harness);

  describe('postgres outbox specifics', () => {
    it('claims from a backlog Postgres has no statistics for by walking the pending index, not reading all of it', async () => {
      const table = `${prefix}_nostats`;
      created.push(table);
      const store = postgresOutbox({ pool, table });
      await store.ensureSchema();
      // No statistics, ever: autovacuum must not analyse the table while the test runs.
      await pool.query(`ALTER TABLE "${table}" SET (autovacuum_enabled = false)`);
      // Large enough for the guess without statistics to go wrong: at 20,000 events Postgres still
      // walked the index; at 80,000 a claim without the store's plan setting read all of them.
      const backlog = 80_000;
      const client = await pool.connect();
      try {
        await client.query('BEGIN');
        for (let done = 0; done < backlog; done += 1_000) {
          await store.append(
            client,
            Array.from({ length: 1_000 }, (_, i) => ({
              type: 'payment.completed',
              aggregateType: 'payment',
              aggregateId: `p-${done + i}`,
              payload: { amount: 1_500 },
            })),
          );
        }
        await client.query('COMMIT');
      } finally {
        client.release();
      }
      const tuplesRead = async () => {
        const { rows } = await pool.query(
          'SELECT idx_tup_read::int AS n FROM pg_stat_user_indexes WHERE indexrelname = $1',
          [`${table}_pending_idx`],
        );
        return (rows[0] as { n: number } | undefined)?.n ?? 0;
      };
      const before = await tuplesRead();
      const claimed = await store.claim('relay-1', 100, 30_000);
      expect(claimed).toHaveLength(100);
      // A backend reports its index reads when its transaction ends, to shared statistics that
      // other backends see a moment later.
      let read = before;
      for (let wait = 0; wait < 50 && read === before; wait++) {
        await new Promise((resolve) => setTimeout(resolve, 100));
        read = await tuplesRead();
      }
      expect(read - before).toBeGreaterThan(0);
      // A bitmap of the pending index reads every unpublished event before sorting them.
      expect(read - before).toBeLessThan(backlog / 10);
      await store.close();
    });

    it('drops the type, publication-time and unpublished-aggregate indexes of earlier versions and leaves pages room for HOT leases', async () => {
      const h = await harness();
      const store = h.store as ReturnType<typeof postgresOutbox>;
      await pool.query(`CREATE INDEX "${store.table}_type_idx" ON "${store.table}" (type, created_at)`);
      await pool.query(
        `CREATE INDEX "${store.table}_published_idx" ON "${store.table}" (published_at) WHERE published_at IS NOT NULL`,
      );
      await pool.query(
        `CREATE INDEX "${store.table}_pending_aggregate_idx" ON "${store.table}" (aggregate_type, aggregate_id, seq) WHERE published_at IS NULL`,
      );
      await store.ensureSchema();
      const { rows } = await pool.query(
        "SELECT indexname FROM pg_indexes WHERE tablename = $1 AND indexname LIKE '%\\_idx' ORDER BY indexname",
        [store.table],
      );
      expect(rows.map((row: { indexname: string }) => row.indexname.slice(store.table.length))).toEqual([
        '_aggregate_idx',
        '_created_idx',
        '_pending_idx',
      ]);
      const options = await pool.query('SELECT reloptions FROM pg_class WHERE relname = $1', [store.table]);
      expect(options.rows[0]?.reloptions).toEqual(['fillfactor=75']);
      await h.dispose();
    });

    it('wakes appended() at commit through LISTEN, not before, and releases the client on abort', async () => {
      const h = await harness();
      const store = h.store as ReturnType<typeof postgresOutbox>;
      const controller = new AbortController();
      // The first wait opens the listener; it wakes once on connecting, to cover appends made meanwhile.
      await store.appended(controller.signal);
      let woken = false;
      const wake = store.appended(controller.signal).then(() => {
        woken = true;
      });
      const client = await pool.connect();
      await client.query('BEGIN');
      await store.append(client, { type: 't', aggregateType: 'a', aggregateId: '1', payload: null });
      await new Promise((resolve) => setTimeout(resolve, 50));
      expect(woken).toBe(false);
      await client.query('COMMIT');
      client.release();
      await wake;
      expect(store.listening).toBe(true);
      const idleBefore = pool.idleCount;
      controller.abort();
      await new Promise((resolve) => setTimeout(resolve, 50));
      expect(store.listening).toBe(false);
      expect(pool.idleCount).toBe(idleBefore + 1);
      await h.dispose();
    });

    it('reconnects the listener after its connection is killed', async () => {
      const h = await harness();
      const store = h.store as ReturnType<typeof postgresOutbox>;
      const controller = new AbortController();
      await store.appended(controller.signal);
      const { rows } = await pool.query(
        `SELECT pid FROM pg_stat_activity WHERE query LIKE 'LISTEN "${store.channel}"%'`,
      );
      expect(rows).toHaveLength(1);
      // The killed connection wakes waiters (the relay re-checks), then a new one listens again.
      await Promise.all([
        store.appended(controller.signal),
        pool.query('SELECT pg_terminate_backend($1)', [(rows[0] as { pid: number }).pid]),
      ]);
      await store.appended(controller.signal);
      expect(store.listening).toBe(true);
      const wake = store.appended(controller.signal);
      const client = await pool.connect();
      await client.query('BEGIN');
      await store.append(client, { type: 't', aggregateType: 'a', aggregateId: '1', payload: null });
      await client.query('COMMIT');
      client.release();
      await wake;
      controller.abort();
      await h.dispose();
    });

    it('validates its options', () => {
      expect(() => postgresOutbox({ pool, table: 'x'.repeat(41) })).toThrow(/table/);
      expect(() => postgresOutbox({ pool, channel: 'bad-channel' })).toThrow(/channel/);
      expect(() => postgresOutbox({ pool: {} as pg.Pool })).toThrow(/pool/);
    });
  });
});
