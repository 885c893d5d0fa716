import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runScenario } from '../../src/lab/scenario.ts';
import { SILENT_MAX_ALERT_INTERVALS, silentCharges, silentScenario } from '../../src/lab/scenarios/silent.ts';

describe('the silent scenario, quick, end to end', () => {
  const workDirectory = mkdtempSync(join(tmpdir(), 'lab-silent-'));
  afterAll(() => rmSync(workDirectory, { recursive: true, force: true }));

  it('alerts with the command that repairs it when guarded, and leaves naive blind with invoices missing', async () => {
    const settings = { quick: true, seed: 7, workDirectory };
    const result = await runScenario(silentScenario, settings);
    const { guarded, naive } = result;
    expect(guarded.checks.filter((check) => !check.met)).toEqual([]);
    expect(naive.checks.filter((check) => !check.met)).toEqual([]);
    expect(result.verdict).toBe('pass');

    // Every charge answered 2xx in both runs, and the fault really dropped publishes.
    for (const run of [guarded, naive]) {
      expect(run.clientOutcomes.ok).toBe(silentCharges(settings));
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
    expect(guarded.chart.faults).toHaveLength(1);
    expect(guarded.chart.marks.map((mark) => mark.label).join('\n')).toContain('ran keel replay');
    expect(guarded.headline.map((figure) => figure.label)).toEqual(
      expect.arrayContaining(['payments', 'uninvoiced', 'alert latency (intervals)', 'replayed events']),
    );
    // Naive: no signal at all, and the lost invoices stay lost.
    expect(naive.alerts).toEqual([]);
    expect(naive.paymentsWithoutInvoice).toBeGreaterThan(0);
  }, 120_000);
});
