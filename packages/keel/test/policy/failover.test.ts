import {
  AllTargetsFailedError,
  BasePolicy,
  BrokenCircuitError,
  type Context,
  EventSource,
  type ExecutionContext,
  FakeClock,
  failover,
  HttpStatusError,
  InvalidOptionError,
  type Next,
  type Operation,
  type PolicyEvent,
  TimeoutError,
  TimerWheel,
  timeout,
} from 'keel';
import { describe, expect, expectTypeOf, it } from 'vitest';

/** Stands for a target's circuit breaker: refuses every call while `open`, without calling through. */
class FakeBreaker extends BasePolicy {
  open = false;
  admitted = 0;
  constructor() {
    super(new EventSource('breaker', 'fake-breaker'), undefined);
  }
  run<T>(fn: Operation<T>, context: Context, next: Next): Promise<T> {
    if (this.open) return Promise.reject(new BrokenCircuitError(5_000, 5_000));
    this.admitted++;
    return next.run(fn, context);
  }
}

interface Provider {
  readonly name: string;
  readonly policy?: FakeBreaker;
  readonly charge: (context: ExecutionContext) => Promise<string>;
}

/** Mechanics tests call targets that are safe to repeat on; the default rule has its own tests below. */
function setup(charges: Record<string, (context: ExecutionContext) => Promise<string>>, idempotent = true) {
  const clock = new FakeClock();
  const calls: string[] = [];
  const breakers = new Map<string, FakeBreaker>();
  const targets: Provider[] = Object.entries(charges).map(([name, charge]) => {
    const policy = new FakeBreaker();
    breakers.set(name, policy);
    return {
      name,
      policy,
      charge: (context) => {
        calls.push(name);
        return charge(context);
      },
    };
  });
  const providers = failover({ clock, targets, idempotent });
  const events: PolicyEvent[] = [];
  providers.onEvent((e) => events.push(e));
  const run = (options?: { deadline?: number; signal?: AbortSignal }) =>
    providers.execute((provider, context) => provider.charge(context), options);
  return { clock, providers, calls, breakers, events, run };
}

const unavailable = () => Promise.reject(new HttpStatusError(503, 'provider unavailable'));

