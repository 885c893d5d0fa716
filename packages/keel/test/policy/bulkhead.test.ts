import fc from 'fast-check';
import {
  AbortedError,
  type BulkheadOptions,
  BulkheadRejectedError,
  bulkhead,
  DeadlineExceededError,
  FakeClock,
  InvalidOptionError,
  isRejection,
  type PolicyEvent,
  pipeline,
  TimeoutError,
  TimerWheel,
  timeout,
} from 'keel';
import { describe, expect, it } from 'vitest';

function setup(options: Omit<BulkheadOptions, 'clock' | 'timers'>) {
  const clock = new FakeClock();
  const timers = new TimerWheel({ clock, resolutionMs: 1 });
  const policy = bulkhead({ ...options, timers });
  const events: PolicyEvent[] = [];
  policy.onEvent((e) => events.push(e));
  return { clock, timers, policy, events };
}

/** A function the test finishes by hand. */
function gate<T = string>() {
  let open!: (value: T) => void;
  let fail!: (error: unknown) => void;
  let started = false;
  const promise = new Promise<T>((resolve, reject) => {
    open = resolve;
    fail = reject;
  });
  const fn = () => {
    started = true;
    return promise;
  };
  return {
    fn,
    open,
    fail,
    get started() {
      return started;
    },
  };
}

function settle<T>(promise: Promise<T>): Promise<{ value?: T; error?: unknown }> {
  return promise.then(
    (value) => ({ value }),
    (error: unknown) => ({ error }),
  );
}

const tick = () => new FakeClock().advanceAsync(0);

