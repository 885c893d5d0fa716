import fc from 'fast-check';
import {
  currentDeadline,
  type ExecutionContext,
  FakeClock,
  HedgeLostError,
  type HedgeOptions,
  hedge,
  InvalidOptionError,
  LatencyWindow,
  Pipeline,
  type PolicyEvent,
  runWithDeadline,
  TimerWheel,
  timeout,
} from 'keel';
import { describe, expect, it } from 'vitest';

interface Attempt<T> {
  readonly target: unknown;
  readonly context: ExecutionContext;
  readonly startedAt: number;
  resolve(value: T): void;
  reject(error: unknown): void;
}

function setup<Target = number>(options: Omit<HedgeOptions<Target>, 'idempotent'>) {
  const clock = new FakeClock();
  const timers = new TimerWheel({ clock, resolutionMs: 1 });
  const policy = hedge<Target>({ idempotent: true, timers, ...options });
  const events: PolicyEvent[] = [];
  policy.onEvent((e) => events.push(e));
  const attempts: Attempt<string>[] = [];
  /** An operation whose attempts settle only when the test says so. */
  const operation = (target: unknown, context: ExecutionContext) =>
    new Promise<string>((resolve, reject) => {
      attempts.push({ target, context, startedAt: clock.now(), resolve, reject });
    });
  return { clock, timers, policy, events, attempts, operation };
}

function outcome(promise: Promise<unknown>): Promise<{ value?: unknown; error?: unknown }> {
  return promise.then(
    (value) => ({ value }),
    (error: unknown) => ({ error }),
  );
}

/** Runs one call per latency, each attempt answering that many milliseconds after it starts. */
async function warmUp(
  clock: FakeClock,
  policy: ReturnType<typeof hedge>,
  latencies: readonly number[],
): Promise<void> {
  for (const ms of latencies) {
    const call = policy.execute(() => new Promise((resolve) => clock.setTimer(() => resolve(ms), ms)));
    await clock.advanceAsync(ms);
    await expect(call).resolves.toBe(ms);
  }
}

