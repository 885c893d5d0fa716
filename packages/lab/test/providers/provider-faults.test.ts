import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Charge } from '../../src/providers/charge-ledger.ts';
import type { FaultSettings } from '../../src/providers/fault-settings.ts';
import { type RunningProvider, startProvider } from '../../src/providers/provider-launcher.ts';
import {
  chargeBody,
  eventually,
  ledgerDirectory,
  listCharges,
  postCharge,
  uniqueKey,
} from './provider-requests.ts';

describe('payment provider faults', () => {
  const ledgers = ledgerDirectory();
  let provider: RunningProvider;

  beforeAll(async () => {
    provider = await startProvider({ name: 'a', ledgerPath: ledgers.path('a'), seed: 11 });
  });

  afterEach(async () => {
    await provider?.faults.clear();
  });

  afterAll(async () => {
    await provider?.stop();
    ledgers.remove();
  });

  it('injects each error status, with Retry-After on 429 and 503 only, before charging', async () => {
    const before = await provider.stats();
    const reference = uniqueKey('errors');
    for (const [status, retryAfter] of [
      [429, '7'],
      [503, '7'],
      [500, null],
      [502, null],
    ] as const) {
      await provider.faults.set({ errorRate: 1, errorStatuses: [status], retryAfterSeconds: 7 });
      const response = await postCharge(provider.url, chargeBody({ reference }));
      expect(response.status).toBe(status);
      expect(response.headers.get('retry-after')).toBe(retryAfter);
      const error = ((await response.json()) as { error: { type: string } }).error;
      expect(error.type).toBe(status === 429 ? 'rate_limit_error' : 'api_error');
    }
    const after = await provider.stats();
    expect(after.errorsInjected - before.errorsInjected).toBe(4);
    expect(after.ledgerCharges).toBe(before.ledgerCharges);
    expect((await listCharges(provider.url, { reference })).data).toEqual([]);
  });

  it('injects errors at the configured rate, the same way for the same seed', async () => {
    const run = async () => {
      await provider.faults.set({ errorRate: 0.3, errorStatuses: [500, 503, 429], seed: 42 });
      const statuses: number[] = [];
      for (let i = 0; i < 60; i++) statuses.push((await postCharge(provider.url, chargeBody())).status);
      return statuses;
    };
    const before = await provider.stats();
    const first = await run();
    const second = await run();
    const after = await provider.stats();
    expect(second).toEqual(first);
    const failed = [...first, ...second].filter((status) => status !== 201).length;
    expect(new Set(first)).toEqual(new Set([201, 500, 503, 429]));
    // 120 draws at 0.3: far outside 15..60 would mean the rate is not honoured.
    expect(failed).toBeGreaterThan(15);
    expect(failed).toBeLessThan(60);
    expect(after.errorsInjected - before.errorsInjected).toBe(failed);
    expect(after.charges - before.charges).toBe(120 - failed);
  });

  it('holds a charge unanswered during a hang and answers it once the hang is lifted', async () => {
    await provider.faults.set({ hang: true });
    const key = uniqueKey('hang');
    let settled = false;
    const pending = postCharge(provider.url, chargeBody(), { key }).finally(() => {
      settled = true;
    });
    await eventually(async () => (await provider.stats()).hanging === 1);
    expect(settled).toBe(false);
    expect((await listCharges(provider.url, { idempotency_key: key })).data).toEqual([]);
    await provider.faults.clear();
    const response = await pending;
    expect(response.status).toBe(201);
    const charge = (await response.json()) as Charge;
    expect((await listCharges(provider.url, { idempotency_key: key })).data.map((c) => c.id)).toEqual([
      charge.id,
    ]);
  });

  it('lets a held charge go undone when its client gives up', async () => {
    await provider.faults.set({ hang: true });
    const before = await provider.stats();
    const key = uniqueKey('give-up');
    const client = new AbortController();
    const outcome = postCharge(provider.url, chargeBody(), { key, signal: client.signal }).then(
      (response) => response.status,
      (error: Error) => error.name,
    );
    await eventually(async () => (await provider.stats()).hanging === 1);
    client.abort();
    expect(await outcome).toBe('AbortError');
    await eventually(async () => (await provider.stats()).abandoned === before.abandoned + 1);
    expect((await provider.stats()).hanging).toBe(0);
    await provider.faults.clear();
    expect((await listCharges(provider.url, { idempotency_key: key })).data).toEqual([]);
  });

  it('commits the charge, drops the response, and the listing finds the charge by key', async () => {
    await provider.faults.set({ dropResponseRate: 1 });
    const before = await provider.stats();
    const key = uniqueKey('drop');
    const body = chargeBody();
    // The client learns nothing: the outcome is unknown until it reconciles.
    await expect(postCharge(provider.url, body, { key })).rejects.toThrow();
    const after = await provider.stats();
    expect(after.droppedResponses - before.droppedResponses).toBe(1);
    const found = await listCharges(provider.url, { idempotency_key: key });
    expect(found.data).toHaveLength(1);
    expect(found.data[0]).toMatchObject({
      reference: body.reference,
      amount: body.amount,
      status: 'succeeded',
    });

    await provider.faults.clear();
    const retried = await postCharge(provider.url, body, { key });
    expect(retried.status).toBe(201);
    expect(retried.headers.get('idempotent-replayed')).toBe('true');
    expect(((await retried.json()) as Charge).id).toBe(found.data[0]?.id);
    expect((await listCharges(provider.url, { idempotency_key: key })).data).toHaveLength(1);
  });

  it('answers 503 with Retry-After during an outage and charges again outside it', async () => {
    const now = Date.now();
    const reference = uniqueKey('outage');
    await provider.faults.set({ outage: { untilMs: now + 30_000 } });
    const down = await postCharge(provider.url, chargeBody({ reference }));
    expect(down.status).toBe(503);
    expect(await down.json()).toMatchObject({ error: { code: 'provider_outage' } });
    const retryAfter = Number(down.headers.get('retry-after'));
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(retryAfter).toBeLessThanOrEqual(30);

    const elsewhere: FaultSettings = {
      outage: {
        windows: [
          { fromMs: now - 60_000, untilMs: now - 30_000 },
          { fromMs: now + 3_600_000, untilMs: now + 7_200_000 },
        ],
      },
    };
    await provider.faults.set(elsewhere);
    expect((await postCharge(provider.url, chargeBody({ reference }))).status).toBe(201);

    await provider.faults.set({ outage: { windows: [{ fromMs: now - 1_000, untilMs: now + 60_000 }] } });
    expect((await postCharge(provider.url, chargeBody({ reference }))).status).toBe(503);
    await provider.faults.set({ outage: { untilMs: now - 1 } });
    expect((await postCharge(provider.url, chargeBody({ reference }))).status).toBe(201);
    expect((await listCharges(provider.url, { reference })).data).toHaveLength(2);
  });

  it('adds the configured latency to each charge', async () => {
    await provider.faults.set({ latency: { p50Ms: 250, p99Ms: 250 } });
    const started = performance.now();
    expect((await postCharge(provider.url, chargeBody())).status).toBe(201);
    // A lower bound only: a fixed delay can make a charge slower, never faster.
    expect(performance.now() - started).toBeGreaterThanOrEqual(240);
  });

  it('faults the read endpoints only when told to', async () => {
    await provider.faults.set({ errorRate: 1, errorStatuses: [500] });
    expect((await fetch(`${provider.url}/charges`)).status).toBe(200);
    await provider.faults.set({ errorRate: 1, errorStatuses: [500], applyToReads: true });
    expect((await fetch(`${provider.url}/charges`)).status).toBe(500);
    expect((await fetch(`${provider.url}/charges/ch_a_any`)).status).toBe(500);
    // Health and the control API stay reachable whatever the plan.
    expect((await fetch(`${provider.url}/health`)).status).toBe(200);
    expect(await provider.faults.get()).toEqual({ errorRate: 1, errorStatuses: [500], applyToReads: true });
  });

  it('refuses fault settings it cannot apply', async () => {
    const invalid: unknown[] = [
      { errorRate: 1.5 },
      { errorStatuses: [404] },
      { errorStatuses: [] },
      { latency: { p50Ms: 100, p99Ms: 10 } },
      { latency: { distribution: 'lognormal', medianMs: 10 } },
      { outage: { windows: [{ fromMs: 10, untilMs: 5 }] } },
      { hang: 'yes' },
      { chaos: true },
    ];
    for (const settings of invalid) {
      await expect(
        provider.faults.set(settings as FaultSettings),
        JSON.stringify(settings),
      ).rejects.toMatchObject({
        status: 400,
        code: 'PROVIDER_REQUEST_FAILED',
      });
    }
    expect(await provider.faults.get()).toEqual({});
  });
});
