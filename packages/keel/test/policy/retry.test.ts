import fc from 'fast-check';
import {
  AbortedError,
  BrokenCircuitError,
  constantBackoff,
  DeadlineExceededError,
  FakeClock,
  HttpStatusError,
  InvalidOptionError,
  isRetryableResponse,
  type PolicyEvent,
  pipeline,
  RateLimitedError,
  type RetryOptions,
  retry,
  retryBudget,
  TimeoutError,
  TimerWheel,
  timeout,
  tokenBucketRetryBudget,
} from 'keel';
import { describe, expect, it } from 'vitest';

function setup(options: RetryOptions = {}) {
  const clock = new FakeClock();
  const timers = new TimerWheel({ clock, resolutionMs: 1 });
  const policy = retry({ timers, idempotent: true, backoff: constantBackoff(100), ...options });
  const events: PolicyEvent[] = [];
  policy.onEvent((e) => events.push(e));
  return { clock, timers, policy, events };
}

interface Settled<T> {
  done: boolean;
  value?: T;
  error?: unknown;
}

function track<T>(promise: Promise<T>): Settled<T> {
  const state: Settled<T> = { done: false };
  promise.then(
    (value) => {
      state.value = value;
      state.done = true;
    },
    (error: unknown) => {
      state.error = error;
      state.done = true;
    },
  );
  return state;
}

const unavailable = () => new HttpStatusError(503);
const connectionReset = () => Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' });

/** A function that fails with `errors` in turn, then returns `value`, recording when each attempt started. */
function flaky<T>(clock: FakeClock, errors: unknown[], value: T) {
  const starts: number[] = [];
  const attempts: number[] = [];
  const fn = ({ attempt }: { attempt: number }) => {
    starts.push(clock.now());
    attempts.push(attempt);
    const error = errors.shift();
    if (error !== undefined) throw error;
    return value;
  };
  return { fn, starts, attempts };
}

