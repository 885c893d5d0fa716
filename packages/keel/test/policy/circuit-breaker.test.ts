import fc from 'fast-check';
import {
  AbortedError,
  BrokenCircuitError,
  BulkheadRejectedError,
  type CircuitBreakerOptions,
  type CircuitBreakerPolicy,
  circuitBreaker,
  FakeClock,
  HttpStatusError,
  InvalidOptionError,
  IsolatedCircuitError,
  type PolicyEvent,
  pipeline,
  TimeoutError,
  TimerWheel,
  timeout,
} from 'keel';
import { describe, expect, it } from 'vitest';

function setup(options: CircuitBreakerOptions = {}, clock = new FakeClock()) {
  const breaker = circuitBreaker({ clock, openMs: 1_000, ...options });
  const changes: string[] = [];
  breaker.onStateChange(({ from, to }) => changes.push(`${from}→${to}`));
  let calls = 0;
  const succeed = () =>
    breaker.execute(() => {
      calls++;
      return 'ok';
    });
  const fail = (error: unknown = new Error('boom')) =>
    breaker
      .execute(() => {
        calls++;
        throw error;
      })
      .catch((e: unknown) => e);
  /** A call the fake clock makes take `ms`. */
  const take = (ms: number, outcome: 'ok' | 'fail' = 'ok') =>
    breaker
      .execute(() => {
        calls++;
        clock.advance(ms);
        if (outcome === 'fail') throw new Error('slow boom');
        return 'ok';
      })
      .catch((e: unknown) => e);
  return { clock, breaker, changes, succeed, fail, take, calls: () => calls };
}

async function tripConsecutive(fail: () => Promise<unknown>, n: number) {
  for (let i = 0; i < n; i++) await fail();
}

describe('circuitBreaker: closed → open', () => {
  it('opens after N consecutive failures, and a success in between starts the count again', async () => {
    const { breaker, changes, succeed, fail, calls } = setup({ window: { kind: 'consecutive', size: 3 } });
    await fail();
    await fail();
    await succeed();
    await fail();
    await fail();
    expect(breaker.state).toBe('closed');
    await fail();
    expect(breaker.state).toBe('open');
    expect(changes).toEqual(['closed→open']);
    const before = calls();
    const rejected = await fail();
    expect(rejected).toBeInstanceOf(BrokenCircuitError);
    expect((rejected as BrokenCircuitError).code).toBe('KEEL_BREAKER_OPEN');
    expect((rejected as BrokenCircuitError).retryAfterMs).toBe(1_000);
    expect((rejected as BrokenCircuitError).retryAt).toBe(1_000);
    expect(calls()).toBe(before);
  });

  it('opens when the failure rate over the window reaches the threshold', async () => {
    const { breaker, succeed, fail } = setup({
      window: { kind: 'count', size: 10 },
      minimumCalls: 4,
      failureRateThreshold: 0.5,
    });
    await fail();
    await succeed();
    await succeed();
    expect(breaker.state).toBe('closed');
    await fail();
    expect(breaker.snapshot()).toMatchObject({ state: 'open', calls: 4, failures: 2, failureRate: 0.5 });
  });

  it('does not judge the rate before minimumCalls calls', async () => {
    const { breaker, fail } = setup({ window: { kind: 'count', size: 10 }, minimumCalls: 5 });
    await tripConsecutive(fail, 4);
    expect(breaker.snapshot()).toMatchObject({ state: 'closed', calls: 4, failureRate: 1 });
    await fail();
    expect(breaker.state).toBe('open');
  });

  it('opens on the slow-call rate even when every call succeeded', async () => {
    const { breaker, take, succeed } = setup({
      window: { kind: 'count', size: 4 },
      minimumCalls: 4,
      slowCallDurationMs: 100,
      slowCallRateThreshold: 0.5,
    });
    await succeed();
    await take(100); // exactly the threshold is not slow
    await take(101);
    expect(breaker.snapshot()).toMatchObject({ state: 'closed', calls: 3, slowCalls: 1, failures: 0 });
    await take(250);
    expect(breaker.snapshot()).toMatchObject({ state: 'open', slowCalls: 2, slowCallRate: 0.5 });
  });

  it('opens on a time window and forgets failures older than the window', async () => {
    const { clock, breaker, fail, succeed } = setup({
      window: { kind: 'time', seconds: 10 },
      minimumCalls: 3,
      failureRateThreshold: 0.5,
    });
    await fail();
    await fail();
    clock.advance(10_000);
    expect(breaker.snapshot()).toMatchObject({ calls: 0, failures: 0 });
    await succeed();
    await fail();
    await succeed();
    expect(breaker.state).toBe('closed');
    clock.advance(5_000);
    await fail();
    expect(breaker.snapshot()).toMatchObject({ state: 'open', calls: 4, failures: 2 });
  });
});

