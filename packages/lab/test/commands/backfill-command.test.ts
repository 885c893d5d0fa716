import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { describeWithService } from '../../../keel/test/support/services.ts';
import { scratchDirectory } from '../service/service-harness.ts';
import {
  CLI,
  freshPostgresDatabase,
  type PaymentShape,
  type PaymentsDb,
  postgresPayments,
  runKeel,
  seedPayments,
  sqlitePayments,
} from './payments-fixture.ts';

const scratch = scratchDirectory('backfill-command');
afterAll(() => scratch.remove());

interface Checkpoint {
  cursor: string;
  applied: number;
  batches: number;
}

/** Events per payment, and the backfill's checkpoint (absent before its first batch). */
async function state(db: PaymentsDb) {
  const events = await db.rows<{ aggregate_id: string; n: number | string }>(
    "SELECT aggregate_id, count(*) AS n FROM keel_outbox WHERE type = 'payment.completed' GROUP BY aggregate_id",
  );
  const perPayment = new Map(events.map((e) => [e.aggregate_id, Number(e.n)]));
  const backfilled = await db.rows<{ n: number | string }>(
    db.driver.dialect === 'sqlite'
      ? "SELECT count(*) AS n FROM keel_outbox WHERE headers LIKE '%keel-backfill%'"
      : "SELECT count(*) AS n FROM keel_outbox WHERE headers::text LIKE '%keel-backfill%'",
  );
  const present = await db.rows<{ n: number | string }>(
    db.driver.dialect === 'sqlite'
      ? "SELECT count(*) AS n FROM sqlite_master WHERE name = 'keel_backfill_checkpoints'"
      : "SELECT count(*) AS n FROM pg_tables WHERE tablename = 'keel_backfill_checkpoints'",
  );
  let checkpoint: Checkpoint | undefined;
  if (Number(present[0]?.n) > 0) {
    const [row] = await db.rows<{ cursor: string; applied: number | string; batches: number | string }>(
      "SELECT cursor, applied, batches FROM keel_backfill_checkpoints WHERE name = 'invoices'",
    );
    if (row !== undefined) {
      checkpoint = {
        cursor: JSON.parse(row.cursor),
        applied: Number(row.applied),
        batches: Number(row.batches),
      };
    }
  }
  return { perPayment, backfilled: Number(backfilled[0]?.n), checkpoint };
}

/** Starts a backfill and SIGKILLs it once it has committed `batches` batches. */
function killAfter(
  args: readonly string[],
  batches: number,
): Promise<{ signal: NodeJS.Signals | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--conditions=keel-source', CLI, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (chunk) => {
      stderr += chunk;
      if (stderr.includes(`batch ${batches}:`)) child.kill('SIGKILL');
    });
    child.on('error', reject);
    child.on('close', (_code, signal) => resolve({ signal, stderr }));
  });
}

/** Kills a paced backfill mid-run, restarts it, and checks every payment got exactly one event. */
async function killAndResume(db: PaymentsDb, target: string) {
  const shapes: PaymentShape[] = Array.from({ length: 120 }, (_, i) => (i % 10 === 0 ? 'guarded' : 'lost'));
  const ids = await seedPayments(db, shapes);
  const repaired = ids.filter((_, i) => shapes[i] === 'lost');

  const killed = await killAfter(
    ['backfill', 'invoices', '--db', target, '--batch-size', '4', '--pause', '40'],
    3,
  );
  expect(killed.signal).toBe('SIGKILL');
  const afterKill = await state(db);
  const checkpoint = afterKill.checkpoint as Checkpoint;
  // The checkpoint moved, and exactly as far as the events committed with it.
  expect(checkpoint.batches).toBeGreaterThanOrEqual(3);
  expect(checkpoint.applied).toBe(afterKill.backfilled);
  expect(checkpoint.applied).toBeLessThan(repaired.length);
  expect(repaired).toContain(checkpoint.cursor);

  const resumed = await runKeel(['backfill', 'invoices', '--db', target, '--batch-size', '25', '--json']);
  expect(resumed.code, resumed.stderr).toBe(0);
  const report = JSON.parse(resumed.stdout) as { resumedFrom: string; items: number; finished: boolean };
  expect(report.resumedFrom).toBe(checkpoint.cursor);
  expect(report.items).toBe(repaired.length - checkpoint.applied);
  expect(report.finished).toBe(true);

  const end = await state(db);
  for (const id of ids) expect(end.perPayment.get(id), id).toBe(1);
  expect(end.backfilled).toBe(repaired.length);
  expect(end.checkpoint?.applied).toBe(repaired.length);
  expect(end.checkpoint?.batches).toBeGreaterThan(checkpoint.batches);
}

const digest = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex');