describe('failover', () => {
  it('uses the primary alone while it succeeds', async () => {
    const { run, calls, events } = setup({ primary: async () => 'ch_1', secondary: async () => 'ch_2' });
    await expect(run()).resolves.toBe('ch_1');
    expect(calls).toEqual(['primary']);
    expect(events.map((e) => e.type)).toEqual(['success']);
  });

  it('moves to the secondary when the primary fails, with a failover event', async () => {
    const { run, calls, events } = setup({ primary: unavailable, secondary: async () => 'ch_2' });
    await expect(run()).resolves.toBe('ch_2');
    expect(calls).toEqual(['primary', 'secondary']);
    const failovers = events.filter((e) => e.type === 'failover');
    expect(failovers).toHaveLength(1);
    expect(failovers[0]).toMatchObject({ policy: 'failover', from: 'primary', to: 'secondary' });
    expect((failovers[0] as { error: unknown }).error).toBeInstanceOf(HttpStatusError);
  });

  it('skips a target whose breaker is open without calling it', async () => {
    const { run, calls, breakers, events } = setup({
      primary: async () => 'ch_1',
      secondary: async () => 'ch_2',
    });
    (breakers.get('primary') as FakeBreaker).open = true;
    await expect(run()).resolves.toBe('ch_2');
    expect(calls).toEqual(['secondary']);
    expect(breakers.get('primary')?.admitted).toBe(0);
    const failover = events.find((e) => e.type === 'failover');
    expect((failover as { error: unknown }).error).toBeInstanceOf(BrokenCircuitError);
    // Once the primary's breaker closes, traffic returns to it.
    (breakers.get('primary') as FakeBreaker).open = false;
    await expect(run()).resolves.toBe('ch_1');
  });

  it('does not fail over on an error that would fail the same everywhere', async () => {
    const declined = new HttpStatusError(402, 'card declined');
    const { run, calls, events } = setup({
      primary: () => Promise.reject(declined),
      secondary: async () => 'ch_2',
    });
    await expect(run()).rejects.toBe(declined);
    expect(calls).toEqual(['primary']);
    expect(events.map((e) => e.type)).toEqual(['failure']);
  });

  it('fails over on whatever failoverOn accepts', async () => {
    const declined = new HttpStatusError(402, 'card declined');
    const providers = failover({
      failoverOn: (e) => e instanceof HttpStatusError && e.status === 402,
      targets: [{ name: 'a' }, { name: 'b' }],
    });
    const result = providers.execute(async (target) => {
      if (target.name === 'a') throw declined;
      return target.name;
    });
    await expect(result).resolves.toBe('b');
  });

  it('rejects with AllTargetsFailedError holding each error in order when every target fails', async () => {
    const reset = Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' });
    const { run, calls } = setup({
      primary: unavailable,
      secondary: () => Promise.reject(reset),
      tertiary: () => Promise.reject(new TimeoutError(2_000)),
    });
    const error = await run().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(AllTargetsFailedError);
    const { errors, code } = error as AllTargetsFailedError;
    expect(code).toBe('KEEL_ALL_TARGETS_FAILED');
    expect(errors).toHaveLength(3);
    expect(errors[0]).toBeInstanceOf(HttpStatusError);
    expect(errors[1]).toBe(reset);
    expect(errors[2]).toBeInstanceOf(TimeoutError);
    expect(calls).toEqual(['primary', 'secondary', 'tertiary']);
  });

  it('tries no further target once the deadline has passed', async () => {
    let clock!: FakeClock;
    const slowFailure = async () => {
      clock.advance(300);
      throw new HttpStatusError(504, 'gateway timeout');
    };
    const env = setup({ primary: slowFailure, secondary: async () => 'ch_2' });
    clock = env.clock;
    const error = await env.run({ deadline: 200 }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(HttpStatusError);
    expect(env.calls).toEqual(['primary']);
    // With time left, the same failure moves on.
    await expect(env.run({ deadline: 10_000 })).resolves.toBe('ch_2');
  });

  it('tries no further target once the caller has aborted', async () => {
    const controller = new AbortController();
    const { run, calls } = setup({
      primary: () => {
        controller.abort();
        return unavailable();
      },
      secondary: async () => 'ch_2',
    });
    await expect(run({ signal: controller.signal })).rejects.toBeInstanceOf(HttpStatusError);
    expect(calls).toEqual(['primary']);
  });

  it('fails over from a target whose own timeout expired', async () => {
    const clock = new FakeClock();
    const timers = new TimerWheel({ clock, resolutionMs: 1 });
    const providers = failover({
      timers,
      idempotent: true,
      targets: [
        { name: 'slow', policy: timeout({ ms: 100, timers }) },
        { name: 'fast', policy: timeout({ ms: 100, timers }) },
      ],
    });
    const signals: AbortSignal[] = [];
    const result = providers.execute((target, { signal }) => {
      signals.push(signal);
      return target.name === 'slow' ? new Promise<string>(() => {}) : Promise.resolve('from fast');
    });
    await clock.advanceAsync(100);
    await expect(result).resolves.toBe('from fast');
    expect(signals[0]?.aborted).toBe(true);
  });

  it('tells the operation its target, typed as given', async () => {
    const providers = failover({ targets: [{ name: 'eu', url: 'https://eu.example' }] });
    const url = await providers.execute((target) => {
      expectTypeOf(target.url).toEqualTypeOf<string>();
      return target.url;
    });
    expect(url).toBe('https://eu.example');
  });

  it('calls a target without a policy bare, turning a synchronous throw into a rejection', async () => {
    const providers = failover({ targets: [{ name: 'a' }, { name: 'b' }] });
    const result = providers.execute((target) => {
      if (target.name === 'a') throw new HttpStatusError(503);
      return target.name;
    });
    await expect(result).resolves.toBe('b');
  });

  it('by default moves on only when the call certainly did not take effect', async () => {
    const reset = Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' });
    const refused = Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' });
    const viaFetch = new TypeError('fetch failed', { cause: refused });
    const outcomes: Array<[string, unknown, boolean]> = [
      ['a timeout (the charge may have gone through)', new TimeoutError(2_000), false],
      ['a reset connection', reset, false],
      ['a 500', new HttpStatusError(500), false],
      ['a 502', new HttpStatusError(502), false],
      ['an open breaker', new BrokenCircuitError(1_000, 1_000), true],
      ['a refused connection', refused, true],
      ['a refused connection wrapped by fetch', viaFetch, true],
      ['a 503', new HttpStatusError(503), true],
      ['a 429', new HttpStatusError(429), true],
    ];
    for (const [what, error, movesOn] of outcomes) {
      const { run, calls } = setup(
        { primary: () => Promise.reject(error), secondary: async () => 'ch_2' },
        false,
      );
      const result = await run().catch((e: unknown) => e);
      expect(calls, what).toEqual(movesOn ? ['primary', 'secondary'] : ['primary']);
      expect(result, what).toBe(movesOn ? 'ch_2' : error);
    }
  });

  it('refuses an idempotent flag that is not a boolean', () => {
    expect(() => failover({ targets: [{ name: 'a' }], idempotent: 'yes' as unknown as boolean })).toThrow(
      /^idempotent: /,
    );
  });

  it('refuses bad configuration, naming the option', () => {
    expect(() => failover({ targets: [] })).toThrow(InvalidOptionError);
    expect(() => failover({ targets: [] })).toThrow(/targets: must be a non-empty array/);
    expect(() => failover({ targets: [{ name: '' }] })).toThrow(
      /targets\[0\]\.name: must be a non-empty string/,
    );
    expect(() => failover({ targets: [{ name: 'a' }, { name: 'a' }] })).toThrow(
      /targets\[1\]\.name: must be unique/,
    );
    expect(() => failover({ targets: [{ name: 'a' }], failoverOn: 1 as unknown as () => boolean })).toThrow(
      /failoverOn: must be a function/,
    );
  });
});