describe('circuitBreaker: open → half-open → closed or open', () => {
  it('becomes half-open once openMs has passed, seen through the state getter', async () => {
    const { clock, breaker, fail, changes } = setup({ window: { kind: 'consecutive', size: 1 } });
    await fail();
    clock.advance(999);
    expect(breaker.state).toBe('open');
    expect((await fail()) as BrokenCircuitError).toMatchObject({ retryAfterMs: 1, retryAt: 1_000 });
    clock.advance(1);
    expect(breaker.state).toBe('half-open');
    expect(changes).toEqual(['closed→open', 'open→half-open']);
  });

  it('admits exactly halfOpenProbes calls at once and closes when all of them succeed', async () => {
    const { clock, breaker, fail, changes } = setup({
      window: { kind: 'count', size: 4 },
      minimumCalls: 2,
      halfOpenProbes: 2,
    });
    await fail();
    await fail();
    clock.advance(1_000);
    const release: (() => void)[] = [];
    let started = 0;
    const probe = () =>
      breaker.execute(
        () =>
          new Promise<string>((resolve) => {
            started++;
            release.push(() => resolve('probe'));
          }),
      );
    const first = probe();
    const second = probe();
    const third = probe().catch((e: unknown) => e);
    expect(started).toBe(2);
    const refused = (await third) as BrokenCircuitError;
    expect(refused).toBeInstanceOf(BrokenCircuitError);
    expect(refused.retryAfterMs).toBe(0);
    release[0]?.();
    await first;
    expect(breaker.state).toBe('half-open');
    release[1]?.();
    await second;
    expect(breaker.state).toBe('closed');
    expect(breaker.snapshot()).toMatchObject({ calls: 0, failures: 0, consecutiveOpens: 0 });
    expect(changes).toEqual(['closed→open', 'open→half-open', 'half-open→closed']);
  });

  it('closes when the failed probes stay below the threshold, and reopens as soon as they cannot', async () => {
    const { clock, breaker, fail, succeed } = setup({
      window: { kind: 'consecutive', size: 1 },
      halfOpenProbes: 4,
      failureRateThreshold: 0.5,
    });
    await fail();
    clock.advance(1_000);
    await fail();
    await succeed();
    await succeed();
    await succeed();
    expect(breaker.state).toBe('closed');

    await fail();
    clock.advance(1_000);
    let hung = 0;
    const hanging = () => breaker.execute(() => new Promise(() => hung++));
    void hanging();
    void hanging();
    await fail();
    expect(breaker.state).toBe('half-open');
    await fail();
    // Two of four probes failed: 50 % is already reached whatever the hanging two do.
    expect(breaker.state).toBe('open');
    expect(hung).toBe(2);
  });

  it('reopens on a failed probe with an open time that grows up to the maximum', async () => {
    const { clock, breaker, fail, succeed } = setup({
      window: { kind: 'consecutive', size: 1 },
      openBackoff: { factor: 2, maxMs: 3_000 },
    });
    const retryAfter = async () => ((await fail()) as BrokenCircuitError).retryAfterMs;
    await fail();
    expect(await retryAfter()).toBe(1_000);
    clock.advance(1_000);
    await fail();
    expect(breaker.snapshot()).toMatchObject({ state: 'open', consecutiveOpens: 2 });
    expect(await retryAfter()).toBe(2_000);
    clock.advance(2_000);
    await fail();
    expect(await retryAfter()).toBe(3_000);
    clock.advance(3_000);
    await fail();
    expect(await retryAfter()).toBe(3_000);
    clock.advance(3_000);
    await succeed();
    expect(breaker.snapshot()).toMatchObject({ state: 'closed', consecutiveOpens: 0 });
    await fail();
    expect(await retryAfter()).toBe(1_000);
  });

  it('reopens when the probes are too slow even though they succeed', async () => {
    const { clock, breaker, fail, take } = setup({
      window: { kind: 'consecutive', size: 1 },
      slowCallDurationMs: 50,
      slowCallRateThreshold: 1,
    });
    await fail();
    clock.advance(1_000);
    expect(await take(80)).toBe('ok');
    expect(breaker.state).toBe('open');
  });

  it('ignores calls admitted while closed that end during half-open', async () => {
    const { clock, breaker, fail } = setup({ window: { kind: 'consecutive', size: 2 } });
    let finishOld!: (e: Error) => void;
    const old = breaker
      .execute(() => new Promise((_, reject) => (finishOld = reject)))
      .catch((e: unknown) => e);
    await fail();
    await fail();
    clock.advance(1_000);
    expect(breaker.state).toBe('half-open');
    finishOld(new Error('late'));
    await old;
    expect(breaker.state).toBe('half-open');
  });
});