describe('bulkhead', () => {
  it('runs up to maxConcurrent calls at once and refuses the next at once when there is no queue', async () => {
    const { policy, events } = setup({ maxConcurrent: 2 });
    const a = gate();
    const b = gate();
    const first = policy.execute(a.fn);
    const second = policy.execute(b.fn);
    expect(policy.running).toBe(2);
    const third = await settle(policy.execute(async () => 'never'));
    expect(third.error).toBeInstanceOf(BulkheadRejectedError);
    expect(isRejection(third.error)).toBe(true);
    expect((third.error as Error).message).toMatch(/full/);
    a.open('a');
    b.open('b');
    await expect(first).resolves.toBe('a');
    await expect(second).resolves.toBe('b');
    expect(policy.running).toBe(0);
    expect(events.map((e) => e.type)).toEqual(['rejection', 'success', 'success']);
  });

  it('starts queued calls in arrival order as slots free up', async () => {
    const { policy } = setup({ maxConcurrent: 1, maxQueued: 3 });
    const order: string[] = [];
    const head = gate();
    const running = policy.execute(head.fn);
    const queued = ['q1', 'q2', 'q3'].map((name) =>
      policy.execute(async () => {
        order.push(name);
        return name;
      }),
    );
    expect(policy.queued).toBe(3);
    expect(order).toEqual([]);
    head.open('head');
    await expect(Promise.all([running, ...queued])).resolves.toEqual(['head', 'q1', 'q2', 'q3']);
    expect(order).toEqual(['q1', 'q2', 'q3']);
    expect(policy.running).toBe(0);
    expect(policy.queued).toBe(0);
  });

  it('hands a freed slot to the queue before a newcomer can take it', async () => {
    const { policy } = setup({ maxConcurrent: 1, maxQueued: 1 });
    const head = gate();
    void policy.execute(head.fn);
    const waiting = gate();
    const queued = policy.execute(waiting.fn);
    head.open('done');
    // A newcomer arriving right after the release finds the slot handed over and waits its turn.
    const late = settle(policy.execute(async () => 'late'));
    await tick();
    expect(waiting.started).toBe(true);
    expect((await late).error).toBeInstanceOf(BulkheadRejectedError);
    waiting.open('queued');
    await expect(queued).resolves.toBe('queued');
  });

  it('refuses at once when both the slots and the queue are full', async () => {
    const { policy, events } = setup({ maxConcurrent: 1, maxQueued: 1 });
    const head = gate();
    void policy.execute(head.fn);
    void policy.execute(async () => 'queued');
    const refused = await settle(policy.execute(async () => 'refused'));
    expect(refused.error).toBeInstanceOf(BulkheadRejectedError);
    expect((refused.error as BulkheadRejectedError).maxConcurrent).toBe(1);
    expect((refused.error as BulkheadRejectedError).maxQueued).toBe(1);
    expect(events.filter((e) => e.type === 'rejection')).toHaveLength(1);
    expect(policy.queued).toBe(1);
    head.open('x');
  });

  it('refuses a queued call after queueTimeoutMs and frees its place in line', async () => {
    const { clock, policy, events, timers } = setup({ maxConcurrent: 1, maxQueued: 1, queueTimeoutMs: 100 });
    const head = gate();
    void policy.execute(head.fn);
    const queued = settle(policy.execute(async () => 'too late'));
    await clock.advanceAsync(99);
    expect(policy.queued).toBe(1);
    await clock.advanceAsync(1);
    const outcome = await queued;
    expect(outcome.error).toBeInstanceOf(BulkheadRejectedError);
    expect((outcome.error as Error).message).toMatch(/queue timeout/);
    expect(policy.queued).toBe(0);
    expect(events.map((e) => e.type)).toEqual(['rejection']);
    // The freed place takes the next caller.
    const next = policy.execute(async () => 'next');
    expect(policy.queued).toBe(1);
    head.open('head');
    await expect(next).resolves.toBe('next');
    expect(timers.size).toBe(0);
  });

  it('cancels the queue timer of a call that got its slot in time', async () => {
    const { clock, policy, timers } = setup({ maxConcurrent: 1, maxQueued: 1, queueTimeoutMs: 100 });
    const head = gate();
    void policy.execute(head.fn);
    const queued = policy.execute(async () => 'served');
    expect(timers.size).toBe(1);
    await clock.advanceAsync(50);
    head.open('head');
    await expect(queued).resolves.toBe('served');
    expect(timers.size).toBe(0);
    await clock.advanceAsync(100);
    expect(policy.running).toBe(0);
  });

  it('lets an aborted caller leave the queue at once and gives its place to the next in line', async () => {
    const { policy } = setup({ maxConcurrent: 1, maxQueued: 2 });
    const head = gate();
    void policy.execute(head.fn);
    const controller = new AbortController();
    const abandoned = settle(policy.execute(async () => 'abandoned', { signal: controller.signal }));
    const second = gate();
    const next = policy.execute(second.fn);
    expect(policy.queued).toBe(2);
    controller.abort(new Error('client went away'));
    expect(policy.queued).toBe(1);
    const outcome = await abandoned;
    expect(outcome.error).toBeInstanceOf(AbortedError);
    expect((outcome.error as AbortedError).cause).toEqual(new Error('client went away'));
    // A newcomer can use the freed place in line.
    const third = policy.execute(async () => 'third');
    expect(policy.queued).toBe(2);
    head.open('head');
    await tick();
    expect(second.started).toBe(true);
    second.open('second');
    await expect(next).resolves.toBe('second');
    await expect(third).resolves.toBe('third');
    expect(policy.running).toBe(0);
  });

  it('refuses a caller that already gave up without taking a slot', async () => {
    const { policy } = setup({ maxConcurrent: 1 });
    const outcome = await settle(policy.execute(async () => 'x', { signal: AbortSignal.abort() }));
    expect(outcome.error).toBeInstanceOf(AbortedError);
    expect(policy.running).toBe(0);
  });

  it('refuses a queued call when its deadline passes before a slot frees', async () => {
    const { clock, policy } = setup({ maxConcurrent: 1, maxQueued: 1, queueTimeoutMs: 1_000 });
    const head = gate();
    void policy.execute(head.fn);
    const queued = settle(policy.execute(async () => 'late', { deadline: 30 }));
    await clock.advanceAsync(30);
    const outcome = await queued;
    expect(outcome.error).toBeInstanceOf(DeadlineExceededError);
    expect(policy.queued).toBe(0);
    head.open('head');
  });

  it('keeps the slot of a timed-out call until its abandoned work really ends', async () => {
    const clock = new FakeClock();
    const timers = new TimerWheel({ clock, resolutionMs: 1 });
    const pool = bulkhead({ maxConcurrent: 1, maxQueued: 1, timers });
    const guarded = pipeline(pool, timeout({ ms: 100, timers }));
    const slow = gate();
    const first = settle(guarded.execute(slow.fn));
    const waiting = gate();
    const second = guarded.execute(waiting.fn);
    await clock.advanceAsync(100);
    const outcome = await first;
    expect(outcome.error).toBeInstanceOf(TimeoutError);
    // The caller got its timeout, but the work still runs: the queued call must not start yet.
    await tick();
    expect(pool.running).toBe(1);
    expect(waiting.started).toBe(false);
    slow.open('finally');
    await tick();
    expect(waiting.started).toBe(true);
    waiting.open('second');
    await expect(second).resolves.toBe('second');
    expect(pool.running).toBe(0);
  });

  it('releases the slot when the function throws and reports the failure', async () => {
    const { policy, events } = setup({ maxConcurrent: 1 });
    await expect(
      policy.execute(() => {
        throw new Error('boom');
      }),
    ).rejects.toThrow('boom');
    expect(policy.running).toBe(0);
    expect(events.map((e) => e.type)).toEqual(['failure']);
  });

  it('never has more than maxConcurrent running or maxQueued waiting under random schedules', async () => {
    const call = fc.record({
      arriveAt: fc.integer({ min: 0, max: 200 }),
      durationMs: fc.integer({ min: 0, max: 80 }),
      abortAfterMs: fc.option(fc.integer({ min: 0, max: 100 }), { nil: undefined }),
      fails: fc.boolean(),
    });
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 4 }),
        fc.integer({ min: 0, max: 4 }),
        fc.option(fc.integer({ min: 1, max: 60 }), { nil: undefined }),
        fc.array(call, { minLength: 1, maxLength: 25 }),
        async (maxConcurrent, maxQueued, queueTimeoutMs, calls) => {
          const clock = new FakeClock();
          const timers = new TimerWheel({ clock, resolutionMs: 1 });
          const policy = bulkhead({
            maxConcurrent,
            maxQueued,
            timers,
            ...(queueTimeoutMs === undefined ? {} : { queueTimeoutMs }),
          });
          const violations: string[] = [];
          const check = (where: string) => {
            if (policy.running > maxConcurrent) violations.push(`${where}: running ${policy.running}`);
            if (policy.queued > maxQueued) violations.push(`${where}: queued ${policy.queued}`);
            if (policy.running < 0 || policy.queued < 0) violations.push(`${where}: negative`);
          };
          let running = 0;
          const outcomes: Promise<unknown>[] = [];
          for (const c of calls) {
            clock.setTimer(() => {
              const controller = new AbortController();
              if (c.abortAfterMs !== undefined) {
                clock.setTimer(() => controller.abort(), c.abortAfterMs);
              }
              const result = policy.execute(
                () => {
                  running++;
                  check('start');
                  if (running > maxConcurrent) violations.push(`functions running ${running}`);
                  return new Promise<void>((resolve, reject) => {
                    clock.setTimer(() => {
                      running--;
                      if (c.fails) reject(new Error('failed'));
                      else resolve();
                    }, c.durationMs);
                  });
                },
                { signal: controller.signal },
              );
              check('arrival');
              outcomes.push(result.catch(() => undefined));
            }, c.arriveAt);
          }
          await clock.advanceAsync(1_000);
          await Promise.all(outcomes);
          check('end');
          expect(violations).toEqual([]);
          expect(outcomes).toHaveLength(calls.length);
          expect(policy.running).toBe(0);
          expect(policy.queued).toBe(0);
          expect(timers.size).toBe(0);
        },
      ),
      { numRuns: 150 },
    );
  });

  it('rejects bad configuration with an error naming the option', () => {
    const cases: [BulkheadOptions, RegExp][] = [
      [{ maxConcurrent: 0 }, /^maxConcurrent: must be an integer ≥ 1, got 0/],
      [{ maxConcurrent: 1.5 }, /^maxConcurrent:/],
      [{ maxConcurrent: 1, maxQueued: -1 }, /^maxQueued: must be an integer ≥ 0, got -1/],
      [{ maxConcurrent: 1, queueTimeoutMs: -5 }, /^queueTimeoutMs: must be a number ≥ 0/],
      [{ maxConcurrent: 1, queueTimeoutMs: Number.NaN }, /^queueTimeoutMs:/],
    ];
    for (const [options, message] of cases) {
      expect(() => bulkhead(options)).toThrow(InvalidOptionError);
      expect(() => bulkhead(options)).toThrow(message);
    }
  });
});
