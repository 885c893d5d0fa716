import {
  BrokenCircuitError,
  type ExecutionContext,
  FakeClock,
  type FallbackAction,
  fallback,
  HttpStatusError,
  InvalidOptionError,
  isTransient,
  type PolicyEvent,
  pipeline,
  TimeoutError,
  TimerWheel,
  timeout,
} from 'keel';
import { describe, expect, expectTypeOf, it } from 'vitest';

describe('fallback', () => {
  it('returns the result untouched when the call succeeds', async () => {
    const policy = fallback({ value: 'cached' });
    const events: PolicyEvent[] = [];
    policy.onEvent((e) => events.push(e));
    await expect(policy.execute(() => 'fresh')).resolves.toBe('fresh');
    expect(events).toEqual([]);
  });

  it('answers with the value when the call fails, and reports the error', async () => {
    const policy = fallback({ value: [] as string[] }, { name: 'recommendations' });
    const events: PolicyEvent[] = [];
    policy.onEvent((e) => events.push(e));
    const error = new Error('recommendations service down');
    const result = await policy.execute(async (): Promise<string[]> => {
      throw error;
    });
    expect(result).toEqual([]);
    expect(events).toEqual([{ policy: 'fallback', name: 'recommendations', type: 'fallback', error }]);
  });

  it('answers with what fn makes of the error and the context', async () => {
    const seen: { error: unknown; context: ExecutionContext }[] = [];
    const policy = fallback({
      fn: async (error: unknown, context: ExecutionContext) => {
        seen.push({ error, context });
        return `stale (${(error as Error).message})`;
      },
    });
    const result = await policy.execute(
      () => {
        throw new Error('timeout');
      },
      { attempt: 3 },
    );
    expect(result).toBe('stale (timeout)');
    expect(seen).toHaveLength(1);
    expect(seen[0]?.context.attempt).toBe(3);
  });

  it('rethrows errors that handles does not accept', async () => {
    const policy = fallback({ value: 0 }, { handles: isTransient });
    const declined = new HttpStatusError(402, 'card declined');
    await expect(policy.execute(() => Promise.reject(declined))).rejects.toBe(declined);
    await expect(policy.execute(() => Promise.reject(new BrokenCircuitError(10, 10)))).resolves.toBe(0);
  });

  it('rejects with the fallback function’s own error when it fails too', async () => {
    const policy = fallback({
      fn: () => {
        throw new Error('cache empty');
      },
    });
    await expect(policy.execute(() => Promise.reject(new Error('down')))).rejects.toThrow('cache empty');
  });

  it('widens the result type to include the fallback', () => {
    const result = fallback({ value: null }).execute(() => 1);
    expectTypeOf(result).toEqualTypeOf<Promise<number | null>>();
    return result;
  });

  it('catches a timeout from inner layers of a pipeline', async () => {
    const clock = new FakeClock();
    const timers = new TimerWheel({ clock, resolutionMs: 1 });
    const guarded = pipeline(fallback({ value: null }), timeout({ ms: 100, timers }));
    const seen: unknown[] = [];
    guarded.onEvent((e) => {
      if (e.type === 'fallback') seen.push(e.error);
    });
    const result = guarded.execute(() => new Promise<number>(() => {}));
    await clock.advanceAsync(100);
    await expect(result).resolves.toBeNull();
    expect(seen[0]).toBeInstanceOf(TimeoutError);
  });

  it('refuses bad configuration, naming the option', () => {
    expect(() => fallback({} as FallbackAction<number>)).toThrow(InvalidOptionError);
    expect(() => fallback({} as FallbackAction<number>)).toThrow(
      /action: must be either \{ value \} or \{ fn \}/,
    );
    expect(() => fallback({ value: 1, fn: () => 2 } as FallbackAction<number>)).toThrow(/action/);
    expect(() => fallback({ fn: 42 } as unknown as FallbackAction<number>)).toThrow(/fn: must be a function/);
    expect(() => fallback({ value: 1 }, { handles: 'all' as unknown as () => boolean })).toThrow(
      /handles: must be a function/,
    );
  });
});
