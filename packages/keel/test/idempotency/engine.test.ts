import { InvalidOptionError } from 'keel';
import {
  type IdempotencyDecision,
  IdempotencyError,
  IdempotencyKeyInFlightError,
  IdempotencyKeyInvalidError,
  IdempotencyKeyMismatchError,
  IdempotencyKeyMissingError,
  type IdempotencyLease,
  IdempotencyLeaseLostError,
  type IdempotencyOptions,
  IdempotencyPayloadError,
  IdempotencySupersededError,
  type IdempotentRequest,
  idempotency,
  memoryStore,
  type StoredResponse,
} from 'keel/idempotency';
import { describe, expect, it } from 'vitest';

const T0 = 1_700_000_000_000;

function setup(options: Partial<IdempotencyOptions> = {}) {
  const store = memoryStore();
  const time = { t: T0 };
  const engine = idempotency({ store, clock: { now: () => time.t }, ...options });
  return { store, time, engine };
}

function request(overrides: Partial<IdempotentRequest> = {}): IdempotentRequest {
  return {
    key: 'key-1',
    principal: 'user-1',
    method: 'POST',
    route: '/charges',
    payload: { amount: 1999, currency: 'eur' },
    ...overrides,
  };
}

const created: StoredResponse = {
  status: 201,
  headers: { 'content-type': 'application/json' },
  body: '{"id":"ch_1"}',
};

function leaseOf(decision: IdempotencyDecision): IdempotencyLease {
  if (decision.kind !== 'execute') throw new Error(`expected execute, got ${decision.kind}`);
  return decision.lease;
}

async function rejection(promise: Promise<unknown>): Promise<IdempotencyError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  if (!(error instanceof IdempotencyError))
    throw new Error(`expected an IdempotencyError, got ${String(error)}`);
  return error;
}