describe('circuitBreaker: what counts', () => {
  it('never counts a rejection from an inner bulkhead, closed or half-open', async () => {
    const { clock, breaker, fail, succeed } = setup({ window: { kind: 'consecutive', size: 2 } });
    const full = () => new BulkheadRejectedError(4, 0, 'full');
    await fail();
    await fail(full());
    await fail(full());
    expect(breaker.snapshot()).toMatchObject({ state: 'closed', failures: 1 });
    await fail();
    expect(breaker.state).toBe('open');
    clock.advance(1_000);
    // The refused probe frees its slot without deciding anything; the next call probes.
    expect(await fail(full())).toBeInstanceOf(BulkheadRejectedError);
    expect(breaker.state).toBe('half-open');
    await succeed();
    expect(breaker.state).toBe('closed');
  });

  it('does not count the caller giving up', async () => {
    const { breaker, fail } = setup({ window: { kind: 'consecutive', size: 1 } });
    await fail(new AbortedError('client went away'));
    expect(breaker.state).toBe('closed');
  });

  it('counts an error the isFailure predicate rejects as a success of the dependency', async () => {
    const { breaker, fail } = setup({
      window: { kind: 'consecutive', size: 2 },
      isFailure: (err) => !(err instanceof HttpStatusError && err.status < 500),
    });
    await fail(new HttpStatusError(503));
    await fail(new HttpStatusError(422));
    await fail(new HttpStatusError(503));
    expect(breaker.state).toBe('closed');
    await fail(new HttpStatusError(500));
    expect(breaker.state).toBe('open');
  });

  it('counts a returned value the isFailureResult predicate flags, and still returns it', async () => {
    const { breaker } = setup({
      window: { kind: 'consecutive', size: 2 },
      isFailureResult: (r) => (r as { status: number }).status >= 500,
    });
    await expect(breaker.execute(() => ({ status: 503 }))).resolves.toEqual({ status: 503 });
    await breaker.execute(() => ({ status: 200 }));
    await breaker.execute(() => ({ status: 503 }));
    expect(breaker.state).toBe('closed');
    await breaker.execute(() => ({ status: 502 }));
    expect(breaker.state).toBe('open');
  });
});

describe('circuitBreaker: timed-out work', () => {
  function withTimeout(options: CircuitBreakerOptions = {}) {
    const clock = new FakeClock();
    const timers = new TimerWheel({ clock, resolutionMs: 1 });
    const breaker = circuitBreaker({
      clock,
      openMs: 1_000,
      window: { kind: 'consecutive', size: 1 },
      ...options,
    });
    const guarded = pipeline(breaker, timeout({ ms: 100, timers }));
    return { clock, breaker, guarded };
  }

  it('judges a timed-out probe at once but keeps its slot until the work really ends', async () => {
    const { clock, breaker, guarded } = withTimeout();
    await guarded.execute(() => Promise.reject(new Error('down'))).catch(() => {});
    await clock.advanceAsync(1_000);
    let finish!: () => void;
    let started = 0;
    const probe = guarded
      .execute(
        () =>
          new Promise<void>((resolve) => {
            started++;
            finish = resolve;
          }),
      )
      .catch((e: unknown) => e);
    await clock.advanceAsync(100);
    expect(await probe).toBeInstanceOf(TimeoutError);
    expect(breaker.state).toBe('open');
    expect(breaker.snapshot().probesRunning).toBe(1);

    await clock.advanceAsync(2_000);
    expect(breaker.state).toBe('half-open');
    const refused = await guarded.execute(() => started++).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(BrokenCircuitError);
    expect(started).toBe(1);

    finish();
    await clock.advanceAsync(0);
    expect(breaker.snapshot().probesRunning).toBe(0);
    await expect(guarded.execute(() => 'recovered')).resolves.toBe('recovered');
    expect(breaker.state).toBe('closed');
  });

  it('counts a timeout in the closed state as a failure right away', async () => {
    const { clock, breaker, guarded } = withTimeout();
    const call = guarded.execute(() => new Promise(() => {})).catch((e: unknown) => e);
    await clock.advanceAsync(100);
    expect(await call).toBeInstanceOf(TimeoutError);
    expect(breaker.state).toBe('open');
  });
});

