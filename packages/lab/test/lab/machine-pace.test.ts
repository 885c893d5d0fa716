import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { InvalidOptionError } from 'keel';
import { describe, expect, it } from 'vitest';
import {
  canMeasureCpuShare,
  checkPace,
  FULL_SPEED_SHARE,
  MIN_PACE,
  measureCpuShare,
  paced,
  paceForShare,
  slowerPace,
} from '../../src/lab/machine-pace.ts';
import { type BarCheck, type ModeResult, overloaded, type ScenarioResult } from '../../src/lab/scenario.ts';
import { cascadePlan, cascadeScenario } from '../../src/lab/scenarios/cascade.ts';
import { silentCharges } from '../../src/lab/scenarios/silent.ts';

const CLI = fileURLToPath(new URL('../../src/cli.ts', import.meta.url));

describe('paceForShare', () => {
  it('is 1 from the full-speed share up, and proportionally less below it', () => {
    expect(paceForShare(1)).toBe(1);
    expect(paceForShare(FULL_SPEED_SHARE)).toBe(1);
    expect(paceForShare(0.51)).toBe(0.6);
    expect(paceForShare(0.425)).toBe(0.5);
  });

  it('never goes under the floor, however little CPU the machine gave', () => {
    expect(paceForShare(0.05)).toBe(MIN_PACE);
    expect(paceForShare(0)).toBe(MIN_PACE);
  });

  it('refuses a share that is not a number ≥ 0', () => {
    expect(() => paceForShare(Number.NaN)).toThrow(InvalidOptionError);
    expect(() => paceForShare(-0.1)).toThrow(/share/);
  });
});

describe('slowerPace', () => {
  it('slows a replay to 0.6 of the pace before it, rounded to 0.05, down to the floor', () => {
    expect(slowerPace(1)).toBe(0.6);
    expect(slowerPace(0.6)).toBe(0.35);
    expect(slowerPace(0.35)).toBe(MIN_PACE);
    expect(slowerPace(MIN_PACE)).toBe(MIN_PACE);
  });
});

describe('checkPace', () => {
  it('accepts a pace from the floor to 1 and refuses anything else', () => {
    expect(checkPace(MIN_PACE)).toBe(MIN_PACE);
    expect(checkPace(1)).toBe(1);
    for (const bad of [0, MIN_PACE - 0.01, 1.01, Number.NaN, Number.POSITIVE_INFINITY]) {
      expect(() => checkPace(bad)).toThrow(InvalidOptionError);
    }
  });
});

describe('paced', () => {
  it('slows rates and stretches phases by the same factor, so a phase offers as many requests', () => {
    const { rate, span } = paced({ pace: 0.5 });
    expect(rate(60)).toBe(30);
    expect(span(3_500)).toBe(7_000);
    expect((rate(60) * span(3_500)) / 1_000).toBe(210);
    expect(paced({}).pace).toBe(1);
  });

  it('leaves the number of requests of a scenario unchanged, and its timeouts alone', () => {
    const settings = { quick: true, seed: 7, workDirectory: '' };
    const nominal = cascadePlan(settings);
    const slow = cascadePlan({ ...settings, pace: 0.6 });
    expect(slow.loginsPerSecond).toBeCloseTo(nominal.loginsPerSecond * 0.6, 6);
    expect(slow.faultMs).toBe(Math.round(nominal.faultMs / 0.6));
    expect(slow.loginsPerSecond * slow.faultMs).toBeCloseTo(nominal.loginsPerSecond * nominal.faultMs, -2);
    expect(slow.clientTimeoutsMs).toEqual(nominal.clientTimeoutsMs);
    expect(slow.serviceFlags).toEqual(nominal.serviceFlags);
    expect(silentCharges({ ...settings, pace: 0.45 })).toBe(silentCharges(settings));
  });
});

describe('measureCpuShare', () => {
  it('says plainly when this Node cannot measure a thread’s CPU time', async () => {
    expect(canMeasureCpuShare()).toBe(true);
    const process_ = process as { threadCpuUsage?: unknown };
    const original = process_.threadCpuUsage;
    process_.threadCpuUsage = undefined;
    try {
      expect(canMeasureCpuShare()).toBe(false);
      await expect(measureCpuShare(50)).rejects.toThrow(/threadCpuUsage/);
    } finally {
      process_.threadCpuUsage = original;
    }
  });

  it('measures a share of the machine between 0 and 1 in about the time asked', async () => {
    const started = performance.now();
    const share = await measureCpuShare(200);
    expect(share).toBeGreaterThan(0);
    expect(share).toBeLessThanOrEqual(1);
    expect(performance.now() - started).toBeGreaterThanOrEqual(200);
  });
});

