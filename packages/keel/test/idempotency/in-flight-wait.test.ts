import { setTimeout as sleep } from 'node:timers/promises';
import { InvalidOptionError, withTimeBudget } from 'keel';
import {
  type IdempotencyDecision,
  IdempotencyKeyInFlightError,
  type IdempotencyLease,
  type IdempotencyOptions,
  type IdempotentRequest,
  idempotency,
  memoryStore,
  type StoredResponse,
} from 'keel/idempotency';
import { describe, expect, it } from 'vitest';

// Leases are compared on the real wall clock here: the wait itself sleeps for real.
function setup(options: Partial<IdempotencyOptions> = {}) {
  const store = memoryStore();
  return { store, engine: idempotency({ store, leaseMs: 200, ...options }) };
}

const charge: IdempotentRequest = {
  key: 'key-1',
  principal: 'user-1',
  method: 'POST',
  route: '/orders/7/charge',
  payload: null,
};

const created: StoredResponse = {
  status: 201,
  headers: { 'content-type': 'application/json' },
  body: '{"id":"pay_1"}',
};

function leaseOf(decision: IdempotencyDecision): IdempotencyLease {
  if (decision.kind !== 'execute') throw new Error(`expected execute, got ${decision.kind}`);
  return decision.lease;
}

describe('waiting for an in-flight holder', () => {
  it('refuses at once with a 409 by default, as before', async () => {
    const { engine } = setup();
    leaseOf(await engine.begin(charge));
    await expect(engine.begin(charge)).rejects.toBeInstanceOf(IdempotencyKeyInFlightError);
  });

  it('replays the holder’s response once the holder stores it', async () => {
    const { engine } = setup({ inFlightWaitMs: 2_000, inFlightPollMs: 5 });
    const holder = leaseOf(await engine.begin(charge));
    const retry = engine.begin(charge);
    await sleep(30);
    await holder.complete(created);
    expect(await retry).toEqual({ kind: 'replay', response: created });
  });

  it('takes the key over, resuming, once a crashed holder’s lease runs out', async () => {
    const { engine } = setup({ inFlightWaitMs: 2_000, inFlightPollMs: 5 });
    const crashed = leaseOf(await engine.begin(charge));
    await crashed.checkpoint('attempt', { orderId: 'ord_7' });
    // The holder never writes again, as a worker killed with SIGKILL would not.
    const retry = leaseOf(await engine.begin(charge));
    expect(retry.resumed).toBe(true);
    expect(retry.phases).toEqual({ attempt: { orderId: 'ord_7' } });
    await retry.complete(created);
    expect(await engine.begin(charge)).toEqual({ kind: 'replay', response: created });
  });

  it('answers 409 when the holder outlasts the wait', async () => {
    const { engine } = setup({ leaseMs: 10_000, inFlightWaitMs: 60, inFlightPollMs: 5 });
    leaseOf(await engine.begin(charge));
    const error = await engine.begin(charge).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(IdempotencyKeyInFlightError);
    expect((error as IdempotencyKeyInFlightError).retryAfterSeconds).toBeGreaterThanOrEqual(9);
  });

  it('never waits past the request’s deadline', async () => {
    const { engine } = setup({ leaseMs: 10_000, inFlightWaitMs: 10_000, inFlightPollMs: 5 });
    leaseOf(await engine.begin(charge));
    // Were the deadline ignored, this would wait 10 s and outlast the test's own timeout.
    const error = await new Promise((resolve) =>
      withTimeBudget(40, () => {
        engine.begin(charge).then(resolve, resolve);
      }),
    );
    expect(error).toBeInstanceOf(IdempotencyKeyInFlightError);
  });

  it('rejects a negative or fractional wait and a zero poll interval', () => {
    const store = memoryStore();
    expect(() => idempotency({ store, inFlightWaitMs: -1 })).toThrow(InvalidOptionError);
    expect(() => idempotency({ store, inFlightWaitMs: 1.5 })).toThrow(/inFlightWaitMs/);
    expect(() => idempotency({ store, inFlightPollMs: 0 })).toThrow(/inFlightPollMs/);
  });
});
