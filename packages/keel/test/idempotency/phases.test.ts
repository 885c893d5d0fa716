import { CrashPoints } from 'keel/chaos';
import {
  completeAbandoned,
  type IdempotencyEngine,
  type IdempotencyLease,
  idempotency,
  memoryStore,
  type Phase,
  type ResponsePhase,
  runPhases,
} from 'keel/idempotency';
import { describe, expect, it } from 'vitest';
import { FakeProvider, type ProviderCharge } from './fake-provider.ts';
import { CHARGE_CRASH_POINTS } from './fixtures/charge-crash-points.ts';

class Crash extends Error {}

function setup() {
  let now = 1_000_000;
  const clock = { now: () => now };
  const engine = idempotency({ store: memoryStore(), leaseMs: 5_000, clock });
  const provider = new FakeProvider();
  const attempts: string[] = [];
  const recorded: ProviderCharge[] = [];
  const phases: Phase[] = [
    { name: 'attempt', run: () => attempts.push('order-1') },
    {
      name: 'charge',
      kind: 'external',
      run: (_c, key) => provider.charge(key, 1_500),
      lookup: (_c, key) => provider.find(key),
    },
  ];
  const respond: ResponsePhase = {
    run: (c) => {
      recorded.push(c.results.charge as ProviderCharge);
      return {
        status: 201,
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(c.results.charge),
      };
    },
  };
  const request = {
    key: 'charge-order-1',
    principal: 'user-1',
    method: 'POST',
    route: '/orders/:id/charge',
    payload: { amount: 1_500 },
  };
  const advance = (ms: number) => {
    now += ms;
  };
  return { engine, provider, attempts, recorded, phases, respond, request, advance };
}

async function attempt(
  engine: IdempotencyEngine,
  request: Parameters<IdempotencyEngine['begin']>[0],
  run: (lease: IdempotencyLease) => Promise<unknown>,
) {
  const decision = await engine.begin(request);
  if (decision.kind === 'replay') return { replayed: decision.response };
  if (decision.kind !== 'execute') throw new Error('expected a lease');
  return { ran: await run(decision.lease) };
}