function result(naive: BarCheck[], guarded: BarCheck[]): ScenarioResult<object> {
  const mode = (name: 'naive' | 'guarded', checks: BarCheck[]) =>
    ({
      mode: name,
      pass: checks.every((check) => check.met),
      checks,
      headline: [],
      chart: { bucketMs: 500, series: {}, faults: [], breakers: [], alerts: [], marks: [] },
    }) as ModeResult<object>;
  return {
    name: 'x',
    quick: true,
    seed: 1,
    pace: 1,
    naive: mode('naive', naive),
    guarded: mode('guarded', guarded),
    verdict: 'fail',
    notes: [],
    durationMs: 1,
  };
}

describe('overloaded', () => {
  const guarantee = (met: boolean): BarCheck => ({ rule: '0 double charges', met });
  const capacity = (met: boolean): BarCheck => ({ rule: '≥ 90 % of orders paid', met, capacity: true });

  it('is true when every rule either run missed is a rule of capacity', () => {
    expect(overloaded(result([guarantee(true)], [guarantee(true), capacity(false)]))).toBe(true);
    expect(overloaded(result([capacity(false)], [capacity(false)]))).toBe(true);
  });

  it('is false when a guarantee was missed too, however short the machine was', () => {
    expect(overloaded(result([guarantee(true)], [guarantee(false), capacity(false)]))).toBe(false);
    expect(overloaded(result([guarantee(false)], [capacity(false)]))).toBe(false);
  });

  it('is false for a run that missed nothing', () => {
    expect(overloaded(result([guarantee(true)], [guarantee(true), capacity(true)]))).toBe(false);
  });

  it("counts cascade's ratios as capacity misses only against a baseline the machine could not carry", () => {
    const phase = (chargeGoodputShare: number, loginTimeoutShare: number, p99Ms = 40) => ({
      chargeGoodputShare,
      loginTimeoutShare,
      login: { p99Ms },
      reports: { shed: 3, timedOut: 0, offered: 9 },
    });
    const figures = (healthy: boolean, noFault = healthy ? phase(1, 0) : phase(0.8, 0.2)) =>
      ({
        noFault,
        fault: phase(0.9, 0),
        loginP99Ratio: 3,
        chargeGoodputRatio: 0.95,
        providerA: { held: 4 },
        providerB: { charges: 10 },
        breakers: [{ atMs: 1, breaker: 'provider-a', state: 'open' }],
      }) as unknown as Parameters<typeof cascadeScenario.guardedBar>[0];
    const settings = { quick: true, seed: 7, workDirectory: '' };
    const ratioMiss = (healthy: boolean) =>
      cascadeScenario
        .guardedBar(figures(healthy), settings)
        .find((check) => check.rule.startsWith('login p99'));
    expect(ratioMiss(true)).toMatchObject({ met: false, capacity: false });
    expect(ratioMiss(false)).toMatchObject({ met: false, capacity: true });
    // Every charge acknowledged and no login timed out, but a login p99 past a quarter of the
    // client's timeout: the machine was saturated before the fault.
    const saturated = cascadeScenario.guardedBar(figures(true, phase(1, 0, 270)), settings);
    expect(saturated.find((check) => check.rule.startsWith('without the fault'))).toMatchObject({
      met: false,
      capacity: true,
    });
    expect(overloaded(result([], saturated))).toBe(true);
  });
});

describe('keel lab --pace', () => {
  it('refuses a pace outside 0.3–1 with exit 2 before running anything', async () => {
    const child = spawn(
      process.execPath,
      ['--conditions=keel-source', CLI, 'lab', '--quick', '--pace', '2'],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let output = '';
    for (const stream of [child.stdout, child.stderr]) {
      stream.setEncoding('utf8').on('data', (chunk: string) => {
        output += chunk;
      });
    }
    const [code] = (await once(child, 'exit')) as [number | null];
    expect(code).toBe(2);
    expect(output).toContain('pace');
    expect(output).not.toContain('cascade: naive run');
  });
});
