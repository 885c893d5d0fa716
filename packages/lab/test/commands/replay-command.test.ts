import { DatabaseSync } from 'node:sqlite';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { describeWithService } from '../../../keel/test/support/services.ts';
import { isUsageError } from '../../src/commands/command.ts';
import {
  parseReplayArgs,
  replayCommand,
  replayEvents,
  replayExitCode,
} from '../../src/commands/replay-command.ts';
import type { Service } from '../../src/service/service-app.ts';
import {
  charge,
  createOrder,
  eventually,
  type Providers,
  scratchDirectory,
  signIn,
  startProviders,
  startService,
  uniqueKey,
} from '../service/service-harness.ts';

/**
 * A guarded service in lab mode whose next `payment.completed` is dropped on its way to the broker:
 * the outbox row is published, and no consumer ever saw it.
 */
function lostEventFixture(db: () => string) {
  let service: Service;
  let user: Awaited<ReturnType<typeof signIn>>;
  const fixture = {
    get service() {
      return service;
    },
    async start(directory: string, providers: Providers) {
      service = await startService(directory, providers, {
        db: db(),
        lab: true,
        invariantIntervalMs: 3_600_000,
        logAlerts: false,
      });
      user = await signIn(service);
    },
    /** Pays an order while every `payment.completed` is dropped; returns the payment and its event. */
    async lostPayment() {
      await service.app.inject({
        method: 'POST',
        url: '/lab/faults',
        payload: { dropShare: 1, types: ['payment.completed'] },
      });
      const order = await createOrder(service, user.authorization);
      const paid = await charge(service, user.authorization, order.id, uniqueKey('replay'));
      expect(paid.statusCode).toBe(201);
      const payment = paid.json() as { id: string };
      const event = await eventually(
        () =>
          service.db
            .reader('api')
            .get<{ id: string; published_at: number | null }>(
              'SELECT id, published_at FROM keel_outbox WHERE aggregate_id = ?',
              [payment.id],
            ),
        (row) => row?.published_at != null,
      );
      await service.app.inject({ method: 'POST', url: '/lab/faults', payload: {} });
      return { paymentId: payment.id, eventId: event?.id as string };
    },
    invoices: (paymentId: string) =>
      service.db.reader('api').all('SELECT id FROM invoices WHERE payment_id = ?', [paymentId]),
    publishedAt: async (eventId: string) =>
      (
        await service.db
          .reader('api')
          .get<{ published_at: number | null }>('SELECT published_at FROM keel_outbox WHERE id = ?', [
            eventId,
          ])
      )?.published_at,
  };
  return fixture;
}

