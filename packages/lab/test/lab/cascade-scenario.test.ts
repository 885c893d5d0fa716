import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { InvalidOptionError } from 'keel';
import { afterAll, describe, expect, it } from 'vitest';
import { httpCallSender, type LogicalCall, timeoutThenRetryImmediately } from '../../src/lab/clients.ts';
import { phaseRatio } from '../../src/lab/phase-ratio.ts';
import { copySalesTemplate } from '../../src/lab/sales-template.ts';
import { TimeBuckets } from '../../src/lab/time-buckets.ts';

describe('phaseRatio', () => {
  it('divides the figure during the fault by the one before it, to two decimals', () => {
    expect(phaseRatio(48, 20)).toBe(2.4);
    expect(phaseRatio(0.95, 1)).toBe(0.95);
    expect(phaseRatio(1, 3)).toBe(0.33);
    expect(phaseRatio(0, 7)).toBe(0);
  });

  it('is not a number without a baseline, so no bar can pass on it', () => {
    expect(phaseRatio(5, 0)).toBeNaN();
    expect(phaseRatio(0, 0)).toBeNaN();
    expect(phaseRatio(5, 0) <= 2).toBe(false);
    expect(phaseRatio(5, 0) >= 0.9).toBe(false);
  });

  it('refuses a negative or non-finite figure', () => {
    expect(() => phaseRatio(-1, 2)).toThrow(InvalidOptionError);
    expect(() => phaseRatio(1, -2)).toThrow(/before/);
    expect(() => phaseRatio(Number.NaN, 2)).toThrow(/during/);
    expect(() => phaseRatio(1, Number.POSITIVE_INFINITY)).toThrow(InvalidOptionError);
  });
});

describe('copySalesTemplate', () => {
  const workDirectory = mkdtempSync(join(tmpdir(), 'lab-sales-template-'));
  afterAll(() => rmSync(workDirectory, { recursive: true, force: true }));
  const count = (path: string) => {
    const db = new DatabaseSync(path, { readOnly: true });
    try {
      return (db.prepare('SELECT count(*) AS n FROM sales').get() as { n: number }).n;
    } finally {
      db.close();
    }
  };

  it('seeds the template once per work directory and copies it for every run', async () => {
    const options = { workDirectory, rows: 1_000, seed: 3 };
    const first = await copySalesTemplate(join(workDirectory, 'first.db'), options);
    const second = await copySalesTemplate(join(workDirectory, 'second.db'), options);
    expect(first.seedMs).toBeGreaterThan(0);
    expect(second.seedMs).toBe(0);
    expect(count(first.path)).toBe(1_000);
    expect(count(second.path)).toBe(1_000);
  });

  it('refuses a negative row count', async () => {
    await expect(
      copySalesTemplate(join(workDirectory, 'bad.db'), { workDirectory, rows: -1, seed: 1 }),
    ).rejects.toThrow(InvalidOptionError);
  });
});

describe('a login or report client that times out and retries at once', () => {
  let server: Server | undefined;
  afterAll(() => {
    server?.closeAllConnections();
    server?.close();
  });

  it('records each silent attempt as unknown and gives up after its attempts', async () => {
    let received = 0;
    server = createServer(() => {
      received++; // never answers
    });
    await new Promise<void>((resolve) => server?.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const buckets = new TimeBuckets({ startedAtMs: performance.now(), bucketMs: 1_000 });
    const sender = httpCallSender({ urls: [url], timeoutMs: 50, buckets });
    const call: LogicalCall = { method: 'POST', path: '/login', body: { email: 'x' }, instance: 0 };
    const outcome = await timeoutThenRetryImmediately<LogicalCall>({ attempts: 3 })(call, sender);
    expect(outcome).toEqual({ kind: 'unknown', attempts: 3 });
    expect(received).toBe(3);
    expect(buckets.overall()).toMatchObject({ count: 3, unknown: 3, ok: 0 });
  });
});