describe('runPhases', () => {
  it('runs every phase once and stores the response for replay', async () => {
    const t = setup();
    const first = await attempt(t.engine, t.request, (lease) => runPhases(lease, t.phases, t.respond));
    expect(first.ran).toMatchObject({ status: 201 });
    const second = await attempt(t.engine, t.request, () => Promise.reject(new Error('must not run')));
    expect(second.replayed?.status).toBe(201);
    expect(JSON.parse(second.replayed?.body ?? 'null')).toMatchObject({ id: 'ch_1', amount: 1_500 });
    expect(t.provider.calls).toBe(1);
    expect(t.attempts).toHaveLength(1);
  });

  it('gives the provider a stable key derived from the request key', async () => {
    const t = setup();
    await attempt(t.engine, t.request, (lease) => runPhases(lease, t.phases, t.respond));
    const [charge] = t.provider.ledger.values();
    const again = setup();
    await attempt(again.engine, again.request, (lease) => runPhases(lease, again.phases, again.respond));
    expect([...again.provider.ledger.keys()]).toEqual([charge?.key]);
  });

  it('reconciles a lost provider response by looking it up instead of charging again', async () => {
    const t = setup();
    t.provider.dropResponses = 1;
    await expect(
      attempt(t.engine, t.request, (lease) => runPhases(lease, t.phases, t.respond)),
    ).rejects.toThrow(/timed out/);
    expect(t.provider.ledger.size).toBe(1);
    // The client retries with the same key: the charge is found at the provider, not made twice.
    const retry = await attempt(t.engine, t.request, (lease) => runPhases(lease, t.phases, t.respond));
    expect(retry.ran).toMatchObject({ status: 201 });
    expect(t.provider.ledger.size).toBe(1);
    expect(t.provider.calls).toBe(1);
    expect(t.attempts).toHaveLength(1);
    expect(t.recorded.map((c) => c.id)).toEqual(['ch_1']);
  });

  it('calls again with the same derived key when the first call never reached the provider', async () => {
    const t = setup();
    t.provider.failBefore = 1;
    await expect(
      attempt(t.engine, t.request, (lease) => runPhases(lease, t.phases, t.respond)),
    ).rejects.toThrow(/ECONNREFUSED/);
    const retry = await attempt(t.engine, t.request, (lease) => runPhases(lease, t.phases, t.respond));
    expect(retry.ran).toMatchObject({ status: 201 });
    expect(t.provider.calls).toBe(2);
    expect(t.provider.ledger.size).toBe(1);
  });

  it('resumes after a crash at every crash point with exactly one charge and one recorded payment', async () => {
    const probe = setup();
    const seen = new CrashPoints({ armed: undefined });
    await attempt(probe.engine, probe.request, (lease) =>
      runPhases(lease, probe.phases, probe.respond, { crash: seen }),
    );
    // The kill -9 suite crashes at each of these; a new crash point must join the list.
    expect(seen.seen).toEqual(CHARGE_CRASH_POINTS);
    for (const point of seen.seen) {
      const t = setup();
      const crash = new CrashPoints({
        armed: point,
        crash: () => {
          throw new Crash(point);
        },
      });
      const first = attempt(t.engine, t.request, (lease) => runPhases(lease, t.phases, t.respond, { crash }));
      await expect(first, point).rejects.toBeInstanceOf(Crash);
      t.advance(6_000); // the dead worker's lease runs out
      const retry = await attempt(t.engine, t.request, (lease) => runPhases(lease, t.phases, t.respond));
      const response = retry.ran ?? retry.replayed;
      expect(response, point).toMatchObject({ status: 201 });
      expect(t.provider.ledger.size, point).toBe(1);
      expect(t.attempts, point).toHaveLength(1);
      expect(t.recorded, point).toHaveLength(1);
    }
  });
});

describe('completeAbandoned', () => {
  it('finishes an operation whose worker died and stores the response the client then gets', async () => {
    const t = setup();
    const crash = new CrashPoints({
      armed: 'after:charge',
      crash: () => {
        throw new Crash('after:charge');
      },
    });
    // A worker that dies without suspending: its lease simply runs out.
    const decision = await t.engine.begin(t.request);
    if (decision.kind !== 'execute') throw new Error('expected a lease');
    const lease = decision.lease;
    await runPhases(lease, t.phases, t.respond, { crash }).catch(() => {});
    t.advance(6_000);
    const report = await completeAbandoned(t.engine, {
      finish: (resumed) => runPhases(resumed, t.phases, t.respond),
    });
    expect(report).toEqual({ found: 1, completed: 1, released: 0, failed: 0, skipped: 0 });
    const retry = await attempt(t.engine, t.request, () => Promise.reject(new Error('must not run')));
    expect(retry.replayed).toMatchObject({ status: 201 });
    expect(t.provider.ledger.size).toBe(1);
    expect(await completeAbandoned(t.engine, { finish: () => Promise.resolve('release') })).toMatchObject({
      found: 0,
    });
  });

  it('releases operations the application gives up on and counts failures', async () => {
    const t = setup();
    for (const key of ['a', 'b', 'c']) {
      const d = await t.engine.begin({ ...t.request, key });
      if (d.kind !== 'execute') throw new Error('expected a lease');
      if (key !== 'c') await d.lease.checkpoint('attempt', null);
    }
    t.advance(6_000);
    let calls = 0;
    const report = await completeAbandoned(t.engine, {
      finish: async (lease) => {
        calls++;
        if (calls === 1) throw new Error('provider down');
        return lease.recoveryPoint === null
          ? 'release'
          : { status: 409, headers: {}, body: '{"type":"abandoned"}' };
      },
    });
    expect(report).toEqual({ found: 3, completed: 1, released: 1, failed: 1, skipped: 0 });
  });
});