describe('circuitBreaker: manual control', () => {
  it('isolates until every handle is disposed, then closes with an empty window', async () => {
    const { breaker, fail, succeed, changes, calls } = setup({ window: { kind: 'count', size: 10 } });
    await fail();
    const first = breaker.isolate();
    const second = breaker.isolate();
    expect(breaker.state).toBe('isolated');
    const refused = await fail();
    expect(refused).toBeInstanceOf(IsolatedCircuitError);
    expect((refused as IsolatedCircuitError).code).toBe('KEEL_BREAKER_ISOLATED');
    expect(calls()).toBe(1);
    first.dispose();
    first.dispose();
    expect(breaker.state).toBe('isolated');
    second.dispose();
    expect(breaker.snapshot()).toMatchObject({ state: 'closed', calls: 0 });
    await succeed();
    expect(changes).toEqual(['closed→isolated', 'isolated→closed']);
  });

  it('reset closes from any state and makes earlier isolation handles inert', async () => {
    const { breaker, fail } = setup({ window: { kind: 'consecutive', size: 1 } });
    await fail();
    expect(breaker.state).toBe('open');
    breaker.reset();
    expect(breaker.snapshot()).toMatchObject({ state: 'closed', failures: 0 });
    const stale = breaker.isolate();
    breaker.reset();
    const current = breaker.isolate();
    stale.dispose();
    expect(breaker.state).toBe('isolated');
    current.dispose();
    expect(breaker.state).toBe('closed');
  });
});

describe('circuitBreaker: shadow mode', () => {
  it('never rejects, but reports state changes and the calls it would have rejected', async () => {
    const { clock, breaker, fail, succeed, changes, calls } = setup({
      window: { kind: 'consecutive', size: 2 },
      mode: 'shadow',
    });
    const events: PolicyEvent[] = [];
    breaker.onEvent((e) => events.push(e));
    await fail();
    await fail();
    expect(breaker.state).toBe('open');
    await expect(succeed()).resolves.toBe('ok');
    expect(await fail()).toMatchObject({ message: 'boom' });
    expect(calls()).toBe(4);
    expect(breaker.snapshot()).toMatchObject({ mode: 'shadow', shadowRejections: 2 });
    expect(events.some((e) => e.type === 'rejection')).toBe(false);
    clock.advance(1_000);
    await succeed();
    expect(changes).toEqual(['closed→open', 'open→half-open', 'half-open→closed']);
  });
});

describe('circuitBreaker: events', () => {
  it('emits success and failure with durationMs, rejections and state changes', async () => {
    const { breaker, take, fail } = setup({ name: 'provider-a', window: { kind: 'consecutive', size: 1 } });
    const events: PolicyEvent[] = [];
    breaker.onEvent((e) => events.push(e));
    await take(30);
    await take(12, 'fail');
    await fail();
    expect(events).toEqual([
      { policy: 'breaker', name: 'provider-a', type: 'success', durationMs: 30 },
      expect.objectContaining({ type: 'failure', durationMs: 12 }),
      { policy: 'breaker', name: 'provider-a', type: 'state-change', from: 'closed', to: 'open' },
      expect.objectContaining({ type: 'rejection', error: expect.any(BrokenCircuitError) }),
    ]);
  });

  it('stops calling a state listener once it is disposed', async () => {
    const { breaker, fail } = setup({ window: { kind: 'consecutive', size: 1 } });
    const seen: string[] = [];
    const subscription = breaker.onStateChange(({ to }) => seen.push(to));
    subscription.dispose();
    await fail();
    expect(seen).toEqual([]);
  });
});

