import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { serviceConfig } from '../../src/service/config.ts';
import { buildService } from '../../src/service/service-app.ts';
import { scratchDirectory } from '../service/service-harness.ts';
import { runKeel } from './payments-fixture.ts';

const scratch = scratchDirectory('rules-command');
afterAll(() => scratch.remove());

const promtool = spawnSync('promtool', ['--version']).error === undefined;

const alertNames = (rules: string) => [...rules.matchAll(/- alert: "([^"]+)"/g)].map((m) => m[1]);

describe('keel rules', () => {
  it('writes one rule per invariant the guarded service evaluates, with the alert text as annotations', async () => {
    const run = await runKeel(['rules']);
    expect(run.code, run.stderr).toBe(0);
    const service = await buildService(
      serviceConfig({
        db: scratch.file('service.db'),
        providerA: 'http://127.0.0.1:1',
        providerB: 'http://127.0.0.1:2',
        rows: 0,
        logAlerts: false,
      }),
    );
    const evaluated = service.invariants?.checks.map((check) => check.name) ?? [];
    await service.stop();
    expect(evaluated.length).toBeGreaterThan(0);
    expect(alertNames(run.stdout)).toEqual(evaluated);
    expect(run.stdout).toContain(
      'expr: "max(keel_invariant_breached{invariant=\\"payments_without_invoice\\"}) > 0"',
    );
    expect(run.stdout).toMatch(/summary: "Payments without an invoice"/);
    expect(run.stdout).toMatch(/service: "payments"/);
  });

  it.skipIf(!promtool)(
    'writes a file that promtool check rules accepts (needs promtool on the PATH)',
    async () => {
      const out = scratch.file('payments-rules.yml');
      const run = await runKeel(['rules', '--out', out]);
      expect(run.code, run.stderr).toBe(0);
      expect(run.stdout).toBe('');
      const rules = readFileSync(out, 'utf8');
      const checked = execFileSync('promtool', ['check', 'rules', out], { encoding: 'utf8' });
      expect(checked).toContain(`SUCCESS: ${alertNames(rules).length} rules found`);
    },
  );

  it('exits 2 on an unknown option, a stray argument or a file it cannot write', async () => {
    const runs = await Promise.all([
      runKeel(['rules', '--format', 'json']),
      runKeel(['rules', 'payments']),
      runKeel(['rules', '--out', scratch.file('missing-dir/rules.yml')]),
    ]);
    expect(runs.map((r) => r.code)).toEqual([2, 2, 2]);
    expect(runs[2]?.stderr).toContain('cannot write');
  });
});
