import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runScenario } from '../../src/lab/scenario.ts';
import { PARTIAL_QUICK_CHARGES, partialScenario } from '../../src/lab/scenarios/partial.ts';

describe('the partial scenario, quick, end to end', () => {
  const workDirectory = mkdtempSync(join(tmpdir(), 'lab-partial-'));
  afterAll(() => rmSync(workDirectory, { recursive: true, force: true }));

  it('loses no charge and charges none twice when guarded, through dropped responses and a SIGKILL', async () => {
    const result = await runScenario(partialScenario, { quick: true, seed: 7, workDirectory });
    expect(result.verdict).toBe('pass');
    expect(result.guarded).toMatchObject({
      pass: true,
      charges: PARTIAL_QUICK_CHARGES,
      doubleCharges: 0,
      acknowledgedButMissing: 0,
      ordersInBetween: 0,
      chargedButUnrecorded: 0,
    });
    expect(result.guarded.disruptions[0]?.label).toMatch(/^SIGKILL instance 0/);
    // The naive run, with the same load, faults and kill, charged some orders twice.
    expect(result.naive.pass).toBe(true);
    expect(result.naive.doubleCharges).toBeGreaterThan(0);
    expect(result.notes.join(' ')).toContain(`${PARTIAL_QUICK_CHARGES} charges`);
  }, 120_000);
});
