import {
  currentDeadline,
  DeadlineExceededError,
  deadline,
  FakeClock,
  isRejection,
  type PolicyEvent,
  pipeline,
  remainingMs,
  runWithDeadline,
  TimeoutError,
  TimerWheel,
  timeout,
} from 'keel';
import { describe, expect, it } from 'vitest';

function setup(ms: number, extra: Partial<Parameters<typeof timeout>[0] & object> = {}) {
  const clock = new FakeClock();
  const timers = new TimerWheel({ clock, resolutionMs: 1 });
  const policy = timeout({ ms, timers, ...extra });
  const events: PolicyEvent[] = [];
  policy.onEvent((e) => events.push(e));
  return { clock, timers, policy, events };
}

describe('timeout', () => {
  it('resolves with the value when the function finishes in time and leaves nothing scheduled', async () => {
    const { policy, timers, events } = setup(100);
    await expect(policy.execute(async () => 42)).resolves.toBe(42);
    expect(timers.size).toBe(0);
    expect(events.map((e) => e.type)).toEqual(['success']);
  });

  it('rejects at the deadline even when the function ignores its signal', async () => {
    const { clock, policy, events } = setup(100);
    let finish!: () => void;
    const result = policy.execute(() => new Promise<void>((r) => (finish = r)));
    const outcome = result.then(
      () => 'resolved',
      (e: unknown) => e,
    );
    await clock.advanceAsync(99);
    await clock.advanceAsync(1);
    const error = await outcome;
    expect(error).toBeInstanceOf(TimeoutError);
    expect((error as TimeoutError).code).toBe('KEEL_TIMEOUT');
    expect(events.map((e) => e.type)).toEqual(['timeout']);
    // The abandoned work is still observable until it really ends.
    let ended = false;
    void (error as TimeoutError).work?.then(() => (ended = true));
    await clock.advanceAsync(0);
    expect(ended).toBe(false);
    finish();
    await clock.advanceAsync(0);
    expect(ended).toBe(true);
  });

  it('aborts the signal the function received at the deadline', async () => {
    const { clock, policy } = setup(50);
    let seen: AbortSignal | undefined;
    const result = policy.execute(
      ({ signal }) =>
        new Promise((_, reject) => {
          seen = signal;
          signal.addEventListener('abort', () => reject(signal.reason));
        }),
    );
    const caught = result.catch((e: unknown) => e);
    await clock.advanceAsync(50);
    expect(seen?.aborted).toBe(true);
    expect(await caught).toBeInstanceOf(TimeoutError);
  });

  it('lets nested calls see the remaining budget through async context with deadline()', async () => {
    const clock = new FakeClock();
    const timers = new TimerWheel({ clock, resolutionMs: 1 });
    const budget = deadline({ ms: 1_000, timers });
    const seen = await budget.execute(async () => {
      await clock.advanceAsync(300);
      return remainingMs(clock);
    });
    expect(seen).toBe(700);
    expect(currentDeadline()).toBe(Number.POSITIVE_INFINITY);
  });

  it('hands a timeout its deadline through the context and leaves async context to the caller', async () => {
    const { clock, policy } = setup(1_000);
    const seen = await runWithDeadline(clock.now() + 5_000, () =>
      policy.execute(({ deadline: own }) => ({ own, ambient: remainingMs(clock) })),
    );
    expect(seen).toEqual({ own: 1_000, ambient: 5_000 });
  });

  it('lets a nested policy inherit a deadline() budget without being passed the context', async () => {
    const clock = new FakeClock();
    const timers = new TimerWheel({ clock, resolutionMs: 1 });
    const outer = deadline({ ms: 300, timers });
    const inner = timeout({ ms: 10_000, timers });
    const seen = await outer.execute(() => inner.execute(({ deadline: d }) => d - clock.now()));
    expect(seen).toBe(300);
  });

  it('narrows to the surrounding deadline and never widens it', async () => {
    const { clock, policy } = setup(1_000);
    const inner = await runWithDeadline(clock.now() + 200, () => policy.execute(({ deadline }) => deadline));
    expect(inner).toBe(200);
  });

  it('does not start an attempt that cannot finish before the deadline', async () => {
    const { clock, policy, events } = setup(1_000, { minRemainingMs: 50 });
    let started = false;
    const result = runWithDeadline(clock.now() + 20, () =>
      policy.execute(() => {
        started = true;
      }),
    );
    await expect(result).rejects.toBeInstanceOf(DeadlineExceededError);
    await result.catch((e: unknown) => expect(isRejection(e)).toBe(true));
    expect(started).toBe(false);
    expect(events.map((e) => e.type)).toEqual(['rejection']);
  });

  it('gives each attempt in a nested pipeline the smaller of the two budgets', async () => {
    const clock = new FakeClock();
    const timers = new TimerWheel({ clock, resolutionMs: 1 });
    const outer = timeout({ ms: 150, timers });
    const inner = timeout({ ms: 500, timers });
    const result = pipeline(outer, inner).execute(({ deadline }) => deadline - clock.now());
    await expect(result).resolves.toBe(150);
  });

  it('turns a synchronous throw into a rejection', async () => {
    const { policy } = setup(100);
    await expect(
      policy.execute(() => {
        throw new Error('boom');
      }),
    ).rejects.toThrow('boom');
  });

  it('refuses a negative budget at construction', () => {
    expect(() => timeout({ ms: -1 })).toThrow(/ms: must be a number ≥ 0/);
    expect(() => timeout({ ms: 10, minRemainingMs: Number.NaN })).toThrow(/minRemainingMs/);
  });
});