describe('keel replay on sqlite', () => {
  const scratch = scratchDirectory('replay-command');
  const dbPath = scratch.file('service.db');
  const fixture = lostEventFixture(() => dbPath);
  let providers: Providers;

  beforeAll(async () => {
    providers = await startProviders(scratch.path);
    await fixture.start(scratch.path, providers);
  }, 60_000);

  afterAll(async () => {
    await fixture.service?.stop();
    await providers?.stop();
    scratch.remove();
  });

  it('lists the lost event in a dry run and changes nothing', async () => {
    const { paymentId, eventId } = await fixture.lostPayment();
    const before = await fixture.publishedAt(eventId);
    const report = await replayEvents(parseReplayArgs(['--db', dbPath, '--missing-invoices', '--dry-run']));
    expect(report).toMatchObject({ dryRun: true, source: 'missing-invoices', paymentsWithoutInvoice: 1 });
    expect(report.requeued.map((event) => event.id)).toEqual([eventId]);
    expect(report.requeued[0]).toMatchObject({ aggregateId: paymentId, type: 'payment.completed' });
    expect(replayExitCode(report)).toBe(0);
    expect(await fixture.publishedAt(eventId)).toBe(before);
    await new Promise((resolve) => setTimeout(resolve, 600));
    expect(await fixture.invoices(paymentId)).toEqual([]);
  });

  it('requeues it under its original id; the running service publishes it and the invoice is written once', async () => {
    const missing = await replayEvents(parseReplayArgs(['--db', dbPath, '--missing-invoices']));
    const [event] = missing.requeued;
    expect(missing.requeued).toHaveLength(1);
    const invoices = await eventually(
      () => fixture.invoices(event?.aggregateId as string),
      (rows) => rows.length > 0,
    );
    expect(invoices).toHaveLength(1);
    expect(await fixture.publishedAt(event?.id as string)).not.toBeNull();

    // Nothing is left to repair; a second replay of the same event is skipped by the inbox.
    const after = await replayEvents(parseReplayArgs(['--db', dbPath, '--missing-invoices']));
    expect(after).toMatchObject({ paymentsWithoutInvoice: 0, matched: 0 });
    expect(replayExitCode(after)).toBe(0);
    const again = await replayEvents(
      parseReplayArgs([
        '--db',
        dbPath,
        '--type',
        'payment.completed',
        '--aggregate',
        event?.aggregateId as string,
      ]),
    );
    expect(again.requeued.map((e) => e.id)).toEqual([event?.id]);
    await eventually(
      () => fixture.publishedAt(event?.id as string),
      (at) => at != null,
    );
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(await fixture.invoices(event?.aggregateId as string)).toHaveLength(1);
  });

  it('selects by type, aggregates and time, and exits 1 when nothing matches', async () => {
    const { paymentId, eventId } = await fixture.lostPayment();
    const other = await fixture.lostPayment();
    const both = await replayEvents(
      parseReplayArgs([
        '--db',
        dbPath,
        '--aggregate',
        `${paymentId},${other.paymentId}`,
        '--since',
        '10m',
        '--dry-run',
      ]),
    );
    expect(both.requeued.map((event) => event.id).sort()).toEqual([eventId, other.eventId].sort());
    const future = new Date(Date.now() + 3_600_000).toISOString();
    const none = await replayEvents(parseReplayArgs(['--db', dbPath, '--since', future]));
    expect(none.matched).toBe(0);
    expect(replayExitCode(none)).toBe(1);
    await replayEvents(parseReplayArgs(['--db', dbPath, '--missing-invoices']));
    await eventually(
      () => fixture.invoices(other.paymentId),
      (rows) => rows.length > 0,
    );
  });

  it('says which payments a replay cannot repair: their event was handled and the invoice lost since', async () => {
    const { paymentId } = await fixture.lostPayment();
    await replayEvents(parseReplayArgs(['--db', dbPath, '--missing-invoices']));
    await eventually(
      () => fixture.invoices(paymentId),
      (rows) => rows.length > 0,
    );
    await fixture.service.db.transaction('api', (tx) =>
      tx.run('DELETE FROM invoices WHERE payment_id = ?', [paymentId]),
    );
    const report = await replayEvents(parseReplayArgs(['--db', dbPath, '--missing-invoices']));
    expect(report.consumedWithoutInvoice).toEqual([paymentId]);
    expect(report.requeued).toEqual([]);
    expect(replayExitCode(report)).toBe(1);
  });

  it('answers a command line it cannot act on with a usage error, before touching the database', async () => {
    const lines = [
      [],
      ['--missing-invoices'],
      ['--db', dbPath],
      ['--db', dbPath, '--dry-run'],
      ['--db', dbPath, '--since', 'yesterday'],
      ['--db', dbPath, '--since', '2026-13-45'],
      ['--db', dbPath, '--since', '1h', '--until', '2h'],
      ['--db', dbPath, '--aggregate', 'a,,b'],
      ['--db', dbPath, '--type', 'payment.completed', '--limit', '0'],
      ['--db', dbPath, '--missing-invoices', '--dead-letters'],
      ['--db', dbPath, '--missing-invoices', '--type', 'invoice.sent'],
      ['--db', dbPath, '--type', 'payment.completed', '--frobnicate'],
      ['--db', dbPath, '--type'],
      ['--db', scratch.file('nowhere.db'), '--missing-invoices'],
      ['--db', 'mysql://localhost/payments', '--missing-invoices'],
      ['--db', dbPath, 'payment.completed'],
    ];
    for (const argv of lines) {
      const error = await replayCommand.run(argv).then(
        () => undefined,
        (thrown: unknown) => thrown,
      );
      expect(isUsageError(error), argv.join(' ')).toBe(true);
    }
  });

  it('exits 1 with a message when the file is not the service’s database', async () => {
    const other = scratch.file('other.db');
    new DatabaseSync(other).close();
    const stderr = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    try {
      expect(await replayCommand.run(['--db', other, '--missing-invoices'])).toBe(1);
      expect(String(stderr.mock.calls.at(-1)?.[0])).toMatch(/not the payments service's database/);
    } finally {
      stderr.mockRestore();
    }
  });
});

describeWithService('DATABASE_URL', 'keel replay on PostgreSQL', (databaseUrl) => {
  const scratch = scratchDirectory('replay-command-pg');
  const database = `lab_replay_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
  const url = new URL(databaseUrl);
  url.pathname = `/${database}`;
  const fixture = lostEventFixture(() => url.toString());
  let admin: pg.Client;
  let providers: Providers;

  beforeAll(async () => {
    admin = new pg.Client({ connectionString: databaseUrl });
    await admin.connect();
    await admin.query(`CREATE DATABASE ${database}`);
    await admin.query(`CREATE DATABASE ${database}_empty`);
    providers = await startProviders(scratch.path);
    await fixture.start(scratch.path, providers);
  }, 60_000);

  afterAll(async () => {
    await fixture.service?.stop();
    await providers?.stop();
    await admin?.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`);
    await admin?.query(`DROP DATABASE IF EXISTS ${database}_empty WITH (FORCE)`);
    await admin?.end();
    scratch.remove();
  });

  it('lists the lost event in a dry run, then requeues it and the invoice is written once', async () => {
    const { paymentId, eventId } = await fixture.lostPayment();
    const before = await fixture.publishedAt(eventId);
    const plan = await replayEvents(
      parseReplayArgs(['--db', url.toString(), '--missing-invoices', '--dry-run']),
    );
    expect(plan.requeued.map((event) => event.id)).toEqual([eventId]);
    expect(String(await fixture.publishedAt(eventId))).toBe(String(before));

    const report = await replayEvents(parseReplayArgs(['--db', url.toString(), '--missing-invoices']));
    expect(report.requeued.map((event) => event.id)).toEqual([eventId]);
    expect(
      await eventually(
        () => fixture.invoices(paymentId),
        (rows) => rows.length > 0,
      ),
    ).toHaveLength(1);
    const after = await replayEvents(parseReplayArgs(['--db', url.toString(), '--missing-invoices']));
    expect(after).toMatchObject({ paymentsWithoutInvoice: 0, matched: 0 });
  });

  it('exits 1 with a message when the database is not the service’s', async () => {
    const stderr = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    try {
      const empty = new URL(url);
      empty.pathname = `/${database}_empty`;
      expect(
        await replayCommand.run(['--db', empty.toString(), '--type', 'payment.completed', '--since', '1h']),
      ).toBe(1);
      expect(String(stderr.mock.calls.at(-1)?.[0])).toMatch(
        /not the payments service's database \(no table payments/,
      );
    } finally {
      stderr.mockRestore();
    }
  });
});
