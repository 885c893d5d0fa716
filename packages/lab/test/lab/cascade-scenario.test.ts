import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { InvalidOptionError } from 'keel';
import { afterAll, describe, expect, it } from 'vitest';
import type { CascadeFigures, CascadePhase } from '../../src/lab/cascade-load.ts';
import { httpCallSender, type LogicalCall, timeoutThenRetryImmediately } from '../../src/lab/clients.ts';
import { phaseRatio } from '../../src/lab/phase-ratio.ts';
import { copySalesTemplate } from '../../src/lab/sales-template.ts';
import { type ModeResult, runScenario } from '../../src/lab/scenario.ts';
import { cascadePlan, cascadeScenario } from '../../src/lab/scenarios/cascade.ts';
import { TimeBuckets } from '../../src/lab/time-buckets.ts';

/** Every count of a phase adds up: logical calls by outcome, requests by outcome, retries included. */
function expectConsistent(phase: CascadePhase) {
  for (const calls of [phase.logins, phase.charges]) {
    expect(calls.offered).toBe(calls.ok + calls.fail + calls.unknown);
  }
  expect(phase.reports.offered).toBe(phase.reports.answered + phase.reports.shed + phase.reports.timedOut);
  for (const [requests, calls] of [
    [phase.login, phase.logins.offered],
    [phase.charge, phase.charges.offered],
    [phase.report, phase.reports.offered],
  ] as const) {
    expect(requests.count).toBe(requests.ok + requests.fail + requests.unknown);
    // One request per call at least, two (the plan's attempts) at most.
    expect(requests.count).toBeGreaterThanOrEqual(calls);
    expect(requests.count).toBeLessThanOrEqual(calls * 2);
  }
  expect(phase.loginTimeoutShare).toBeCloseTo(phase.login.unknown / Math.max(1, phase.login.count), 3);
}

function expectWholeRun(figures: ModeResult<CascadeFigures>) {
  const plan = cascadePlan({ quick: true, seed: 7, workDirectory: '' });
  const seconds = (plan.noFaultMs + plan.faultMs) / 1_000;
  expectConsistent(figures.noFault);
  expectConsistent(figures.fault);
  // Every logical call the open loops made ended in one phase or the other, and none was lost.
  expect(figures.noFault.logins.offered + figures.fault.logins.offered).toBe(figures.arrivals.login);
  expect(figures.noFault.charges.offered + figures.fault.charges.offered).toBe(figures.arrivals.charge);
  expect(figures.noFault.reports.offered + figures.fault.reports.offered).toBe(figures.arrivals.report);
  // Poisson arrivals: near the plan's rate over the run, never far off it.
  expect(figures.arrivals.login).toBeGreaterThan(plan.loginsPerSecond * seconds * 0.8);
  expect(figures.arrivals.login).toBeLessThan(plan.loginsPerSecond * seconds * 1.2);
  expect(figures.fault.reports.offered).toBeGreaterThan(figures.noFault.reports.offered);
  // The timeline holds the same requests as the two phases.
  for (const name of ['login', 'charge', 'report'] as const) {
    const inTimeline = figures.timeline[name].reduce((sum, bucket) => sum + bucket.count, 0);
    expect(inTimeline).toBe(figures.noFault[name].count + figures.fault[name].count);
  }
  expect(figures.chart.series).toEqual(figures.timeline);
  expect(figures.chart.faults.map((window) => window.label)).toEqual(['provider A hangs', 'report spike']);
  expect(figures.headline.map((figure) => figure.label)).toEqual([
    'login p99 ms, no fault',
    'login p99 ms, fault',
    'logins timed out',
    'charge goodput vs no fault',
    'reports answered/shed',
  ]);
}

describe('the cascade scenario, quick, end to end', () => {
  const workDirectory = mkdtempSync(join(tmpdir(), 'lab-cascade-'));
  afterAll(() => rmSync(workDirectory, { recursive: true, force: true }));

  it('keeps login fast and charges flowing when guarded, while naive login starves behind A and the reports', async () => {
    const result = await runScenario(cascadeScenario, { quick: true, seed: 7, workDirectory });
    expect(result.guarded.checks.filter((check) => !check.met)).toEqual([]);
    expect(result.naive.checks.filter((check) => !check.met)).toEqual([]);
    expect(result.verdict).toBe('pass');
    expectWholeRun(result.naive);
    expectWholeRun(result.guarded);
    // Guarded, charges went to B once A's breaker opened; naive has no breaker to open.
    expect(result.guarded.providerB.charges).toBeGreaterThan(0);
    expect(result.guarded.breakers.some((sample) => sample.breaker === 'provider-a')).toBe(true);
    expect(result.naive.breakers).toEqual([]);
    // The seeding was paid once, by the first mode; the second copied the template.
    expect(result.naive.seedMs).toBeGreaterThan(0);
    expect(result.guarded.seedMs).toBe(0);
    expect(result.notes.join(' ')).toContain('quick');
  }, 120_000);
});

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