describe('circuitBreaker: toJSON and initialState', () => {
  it('carries an open breaker with its remaining open time and window to another clock', async () => {
    const { clock, breaker, fail, succeed } = setup({
      window: { kind: 'count', size: 5 },
      minimumCalls: 4,
      openBackoff: { maxMs: 10_000 },
    });
    await succeed();
    await tripConsecutive(fail, 3);
    clock.advance(1_000);
    await fail();
    clock.advance(300);
    const saved = JSON.parse(JSON.stringify(breaker));
    expect(saved).toEqual({
      version: 1,
      state: 'open',
      openedAgoMs: 300,
      retryAfterMs: 1_700,
      consecutiveOpens: 2,
      window: { kind: 'count', outcomes: [0, 1, 1, 1] },
    });

    const later = new FakeClock(987_654);
    const restored = setup(
      { window: { kind: 'count', size: 5 }, minimumCalls: 4, initialState: saved },
      later,
    );
    expect(restored.breaker.snapshot()).toMatchObject({
      state: 'open',
      calls: 4,
      failures: 3,
      retryAfterMs: 1_700,
    });
    expect(await restored.fail()).toMatchObject({ retryAt: 987_654 + 1_700 });
    later.advance(1_700);
    await restored.succeed();
    expect(restored.breaker.state).toBe('closed');
    expect(restored.changes).toEqual(['open→half-open', 'half-open→closed']);
  });

  it('saves a half-open breaker as open with nothing left to wait, and an isolated one as isolated', async () => {
    const { clock, breaker, fail } = setup({ window: { kind: 'consecutive', size: 1 } });
    await fail();
    clock.advance(1_000);
    expect(breaker.state).toBe('half-open');
    const halfOpen = breaker.toJSON();
    expect(halfOpen).toMatchObject({ state: 'open', retryAfterMs: 0 });
    const restored = setup({ window: { kind: 'consecutive', size: 1 }, initialState: halfOpen });
    expect(restored.breaker.state).toBe('half-open');

    breaker.isolate();
    const isolated = setup({ window: { kind: 'consecutive', size: 1 }, initialState: breaker.toJSON() });
    expect(await isolated.fail()).toBeInstanceOf(IsolatedCircuitError);
    isolated.breaker.reset();
    expect(isolated.breaker.state).toBe('closed');
  });

  it('round-trips a time window by bucket age', async () => {
    const options: CircuitBreakerOptions = { window: { kind: 'time', seconds: 5 }, minimumCalls: 100 };
    const { clock, breaker, fail, succeed } = setup(options);
    await fail();
    clock.advance(2_000);
    await succeed();
    const later = new FakeClock(40_500);
    const restored = setup({ ...options, initialState: breaker.toJSON() }, later);
    expect(restored.breaker.snapshot()).toMatchObject({ calls: 2, failures: 1 });
    later.advance(3_500);
    expect(restored.breaker.snapshot()).toMatchObject({ calls: 1, failures: 0 });
  });

  it.each([
    ['not an object', 'open'],
    ['an unknown version', { version: 2, state: 'closed' }],
    [
      'an unknown state',
      { version: 1, state: 'ajar', openedAgoMs: 0, retryAfterMs: 0, consecutiveOpens: 0, window: {} },
    ],
    [
      'a negative retryAfterMs',
      {
        version: 1,
        state: 'open',
        openedAgoMs: 0,
        retryAfterMs: -5,
        consecutiveOpens: 0,
        window: { kind: 'count', outcomes: [] },
      },
    ],
    [
      'bad outcomes',
      {
        version: 1,
        state: 'closed',
        openedAgoMs: 0,
        retryAfterMs: 0,
        consecutiveOpens: 0,
        window: { kind: 'count', outcomes: [7] },
      },
    ],
    [
      'a window of another kind',
      {
        version: 1,
        state: 'closed',
        openedAgoMs: 0,
        retryAfterMs: 0,
        consecutiveOpens: 0,
        window: { kind: 'consecutive', failures: 1, slowCalls: 0 },
      },
    ],
    [
      'a time bucket with more failures than calls',
      {
        version: 1,
        state: 'closed',
        openedAgoMs: 0,
        retryAfterMs: 0,
        consecutiveOpens: 0,
        window: {
          kind: 'time',
          bucketMs: 1000,
          buckets: [{ bucketsAgo: 0, calls: 1, failures: 2, slowCalls: 0 }],
        },
      },
    ],
  ])('refuses an initialState with %s', (_, initialState) => {
    const build = () => circuitBreaker({ window: { kind: 'count', size: 5 }, initialState });
    expect(build).toThrow(InvalidOptionError);
    expect(build).toThrow(/^initialState: /);
  });
});

