/**
 * The failure lab's own CI test: the real `keel lab --quick` command, run once, judged from the
 * `results.json` it writes — every guarded run met its guarantee, every naive run showed its
 * failure, and each scenario's figures add up — and its `index.html` opened in headless Chromium.
 * It runs in the `lab` project of vitest.config.ts, after the rest of the suite, so the timing bars
 * are measured on cores nothing else is using.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { CascadeFigures, CascadePhase } from '../../src/lab/cascade-load.ts';
import type { ChargeLoadFigures } from '../../src/lab/charge-load.ts';
import { MIN_PACE } from '../../src/lab/machine-pace.ts';
import { type LabResults, scoreboard } from '../../src/lab/run-lab.ts';
import type { ModeResult, ScenarioResult, ScenarioSettings } from '../../src/lab/scenario.ts';
import { cascadePlan } from '../../src/lab/scenarios/cascade.ts';
import type { DuplicatesFigures } from '../../src/lab/scenarios/duplicates.ts';
import { PARTIAL_QUICK_CHARGES } from '../../src/lab/scenarios/partial.ts';
import {
  SILENT_MAX_ALERT_INTERVALS,
  type SilentFigures,
  silentCharges,
} from '../../src/lab/scenarios/silent.ts';
import { PAYMENT_COMPLETED } from '../../src/service/payment-events.ts';
import { describeInChromium, expectReportInBrowser } from '../lab/report-in-browser.ts';

const REPO_ROOT = fileURLToPath(new URL('../../../../', import.meta.url));
const SEED = 7;
/** The scenarios a full lab plays, in its order. */
const SCENARIOS = ['cascade', 'partial', 'duplicates', 'silent'];
/** What `--quick` should take; a figure to print, never a bar (the machine's load decides it). */
const QUICK_BUDGET_MS = 90_000;
/**
 * How long the command may take before the test gives up on it: on a machine under load a scenario
 * can be played again at a slower pace, twice, each time longer.
 */
const LAB_TIMEOUT_MS = 900_000;
/** Whole runs the test may make: a failed one is played once more (see the `beforeAll`). */
const LAB_ATTEMPTS = 2;
/** The settings the command ran each scenario with, for the figures derived from a scenario's plan. */
const QUICK_SETTINGS: ScenarioSettings = { quick: true, seed: SEED, workDirectory: '' };