describe('hedge', () => {
  it('makes no second attempt when the first answers before the delay', async () => {
    const { clock, timers, policy, events, attempts, operation } = setup({ delay: 50 });
    const result = policy.executeOn(operation);
    await clock.advanceAsync(10);
    attempts[0]?.resolve('fast');
    await expect(result).resolves.toBe('fast');
    await clock.advanceAsync(200);
    expect(attempts).toHaveLength(1);
    expect(timers.size).toBe(0);
    expect(events.map((e) => e.type)).toEqual(['success']);
  });

  it('starts a hedge once the delay has passed', async () => {
    const { clock, policy, events, attempts, operation } = setup({ delay: 50 });
    void outcome(policy.executeOn(operation));
    await clock.advanceAsync(49);
    expect(attempts).toHaveLength(1);
    await clock.advanceAsync(1);
    expect(attempts).toHaveLength(2);
    expect(attempts[1]?.startedAt).toBe(50);
    expect(events).toEqual([{ policy: 'hedge', name: 'hedge', type: 'hedge', attempt: 2, delayMs: 50 }]);
    await clock.advanceAsync(500);
    expect(attempts).toHaveLength(2);
  });

  it('takes the first success and aborts the losing attempt through its own signal', async () => {
    const { clock, policy, events, attempts, operation } = setup({ delay: 50 });
    const result = outcome(policy.executeOn(operation));
    await clock.advanceAsync(60);
    const [first, second] = attempts;
    expect(first?.context.signal.aborted).toBe(false);
    second?.resolve('from the hedge');
    expect(await result).toEqual({ value: 'from the hedge' });
    expect(first?.context.signal.aborted).toBe(true);
    expect(first?.context.signal.reason).toBeInstanceOf(HedgeLostError);
    expect(second?.context.signal.aborted).toBe(false);
    // The loser answering late changes nothing.
    first?.resolve('too late');
    await clock.advanceAsync(0);
    expect(events.map((e) => e.type)).toEqual(['hedge', 'success']);
  });

  it('aborts the hedge when the first attempt wins after all', async () => {
    const { clock, policy, attempts, operation } = setup({ delay: 50 });
    const result = outcome(policy.executeOn(operation));
    await clock.advanceAsync(55);
    attempts[0]?.resolve('from the first');
    expect(await result).toEqual({ value: 'from the first' });
    expect(attempts[1]?.context.signal.aborted).toBe(true);
    expect(attempts[0]?.context.signal.aborted).toBe(false);
  });

  it('rejects with the first error when every attempt fails', async () => {
    const { clock, policy, events, attempts, operation } = setup({ delay: 50 });
    const result = outcome(policy.executeOn(operation));
    await clock.advanceAsync(60);
    const hedgeError = new Error('replica b: 503');
    attempts[1]?.reject(hedgeError);
    await clock.advanceAsync(10);
    // One attempt is still running, so the call waits for it.
    let settled = false;
    void result.then(() => (settled = true));
    await clock.advanceAsync(0);
    expect(settled).toBe(false);
    attempts[0]?.reject(new Error('replica a: reset'));
    expect(await result).toEqual({ error: hedgeError });
    expect(events.map((e) => e.type)).toEqual(['hedge', 'failure']);
  });

  it('fails at once, without hedging, when the first attempt fails before the delay', async () => {
    const { clock, policy, attempts, operation, timers } = setup({ delay: 50 });
    const result = outcome(policy.executeOn(operation));
    await clock.advanceAsync(5);
    const error = new Error('connection refused');
    attempts[0]?.reject(error);
    expect(await result).toEqual({ error });
    await clock.advanceAsync(100);
    expect(attempts).toHaveLength(1);
    expect(timers.size).toBe(0);
  });

  it('sends each attempt to the next target and hedges up to maxHedges times', async () => {
    const { clock, policy, events, attempts, operation } = setup({
      delay: 20,
      maxHedges: 2,
      targets: ['replica-a', 'replica-b'],
    });
    void outcome(policy.executeOn(operation));
    await clock.advanceAsync(100);
    expect(attempts.map((a) => [a.target, a.startedAt])).toEqual([
      ['replica-a', 0],
      ['replica-b', 20],
      ['replica-a', 40],
    ]);
    expect(events.filter((e) => e.type === 'hedge').map((e) => e.type === 'hedge' && e.attempt)).toEqual([
      2, 3,
    ]);
  });

  it('derives the delay from the observed percentile once it has enough samples', async () => {
    const { clock, policy, attempts, operation } = setup({
      delay: { percentile: 0.9, minMs: 1, maxMs: 100, initialMs: 40, minSamples: 10 },
    });
    expect(policy.delayMs).toBe(40);
    await warmUp(clock, policy, [5, 1, 9, 3, 7, 10, 2, 8, 4]);
    expect(policy.delayMs).toBe(40);
    await warmUp(clock, policy, [6]);
    // Nearest rank: the 9th of the 10 latencies 1..10.
    expect(policy.delayMs).toBe(9);
    void outcome(policy.executeOn(operation));
    await clock.advanceAsync(8);
    expect(attempts).toHaveLength(1);
    await clock.advanceAsync(1);
    expect(attempts).toHaveLength(2);
  });

  it('keeps the learned delay within minMs and maxMs', async () => {
    const slow = setup({
      delay: { percentile: 0.5, minMs: 5, maxMs: 100, initialMs: Infinity, minSamples: 3 },
    });
    await warmUp(slow.clock, slow.policy, [400, 500, 600]);
    expect(slow.policy.delayMs).toBe(100);
    const fast = setup({
      delay: { percentile: 0.5, minMs: 5, maxMs: 100, initialMs: Infinity, minSamples: 3 },
    });
    await warmUp(fast.clock, fast.policy, [1, 1, 2]);
    expect(fast.policy.delayMs).toBe(5);
  });

  it('follows the latencies as the dependency slows down', async () => {
    const { clock, policy } = setup({
      delay: { percentile: 0.5, minMs: 1, maxMs: 1_000, minSamples: 4, windowSize: 4, initialMs: Infinity },
    });
    await warmUp(clock, policy, [10, 10, 10, 10]);
    expect(policy.delayMs).toBe(10);
    await warmUp(
      clock,
      policy,
      Array.from({ length: 16 }, () => 80),
    );
    expect(policy.delayMs).toBe(80);
  });

  it('does not hedge once the deadline has passed or the caller has aborted', async () => {
    const late = setup({ delay: 50 });
    void outcome(late.policy.executeOn(late.operation, { deadline: 30 }));
    await late.clock.advanceAsync(100);
    expect(late.attempts).toHaveLength(1);

    const gone = setup({ delay: 50 });
    const controller = new AbortController();
    void outcome(gone.policy.executeOn(gone.operation, { signal: controller.signal }));
    await gone.clock.advanceAsync(10);
    controller.abort();
    expect(gone.attempts[0]?.context.signal.aborted).toBe(true);
    await gone.clock.advanceAsync(100);
    expect(gone.attempts).toHaveLength(1);
  });

  it("starts hedges in the caller's async context, so they see its deadline", async () => {
    const { clock, policy } = setup({ delay: 10 });
    const seen: number[] = [];
    void outcome(
      runWithDeadline(500, () =>
        policy.execute(() => {
          seen.push(currentDeadline());
          return new Promise<never>(() => {});
        }),
      ),
    );
    await clock.advanceAsync(20);
    expect(seen).toEqual([500, 500]);
  });

  it('cancels the loser through a per-attempt timeout inside a pipeline', async () => {
    const clock = new FakeClock();
    const timers = new TimerWheel({ clock, resolutionMs: 1 });
    const reads = hedge({ idempotent: true, delay: 20, timers, targets: ['a', 'b'] });
    const guarded = new Pipeline([reads, timeout({ ms: 1_000, timers })], { timers });
    const seen: { target: string; signal: AbortSignal; finish: (v: string) => void }[] = [];
    const result = guarded.execute(
      (ctx) =>
        new Promise<string>((finish) => {
          seen.push({ target: reads.targetOf(ctx), signal: ctx.signal, finish });
        }),
    );
    await clock.advanceAsync(25);
    expect(seen.map((s) => s.target)).toEqual(['a', 'b']);
    seen[1]?.finish('b answered');
    await expect(result).resolves.toBe('b answered');
    expect(seen[0]?.signal.aborted).toBe(true);
    expect(seen[0]?.signal.reason).toBeInstanceOf(HedgeLostError);
  });

  it('refuses bad configuration, naming the option', () => {
    expect(() => hedge({ idempotent: false as true })).toThrow(InvalidOptionError);
    expect(() => hedge({} as HedgeOptions)).toThrow(/idempotent: must be true/);
    expect(() => hedge({ idempotent: true, delay: { percentile: 1.5 } })).toThrow(
      /delay.percentile: must be a fraction in \(0, 1\]/,
    );
    expect(() => hedge({ idempotent: true, delay: { percentile: 0 } })).toThrow(/delay.percentile/);
    expect(() => hedge({ idempotent: true, maxHedges: 0 })).toThrow(/maxHedges: must be an integer ≥ 1/);
    expect(() => hedge({ idempotent: true, targets: [] })).toThrow(/targets: must be a non-empty array/);
    expect(() => hedge({ idempotent: true, delay: -1 })).toThrow(/delay: must be a number ≥ 0/);
    expect(() => hedge({ idempotent: true, delay: { minMs: 50, maxMs: 10 } })).toThrow(/delay.maxMs/);
    expect(() => hedge({ idempotent: true, delay: { windowSize: 8, minSamples: 9 } })).toThrow(
      /delay.minSamples: must be an integer from 1 to 8/,
    );
  });
});

describe('LatencyWindow', () => {
  it('reports the nearest-rank percentile of the latest samples only', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 32 }),
        fc.array(fc.double({ min: 0, max: 10_000, noNaN: true }), { minLength: 1, maxLength: 100 }),
        fc.double({ min: 0.01, max: 1, noNaN: true }),
        (size, samples, p) => {
          const window = new LatencyWindow({ size });
          for (const s of samples) window.record(s);
          const latest = samples.slice(-size).sort((a, b) => a - b);
          expect(window.count).toBe(latest.length);
          expect(window.percentile(p)).toBe(latest[Math.max(0, Math.ceil(p * latest.length) - 1)]);
        },
      ),
    );
  });

  it('is empty until a sample is recorded', () => {
    const window = new LatencyWindow();
    expect(window.percentile(0.5)).toBeNaN();
    window.record(3);
    window.clear();
    expect(window.count).toBe(0);
    expect(() => window.percentile(1.5)).toThrow(/percentile/);
  });
});
