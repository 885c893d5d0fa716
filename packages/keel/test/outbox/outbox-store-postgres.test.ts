import { postgresOutbox } from 'keel/postgres';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dropPostgresOutbox } from '../support/postgres-outbox-tables.ts';
import { describeWithService } from '../support/services.ts';
import { manualClock, type OutboxHarness, outboxStoreConformance } from './outbox-store-conformance.ts';

describeWithService('DATABASE_URL', 'PostgreSQL', (url) => {
  const prefix = `ob_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
  let pool: pg.Pool;
  let tables = 0;
  const created: string[] = [];
  const outboxes: string[] = [];
  beforeAll(() => {
    pool = new pg.Pool({ connectionString: url, max: 6 });
  });
  afterAll(async () => {
    for (const table of created) await pool.query(`DROP TABLE IF EXISTS "${table}"`);
    for (const table of outboxes) await dropPostgresOutbox(pool, table);
    await pool.end();
  });

  async function harness(): Promise<OutboxHarness> {
    const table = `${prefix}_${tables++}`;
    outboxes.push(table);
    created.push(`${table}_business`);
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
    // The claim's plan must walk the queue's primary key in order and stop at its limit. Postgres
    // plans without statistics on a new table, and after a VACUUM that found every event published
    // it counts the queue as empty: either guess, wrong, could have it read and sort every event.
    const staleStatistics: Array<[string, (store: ReturnType<typeof postgresOutbox>) => Promise<void>]> = [
      ['has no statistics for', async () => {}],
      [
        'last saw empty',
        async (store) => {
          const client = await pool.connect();
          try {
            await client.query('BEGIN');
            await store.append(client, { type: 't', aggregateType: 'a', aggregateId: 'first', payload: {} });
            await client.query('COMMIT');
          } finally {
            client.release();
          }
          const [first] = await store.claim('relay-0', 10, 30_000);
          await store.markPublished('relay-0', [first?.id ?? '']);
          await pool.query(`VACUUM ANALYZE "${store.table}_pending"`);
        },
      ],
    ];
    for (const [statistics, prepare] of staleStatistics) {
      it(`claims from a backlog Postgres ${statistics} by walking the queue's primary key, not reading all of it`, async () => {
        const table = `${prefix}_stats_${staleStatistics.findIndex(([name]) => name === statistics)}`;
        outboxes.push(table);
        const store = postgresOutbox({ pool, table });
        await store.ensureSchema();
        // No new statistics: autovacuum must not analyse the tables while the test runs.
        await pool.query(`ALTER TABLE "${table}" SET (autovacuum_enabled = false)`);
        await pool.query(`ALTER TABLE "${table}_pending" SET (autovacuum_enabled = false)`);
        await prepare(store);
        // Large enough for a wrong guess to show: at 20,000 events Postgres still walked the index
        // of unpublished events of earlier versions; at 80,000 it read all of them.
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
            [`${table}_pending_pkey`],
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
        // A bitmap or a sequential scan reads every unpublished event before sorting them.
        expect(read - before).toBeLessThan(backlog / 10);
        await store.close();
      });
    }

    it('upgrades a table of an earlier version in place: its queue, leases and retry times carry over, and its writers go on appending', async () => {
      const table = `${prefix}_upgrade`;
      outboxes.push(table);
      // The table as the version before the queue made it, with the indexes of the versions before.
      await pool.query(`CREATE TABLE "${table}" (
          seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, id text NOT NULL UNIQUE, type text NOT NULL,
          aggregate_type text NOT NULL, aggregate_id text NOT NULL, payload json NOT NULL, headers json NOT NULL,
          created_at bigint NOT NULL, available_at bigint NOT NULL, published_at bigint,
          attempts integer NOT NULL DEFAULT 0, last_error text, claimed_by text, claimed_until bigint
        ) WITH (fillfactor = 75);
        CREATE INDEX "${table}_pending_idx" ON "${table}" (seq) WHERE published_at IS NULL;
        CREATE INDEX "${table}_aggregate_idx" ON "${table}" (aggregate_type, aggregate_id, seq);
        CREATE INDEX "${table}_created_idx" ON "${table}" (created_at);
        CREATE INDEX "${table}_type_idx" ON "${table}" (type, created_at);
        CREATE INDEX "${table}_published_idx" ON "${table}" (published_at) WHERE published_at IS NOT NULL;
        CREATE INDEX "${table}_pending_aggregate_idx" ON "${table}" (aggregate_type, aggregate_id, seq) WHERE published_at IS NULL`);
      const clock = manualClock();
      const now = clock.now();
      // How an earlier version appended: it set available_at itself.
      const oldInsert = `INSERT INTO "${table}" (id, type, aggregate_type, aggregate_id, payload, headers,
          created_at, available_at, published_at, attempts, last_error, claimed_by, claimed_until)
        VALUES ($1, 't', 'a', $2, '{}', '{}', $3, $4, $5, $6, $7, $8, $9)`;
      const rows: unknown[][] = [
        ['published', 'A', now, now, now, 0, null, null, null],
        ['leased', 'A', now, now, null, 0, null, 'old-relay', now + 60_000],
        ['behind-lease', 'A', now, now, null, 0, null, null, null],
        ['retrying', 'B', now, now + 10_000, null, 1, 'broker down', null, null],
        ['ready', 'C', now, now, null, 0, null, null, null],
      ];
      for (const row of rows) await pool.query(oldInsert, row);
      const store = postgresOutbox({ pool, table, clock });
      await store.ensureSchema();
      await store.ensureSchema();

      const { rows: indexes } = await pool.query(
        "SELECT indexname FROM pg_indexes WHERE tablename = $1 AND indexname LIKE '%\\_idx' ORDER BY indexname",
        [table],
      );
      expect(indexes.map((row: { indexname: string }) => row.indexname.slice(table.length))).toEqual([
        '_aggregate_idx',
        '_created_idx',
      ]);
      const options = await pool.query('SELECT reloptions FROM pg_class WHERE relname = $1', [table]);
      expect(options.rows[0]?.reloptions).toEqual(['fillfactor=50']);
      expect(await store.gauges()).toMatchObject({ unpublished: 4 });

      // The earlier version's lease and retry time still hold.
      expect((await store.claim('new-relay', 10, 30_000)).map((event) => event.id)).toEqual(['ready']);
      await store.markPublished('new-relay', ['ready']);
      // A writer of the earlier version goes on appending, and a writer of this one beside it.
      await pool.query(oldInsert, ['old-writer', 'D', now, now, null, 0, null, null, null]);
      const client = await pool.connect();
      try {
        await client.query('BEGIN');
        await store.append(client, {
          id: 'new-writer',
          type: 't',
          aggregateType: 'a',
          aggregateId: 'E',
          payload: {},
        });
        await client.query('COMMIT');
      } finally {
        client.release();
      }
      expect((await store.claim('new-relay', 10, 30_000)).map((event) => event.id)).toEqual([
        'old-writer',
        'new-writer',
      ]);
      await store.markPublished('new-relay', ['old-writer', 'new-writer']);
      clock.advance(60_001);
      const later = await store.claim('new-relay', 10, 30_000);
      expect(later.map((event) => event.id)).toEqual(['leased', 'behind-lease', 'retrying']);
      expect(later[2]).toMatchObject({ attempts: 1 });
      await store.close();
    });

    it('keeps the queue in step with the events when rows are deleted or the table is truncated or made again', async () => {
      const h = await harness();
      const store = h.store as ReturnType<typeof postgresOutbox>;
      const append = (aggregateId: string) =>
        h.transaction(
          (client) => store.append(client, { type: 't', aggregateType: 'a', aggregateId, payload: {} }),
          `business-${aggregateId}-${Math.random()}`,
        );
      const [first] = await append('1');
      await append('2');
      await append('3');
      await pool.query(`DELETE FROM "${store.table}" WHERE id = $1`, [first?.id]);
      expect(await store.gauges()).toMatchObject({ unpublished: 2 });
      expect((await store.claim('relay', 10, 30_000)).map((event) => event.aggregateId)).toEqual(['2', '3']);
      await pool.query(`TRUNCATE "${store.table}"`);
      expect(await store.gauges()).toMatchObject({ unpublished: 0 });
      await append('4');
      // A table made again under the same name starts with an empty queue, not the old one's rows.
      await pool.query(`DROP TABLE "${store.table}"`);
      await store.ensureSchema();
      expect(await store.gauges()).toMatchObject({ unpublished: 0 });
      await append('5');
      expect((await store.claim('relay', 10, 30_000)).map((event) => event.aggregateId)).toEqual(['5']);
      await h.dispose();
    });

    it('queues an event made unpublished again by hand, and drops queue rows whose event went while the triggers were bypassed', async () => {
      const h = await harness();
      const store = h.store as ReturnType<typeof postgresOutbox>;
      let appended = 0;
      const append = (aggregateId: string) =>
        h.transaction(
          (client) => store.append(client, { type: 't', aggregateType: 'a', aggregateId, payload: {} }),
          `business-${aggregateId}-${appended++}`,
        );
      const [first] = await append('1');
      await store.markPublished(
        'relay',
        (await store.claim('relay', 10, 30_000)).map((event) => event.id),
      );
      await pool.query(`UPDATE "${store.table}" SET published_at = NULL WHERE id = $1`, [first?.id]);
      expect((await store.claim('relay', 10, 30_000)).map((event) => event.id)).toEqual([first?.id]);
      await store.markPublished('relay', [first?.id ?? '']);

      // A session that fires no triggers, as a logical replica's or a restore's: the queue keeps
      // a row for an event deleted and one for an event marked published.
      const [gone] = await append('2');
      const [skipped] = await append('3');
      await append('2');
      const [ready] = await append('4');
      const client = await pool.connect();
      try {
        await client.query('BEGIN');
        await client.query("SET LOCAL session_replication_role = 'replica'");
        await client.query(`DELETE FROM "${store.table}" WHERE id = $1`, [gone?.id]);
        await client.query(`UPDATE "${store.table}" SET published_at = 1 WHERE id = $1`, [skipped?.id]);
        await client.query('COMMIT');
      } finally {
        client.release();
      }
      expect(await store.gauges()).toMatchObject({ unpublished: 4 });
      // The claim drops both rows instead of publishing them, and the aggregate behind the
      // deleted event is not held back.
      const claimed = await store.claim('relay', 10, 30_000);
      expect(claimed.map((event) => event.aggregateId)).toEqual(['2', '4']);
      expect(claimed[1]?.id).toBe(ready?.id);
      expect(await store.gauges()).toMatchObject({ unpublished: 2 });
      await h.dispose();
    });

    it('lets a role that may only append queue its events, and a relay role claim and mark through the grants ensureSchema mirrors', async () => {
      const table = `${prefix}_roles`;
      outboxes.push(table);
      const writer = `${prefix}_writer`;
      const relayRole = `${prefix}_relay`;
      await pool.query(`DROP ROLE IF EXISTS ${writer}; DROP ROLE IF EXISTS ${relayRole};
        CREATE ROLE ${writer}; CREATE ROLE ${relayRole}`);
      try {
        const owner = postgresOutbox({ pool, table });
        await owner.ensureSchema();
        await pool.query(`GRANT SELECT, UPDATE, DELETE ON "${table}" TO ${relayRole}`);
        await owner.ensureSchema();
        // Granted after the last ensureSchema, so not mirrored: the writer has no right on the queue.
        await pool.query(`GRANT INSERT ON "${table}" TO ${writer}`);
        const asRole = async (role: string) => {
          const client = await pool.connect();
          await client.query(`SET ROLE ${role}`);
          return client;
        };
        const writing = await asRole(writer);
        try {
          await writing.query('BEGIN');
          await owner.append(writing, { type: 't', aggregateType: 'a', aggregateId: '1', payload: {} });
          await writing.query('COMMIT');
          // The writer reaches the events only: the queue is the trigger's.
          await expect(writing.query(`SELECT count(*) FROM "${table}_pending"`)).rejects.toThrow(
            /permission denied/,
          );
        } finally {
          await writing.query('RESET ROLE');
          writing.release();
        }
        const relaying = await asRole(relayRole);
        try {
          const store = postgresOutbox({
            pool: {
              query: (text: string, values?: unknown[]) => relaying.query(text, values),
              connect: () => pool.connect(),
            },
            table,
          });
          const claimed = await store.claim('relay', 10, 30_000);
          expect(claimed.map((event) => event.aggregateId)).toEqual(['1']);
          await store.markPublished('relay', [claimed[0]?.id ?? '']);
          expect(await store.gauges()).toMatchObject({ unpublished: 0 });
        } finally {
          await relaying.query('RESET ROLE');
          relaying.release();
        }
      } finally {
        await dropPostgresOutbox(pool, table);
        await pool.query(`DROP ROLE IF EXISTS ${writer}; DROP ROLE IF EXISTS ${relayRole}`);
      }
    });

    it('lives in a schema of its own under mixed-case names, and refills a queue that was dropped', async () => {
      const schema = `Keel_${prefix}`;
      const table = 'Outbox_Events';
      await pool.query(`CREATE SCHEMA "${schema}"`);
      try {
        const store = postgresOutbox({ pool, schema, table });
        await store.ensureSchema();
        await store.ensureSchema();
        const client = await pool.connect();
        try {
          await client.query('BEGIN');
          await store.append(client, [
            { type: 't', aggregateType: 'a', aggregateId: '1', payload: {} },
            { type: 't', aggregateType: 'a', aggregateId: '2', payload: {} },
          ]);
          await client.query('COMMIT');
        } finally {
          client.release();
        }
        const [first] = await store.claim('relay', 1, 30_000);
        await store.markPublished('relay', [first?.id ?? '']);
        await pool.query(`DROP TABLE "${schema}"."${table}_pending"`);
        await store.ensureSchema();
        const claimed = await store.claim('relay', 10, 30_000);
        expect(claimed.map((event) => event.aggregateId)).toEqual(['2']);
        await store.close();
      } finally {
        await pool.query(`DROP SCHEMA "${schema}" CASCADE`);
      }
    });

    it('vacuums the queue after every vacuumEvery events marked published, beside the relay', async () => {
      const table = `${prefix}_vacuum`;
      outboxes.push(table);
      const store = postgresOutbox({ pool, table, vacuumEvery: 100 });
      await store.ensureSchema();
      const client = await pool.connect();
      try {
        await client.query('BEGIN');
        await store.append(
          client,
          Array.from({ length: 250 }, (_, i) => ({
            type: 't',
            aggregateType: 'a',
            aggregateId: `${i}`,
            payload: {},
          })),
        );
        await client.query('COMMIT');
      } finally {
        client.release();
      }
      // 250 marked in batches of 50: a vacuum after the second batch and after the fourth. Each
      // runs beside the marks; the test waits for it before the next batch.
      for (let batch = 1; batch <= 5; batch++) {
        const claimed = await store.claim('relay', 50, 30_000);
        await store.markPublished(
          'relay',
          claimed.map((event) => event.id),
        );
        const expected = Math.floor(batch / 2);
        for (let wait = 0; wait < 100 && store.queueMaintenance().vacuums < expected; wait++) {
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
        expect(store.queueMaintenance()).toMatchObject({ vacuums: expected, failures: 0 });
      }
      await store.close();
      const vacuumed = async () => {
        const { rows } = await pool.query(
          'SELECT vacuum_count::int AS n FROM pg_stat_user_tables WHERE relname = $1',
          [`${table}_pending`],
        );
        return (rows[0] as { n: number }).n;
      };
      let count = await vacuumed();
      for (let wait = 0; wait < 50 && count < 2; wait++) {
        await new Promise((resolve) => setTimeout(resolve, 100));
        count = await vacuumed();
      }
      expect(count).toBe(2);
      expect(() => postgresOutbox({ pool, table, vacuumEvery: -1 })).toThrow(/vacuumEvery/);
      expect(postgresOutbox({ pool, table, vacuumEvery: 0 }).queueMaintenance().vacuums).toBe(0);
    });

    it('marks a batch of neighbouring events published with HOT updates, which add no index entry', async () => {
      const h = await harness();
      const store = h.store as ReturnType<typeof postgresOutbox>;
      const batch = 500;
      await h.transaction(
        (client) =>
          store.append(
            client,
            Array.from({ length: batch }, (_, i) => ({
              type: 'payment.completed',
              aggregateType: 'payment',
              aggregateId: `p-${i}`,
              payload: { amount: 1_500, reference: 'r'.repeat(200) },
            })),
          ),
        'business-hot',
      );
      const claimed = await store.claim('relay', batch, 30_000);
      expect(claimed).toHaveLength(batch);
      await store.markPublished(
        'relay',
        claimed.map((event) => event.id),
      );
      // A backend reports its counts when its transaction ends, to shared statistics that other
      // backends see a moment later.
      const counts = async () => {
        const { rows } = await pool.query(
          'SELECT n_tup_upd::int AS updated, n_tup_hot_upd::int AS hot FROM pg_stat_user_tables WHERE relname = $1',
          [store.table],
        );
        return rows[0] as { updated: number; hot: number };
      };
      let seen = await counts();
      for (let wait = 0; wait < 50 && seen.updated < batch; wait++) {
        await new Promise((resolve) => setTimeout(resolve, 100));
        seen = await counts();
      }
      expect(seen).toEqual({ updated: batch, hot: batch });
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
