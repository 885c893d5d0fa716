import { randomUUID } from 'node:crypto';
import { type OutboxTelemetryEvent, outboxConsumer } from 'keel/outbox';
import { postgresInbox } from 'keel/postgres';
import pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeWithService } from '../support/services.ts';
import { RecordingTransport } from './consumer-recording-transport.ts';
import { eventFixture } from './inbox-conformance.ts';

describeWithService('DATABASE_URL', 'outboxConsumer over the Postgres inbox', (url) => {
  const table = `keel_cons_${process.pid}_${randomUUID().replaceAll('-', '').slice(0, 8)}`;
  let pools: pg.Pool[];

  beforeAll(async () => {
    pools = [new pg.Pool({ connectionString: url, max: 8 }), new pg.Pool({ connectionString: url, max: 8 })];
    await postgresInbox({ pool: pools[0] as pg.Pool, table }).ensureSchema();
    await pools[0]?.query(`CREATE TABLE "${table}_invoices" (event_id text NOT NULL, amount int NOT NULL)`);
  });
  afterAll(async () => {
    await pools[0]?.query(
      `DROP TABLE IF EXISTS "${table}", "${table}_attempts", "${table}_dead_letters", "${table}_invoices"`,
    );
    await Promise.all(pools.map((pool) => pool.end()));
  });

  async function invoices(eventId: string): Promise<number> {
    const { rows } = await (pools[0] as pg.Pool).query(
      `SELECT count(*)::int AS n FROM "${table}_invoices" WHERE event_id = $1`,
      [eventId],
    );
    return (rows[0] as { n: number }).n;
  }

  it('makes one invoice from a burst of duplicate deliveries handled at once by two members on 16 connections', async () => {
    const transport = new RecordingTransport();
    const telemetry: OutboxTelemetryEvent[] = [];
    // Two members of one group, as two service instances would be, each with its own pool.
    const members = pools.map((pool) =>
      outboxConsumer({
        transport,
        inbox: postgresInbox<pg.PoolClient>({ pool, table }),
        group: 'invoices',
        handlers: {
          'payment.completed': async (event, tx) => {
            await tx.query(`INSERT INTO "${table}_invoices" (event_id, amount) VALUES ($1, $2)`, [
              event.id,
              1250,
            ]);
            await tx.query('SELECT pg_sleep(0.02)'); // keep the inbox row uncommitted while the others arrive
          },
        },
        telemetry: { emit: (event) => telemetry.push(event) },
      }),
    );
    for (const member of members) await member.start();
    const events = Array.from({ length: 4 }, () => eventFixture());
    await Promise.all(events.flatMap((event) => Array.from({ length: 8 }, () => transport.publish(event))));
    await transport.drained();
    for (const member of members) await member.stop();

    for (const event of events) expect(await invoices(event.id)).toBe(1);
    expect(telemetry.filter((e) => e.type === 'consumed')).toHaveLength(4);
    expect(telemetry.filter((e) => e.type === 'duplicate-skipped')).toHaveLength(28);
    expect(telemetry.filter((e) => e.type === 'consume-failed')).toEqual([]);
    expect(transport.settlements.every((s) => s.outcome === 'ack')).toBe(true);
  });

  it("rolls back the handler's insert with the inbox row on failure, then commits both on the retry", async () => {
    const transport = new RecordingTransport();
    let calls = 0;
    const consumer = outboxConsumer({
      transport,
      inbox: postgresInbox<pg.PoolClient>({ pool: pools[0] as pg.Pool, table }),
      group: 'invoices-retry',
      backoff: () => 1,
      handlers: {
        'payment.completed': async (event, tx) => {
          await tx.query(`INSERT INTO "${table}_invoices" (event_id, amount) VALUES ($1, $2)`, [event.id, 1]);
          if (++calls === 1) throw new Error('renderer down');
        },
      },
    });
    await consumer.start();
    const event = eventFixture();
    await transport.publish(event);
    await transport.drained();
    await consumer.stop();
    expect(calls).toBe(2);
    expect(await invoices(event.id)).toBe(1);
    expect(transport.settlements.map((s) => s.outcome)).toEqual(['retry', 'ack']);
  });

  it('parks a poison event after maxAttempts, and a re-drive after the fix makes one invoice', async () => {
    const transport = new RecordingTransport();
    const state = { fixed: false };
    const consumer = outboxConsumer({
      transport,
      inbox: postgresInbox<pg.PoolClient>({ pool: pools[0] as pg.Pool, table }),
      group: 'invoices-poison',
      maxAttempts: 3,
      backoff: () => 1,
      handlers: {
        'payment.completed': async (event, tx) => {
          await tx.query(`INSERT INTO "${table}_invoices" (event_id, amount) VALUES ($1, $2)`, [event.id, 1]);
          if (!state.fixed) throw new Error('tax table missing');
        },
      },
    });
    await consumer.start();
    const poison = eventFixture();
    const healthy = eventFixture();
    await transport.publish(poison);
    await transport.publish(healthy);
    await transport.drained();
    await consumer.stop();

    expect(await invoices(poison.id)).toBe(0);
    expect(await invoices(healthy.id)).toBe(0); // same handler, same missing table: parked too
    const letters = await consumer.deadLetters({ all: true });
    expect(letters).toHaveLength(2);
    expect(letters.find((letter) => letter.event.id === poison.id)).toMatchObject({
      event: poison,
      attempts: 3,
    });
    expect(letters.find((letter) => letter.event.id === healthy.id)).toMatchObject({
      event: healthy,
      attempts: 3,
    });

    state.fixed = true;
    const plan = await consumer.redrive({ ids: [poison.id], dryRun: true });
    expect(plan.redriven.map((event) => event.id)).toEqual([poison.id]);
    const report = await consumer.redrive({ ids: [poison.id] });
    expect(report.redriven.map((event) => event.id)).toEqual([poison.id]);
    expect(await invoices(poison.id)).toBe(1);
    expect(await consumer.countDeadLetters()).toBe(1);
    // A late redelivery of the re-driven event is a duplicate.
    await consumer.start();
    await transport.publish(poison);
    await transport.drained();
    await consumer.stop();
    expect(await invoices(poison.id)).toBe(1);
  });
});
