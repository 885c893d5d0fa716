import { FakeClock } from 'keel';
import { type AlertNotification, defineAlert, heartbeat, invariants } from 'keel/observe';
import { describe, expect, it } from 'vitest';

const alert = defineAlert({
  what: 'The nightly report did not run properly',
  where: 'logs: job="nightly_report"',
  impact: 'Finance closes the day without the settlement report',
  next: 'Run `keel backfill --job nightly_report --since 24h` and check the job logs',
  severity: 'warning',
  group: 'reports',
});

const HOUR = 3_600_000;

function setup(extra: { minRunMs?: number; expectWork?: boolean } = {}) {
  const clock = new FakeClock();
  const job = heartbeat({
    name: 'nightly_report',
    everyMs: 24 * HOUR,
    graceMs: HOUR,
    maxRunMs: 2 * HOUR,
    clock,
    alert,
    ...extra,
  });
  const sent: AlertNotification[] = [];
  const evaluator = invariants({
    checks: [job],
    clock,
    sinks: [{ name: 'memory', send: async (n) => void sent.push(n) }],
  });
  return { clock, job, sent, evaluator };
}

describe('heartbeat()', () => {
  it('stays quiet while the job runs on schedule', async () => {
    const { clock, job, sent, evaluator } = setup({ minRunMs: 60_000, expectWork: true });
    for (let day = 0; day < 3; day++) {
      await clock.advanceAsync(24 * HOUR - 10 * 60_000);
      job.start();
      await clock.advanceAsync(10 * 60_000);
      await evaluator.evaluateOnce();
      job.success({ rows: 1_200 });
      await evaluator.evaluateOnce();
    }
    expect(job.problems()).toEqual([]);
    expect(sent).toEqual([]);
  });

  it('is late when no start arrives within the schedule plus grace, and recovers on the next run', async () => {
    const { clock, job, sent, evaluator } = setup();
    await clock.advanceAsync(25 * HOUR);
    await evaluator.evaluateOnce();
    expect(sent).toHaveLength(0);
    await clock.advanceAsync(1);
    await evaluator.evaluateOnce();
    expect(sent.map((n) => n.status)).toEqual(['firing']);
    expect(sent[0]?.evidence.ids).toEqual(['late']);
    expect(sent[0]?.evidence.detail).toContain('expected every 1d + 1h grace');
    await job.run(async () => {
      await clock.advanceAsync(5_000);
      return 10;
    });
    await evaluator.evaluateOnce();
    expect(sent.map((n) => n.status)).toEqual(['firing', 'resolved']);
  });

  it('overran when a run has not finished after maxRunMs', async () => {
    const { clock, job, sent, evaluator } = setup();
    job.start();
    await clock.advanceAsync(2 * HOUR);
    await evaluator.evaluateOnce();
    expect(sent).toHaveLength(0);
    await clock.advanceAsync(60_000);
    await evaluator.evaluateOnce();
    expect(sent[0]?.evidence.ids).toEqual(['overran']);
    expect(sent[0]?.evidence.detail).toContain('running for 2h1m (limit 2h)');
  });

  it('is too fast when a run finished quicker than minRunMs', async () => {
    const { clock, job, sent, evaluator } = setup({ minRunMs: 60_000 });
    job.start();
    await clock.advanceAsync(800);
    job.success({ rows: 5 });
    await evaluator.evaluateOnce();
    expect(sent[0]?.evidence.ids).toEqual(['too-fast']);
    expect(sent[0]?.evidence.detail).toContain('took 800ms');
  });

  it('reports no work when a run that must produce rows produced none', async () => {
    const { job, sent, evaluator } = setup({ expectWork: true });
    job.start();
    job.success({ rows: 0 });
    await evaluator.evaluateOnce();
    expect(sent[0]?.evidence.ids).toEqual(['no-work']);
    job.start();
    job.success({ rows: 3 });
    await evaluator.evaluateOnce();
    expect(sent.map((n) => n.status)).toEqual(['firing', 'resolved']);
  });

  it('reports a failed run with its error', async () => {
    const { job, sent, evaluator } = setup();
    await expect(job.run(() => Promise.reject(new Error('disk full')))).rejects.toThrow('disk full');
    await evaluator.evaluateOnce();
    expect(sent[0]?.evidence.ids).toEqual(['failed']);
    expect(sent[0]?.evidence.detail).toContain('failed: disk full');
    expect(job.state).toMatchObject({ lastOutcome: 'fail', running: false, lastError: 'disk full' });
  });

  it('refuses inconsistent bounds', () => {
    expect(() => heartbeat({ name: 'j', everyMs: HOUR, minRunMs: 10, maxRunMs: 5, alert })).toThrow(
      /minRunMs/,
    );
    expect(() => heartbeat({ name: 'j', everyMs: 0, alert })).toThrow(/everyMs/);
  });
});