class CountingClock extends FakeClock {
  reads = 0;
  override now(): number {
    this.reads++;
    return super.now();
  }
}

describe('circuitBreaker: cost per call', () => {
  async function readsPerCall(
    options: CircuitBreakerOptions,
    call: (b: CircuitBreakerPolicy) => Promise<unknown>,
  ) {
    const clock = new CountingClock();
    const breaker = circuitBreaker({ clock, minimumCalls: 100, ...options });
    await call(breaker);
    clock.reads = 0;
    await call(breaker);
    return clock.reads;
  }
  const ok = (b: CircuitBreakerPolicy) => b.execute(() => 1);
  const boom = (b: CircuitBreakerPolicy) => b.execute(() => Promise.reject(new Error('x'))).catch(() => {});

  it('does not read the clock for a closed call without slow-call detection or a time window', async () => {
    expect(await readsPerCall({}, ok)).toBe(0);
    expect(await readsPerCall({}, boom)).toBe(0);
    expect(await readsPerCall({ window: { kind: 'consecutive', size: 5 } }, ok)).toBe(0);
  });

  it('reads the clock once with a time window and at most twice with slow-call detection', async () => {
    expect(await readsPerCall({ window: { kind: 'time', seconds: 5 } }, ok)).toBe(1);
    expect(await readsPerCall({ slowCallDurationMs: 100 }, ok)).toBe(2);
    expect(await readsPerCall({ slowCallDurationMs: 100, window: { kind: 'time', seconds: 5 } }, boom)).toBe(
      2,
    );
  });

  it('reads the clock at most twice for a probe and once for a rejection', async () => {
    const clock = new CountingClock();
    const breaker = circuitBreaker({ clock, openMs: 10, window: { kind: 'consecutive', size: 1 } });
    await breaker.execute(() => Promise.reject(new Error('x'))).catch(() => {});
    clock.reads = 0;
    await breaker.execute(() => 1).catch(() => {});
    expect(clock.reads).toBe(1);
    clock.advance(10);
    clock.reads = 0;
    await breaker.execute(() => Promise.reject(new Error('still down'))).catch(() => {});
    expect(clock.reads).toBe(2);
  });
});

describe('circuitBreaker: configuration', () => {
  it.each([
    ['failureRateThreshold', { failureRateThreshold: 1.5 }],
    ['failureRateThreshold', { failureRateThreshold: -0.1 }],
    ['slowCallRateThreshold', { slowCallRateThreshold: 2 }],
    ['slowCallDurationMs', { slowCallDurationMs: -1 }],
    ['minimumCalls', { minimumCalls: 0 }],
    ['openMs', { openMs: -1 }],
    ['halfOpenProbes', { halfOpenProbes: 0 }],
    ['window.size', { window: { kind: 'count', size: 0 } }],
    ['window.size', { window: { kind: 'consecutive', size: 0 } }],
    ['window.seconds', { window: { kind: 'time', seconds: 0 } }],
    ['mode', { mode: 'dry-run' }],
    ['openBackoff.maxMs', { openMs: 5_000, openBackoff: { maxMs: 1_000 } }],
    ['openBackoff.factor', { openBackoff: { factor: 0.5, maxMs: 60_000 } }],
    ['isFailure', { isFailure: 'yes' }],
    ['isFailureResult', { isFailureResult: 1 }],
  ])('rejects a bad %s, naming it', (option, options) => {
    const build = () => circuitBreaker(options as CircuitBreakerOptions);
    expect(build).toThrow(InvalidOptionError);
    expect(build).toThrow(new RegExp(`^${option.replace('.', '\\.')}: `));
  });

  it('works with no options at all', async () => {
    const breaker = circuitBreaker();
    await expect(breaker.execute(() => 1)).resolves.toBe(1);
    expect(breaker.snapshot()).toMatchObject({ state: 'closed', mode: 'enforce', calls: 1 });
  });
});

