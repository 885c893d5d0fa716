import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { type LabResults, runLab } from '../../src/lab/run-lab.ts';
import type { ScenarioResult } from '../../src/lab/scenario.ts';
import type { DuplicatesFigures } from '../../src/lab/scenarios/duplicates.ts';

describe('the duplicates scenario, quick, end to end', () => {
  const reportDirectory = mkdtempSync(join(tmpdir(), 'lab-duplicates-'));
  afterAll(() => rmSync(reportDirectory, { recursive: true, force: true }));

  it('charges and invoices each order exactly once when guarded, and more than once when naive', async () => {
    const printed: string[] = [];
    await runLab({
      scenarios: ['duplicates'],
      quick: true,
      seed: 7,
      reportDirectory,
      out: (text) => void printed.push(text),
    });
    const lab = JSON.parse(readFileSync(join(reportDirectory, 'results.json'), 'utf8')) as LabResults;
    const [result] = lab.results as ScenarioResult<DuplicatesFigures>[];
    expect(result?.name).toBe('duplicates');
    expect(result?.verdict).toBe('pass');
    expect(result?.guarded).toMatchObject({
      pass: true,
      doubleCharges: 0,
      duplicateInvoices: 0,
      paymentsWithoutInvoice: 0,
      acknowledgedButMissing: 0,
    });
    expect(result?.guarded.payments).toBe(result?.guarded.chargedOrders);
    // The naive run must visibly fail: the same load charged some orders more than once.
    expect(result?.naive.pass).toBe(true);
    expect((result?.naive.doubleCharges ?? 0) + (result?.naive.duplicateInvoices ?? 0)).toBeGreaterThan(0);
    // The broker redelivered events in both runs: the naive consumer wrote an invoice per delivery,
    // the guarded one's inbox let one through per payment.
    expect(result?.naive.redeliveredEvents).toBeGreaterThan(0);
    expect(result?.guarded.redeliveredEvents).toBeGreaterThan(0);
    expect(result?.naive.duplicateInvoices).toBeGreaterThan(0);
    expect(lab.pass).toBe(true);
    expect(printed.join('')).toContain('PASS  duplicates');
  }, 90_000);
});
