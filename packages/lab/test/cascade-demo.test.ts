import { describe, expect, it } from 'vitest';
import { runDemo } from '../src/demo/cascade-demo.ts';

describe('keel lab cascade preview', () => {
  it('shows the naive service failing and the guarded one holding under the same fault', async () => {
    const report = await runDemo({ quick: true, seed: 7 });
    const [naive, guarded] = report.runs;
    expect(naive?.mode).toBe('naive');
    expect(guarded?.mode).toBe('guarded');
    // Naive: charges hold every connection while provider A hangs, so login starves.
    expect(naive?.fault.loginTimeoutRate).toBeGreaterThan(0.1);
    expect(naive?.fault.chargesSucceeded).toBe(0);
    // Guarded: login keeps its connections and charges fail over to provider B.
    // Latency bars are the lab's to judge on a quiet machine; the test keeps wide margins so a busy
    // CI core cannot flip it: starved logins wait out the client's 1 s timeout, guarded ones do not.
    expect(naive?.fault.loginP99Ms).toBeGreaterThanOrEqual(1_000);
    expect(guarded?.fault.loginTimeoutRate).toBe(0);
    expect(guarded?.fault.loginP99Ms).toBeLessThan(250);
    expect((guarded?.fault.chargesSucceeded ?? 0) / (guarded?.fault.chargesSent ?? 1)).toBeGreaterThanOrEqual(
      0.9,
    );
    expect(report.text).toContain('fails (as it should)');
  }, 60_000);
});