describe('idempotency engine', () => {
  describe('keys', () => {
    it('refuses a request without a key with a 400 idempotency-key-missing problem', async () => {
      const { engine, store } = setup();
      const error = await rejection(engine.begin(request({ key: undefined })));
      expect(error).toBeInstanceOf(IdempotencyKeyMissingError);
      expect(error.status).toBe(400);
      expect(error.toProblem('/charges')).toMatchObject({
        type: 'urn:keel:problem:idempotency-key-missing',
        status: 400,
        instance: '/charges',
      });
      expect(error.message).toContain('idempotency-key');
      expect(store.size).toBe(0);
    });

    it('runs a request without a key unguarded when keys are optional', async () => {
      const { engine, store } = setup({ required: false });
      expect(await engine.begin(request({ key: undefined }))).toEqual({ kind: 'bypass' });
      expect(store.size).toBe(0);
    });

    it.each([
      ['empty', ''],
      ['256 characters long', 'k'.repeat(256)],
      ['holding a control character', 'abc\u0001def'],
      ['holding non-ASCII', 'café'],
      ['starting with a space', ' key'],
      ['ending with a space', 'key '],
    ])('refuses a key %s with a 400 idempotency-key-invalid problem and stores nothing', async (_, key) => {
      const { engine, store } = setup();
      const error = await rejection(engine.begin(request({ key })));
      expect(error).toBeInstanceOf(IdempotencyKeyInvalidError);
      expect(error.status).toBe(400);
      expect(error.toProblem().type).toBe('urn:keel:problem:idempotency-key-invalid');
      expect(store.size).toBe(0);
    });

    it('accepts a key of exactly 255 printable characters with a space inside', async () => {
      const { engine } = setup();
      const key = `a ${'~'.repeat(253)}`;
      expect((await engine.begin(request({ key }))).kind).toBe('execute');
    });
  });

  describe('fingerprints', () => {
    it('treats the same payload with its keys in another order as the same request', async () => {
      const { engine } = setup();
      const lease = leaseOf(await engine.begin(request({ payload: { a: 1, b: { c: 2, d: 3 } } })));
      await lease.complete(created);
      expect(await engine.begin(request({ payload: { b: { d: 3, c: 2 }, a: 1 } }))).toEqual({
        kind: 'replay',
        response: created,
      });
    });

    it('refuses the same key with a different payload with a 422, while in flight and after completion', async () => {
      const { engine } = setup();
      const lease = leaseOf(await engine.begin(request({ payload: { a: 1, b: 2 } })));
      const inFlight = await rejection(engine.begin(request({ payload: { a: 1, b: 3 } })));
      expect(inFlight).toBeInstanceOf(IdempotencyKeyMismatchError);
      expect(inFlight.status).toBe(422);
      expect(inFlight.toProblem().type).toBe('urn:keel:problem:idempotency-key-reused');
      await lease.complete(created);
      const after = await rejection(engine.begin(request({ payload: { a: 1 } })));
      expect(after.status).toBe(422);
    });

    it('counts named request parts in the fingerprint', async () => {
      const { engine } = setup();
      await leaseOf(await engine.begin(request({ parts: { id: 'o_1' } }))).complete(created);
      expect((await rejection(engine.begin(request({ parts: { id: 'o_2' } })))).status).toBe(422);
    });

    it.each([
      ['a BigInt', { amount: 10n }],
      ['a function', { callback: () => 1 }],
      ['NaN', { amount: Number.NaN }],
      ['Infinity', [Number.POSITIVE_INFINITY]],
      [
        'a cycle',
        (() => {
          const o: Record<string, unknown> = { a: 1 };
          o.self = o;
          return o;
        })(),
      ],
    ])('refuses a payload holding %s with a 400 and stores nothing', async (_, payload) => {
      const { engine, store } = setup();
      const error = await rejection(engine.begin(request({ payload })));
      expect(error).toBeInstanceOf(IdempotencyPayloadError);
      expect(error.status).toBe(400);
      expect(error.toProblem().type).toBe('urn:keel:problem:payload-invalid');
      expect(store.size).toBe(0);
    });

    it('refuses a payload larger than maxPayloadChars with a 413, and accepts one at the limit', async () => {
      const { engine, store } = setup({ maxPayloadChars: 100 });
      const error = await rejection(engine.begin(request({ payload: 'x'.repeat(101) })));
      expect(error.status).toBe(413);
      expect(error.toProblem().type).toBe('urn:keel:problem:payload-too-large');
      const big = await rejection(engine.begin(request({ payload: { text: 'y'.repeat(200) } })));
      expect(big.status).toBe(413);
      expect(store.size).toBe(0);
      expect((await engine.begin(request({ payload: 'x'.repeat(100) }))).kind).toBe('execute');
    });
  });

  describe('in flight and replay', () => {
    it('refuses a second request while the first is running with a 409 and a Retry-After header', async () => {
      const { engine, time } = setup({ leaseMs: 30_000 });
      leaseOf(await engine.begin(request()));
      time.t += 10_500;
      const error = await rejection(engine.begin(request()));
      expect(error).toBeInstanceOf(IdempotencyKeyInFlightError);
      expect(error.status).toBe(409);
      expect(error.toProblem().type).toBe('urn:keel:problem:idempotency-key-in-flight');
      expect(error.problemHeaders).toEqual({ 'retry-after': '20' });
    });

    it('replays the stored status and body with only the allow-listed headers', async () => {
      const { engine, store } = setup({
        replayHeaders: ['content-type', 'x-request-id', 'set-cookie', 'authorization'],
      });
      const lease = leaseOf(await engine.begin(request()));
      const stored = await lease.complete({
        status: 202,
        headers: {
          'Content-Type': 'application/json',
          'x-request-id': 'r-1',
          'set-cookie': 'session=secret',
          authorization: 'Bearer secret',
          'x-debug': 'not allow-listed',
        },
        body: '{"accepted":true}',
      });
      const expected = {
        status: 202,
        headers: { 'content-type': 'application/json', 'x-request-id': 'r-1' },
        body: '{"accepted":true}',
      };
      expect(stored).toEqual(expected);
      expect(await engine.begin(request())).toEqual({ kind: 'replay', response: expected });
      expect(JSON.stringify(await store.get(lease.key))).not.toContain('secret');
    });

    it('applies the beforeStore hook to what is stored and replayed', async () => {
      const { engine } = setup({
        beforeStore: (response) => ({ ...response, body: response.body?.replace(/\d{16}/, '****') ?? null }),
      });
      const lease = leaseOf(await engine.begin(request()));
      await lease.complete({ status: 200, headers: {}, body: '{"card":"4242424242424242"}' });
      const replay = await engine.begin(request());
      expect(replay).toEqual({
        kind: 'replay',
        response: { status: 200, headers: {}, body: '{"card":"****"}' },
      });
    });

    it('releases the key after a 5xx so a retry runs the handler again', async () => {
      const { engine, store } = setup();
      const lease = leaseOf(await engine.begin(request()));
      expect(await lease.complete({ status: 503, headers: {}, body: 'unavailable' })).toBeUndefined();
      expect(store.size).toBe(0);
      const retry = leaseOf(await engine.begin(request()));
      expect(retry.resumed).toBe(false);
    });

    it('stores a 4xx, which is deterministic, and replays it', async () => {
      const { engine } = setup();
      const notFound = { status: 404, headers: {}, body: '{"error":"no such order"}' };
      await leaseOf(await engine.begin(request())).complete(notFound);
      expect(await engine.begin(request())).toEqual({ kind: 'replay', response: notFound });
    });

    it('honours a custom shouldStore', async () => {
      const { engine, store } = setup({ shouldStore: (status) => status < 400 });
      await leaseOf(await engine.begin(request())).complete({ status: 409, headers: {}, body: null });
      expect(store.size).toBe(0);
    });

    it('runs the handler again once the retention has passed', async () => {
      const { engine, time } = setup({ leaseMs: 1_000, retentionMs: 5_000 });
      await leaseOf(await engine.begin(request())).complete(created);
      time.t += 4_999;
      expect((await engine.begin(request())).kind).toBe('replay');
      time.t += 1;
      const again = leaseOf(await engine.begin(request({ payload: { other: true } })));
      expect(again.resumed).toBe(false);
      expect(again.recoveryPoint).toBeNull();
    });
  });

  describe('leases', () => {
    it('lets another request take over an expired lease, resuming, and fences the old holder out', async () => {
      const { engine, time } = setup({ leaseMs: 1_000 });
      const first = leaseOf(await engine.begin(request()));
      await first.checkpoint('charged', { chargeId: 'ch_1' });
      time.t += 1_001;
      const second = leaseOf(await engine.begin(request()));
      expect(second.resumed).toBe(true);
      expect(second.recoveryPoint).toBe('charged');
      expect(second.phases).toEqual({ charged: { chargeId: 'ch_1' } });

      const lost = await rejection(first.complete(created));
      expect(lost).toBeInstanceOf(IdempotencyLeaseLostError);
      expect(lost.status).toBe(409);
      await expect(first.extend()).rejects.toBeInstanceOf(IdempotencyLeaseLostError);

      await second.complete(created);
      expect(await engine.begin(request())).toEqual({ kind: 'replay', response: created });
    });

    it('keeps the key held while a renewed lease outlives the retention', async () => {
      const { engine, time } = setup({ leaseMs: 1_000, retentionMs: 1_500 });
      const lease = leaseOf(await engine.begin(request()));
      time.t += 900;
      await lease.extend(); // held until T0 + 1900, past the retention at T0 + 1500
      time.t += 700;
      await expect(engine.begin(request())).rejects.toBeInstanceOf(IdempotencyKeyInFlightError);
      await lease.complete(created);
      expect(await engine.begin(request())).toEqual({ kind: 'replay', response: created });
    });

    it('never lets the retention end before a checkpointed or taken-over lease', async () => {
      const { engine, store, time } = setup({ leaseMs: 1_000, retentionMs: 1_500 });
      const first = leaseOf(await engine.begin(request()));
      time.t += 900;
      await first.checkpoint('charged', 'ch_1'); // held until T0 + 1900, past the retention at T0 + 1500
      expect((await store.get(first.key))?.expiresAt).toBeGreaterThanOrEqual(first.leaseUntil);
      time.t += 700;
      await expect(engine.begin(request())).rejects.toBeInstanceOf(IdempotencyKeyInFlightError);
      expect(await store.purgeExpired(time.t, 10)).toBe(0);

      const {
        engine: other,
        store: otherStore,
        time: otherTime,
      } = setup({ leaseMs: 1_000, retentionMs: 1_500 });
      leaseOf(await other.begin(request())); // crashes: lease until T0 + 1000, retention until T0 + 1500
      otherTime.t += 1_200;
      const takeover = leaseOf(await other.begin(request())); // held until T0 + 2200
      expect(takeover.resumed).toBe(true);
      expect((await otherStore.get(takeover.key))?.expiresAt).toBeGreaterThanOrEqual(takeover.leaseUntil);
      otherTime.t += 900;
      await expect(other.begin(request())).rejects.toBeInstanceOf(IdempotencyKeyInFlightError);
      expect(await otherStore.purgeExpired(otherTime.t, 10)).toBe(0);
      await takeover.complete(created);
      expect(await other.begin(request())).toEqual({ kind: 'replay', response: created });
    });

    it('keeps the recovery point when a handler fails after a checkpoint, so the retry resumes', async () => {
      const { engine } = setup();
      const first = leaseOf(await engine.begin(request()));
      await first.checkpoint('charged', 'ch_1');
      await first.complete({ status: 500, headers: {}, body: null });
      const retry = leaseOf(await engine.begin(request()));
      expect(retry.resumed).toBe(true);
      expect(retry.phases).toEqual({ charged: 'ch_1' });
    });
  });

  describe('scope', () => {
    it.each([
      ['two principals', { principal: 'user-2' }],
      ['two routes', { route: '/refunds' }],
      ['two methods', { method: 'PUT' }],
    ])('keeps the same key from %s independent', async (_, other) => {
      const { engine, store } = setup();
      const a = leaseOf(await engine.begin(request()));
      const b = leaseOf(await engine.begin(request(other)));
      expect(a.key).not.toBe(b.key);
      expect(store.size).toBe(2);
      await a.complete(created);
      // The other scope is still in flight: a's stored response is not replayed to it.
      await expect(engine.begin(request(other))).rejects.toBeInstanceOf(IdempotencyKeyInFlightError);
      const otherResponse = { status: 200, headers: {}, body: 'other' };
      await b.complete(otherResponse);
      expect(await engine.begin(request())).toEqual({ kind: 'replay', response: created });
      expect(await engine.begin(request(other))).toEqual({ kind: 'replay', response: otherResponse });
    });

    it('never stores the raw client key', async () => {
      const { engine } = setup();
      const lease = leaseOf(await engine.begin(request({ key: 'client-visible-key' })));
      expect(lease.key).not.toContain('client-visible-key');
      expect(lease.key).toMatch(/^[0-9a-f]{64}$/);
    });
  });

  describe('latest-wins', () => {
    it('lets a newer sequence supersede an in-flight older one, whose completion then fails', async () => {
      const { engine } = setup({ mode: 'latest-wins' });
      const older = leaseOf(await engine.begin(request({ sequence: 1, payload: { v: 1 } })));
      const newer = leaseOf(await engine.begin(request({ sequence: 2, payload: { v: 2 } })));
      const error = await rejection(older.complete(created));
      expect(error).toBeInstanceOf(IdempotencySupersededError);
      expect(error.status).toBe(409);
      expect(error.toProblem()).toMatchObject({
        type: 'urn:keel:problem:idempotency-superseded',
        sequence: 1,
        latestSequence: 2,
      });
      await newer.complete(created);
      expect(await engine.begin(request({ sequence: 2, payload: { v: 2 } }))).toEqual({
        kind: 'replay',
        response: created,
      });
    });

    it('refuses an older sequence arriving after a newer one immediately with a 409', async () => {
      const { engine } = setup({ mode: 'latest-wins' });
      await leaseOf(await engine.begin(request({ sequence: 5 }))).complete(created);
      const error = await rejection(engine.begin(request({ sequence: 4 })));
      expect(error).toBeInstanceOf(IdempotencySupersededError);
      expect(error.status).toBe(409);
      expect((await engine.begin(request({ sequence: 6 }))).kind).toBe('execute');
    });

    it.each([
      ['missing', undefined],
      ['negative', -1],
      ['fractional', 1.5],
    ])('refuses a %s sequence with a 400', async (_, sequence) => {
      const { engine, store } = setup({ mode: 'latest-wins' });
      const error = await rejection(engine.begin(sequence === undefined ? request() : request({ sequence })));
      expect(error).toBeInstanceOf(IdempotencyPayloadError);
      expect(error.status).toBe(400);
      expect(store.size).toBe(0);
    });
  });

  describe('derived keys', () => {
    it('derives a key stable per request key and step, different across steps and keys', async () => {
      const { engine, time } = setup({ leaseMs: 1_000 });
      const first = leaseOf(await engine.begin(request()));
      const charge = first.derivedKey('charge');
      expect(charge).toMatch(/^[0-9a-f]{48}$/);
      expect(first.derivedKey('charge')).toBe(charge);
      expect(first.derivedKey('email')).not.toBe(charge);

      time.t += 1_001;
      const takeover = leaseOf(await engine.begin(request()));
      expect(takeover.derivedKey('charge')).toBe(charge);

      const other = leaseOf(await engine.begin(request({ key: 'key-2' })));
      expect(other.derivedKey('charge')).not.toBe(charge);
      const otherUser = leaseOf(await engine.begin(request({ principal: 'user-2' })));
      expect(otherUser.derivedKey('charge')).not.toBe(charge);
    });
  });

  describe('configuration', () => {
    it.each([
      ['leaseMs', { leaseMs: 0 }],
      ['leaseMs', { leaseMs: 1.5 }],
      ['retentionMs', { leaseMs: 10_000, retentionMs: 9_999 }],
      ['mode', { mode: 'x' as never }],
      ['maxPayloadChars', { maxPayloadChars: 0 }],
      ['shouldStore', { shouldStore: 'yes' as never }],
    ])('refuses a bad %s, naming the option', (option, bad) => {
      const attempt = () => idempotency({ store: memoryStore(), ...bad });
      expect(attempt).toThrow(new RegExp(`^${option}: `));
      try {
        attempt();
      } catch (error) {
        expect(error).toBeInstanceOf(InvalidOptionError);
        expect((error as { option: string }).option).toBe(option);
      }
    });

    it('refuses a missing store', () => {
      expect(() => idempotency({} as never)).toThrow(/^store: /);
    });
  });
});