describe('retry', () => {
  it('retries transient failures after the backoff and resolves with the first success', async () => {
    const { clock, policy, events } = setup();
    const { fn, starts, attempts } = flaky(clock, [unavailable(), connectionReset()], 'ok');
    const result = track(policy.execute(fn));
    await clock.advanceAsync(0);
    expect(starts).toEqual([0]);
    await clock.advanceAsync(99);
    expect(starts).toEqual([0]);
    await clock.advanceAsync(1);
    expect(starts).toEqual([0, 100]);
    await clock.advanceAsync(100);
    expect(result).toEqual({ done: true, value: 'ok' });
    expect(starts).toEqual([0, 100, 200]);
    expect(attempts).toEqual([1, 2, 3]);
    expect(events.map((e) => e.type)).toEqual(['retry', 'retry', 'success']);
    expect(events[0]).toMatchObject({ policy: 'retry', attempt: 2, delayMs: 100 });
    expect((events[0] as { error: unknown }).error).toBeInstanceOf(HttpStatusError);
    expect(events[2]).toMatchObject({ type: 'success', durationMs: 200 });
  });

  it('stops at maxAttempts and rethrows the last error itself, not a wrapper', async () => {
    const { clock, policy, events } = setup({ maxAttempts: 3 });
    const errors = [unavailable(), unavailable(), unavailable(), unavailable()];
    const last = errors[2];
    const { fn, starts } = flaky(clock, errors, 'never');
    const result = track(policy.execute(fn));
    await clock.advanceAsync(10_000);
    expect(result.done).toBe(true);
    expect(result.error).toBe(last);
    expect(starts).toEqual([0, 100, 200]);
    expect(events.map((e) => e.type)).toEqual(['retry', 'retry', 'failure']);
    expect(events[2]).toMatchObject({ type: 'failure', durationMs: 200, error: last });
  });

  it('never retries an operation that is not declared idempotent', async () => {
    const clock = new FakeClock();
    const timers = new TimerWheel({ clock, resolutionMs: 1 });
    const policy = retry({ timers, maxAttempts: 5 });
    expect(policy.idempotent).toBe(false);
    const error = unavailable();
    const { fn, starts } = flaky(clock, [error], 'ok');
    const result = track(policy.execute(fn));
    await clock.advanceAsync(60_000);
    expect(result.error).toBe(error);
    expect(starts).toEqual([0]);
  });

  it('does not retry errors that are not transient', async () => {
    const { clock, policy } = setup();
    for (const error of [
      new Error('validation failed'),
      new HttpStatusError(400),
      new HttpStatusError(501),
    ]) {
      const { fn, starts } = flaky(clock, [error], 'ok');
      const result = track(policy.execute(fn));
      await clock.advanceAsync(1_000);
      expect(result.error).toBe(error);
      expect(starts).toHaveLength(1);
    }
  });

  it('does not retry local rejections such as an open circuit', async () => {
    const { clock, policy } = setup();
    const open = new BrokenCircuitError(5_000, 5_000);
    const { fn, starts } = flaky(clock, [open], 'ok');
    const result = track(policy.execute(fn));
    await clock.advanceAsync(10_000);
    expect(result.error).toBe(open);
    expect(starts).toHaveLength(1);
  });

  it('uses a custom error predicate', async () => {
    const { clock, policy } = setup({ retryOn: (e) => e instanceof Error && e.message === 'deadlock' });
    const { fn, starts } = flaky(clock, [new Error('deadlock'), unavailable()], 'ok');
    const result = track(policy.execute(fn));
    await clock.advanceAsync(1_000);
    expect(result.error).toBeInstanceOf(HttpStatusError);
    expect(starts).toEqual([0, 100]);
  });

  it('retries results the result predicate rejects and cancels the bodies it discards', async () => {
    const { clock, policy, events } = setup({ retryOnResult: isRetryableResponse });
    const cancelled: number[] = [];
    const responses = [503, 429, 200].map((status) => ({
      status,
      bodyUsed: false,
      body: { cancel: async () => void cancelled.push(status) },
    }));
    const fn = () => responses.shift();
    const result = track(policy.execute(fn));
    await clock.advanceAsync(200);
    expect(result.value?.status).toBe(200);
    expect(cancelled).toEqual([503, 429]);
    expect(events.map((e) => e.type)).toEqual(['retry', 'retry', 'success']);
  });

  it('returns the last rejected result when the attempts run out', async () => {
    const { clock, policy, events } = setup({ maxAttempts: 2, retryOnResult: isRetryableResponse });
    let calls = 0;
    const result = track(policy.execute(() => ({ status: 503, call: ++calls })));
    await clock.advanceAsync(1_000);
    expect(result.value).toEqual({ status: 503, call: 2 });
    expect(events.map((e) => e.type)).toEqual(['retry', 'failure']);
  });

  it('waits at least as long as the Retry-After of an HTTP error', async () => {
    const { clock, policy, events } = setup();
    const { fn, starts } = flaky(clock, [new HttpStatusError(429, 'slow down', 2_000)], 'ok');
    const result = track(policy.execute(fn));
    await clock.advanceAsync(1_999);
    expect(starts).toEqual([0]);
    await clock.advanceAsync(1);
    expect(starts).toEqual([0, 2_000]);
    expect(result.value).toBe('ok');
    expect(events[0]).toMatchObject({ type: 'retry', delayMs: 2_000 });
  });

  it('reads Retry-After from the headers of a retried response', async () => {
    const { clock, policy } = setup({ retryOnResult: isRetryableResponse });
    const responses = [
      { status: 503, headers: new Headers({ 'retry-after': '3' }) },
      { status: 200, headers: new Headers() },
    ];
    const starts: number[] = [];
    const result = track(
      policy.execute(() => {
        starts.push(clock.now());
        return responses.shift();
      }),
    );
    await clock.advanceAsync(5_000);
    expect(result.value?.status).toBe(200);
    expect(starts).toEqual([0, 3_000]);
  });

  it('caps Retry-After at maxRetryAfterMs and honours it for retried rate limits', async () => {
    const { clock, policy } = setup({ maxRetryAfterMs: 500, retryOn: () => true });
    const { fn, starts } = flaky(clock, [new RateLimitedError(60_000)], 'ok');
    const result = track(policy.execute(fn));
    await clock.advanceAsync(1_000);
    expect(result.value).toBe('ok');
    expect(starts).toEqual([0, 500]);
  });

  it('gives up at once when the Retry-After would run past the deadline', async () => {
    const { clock, policy, events } = setup();
    const error = new HttpStatusError(503, 'maintenance', 5_000);
    const { fn, starts } = flaky(clock, [error], 'ok');
    const result = track(policy.execute(fn, { deadline: 1_000 }));
    await clock.advanceAsync(0);
    expect(result.error).toBe(error);
    expect(clock.now()).toBe(0);
    expect(starts).toEqual([0]);
    expect(events.map((e) => e.type)).toEqual(['failure']);
  });

  it('does not retry when the breaker says it stays open forever', async () => {
    const { clock, policy } = setup({ retryOn: () => true });
    const isolated = new BrokenCircuitError(Number.POSITIVE_INFINITY, Number.POSITIVE_INFINITY);
    const { fn, starts } = flaky(clock, [isolated], 'ok');
    const result = track(policy.execute(fn));
    await clock.advanceAsync(60_000);
    expect(result.error).toBe(isolated);
    expect(starts).toEqual([0]);
  });

  it('never sleeps past the deadline nor starts an attempt after it', async () => {
    const { clock, policy } = setup({ maxAttempts: 10 });
    const errors = Array.from({ length: 10 }, unavailable);
    const third = errors[2];
    const { fn, starts } = flaky(clock, errors, 'ok');
    const result = track(policy.execute(fn, { deadline: 250 }));
    await clock.advanceAsync(200);
    expect(result.done).toBe(true);
    expect(result.error).toBe(third);
    expect(starts).toEqual([0, 100, 200]);
  });

  it('does not start an attempt when a late timer wakes it after the deadline', async () => {
    const fake = new FakeClock();
    // A busy event loop: every timer fires 200 ms late.
    const lateClock = {
      now: () => fake.now(),
      setTimer: (cb: () => void, ms: number) => fake.setTimer(cb, ms + 200),
    };
    const policy = retry({ clock: lateClock, idempotent: true, backoff: constantBackoff(100) });
    const error = unavailable();
    const { fn, starts } = flaky(fake, [error], 'ok');
    const result = track(policy.execute(fn, { deadline: 250 }));
    await fake.advanceAsync(1_000);
    expect(result.error).toBe(error);
    expect(starts).toEqual([0]);
  });

  it('keeps every attempt and wait inside the deadline for any timing', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.integer({ min: 0, max: 300 }), { minLength: 1, maxLength: 8 }),
        fc.array(fc.integer({ min: 0, max: 300 }), { minLength: 8, maxLength: 8 }),
        fc.integer({ min: 1, max: 1_500 }),
        async (delays, durations, deadline) => {
          const clock = new FakeClock();
          const timers = new TimerWheel({ clock, resolutionMs: 1 });
          const backoff = (attempt: number) => delays[(attempt - 1) % delays.length] ?? 0;
          const policy = retry({ timers, idempotent: true, maxAttempts: 8, backoff });
          const starts: number[] = [];
          const ends: number[] = [];
          const result = track(
            policy.execute(
              async ({ attempt }) => {
                starts.push(clock.now());
                await new Promise<void>((resolve) => clock.setTimer(resolve, durations[attempt - 1] ?? 0));
                ends.push(clock.now());
                throw unavailable();
              },
              { deadline },
            ),
          );
          while (!result.done) await clock.advanceAsync(1);
          for (const start of starts) expect(start).toBeLessThan(deadline);
          // Once the last attempt ended, the policy gave up without sleeping.
          expect(clock.now()).toBeLessThanOrEqual(Math.max(...ends) + 1);
        },
      ),
      { numRuns: 60 },
    );
  });

  it('does not start the first attempt when the deadline has already passed', async () => {
    const { clock, policy } = setup();
    clock.advance(500);
    let called = false;
    const result = policy.execute(
      () => {
        called = true;
      },
      { deadline: 400 },
    );
    await expect(result).rejects.toBeInstanceOf(DeadlineExceededError);
    expect(called).toBe(false);
  });

  it('bounds all attempts by totalTimeoutMs and tells the function its deadline', async () => {
    const { clock, policy } = setup({ maxAttempts: 10, totalTimeoutMs: 250 });
    const deadlines: number[] = [];
    const starts: number[] = [];
    const result = track(
      policy.execute(({ deadline }) => {
        deadlines.push(deadline);
        starts.push(clock.now());
        throw unavailable();
      }),
    );
    await clock.advanceAsync(1_000);
    expect(result.error).toBeInstanceOf(HttpStatusError);
    expect(starts).toEqual([0, 100, 200]);
    expect(deadlines).toEqual([250, 250, 250]);
  });

  it('rejects at totalTimeoutMs even while an attempt hangs', async () => {
    const { clock, policy } = setup({ totalTimeoutMs: 300 });
    const result = track(policy.execute(() => new Promise<never>(() => {})));
    await clock.advanceAsync(299);
    expect(result.done).toBe(false);
    await clock.advanceAsync(1);
    expect(result.error).toBeInstanceOf(TimeoutError);
  });

  it('times out each attempt with attemptTimeoutMs and retries the timeout', async () => {
    const { clock, policy, events } = setup({ attemptTimeoutMs: 50 });
    const starts: number[] = [];
    const result = track(
      policy.execute(({ attempt }) => {
        starts.push(clock.now());
        return attempt < 3 ? new Promise<never>(() => {}) : 'third time lucky';
      }),
    );
    await clock.advanceAsync(1_000);
    expect(result.value).toBe('third time lucky');
    expect(starts).toEqual([0, 150, 300]);
    expect((events[0] as { error: unknown }).error).toBeInstanceOf(TimeoutError);
  });

  it('composes with a per-try timeout inside it, like Envoy route and per-try timeouts', async () => {
    const clock = new FakeClock();
    const timers = new TimerWheel({ clock, resolutionMs: 1 });
    const route = pipeline(
      timeout({ ms: 400, timers }),
      retry({ timers, idempotent: true, maxAttempts: 10, backoff: constantBackoff(50) }),
      timeout({ ms: 100, timers }),
    );
    const starts: number[] = [];
    const result = track(
      route.execute(() => {
        starts.push(clock.now());
        return new Promise<never>(() => {});
      }),
    );
    await clock.advanceAsync(1_000);
    expect(result.error).toBeInstanceOf(TimeoutError);
    // 0–100, 150–250, 300–400: the route deadline at 400 stops the fourth try.
    expect(starts).toEqual([0, 150, 300]);
  });

  it('rejects promptly with AbortedError when the caller aborts during the backoff', async () => {
    const { clock, policy, events } = setup({ backoff: constantBackoff(10_000) });
    const controller = new AbortController();
    const { fn, starts } = flaky(clock, [unavailable(), unavailable()], 'ok');
    const result = track(policy.execute(fn, { signal: controller.signal }));
    await clock.advanceAsync(10);
    expect(result.done).toBe(false);
    controller.abort(new Error('client went away'));
    await clock.advanceAsync(0);
    expect(result.error).toBeInstanceOf(AbortedError);
    expect(clock.now()).toBe(10);
    expect(clock.pendingTimers).toBe(0);
    await clock.advanceAsync(20_000);
    expect(starts).toEqual([0]);
    expect(events.map((e) => e.type)).toEqual(['retry', 'failure']);
  });

  it('does not retry once the caller has aborted', async () => {
    const { clock, policy } = setup();
    const controller = new AbortController();
    const starts: number[] = [];
    const result = track(
      policy.execute(
        () => {
          starts.push(clock.now());
          controller.abort();
          throw unavailable();
        },
        { signal: controller.signal },
      ),
    );
    await clock.advanceAsync(1_000);
    expect(result.error).toBeInstanceOf(HttpStatusError);
    expect(starts).toEqual([0]);
  });

  it('stops retrying when the budget refuses, emits budget-exhausted and rethrows the last error', async () => {
    const clock = new FakeClock();
    const timers = new TimerWheel({ clock, resolutionMs: 1 });
    // No ratio and a reserve of exactly one retry in the window, shared by two clients.
    const budget = retryBudget({ ratio: 0, minPerSecond: 0.1, windowMs: 10_000, clock });
    const options = { timers, idempotent: true, budget, maxAttempts: 5, backoff: constantBackoff(100) };
    const first = retry(options);
    const second = retry(options);
    const events: PolicyEvent[] = [];
    first.onEvent((e) => events.push(e));
    const errors = [unavailable(), unavailable(), unavailable()];
    const secondError = errors[1];
    const { fn, starts } = flaky(clock, errors, 'ok');
    const result = track(first.execute(fn));
    await clock.advanceAsync(1_000);
    expect(result.error).toBe(secondError);
    expect(starts).toEqual([0, 100]);
    expect(events.map((e) => e.type)).toEqual(['retry', 'budget-exhausted', 'failure']);
    expect(events[1]).toMatchObject({ attempt: 3, error: secondError });
    expect(budget.snapshot()).toMatchObject({
      kind: 'ratio',
      requests: 1,
      retries: 1,
      granted: 1,
      refused: 1,
    });
    // The other client sharing the budget cannot retry either, until the window moves on.
    const other = flaky(clock, [unavailable()], 'ok');
    const otherResult = track(second.execute(other.fn));
    await clock.advanceAsync(1_000);
    expect(otherResult.error).toBeInstanceOf(HttpStatusError);
    expect(other.starts).toEqual([1_000]);
    await clock.advanceAsync(10_000);
    const later = flaky(clock, [unavailable()], 'ok');
    const laterResult = track(second.execute(later.fn));
    await clock.advanceAsync(1_000);
    expect(laterResult.value).toBe('ok');
    expect(later.starts).toEqual([12_000, 12_100]);
  });

  it('feeds successes and failures to a token-bucket budget', async () => {
    const budget = tokenBucketRetryBudget({ maxTokens: 4, tokenRatio: 0.5 });
    const { clock, policy } = setup({ budget, maxAttempts: 5 });
    const { fn, starts } = flaky(clock, [unavailable(), unavailable(), unavailable()], 'ok');
    const result = track(policy.execute(fn));
    await clock.advanceAsync(1_000);
    // 4 → 3 (retry granted, 3 > 2) → 2 (refused: 2 is not more than half).
    expect(result.error).toBeInstanceOf(HttpStatusError);
    expect(starts).toEqual([0, 100]);
    expect(budget.tokens).toBe(2);
    await policy.execute(() => 'ok');
    expect(budget.tokens).toBe(2.5);
  });

  it('refuses bad configuration, naming the option', () => {
    expect(() => retry({ maxAttempts: 0 })).toThrow(InvalidOptionError);
    expect(() => retry({ maxAttempts: 0 })).toThrow(/maxAttempts: must be an integer ≥ 1, got 0/);
    expect(() => retry({ maxAttempts: 2.5 })).toThrow(/maxAttempts/);
    expect(() => retry({ maxRetryAfterMs: -1 })).toThrow(/maxRetryAfterMs: must be a number ≥ 0/);
    expect(() => retry({ totalTimeoutMs: -10 })).toThrow(/totalTimeoutMs: must be a finite number > 0/);
    expect(() => retry({ attemptTimeoutMs: 0 })).toThrow(/attemptTimeoutMs/);
    expect(() => retry({ backoff: 100 as never })).toThrow(/backoff: must be a function/);
    expect(() => retry({ retryOn: 'always' as never })).toThrow(/retryOn: must be a function/);
  });
});
