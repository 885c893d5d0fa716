import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Charge } from '../../src/providers/charge-ledger.ts';
import { type RunningProvider, startProvider } from '../../src/providers/provider-launcher.ts';
import { chargeBody, ledgerDirectory, listCharges, postCharge, uniqueKey } from './provider-requests.ts';

describe('payment provider charges', () => {
  const ledgers = ledgerDirectory();
  let labProvider: RunningProvider;
  let plainProvider: RunningProvider;

  beforeAll(async () => {
    [labProvider, plainProvider] = await Promise.all([
      startProvider({ name: 'a', ledgerPath: ledgers.path('a'), lab: true, seed: 3 }),
      startProvider({ name: 'b', ledgerPath: ledgers.path('b'), lab: false }),
    ]);
  });

  afterAll(async () => {
    await Promise.allSettled([labProvider?.stop(), plainProvider?.stop()]);
    ledgers.remove();
  });

  it('creates a charge, reads it back and lists it by reference', async () => {
    const body = chargeBody({ amount: 1_999, currency: 'usd', description: 'two mugs' });
    const created = await postCharge(labProvider.url, body, { key: uniqueKey('happy') });
    expect(created.status).toBe(201);
    const charge = (await created.json()) as Charge;
    expect(charge).toMatchObject({
      amount: 1_999,
      currency: 'usd',
      reference: body.reference,
      status: 'succeeded',
    });
    expect(charge.id).toMatch(/^ch_a_/);
    expect(charge.created).toBeGreaterThan(0);

    const read = await fetch(`${labProvider.url}/charges/${charge.id}`);
    expect(read.status).toBe(200);
    expect(await read.json()).toEqual(charge);

    const listed = await listCharges(labProvider.url, { reference: body.reference });
    expect(listed.data).toEqual([charge]);
    expect(listed.has_more).toBe(false);
  });

  it('charges without an idempotency key every time, as Stripe does', async () => {
    const body = chargeBody();
    const first = await postCharge(labProvider.url, body);
    const second = await postCharge(labProvider.url, body);
    expect([first.status, second.status]).toEqual([201, 201]);
    const listed = await listCharges(labProvider.url, { reference: body.reference });
    expect(listed.data).toHaveLength(2);
  });

  it('pages through the listing with a cursor and filters by created_gte', async () => {
    const reference = uniqueKey('paged');
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      const response = await postCharge(labProvider.url, chargeBody({ reference, amount: 100 + i }));
      ids.push(((await response.json()) as Charge).id);
    }
    const seen: string[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const page: Awaited<ReturnType<typeof listCharges>> = await listCharges(labProvider.url, {
        reference,
        limit: 2,
        ...(cursor === null ? {} : { cursor }),
      });
      seen.push(...page.data.map((charge) => charge.id));
      expect(page.has_more).toBe(page.next_cursor !== null);
      cursor = page.next_cursor;
      pages++;
    } while (cursor !== null);
    expect(seen).toEqual(ids);
    expect(pages).toBe(3);

    const all = await listCharges(labProvider.url, { reference, limit: 100 });
    const third = all.data[2] as Charge;
    const recent = await listCharges(labProvider.url, { reference, created_gte: third.created, limit: 100 });
    expect(recent.data.map((charge) => charge.id)).toEqual(expect.arrayContaining(ids.slice(2)));
    expect(recent.data.every((charge) => charge.created >= third.created)).toBe(true);
    expect(await listCharges(labProvider.url, { reference, created_gte: Date.now() + 60_000 })).toMatchObject(
      {
        data: [],
      },
    );
  });

  it('replays the same charge for the same key and parameters, with one charge in the ledger', async () => {
    const key = uniqueKey('replay');
    const body = chargeBody();
    const first = await postCharge(labProvider.url, body, { key });
    const firstText = await first.text();
    const again = await postCharge(labProvider.url, body, { key });
    expect(first.status).toBe(201);
    expect(again.status).toBe(201);
    expect(first.headers.get('idempotent-replayed')).toBeNull();
    expect(again.headers.get('idempotent-replayed')).toBe('true');
    expect(await again.text()).toBe(firstText);
    const listed = await listCharges(labProvider.url, { idempotency_key: key });
    expect(listed.data).toHaveLength(1);
    expect(listed.data[0]?.id).toBe((JSON.parse(firstText) as Charge).id);
  });

  it('refuses a key reused with other parameters and charges nothing more', async () => {
    const key = uniqueKey('reuse');
    const body = chargeBody();
    expect((await postCharge(labProvider.url, body, { key })).status).toBe(201);
    for (const other of [
      { ...body, amount: body.amount + 1 },
      { ...body, reference: 'another-order' },
    ]) {
      const refused = await postCharge(labProvider.url, other, { key });
      expect(refused.status).toBe(400);
      expect(await refused.json()).toMatchObject({
        error: { type: 'idempotency_error', code: 'idempotency_key_reused' },
      });
    }
    expect((await listCharges(labProvider.url, { idempotency_key: key })).data).toHaveLength(1);
    expect((await listCharges(labProvider.url, { reference: 'another-order' })).data).toHaveLength(0);
  });

  it('makes exactly one charge when many requests race with the same key', async () => {
    // A fixed processing time keeps the first request in progress while the others arrive.
    await labProvider.faults.set({ latency: { p50Ms: 400, p99Ms: 400 } });
    try {
      const key = uniqueKey('race');
      const body = chargeBody();
      const responses = await Promise.all(
        Array.from({ length: 20 }, () => postCharge(labProvider.url, body, { key })),
      );
      const outcomes = await Promise.all(
        responses.map(async (response) => ({
          status: response.status,
          replayed: response.headers.get('idempotent-replayed') === 'true',
          body: (await response.json()) as Charge & { error?: { code: string } },
        })),
      );
      const created = outcomes.filter((outcome) => outcome.status === 201);
      const conflicts = outcomes.filter((outcome) => outcome.status === 409);
      expect(created.length + conflicts.length).toBe(20);
      expect(created.filter((outcome) => !outcome.replayed)).toHaveLength(1);
      expect(new Set(created.map((outcome) => outcome.body.id)).size).toBe(1);
      expect(conflicts.length).toBeGreaterThan(0);
      for (const conflict of conflicts) expect(conflict.body.error?.code).toBe('idempotency_key_in_use');
      const listed = await listCharges(labProvider.url, { idempotency_key: key });
      expect(listed.data.map((charge) => charge.id)).toEqual([created[0]?.body.id]);
    } finally {
      await labProvider.faults.clear();
    }
  });

  it('rejects invalid charges with 400 and writes nothing', async () => {
    const before = (await labProvider.stats()).ledgerCharges;
    const reference = uniqueKey('invalid');
    const cases: Array<{ label: string; body?: unknown; rawBody?: string; key?: string; param?: string }> = [
      { label: 'negative amount', body: { amount: -100, currency: 'eur', reference }, param: 'amount' },
      { label: 'zero amount', body: { amount: 0, currency: 'eur', reference }, param: 'amount' },
      { label: 'fractional amount', body: { amount: 12.5, currency: 'eur', reference }, param: 'amount' },
      { label: 'amount as text', body: { amount: '100', currency: 'eur', reference }, param: 'amount' },
      { label: 'unsupported currency', body: { amount: 100, currency: 'xyz', reference }, param: 'currency' },
      { label: 'upper-case currency', body: { amount: 100, currency: 'EUR', reference }, param: 'currency' },
      { label: 'missing amount', body: { currency: 'eur', reference }, param: 'amount' },
      { label: 'missing reference', body: { amount: 100, currency: 'eur' }, param: 'reference' },
      { label: 'unknown field', body: { amount: 100, currency: 'eur', reference, tip: 5 }, param: 'tip' },
      { label: 'malformed JSON', rawBody: `{"amount": 100, "currency": "eur", "reference": "${reference}"` },
      { label: 'a JSON array', rawBody: '[]' },
      {
        label: 'empty key',
        body: { amount: 100, currency: 'eur', reference },
        key: '',
        param: 'idempotency-key',
      },
      { label: 'key too long', body: { amount: 100, currency: 'eur', reference }, key: 'k'.repeat(256) },
    ];
    for (const entry of cases) {
      const response = await postCharge(labProvider.url, entry.body, {
        ...(entry.rawBody === undefined ? {} : { rawBody: entry.rawBody }),
        ...(entry.key === undefined ? {} : { key: entry.key }),
      });
      expect(response.status, entry.label).toBe(400);
      const error = ((await response.json()) as { error: { type: string; param?: string } }).error;
      expect(error.type, entry.label).toBe('invalid_request_error');
      if (entry.param !== undefined) expect(error.param, entry.label).toBe(entry.param);
    }
    const currency = await postCharge(labProvider.url, { amount: 100, currency: 'xyz', reference });
    expect(await currency.json()).toMatchObject({
      error: { code: 'parameter_invalid', message: expect.stringContaining('usd, eur, gbp, chf, jpy') },
    });
    const missing = await postCharge(labProvider.url, { currency: 'eur' });
    expect(await missing.json()).toMatchObject({ error: { code: 'parameter_missing' } });
    expect((await listCharges(labProvider.url, { reference })).data).toEqual([]);
    expect((await labProvider.stats()).ledgerCharges).toBe(before);
  });

  it('answers 404 for an unknown charge', async () => {
    const response = await fetch(`${labProvider.url}/charges/ch_a_missing`);
    expect(response.status).toBe(404);
    expect(await response.json()).toMatchObject({ error: { code: 'resource_missing' } });
  });

  it('has no fault API when not started in lab mode', async () => {
    expect(await (await fetch(`${plainProvider.url}/health`)).json()).toEqual({
      status: 'ok',
      name: 'b',
      lab: false,
    });
    for (const [method, path] of [
      ['GET', '/__faults'],
      ['PUT', '/__faults'],
      ['DELETE', '/__faults'],
      ['GET', '/__stats'],
    ] as const) {
      const response = await fetch(`${plainProvider.url}${path}`, {
        method,
        ...(method === 'PUT'
          ? { body: '{"hang":true}', headers: { 'content-type': 'application/json' } }
          : {}),
      });
      expect(response.status, `${method} ${path}`).toBe(404);
    }
    await expect(plainProvider.faults.set({ hang: true })).rejects.toMatchObject({ status: 404 });
    expect((await postCharge(plainProvider.url, chargeBody())).status).toBe(201);
  });

  it('keeps two providers in separate processes with separate ledgers', async () => {
    expect(labProvider.pid).not.toBe(plainProvider.pid);
    const key = uniqueKey('both');
    const body = chargeBody();
    const atA = (await (await postCharge(labProvider.url, body, { key })).json()) as Charge;
    const atB = (await (await postCharge(plainProvider.url, body, { key })).json()) as Charge;
    expect(atA.id).toMatch(/^ch_a_/);
    expect(atB.id).toMatch(/^ch_b_/);
    expect((await listCharges(labProvider.url, { reference: body.reference })).data.map((c) => c.id)).toEqual(
      [atA.id],
    );
    expect(
      (await listCharges(plainProvider.url, { reference: body.reference })).data.map((c) => c.id),
    ).toEqual([atB.id]);
    expect((await fetch(`${plainProvider.url}/charges/${atA.id}`)).status).toBe(404);
  });
});
