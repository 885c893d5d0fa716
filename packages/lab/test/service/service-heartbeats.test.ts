import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Service } from '../../src/service/service-app.ts';
import {
  eventually,
  type Providers,
  scratchDirectory,
  startProviders,
  startService,
} from './service-harness.ts';

const REPORT_EVERY_MS = 250;

describe('the sales report heartbeat, and naive mode without invariants', () => {
  const scratch = scratchDirectory('service-heartbeats');
  let providers: Providers;
  const services: Service[] = [];

  beforeAll(async () => {
    providers = await startProviders(scratch.path);
  });

  afterAll(async () => {
    await Promise.all(services.map((service) => service.stop()));
    await providers?.stop();
    scratch.remove();
  });

  it('raises no-work when the report job runs over an empty sales table', async () => {
    const service = await startService(scratch.path, providers, {
      rows: 0,
      reportIntervalMs: REPORT_EVERY_MS,
      invariantIntervalMs: 3_600_000,
      logAlerts: false,
    });
    services.push(service);
    // Rounds until the job has run once (a few intervals; longer on a busy machine).
    const result = await eventually(
      async () => ((await service.invariants?.evaluateOnce()) ?? []).find((r) => r.name === 'sales_report'),
      (found) => found?.evidence?.ids.includes('no-work') === true,
    );
    expect(result?.evidence?.ids).toContain('no-work');
    const alert = service.alerts.find((n) => n.name === 'sales_report' && n.status === 'firing');
    expect(alert?.alert.what).toBe('The sales report job did not produce a report');
  });

  it('runs no invariants, no completer and sends no alert in naive mode', async () => {
    const service = await startService(scratch.path, providers, { mode: 'naive', logAlerts: false });
    services.push(service);
    expect(service.invariants).toBeUndefined();
    expect(await service.sweepAbandoned()).toBeUndefined();
    expect(service.alerts).toEqual([]);
    const metrics = (await service.app.inject({ url: '/metrics' })).body;
    expect(metrics).not.toContain('keel_invariant_breached');
  });
});