describe('engine fingerprint', () => {
  it('matches the exported fingerprint() of the same payload and parts', async () => {
    const { fingerprint: print, idempotency: make, memoryStore: mem } = await import('keel/idempotency');
    const store = mem();
    const engine = make({ store });
    const decision = await engine.begin({
      key: 'k',
      principal: 'p',
      method: 'POST',
      route: '/r',
      payload: { b: 2, a: [1, { d: 1, c: 2 }] },
      parts: { id: '7' },
    });
    if (decision.kind !== 'execute') throw new Error('expected a lease');
    const record = await store.get(decision.lease.key);
    expect(record?.fingerprint).toBe(print({ a: [1, { c: 2, d: 1 }], b: 2 }, { id: '7' }));
  });
});

describe('engine telemetry', () => {
  it('reports every verdict and outcome with the client key, and survives a throwing sink', async () => {
    const events: Array<{ type: string; key: string; name: string }> = [];
    const { engine, time } = setup({
      name: 'charges',
      telemetry: { emit: (event) => void events.push(event) },
      leaseMs: 1_000,
    });
    const first = await engine.begin(request());
    await expect(engine.begin(request())).rejects.toBeInstanceOf(IdempotencyKeyInFlightError);
    await expect(engine.begin(request({ payload: { amount: 1 } }))).rejects.toBeInstanceOf(
      IdempotencyKeyMismatchError,
    );
    if (first.kind !== 'execute') throw new Error('expected execute');
    await first.lease.complete(created);
    await engine.begin(request());

    const failing = await engine.begin(request({ key: 'key-2' }));
    if (failing.kind !== 'execute') throw new Error('expected execute');
    await failing.lease.complete({ status: 503, headers: {}, body: null });

    const stale = await engine.begin(request({ key: 'key-3' }));
    if (stale.kind !== 'execute') throw new Error('expected execute');
    time.t += 1_001;
    await engine.begin(request({ key: 'key-3' })); // taken over
    await expect(stale.lease.complete(created)).rejects.toBeInstanceOf(IdempotencyLeaseLostError);

    expect(events.map((e) => `${e.type}:${e.key}`)).toEqual([
      'executed:key-1',
      'in-flight-conflict:key-1',
      'mismatch:key-1',
      'completed:key-1',
      'replayed:key-1',
      'executed:key-2',
      'released:key-2',
      'executed:key-3',
      'executed:key-3',
      'lease-lost:key-3',
    ]);
    expect(new Set(events.map((e) => e.name))).toEqual(new Set(['charges']));

    const quiet = setup({
      telemetry: {
        emit: () => {
          throw new Error('sink down');
        },
      },
    });
    const warned = new Promise((resolve) => process.once('warning', resolve));
    expect((await quiet.engine.begin(request())).kind).toBe('execute');
    expect(String(await warned)).toMatch(/sink down/);
  });

  it('refuses a telemetry sink without emit and an empty name', () => {
    expect(() => setup({ telemetry: {} as never })).toThrow(InvalidOptionError);
    expect(() => setup({ name: '' })).toThrow(/^name: /);
  });
});