type Step =
  | { kind: 'call'; outcome: 'ok' | 'fail' | 'reject'; durationMs: number }
  | { kind: 'advance'; ms: number };

const stepArb: fc.Arbitrary<Step> = fc.oneof(
  {
    weight: 3,
    arbitrary: fc.record({
      kind: fc.constant('call' as const),
      outcome: fc.constantFrom('ok' as const, 'fail' as const, 'reject' as const),
      durationMs: fc.integer({ min: 0, max: 1_000 }),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({ kind: fc.constant('advance' as const), ms: fc.integer({ min: 0, max: 700 }) }),
  },
);

const windowArb = fc.oneof(
  fc.record({ kind: fc.constant('consecutive' as const), size: fc.integer({ min: 1, max: 4 }) }),
  fc.record({ kind: fc.constant('count' as const), size: fc.integer({ min: 1, max: 8 }) }),
  fc.record({ kind: fc.constant('time' as const), seconds: fc.integer({ min: 1, max: 3 }) }),
);

/** Runs random concurrent calls through breaker → timeout and watches what reaches the function. */
async function simulate(options: CircuitBreakerOptions, steps: Step[]) {
  const clock = new FakeClock();
  const timers = new TimerWheel({ clock, resolutionMs: 1 });
  const breaker: CircuitBreakerPolicy = circuitBreaker({ clock, ...options });
  const guarded = pipeline(breaker, timeout({ ms: 150, timers }));
  let current = 'closed';
  breaker.onStateChange(({ to }) => (current = to));
  let probesRunning = 0;
  let maxProbes = 0;
  let admittedWhileOpen = 0;
  let reached = 0;
  let made = 0;
  const call = (outcome: 'ok' | 'fail' | 'reject', durationMs: number) => {
    made++;
    return guarded
      .execute(() => {
        reached++;
        if (current === 'open' || current === 'isolated') admittedWhileOpen++;
        const probe = current === 'half-open';
        if (probe) maxProbes = Math.max(maxProbes, ++probesRunning);
        return new Promise((resolve, reject) => {
          clock.setTimer(() => {
            if (probe) probesRunning--;
            if (outcome === 'ok') resolve('ok');
            else reject(outcome === 'fail' ? new Error('down') : new BulkheadRejectedError(1, 0, 'full'));
          }, durationMs);
        });
      })
      .catch(() => {});
  };
  for (const step of steps) {
    if (step.kind === 'call') void call(step.outcome, step.durationMs);
    else await clock.advanceAsync(step.ms);
  }
  await clock.advanceAsync(5_000);
  return { maxProbes, admittedWhileOpen, reached, made, breaker };
}

describe('circuitBreaker: properties', () => {
  it('never runs more than halfOpenProbes probes at once and never admits a call while open', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 3 }),
        windowArb,
        fc.integer({ min: 50, max: 600 }),
        fc.array(stepArb, { minLength: 1, maxLength: 80 }),
        async (halfOpenProbes, window, openMs, steps) => {
          const run = await simulate(
            {
              halfOpenProbes,
              window,
              openMs,
              minimumCalls: 2,
              slowCallDurationMs: 120,
              slowCallRateThreshold: 0.9,
            },
            steps,
          );
          expect(run.maxProbes).toBeLessThanOrEqual(halfOpenProbes);
          expect(run.admittedWhileOpen).toBe(0);
          expect(run.breaker.snapshot().probesRunning).toBe(0);
        },
      ),
      { numRuns: 150 },
    );
  });

  it('in shadow mode lets every call through whatever happens', async () => {
    await fc.assert(
      fc.asyncProperty(
        windowArb,
        fc.array(stepArb, { minLength: 1, maxLength: 60 }),
        async (window, steps) => {
          const run = await simulate({ window, openMs: 200, minimumCalls: 1, mode: 'shadow' }, steps);
          expect(run.reached).toBe(run.made);
        },
      ),
      { numRuns: 60 },
    );
  });
});
