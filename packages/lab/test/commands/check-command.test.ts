import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { describeWithService } from '../../../keel/test/support/services.ts';
import { scratchDirectory } from '../service/service-harness.ts';
import {
  freshPostgresDatabase,
  type PaymentShape,
  postgresPayments,
  runKeel,
  seedPayments,
  sqlitePayments,
} from './payments-fixture.ts';

const scratch = scratchDirectory('check-command');
afterAll(() => scratch.remove());

let files = 0;
async function sqliteDb(
  shapes: readonly PaymentShape[],
  options: { keelTables?: boolean; ageMs?: number } = {},
) {
  const path = scratch.file(`payments-${++files}.db`);
  const db = sqlitePayments(path);
  const ids = await seedPayments(db, shapes, options);
  await db.close();
  return { path, ids };
}

const digest = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex');

describe('keel check on a sqlite database', () => {
  it('exits 0 and says every database check holds when the history is clean', async () => {
    const { path } = await sqliteDb(['guarded', 'guarded', 'guarded']);
    const run = await runKeel(['check', '--db', path]);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/^ok +payments_without_invoice$/m);
    expect(run.stdout).toMatch(/^ok +payment_events_consumed$/m);
    expect(run.stdout).toContain('0 breached, 4 holding, 3 skipped');
  });

  it('exits 1 and names each breach with its ids, total, oldest age and next step', async () => {
    const { path, ids } = await sqliteDb(['guarded', 'lost', 'invoiced', 'lost']);
    const before = digest(path);
    const run = await runKeel(['check', '--db', path]);
    expect(run.code, run.stderr).toBe(1);
    expect(run.stdout).toMatch(
      /^BREACHED +payments_without_invoice \(warning\): Payments without an invoice$/m,
    );
    expect(run.stdout).toContain(`ids: ${ids[1]}, ${ids[3]}`);
    expect(run.stdout).toMatch(/total 2, oldest 1h(\d+s)? old/);
    expect(run.stdout).toMatch(/next: .+/);
    expect(run.stdout).toContain('1 breached, 3 holding, 3 skipped');
    expect(digest(path)).toBe(before);
  });

  it('reports the same breach as JSON, with the query that lists every row', async () => {
    const { path, ids } = await sqliteDb(['lost', 'guarded']);
    const run = await runKeel(['check', '--db', path, '--json']);
    expect(run.code).toBe(1);
    const report = JSON.parse(run.stdout) as {
      ok: boolean;
      checks: {
        name: string;
        status: string;
        total: number;
        ids: string[];
        oldestAgeMs: number;
        query: string;
        next: string;
      }[];
      skipped: { name: string; reason: string }[];
    };
    expect(report.ok).toBe(false);
    const breach = report.checks.find((c) => c.name === 'payments_without_invoice');
    expect(breach).toMatchObject({ status: 'breached', total: 1, ids: [ids[0]] });
    expect(breach?.oldestAgeMs).toBeGreaterThanOrEqual(3_600_000);
    expect(breach?.query).toContain('FROM payments p');
    expect(breach?.next).not.toBe('');
    expect(report.skipped.map((s) => s.name)).toEqual([
      'provider_charges_without_payment',
      'invoice_consumer',
      'sales_report',
    ]);
  });

  it('judges the invoice grace from --grace in one evaluation, with no for: wait', async () => {
    const { path } = await sqliteDb(['lost'], { ageMs: 60_000 });
    expect((await runKeel(['check', '--db', path])).code).toBe(0);
    const strict = await runKeel(['check', '--db', path, '--grace', '1000']);
    expect(strict.code).toBe(1);
    expect(strict.stdout).toMatch(/^BREACHED +payments_without_invoice/m);
  });

  it('skips the event flow on a database the guarded service never ran on, and says why', async () => {
    const { path } = await sqliteDb(['invoiced', 'invoiced'], { keelTables: false });
    const run = await runKeel(['check', '--db', path]);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/^skipped +payment_events_consumed: needs tables keel_outbox and keel_inbox/m);
    expect(run.stdout).toMatch(/^skipped +invoice_consumer: needs check-ins/m);
  });

  it('exits 2 on a bad command line or a database it cannot open, and creates nothing', async () => {
    const missing = scratch.file('absent.db');
    const runs = await Promise.all([
      runKeel(['check']),
      runKeel(['check', '--db', missing]),
      runKeel(['check', '--db', missing, '--grace', 'soon']),
      runKeel(['check', '--db', missing, '--verbose']),
      runKeel(['check', '--db', 'mysql://localhost/payments']),
    ]);
    expect(runs.map((r) => r.code)).toEqual([2, 2, 2, 2, 2]);
    expect(runs[0]?.stderr).toContain('--db is required');
    expect(runs[1]?.stderr).toContain(`no database at ${missing}`);
    expect(runs[2]?.stderr).toContain("--grace must be a whole number of milliseconds ≥ 0, got 'soon'");
    expect(existsSync(missing)).toBe(false);
  });

  it('exits 2 on a sqlite file that is not the service database', async () => {
    const path = scratch.file('other.db');
    const db = sqlitePayments(path);
    await db.run('CREATE TABLE notes (id TEXT)');
    await db.close();
    const run = await runKeel(['check', '--db', path]);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain(
      "is not the payments service's database: no table orders, payments, invoices",
    );
  });
});

describeWithService('DATABASE_URL', 'keel check on PostgreSQL', (url) => {
  it('exits 1 on a breach and 0 once it is repaired, reading the same invariants', async () => {
    const database = await freshPostgresDatabase(url, 'check');
    const db = postgresPayments(database.url);
    try {
      const ids = await seedPayments(db, ['guarded', 'lost', 'guarded']);
      const breached = await runKeel(['check', '--db', database.url]);
      expect(breached.code, breached.stderr).toBe(1);
      expect(breached.stdout).toContain(`ids: ${ids[1]}`);
      await db.run(
        "INSERT INTO invoices VALUES ('inv_x', ?, 'ord_00001', 'ada@example.com', 1001, 'EUR', 0)",
        [ids[1] as string],
      );
      const clean = await runKeel(['check', '--db', database.url, '--json']);
      expect(clean.code, clean.stderr).toBe(0);
      expect((JSON.parse(clean.stdout) as { ok: boolean }).ok).toBe(true);
    } finally {
      await db.close();
      await database.drop();
    }
  });

  it('exits 2 when the server refuses the connection', async () => {
    const run = await runKeel(['check', '--db', 'postgres://postgres@127.0.0.1:1/payments']);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('cannot open postgres');
  });
});