describe('keel backfill invoices on a sqlite file', () => {
  let files = 0;
  const sqliteFile = () => scratch.file(`payments-${++files}.db`);

  it('appends one payment.completed per payment with neither event nor invoice, and leaves invoiced ones alone', async () => {
    const path = sqliteFile();
    const db = sqlitePayments(path);
    try {
      const ids = await seedPayments(db, ['guarded', 'lost', 'invoiced', 'lost', 'guarded']);
      const run = await runKeel(['backfill', 'invoices', '--db', path, '--batch-size', '1']);
      expect(run.code, run.stderr).toBe(0);
      expect(run.stdout).toContain('2 events appended in 2 batches, done');
      expect(run.stdout).toContain('1 already invoiced without an event');
      const after = await state(db);
      expect([...after.perPayment.entries()].sort()).toEqual([
        [ids[0], 1],
        [ids[1], 1],
        [ids[3], 1],
        [ids[4], 1],
      ]);
      const [event] = await db.rows<{ payload: string }>(
        'SELECT payload FROM keel_outbox WHERE aggregate_id = ?',
        [ids[1] as string],
      );
      expect(JSON.parse(event?.payload ?? '{}')).toMatchObject({
        paymentId: ids[1],
        orderId: 'ord_00001',
        amount: 1001,
      });
      const again = await runKeel(['backfill', 'invoices', '--db', path]);
      expect(again.code).toBe(0);
      expect(again.stdout).toContain('0 events appended');
      expect((await state(db)).backfilled).toBe(2);
    } finally {
      await db.close();
    }
  });

  it('lists counts and the first ids in a dry run and writes nothing', async () => {
    const path = sqliteFile();
    const db = sqlitePayments(path);
    const ids = await seedPayments(db, ['lost', 'guarded', 'lost', 'invoiced', 'lost']);
    await db.close();
    const before = digest(path);
    const run = await runKeel(['backfill', 'invoices', '--db', path, '--dry-run', '--batch-size', '2']);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toContain('3 payments would get a payment.completed event');
    expect(run.stdout).toContain(`first: ${ids[0]}, ${ids[2]}, ${ids[4]}`);
    expect(run.stdout).toContain('nothing written');
    expect(digest(path)).toBe(before);
    const reopened = sqlitePayments(path);
    expect((await state(reopened)).checkpoint).toBeUndefined();
    await reopened.close();
  });

  it('resumes from its checkpoint after a SIGKILL, with every payment evented exactly once', async () => {
    const path = sqliteFile();
    const db = sqlitePayments(path);
    try {
      await killAndResume(db, path);
    } finally {
      await db.close();
    }
  });

  it('exits 2 on a bad command line or a database it cannot open', async () => {
    const path = sqliteFile();
    const db = sqlitePayments(path);
    await seedPayments(db, ['lost']);
    await db.close();
    const runs = await Promise.all([
      runKeel(['backfill', '--db', path]),
      runKeel(['backfill', 'refunds', '--db', path]),
      runKeel(['backfill', 'invoices']),
      runKeel(['backfill', 'invoices', '--db', path, '--batch-size', '0']),
      runKeel(['backfill', 'invoices', '--db', path, '--since', 'yesterday']),
      runKeel(['backfill', 'invoices', '--db', path, '--pause', '-1']),
      runKeel(['backfill', 'invoices', '--db', scratch.file('absent.db')]),
    ]);
    expect(runs.map((r) => r.code)).toEqual([2, 2, 2, 2, 2, 2, 2]);
    expect(runs[1]?.stderr).toContain("cannot backfill 'refunds'");
    expect(runs[3]?.stderr).toContain('--batch-size must be a whole number from 1 to 10000');
    expect(runs[4]?.stderr).toContain('--since must be a duration');
    const untouched = sqlitePayments(path);
    expect((await state(untouched)).backfilled).toBe(0);
    await untouched.close();
  });

  it('walks only the payments of --since', async () => {
    const path = sqliteFile();
    const db = sqlitePayments(path);
    try {
      await seedPayments(db, ['lost', 'lost'], { ageMs: 2 * 86_400_000 });
      const run = await runKeel(['backfill', 'invoices', '--db', path, '--since', '1d', '--json']);
      expect(run.code, run.stderr).toBe(0);
      expect(JSON.parse(run.stdout)).toMatchObject({ items: 0, finished: true });
    } finally {
      await db.close();
    }
  });
});

describeWithService('DATABASE_URL', 'keel backfill invoices on PostgreSQL', (url) => {
  it('resumes from its checkpoint after a SIGKILL, with every payment evented exactly once', async () => {
    const database = await freshPostgresDatabase(url, 'backfill');
    const db = postgresPayments(database.url);
    try {
      await killAndResume(db, database.url);
    } finally {
      await db.close();
      await database.drop();
    }
  });

  it('writes nothing in a dry run', async () => {
    const database = await freshPostgresDatabase(url, 'backfill_dry');
    const db = postgresPayments(database.url);
    try {
      await seedPayments(db, ['lost', 'guarded']);
      const run = await runKeel(['backfill', 'invoices', '--db', database.url, '--dry-run', '--json']);
      expect(run.code, run.stderr).toBe(0);
      expect(JSON.parse(run.stdout)).toMatchObject({ dryRun: true, items: 1, sample: ['pay_00000'] });
      const after = await state(db);
      expect(after.backfilled).toBe(0);
      expect(after.checkpoint).toBeUndefined();
    } finally {
      await db.close();
      await database.drop();
    }
  });
});
