import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { CHARGE_CRASH_POINTS } from './fixtures/charge-crash-points.ts';

const here = dirname(fileURLToPath(import.meta.url));
const worker = join(here, 'fixtures', 'crash-worker.ts');
const packageRoot = join(here, '..', '..');
const scratch = mkdtempSync(join(tmpdir(), 'keel-crash-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

function runWorker(dbPath: string, crashAt?: string) {
  const env = { ...process.env };
  if (crashAt) env.KEEL_CRASH_AT = crashAt;
  else delete env.KEEL_CRASH_AT;
  return spawnSync(process.execPath, ['--conditions=keel-source', worker, dbPath], {
    cwd: packageRoot,
    env,
    encoding: 'utf8',
    timeout: 30_000,
  });
}

function count(db: DatabaseSync, table: string): number {
  return (db.prepare(`SELECT count(*) AS n FROM ${table}`).get() as { n: number }).n;
}

describe('kill -9 in the middle of a multi-phase charge', () => {
  it.each(CHARGE_CRASH_POINTS)('recovers exactly once after a SIGKILL at %s', (point) => {
    const dbPath = join(scratch, `${point.replace(/[^a-z]/gi, '_')}.db`);
    const crashed = runWorker(dbPath, point);
    expect(crashed.signal, crashed.stderr).toBe('SIGKILL');

    // The dead worker's 200 ms lease runs out; the client's retry takes over and resumes.
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 250);
    const retry = runWorker(dbPath);
    expect(retry.status, retry.stderr).toBe(0);
    const outcome = JSON.parse(retry.stdout.trim()) as {
      status: number;
      resumed?: boolean;
      replayed?: boolean;
    };
    expect(outcome.status).toBe(201);
    if (point === 'after:respond') expect(outcome.replayed).toBe(true);
    else expect(outcome.resumed).toBe(true);

    const db = new DatabaseSync(dbPath);
    try {
      expect(count(db, 'provider_ledger')).toBe(1);
      expect(count(db, 'attempts')).toBe(1);
      expect(count(db, 'payments')).toBe(1);
      const states = db.prepare('SELECT state FROM keel_idempotency').all() as Array<{ state: string }>;
      expect(states).toEqual([{ state: 'completed' }]);
    } finally {
      db.close();
    }
  });

  it('completes a charge untouched when the armed crash point is never reached', () => {
    const dbPath = join(scratch, 'clean.db');
    const clean = runWorker(dbPath);
    expect(JSON.parse(clean.stdout.trim())).toEqual({ resumed: false, status: 201 });
    const unknown = runWorker(join(scratch, 'unknown.db'), 'after:nowhere');
    expect(unknown.status).toBe(0);
  });
});