interface LabRun {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

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

function expectWholeCascadeRun(figures: ModeResult<CascadeFigures>, pace: number) {
  const plan = cascadePlan({ ...QUICK_SETTINGS, pace });
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

/** Guarded, login stayed fast and charges went to B once A's breaker opened; naive had no breaker. */
function expectCascade(result: ScenarioResult<CascadeFigures>) {
  // The pace (measured before the scenario) set the plan's rates and phases: both runs had the same.
  expect(result.pace).toBeGreaterThanOrEqual(MIN_PACE);
  expect(result.pace).toBeLessThanOrEqual(1);
  expectWholeCascadeRun(result.naive, result.pace);
  expectWholeCascadeRun(result.guarded, result.pace);
  expect(result.guarded.providerB.charges).toBeGreaterThan(0);
  expect(result.guarded.breakers.some((sample) => sample.breaker === 'provider-a')).toBe(true);
  expect(result.naive.breakers).toEqual([]);
  // The seeding was paid once, by the first mode; the second copied the template.
  expect(result.naive.seedMs).toBeGreaterThan(0);
  expect(result.guarded.seedMs).toBe(0);
  expect(result.notes.join(' ')).toContain('quick');
}

/** Guarded, no charge lost or made twice through dropped responses and a SIGKILL; naive, double charges. */
function expectPartial(result: ScenarioResult<ChargeLoadFigures>) {
  expect(result.guarded).toMatchObject({
    charges: PARTIAL_QUICK_CHARGES,
    doubleCharges: 0,
    acknowledgedButMissing: 0,
    ordersInBetween: 0,
    chargedButUnrecorded: 0,
  });
  expect(result.guarded.disruptions[0]?.label).toMatch(/^SIGKILL instance 0/);
  // The naive run, with the same load, faults and kill, charged some orders twice.
  expect(result.naive.doubleCharges).toBeGreaterThan(0);
  expect(result.notes.join(' ')).toContain(`${PARTIAL_QUICK_CHARGES} charges`);
}

/** Guarded, each order charged and invoiced once through redeliveries; naive, some more than once. */
function expectDuplicates(result: ScenarioResult<DuplicatesFigures>) {
  expect(result.guarded).toMatchObject({
    doubleCharges: 0,
    duplicateInvoices: 0,
    paymentsWithoutInvoice: 0,
    acknowledgedButMissing: 0,
  });
  expect(result.guarded.payments).toBe(result.guarded.chargedOrders);
  expect(result.naive.doubleCharges + result.naive.duplicateInvoices).toBeGreaterThan(0);
  // The broker redelivered events in both runs: the naive consumer wrote an invoice per delivery,
  // the guarded one's inbox let one through per payment.
  expect(result.naive.redeliveredEvents).toBeGreaterThan(0);
  expect(result.guarded.redeliveredEvents).toBeGreaterThan(0);
  expect(result.naive.duplicateInvoices).toBeGreaterThan(0);
}

/** Guarded, an actionable alert whose command repaired the lost invoices; naive, blind and lossy. */
function expectSilent(result: ScenarioResult<SilentFigures>) {
  const { guarded, naive } = result;
  // Every charge answered 2xx in both runs, and the fault really dropped publishes.
  for (const run of [guarded, naive]) {
    expect(run.clientOutcomes.ok).toBe(silentCharges({ ...QUICK_SETTINGS, pace: result.pace }));
    expect(run.droppedPublishes).toBeGreaterThan(0);
  }
  // Guarded: quiet while clean, then one actionable alert, run as printed, and nothing left missing.
  expect(guarded.cleanPhaseAlerts).toBe(0);
  expect(guarded.actedOn?.ids.length).toBeGreaterThan(0);
  expect(guarded.actedOn?.next).toMatch(/`keel replay --db \S+ --missing-invoices`/);
  expect(guarded.alertLatencyIntervals).not.toBeNull();
  expect(guarded.alertLatencyIntervals as number).toBeLessThanOrEqual(SILENT_MAX_ALERT_INTERVALS);
  expect(guarded.repairCommand).toMatch(/^keel replay --db .+ --missing-invoices$/);
  expect(guarded.repairExitCode).toBe(0);
  expect(guarded.uninvoicedBeforeRepair as number).toBeGreaterThan(0);
  expect(guarded.replayedEvents).toBeGreaterThanOrEqual(guarded.droppedPublishes);
  expect(guarded.paymentsWithoutInvoice).toBe(0);
  expect(guarded.duplicateInvoices).toBe(0);
  expect(guarded.chart.alerts.some((alert) => alert.status === 'firing')).toBe(true);
  expect(guarded.chart.faults.map((window) => window.label)).toEqual([
    'invoice consumer stopped',
    `${PAYMENT_COMPLETED} publishes dropped`,
  ]);
  expect(guarded.chart.marks.map((mark) => mark.label).join('\n')).toContain('ran keel replay');
  expect(guarded.headline.map((figure) => figure.label)).toEqual(
    expect.arrayContaining(['payments', 'uninvoiced', 'alert latency (intervals)', 'replayed events']),
  );
  // Naive: no signal at all, and the lost invoices stay lost.
  expect(naive.alerts).toEqual([]);
  expect(naive.paymentsWithoutInvoice).toBeGreaterThan(0);
}

describe('keel lab --quick, the whole failure lab', () => {
  const reportDirectory = mkdtempSync(join(tmpdir(), 'keel-lab-quick-'));
  let child: ChildProcess | undefined;
  let run: LabRun | undefined;
  let output = '';
  let outputShown = false;

  const runOnce = () =>
    new Promise<LabRun>((resolve, reject) => {
      output = '';
      child = spawn(
        process.execPath,
        [
          '--conditions=keel-source',
          'packages/lab/src/cli.ts',
          'lab',
          '--quick',
          '--seed',
          String(SEED),
          '--report',
          reportDirectory,
        ],
        { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] },
      );
      child.stdout?.on('data', (chunk) => {
        output += chunk;
      });
      child.stderr?.on('data', (chunk) => {
        output += chunk;
      });
      child.on('error', reject);
      child.on('close', (code, signal) => resolve({ code, signal }));
    });

  // The guarded cascade's login p99 is held to 2× a no-fault p99 of 15–30 ms, on two cores shared
  // with the lab's own processes: a stall of a few hundred ms can land in one phase and not the
  // other. So a failed run is played once more, whole, and the second is judged; a real regression
  // fails both. The first run's misses are printed, so a flaky bar stays visible.
  beforeAll(async () => {
    for (let attempt = 1; attempt <= LAB_ATTEMPTS; attempt++) {
      run = await runOnce();
      if (run.code === 0 || attempt === LAB_ATTEMPTS) break;
      const missed = output.split('\n').filter((line) => line.includes('✗') || /^FAIL /.test(line));
      console.warn(`keel lab --quick run ${attempt} failed (${JSON.stringify(run)}):\n${missed.join('\n')}`);
    }
  }, LAB_ATTEMPTS * LAB_TIMEOUT_MS);

  afterAll(() => {
    // Given up on by the hook's timeout: SIGTERM lets the lab stop the services it started.
    if (child !== undefined && child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    rmSync(reportDirectory, { recursive: true, force: true });
  });

  // The command's own account (progress, scoreboard, any stack) goes into the log of a failing test, once.
  beforeEach(({ onTestFailed }) => {
    onTestFailed(() => {
      if (outputShown) return;
      outputShown = true;
      console.error(`keel lab --quick printed:\n${output}`);
    });
  });

  /** The results the command wrote. */
  function lab(): LabResults {
    expect(run, 'keel lab --quick did not finish').toBeDefined();
    return JSON.parse(readFileSync(join(reportDirectory, 'results.json'), 'utf8')) as LabResults;
  }

  function scenario<F>(name: string): ScenarioResult<F> {
    const result = lab().results.find((one) => one.name === name);
    if (result === undefined) throw new Error(`results.json holds no ${name} scenario`);
    return result as unknown as ScenarioResult<F>;
  }

  it('exits 0 having run every scenario, in order, and printed the scoreboard', () => {
    const results = lab();
    console.log(`keel lab --quick took ${results.durationMs} ms (budget ${QUICK_BUDGET_MS} ms)`);
    expect(run).toEqual({ code: 0, signal: null });
    expect(results).toMatchObject({ quick: true, seed: SEED, pacing: 'auto', errors: [], pass: true });
    expect(results.results.map((result) => result.name)).toEqual(SCENARIOS);
    for (const name of SCENARIOS) expect(output).toContain(`PASS  ${name}`);
    expect(output).toContain('every scenario passed');
  });

  it('met every guarded bar and showed every naive failure', () => {
    const results = lab();
    const unmet = results.results.flatMap((result) =>
      [result.naive, result.guarded].flatMap((mode) =>
        mode.checks
          .filter((check) => !check.met)
          .map((check) => `${result.name} ${mode.mode}: ${check.rule}`),
      ),
    );
    expect(unmet, scoreboard(results)).toEqual([]);
    for (const result of results.results) {
      expect(result.naive.checks.length, `${result.name} naive`).toBeGreaterThan(0);
      expect(result.guarded.checks.length, `${result.name} guarded`).toBeGreaterThan(0);
    }
    expect(results.results.map((result) => [result.name, result.verdict])).toEqual(
      SCENARIOS.map((name) => [name, 'pass']),
    );
  });

  it('cascade: login stayed fast and charges flowed when guarded, every call accounted for', () => {
    expectCascade(scenario<CascadeFigures>('cascade'));
  });

  it('partial: no charge lost or doubled when guarded through a SIGKILL; naive charged twice', () => {
    expectPartial(scenario<ChargeLoadFigures>('partial'));
  });

  it('duplicates: charged and invoiced once when guarded through redeliveries; naive more than once', () => {
    expectDuplicates(scenario<DuplicatesFigures>('duplicates'));
  });

  it('silent: alerted with the command that repaired it when guarded; naive stayed blind', () => {
    expectSilent(scenario<SilentFigures>('silent'));
  });

  describeInChromium('its report in headless Chromium', () => {
    it('loads offline, draws and inks every chart, shows every scenario and its bars as judged, and no error', async () => {
      const results = lab();
      // The page tells what results.json tells; whether the bars were met is the test above's to say.
      const missed = results.results.flatMap((result) =>
        [result.naive, result.guarded].flatMap((mode) => mode.checks.filter((check) => !check.met)),
      );
      await expectReportInBrowser({
        file: join(reportDirectory, 'index.html'),
        lab: results,
        screenshot: join(reportDirectory, 'screenshot.png'),
        async inspect(page) {
          for (const name of SCENARIOS) expect(await page.locator(`#scenario-${name}`).count(), name).toBe(1);
          const verdict = results.pass ? 'pass' : 'fail';
          expect(await page.locator(`.page-head .verdict.${verdict}`).count()).toBe(1);
          expect(await page.locator('.checks .missed').count()).toBe(missed.length);
        },
      });
    }, 60_000);
  });
});
