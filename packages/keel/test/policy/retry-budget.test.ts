import fc from 'fast-check';
import {
  constantBackoff,
  FakeClock,
  HttpStatusError,
  InvalidOptionError,
  type RetryBudget,
  retry,
  retryBudget,
  TimerWheel,
  tokenBucketRetryBudget,
} from 'keel';
import { describe, expect, it } from 'vitest';

function grants(budget: { tryAcquireRetry(): boolean }, tries: number): number {
  let granted = 0;
  for (let i = 0; i < tries; i++) if (budget.tryAcquireRetry()) granted++;
  return granted;
}

describe('retryBudget', () => {
  it('allows minPerSecond × window seconds of retries with no traffic at all', () => {
    const clock = new FakeClock();
    const budget = retryBudget({ ratio: 0.2, minPerSecond: 2, windowMs: 5_000, clock });
    expect(grants(budget, 50)).toBe(10);
    expect(budget.snapshot()).toEqual({
      kind: 'ratio',
      requests: 0,
      retries: 10,
      allowed: 10,
      granted: 10,
      refused: 40,
    });
  });

  it('allows ratio × requests more retries as traffic grows', () => {
    const clock = new FakeClock();
    const budget = retryBudget({ ratio: 0.2, minPerSecond: 0, windowMs: 10_000, clock });
    for (let i = 0; i < 100; i++) budget.recordRequest();
    expect(grants(budget, 50)).toBe(20);
    budget.recordRequest();
    budget.recordRequest();
    budget.recordRequest();
    budget.recordRequest();
    budget.recordRequest();
    expect(grants(budget, 5)).toBe(1);
  });

  it('forgets requests and retries once they leave the window', () => {
    const clock = new FakeClock();
    const budget = retryBudget({ ratio: 0.5, minPerSecond: 0, windowMs: 10_000, buckets: 10, clock });
    for (let i = 0; i < 10; i++) budget.recordRequest();
    expect(grants(budget, 10)).toBe(5);
    clock.advance(5_000);
    expect(grants(budget, 10)).toBe(0);
    // The requests have left the window; the retries are counted a bucket longer, so none is free yet.
    clock.advance(5_000);
    expect(budget.snapshot()).toMatchObject({ requests: 0, retries: 5 });
    clock.advance(1_000);
    expect(budget.snapshot()).toMatchObject({ requests: 0, retries: 0 });
    for (let i = 0; i < 4; i++) budget.recordRequest();
    expect(grants(budget, 10)).toBe(2);
  });

  it('never grants more retries than ratio × requests + reserve in the window ending at any grant', () => {
    const step = fc.record({
      waitMs: fc.integer({ min: 0, max: 1_500 }),
      failures: fc.integer({ min: 0, max: 3 }),
      gapMs: fc.integer({ min: 0, max: 400 }),
    });
    fc.assert(
      fc.property(
        fc.double({ min: 0, max: 1, noNaN: true }),
        fc.double({ min: 0, max: 3, noNaN: true }),
        fc.integer({ min: 100, max: 8_000 }),
        fc.integer({ min: 1, max: 12 }),
        fc.array(step, { minLength: 1, maxLength: 300 }),
        (ratio, minPerSecond, windowMs, buckets, steps) => {
          const clock = new FakeClock(1_000);
          const budget = retryBudget({ ratio, minPerSecond, windowMs, buckets, clock });
          const requests: number[] = [];
          const retries: number[] = [];
          const inWindow = (times: number[], end: number) => times.filter((t) => t > end - windowMs).length;
          for (const { waitMs, failures, gapMs } of steps) {
            clock.advance(waitMs);
            budget.recordRequest();
            requests.push(clock.now());
            // Each failure of the call asks for a retry, a little later.
            for (let f = 0; f < failures; f++) {
              clock.advance(gapMs);
              if (!budget.tryAcquireRetry()) break;
              const now = clock.now();
              retries.push(now);
              const limit = ratio * inWindow(requests, now) + (minPerSecond * windowMs) / 1000;
              expect(inWindow(retries, now)).toBeLessThanOrEqual(limit + 1e-9);
            }
          }
          const { granted, refused } = budget.snapshot() as { granted: number; refused: number };
          expect(granted).toBe(retries.length);
          expect(granted + refused).toBeGreaterThanOrEqual(retries.length);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('holds the same bound for many retrying clients sharing one budget concurrently', async () => {
    const call = fc.record({
      startMs: fc.integer({ min: 0, max: 2_000 }),
      client: fc.integer({ min: 0, max: 5 }),
      failures: fc.integer({ min: 0, max: 4 }),
    });
    await fc.assert(
      fc.asyncProperty(
        fc.double({ min: 0.05, max: 1, noNaN: true }),
        fc.double({ min: 0, max: 0.5, noNaN: true }),
        fc.integer({ min: 200, max: 2_000 }),
        fc.array(fc.integer({ min: 0, max: 300 }), { minLength: 6, maxLength: 6 }),
        fc.array(call, { minLength: 20, maxLength: 80 }),
        async (ratio, minPerSecond, windowMs, backoffs, calls) => {
          const clock = new FakeClock();
          const timers = new TimerWheel({ clock, resolutionMs: 1 });
          const shared = retryBudget({ ratio, minPerSecond, windowMs, clock });
          const requests: number[] = [];
          const retries: number[] = [];
          const inWindow = (times: number[], end: number) => times.filter((t) => t > end - windowMs).length;
          const violations: string[] = [];
          // The budget as the clients see it, logging what it records and grants.
          const budget: RetryBudget = {
            recordRequest: () => {
              requests.push(clock.now());
              shared.recordRequest();
            },
            recordSuccess: () => shared.recordSuccess(),
            recordFailure: () => shared.recordFailure(),
            snapshot: () => shared.snapshot(),
            tryAcquireRetry: () => {
              if (!shared.tryAcquireRetry()) return false;
              const now = clock.now();
              retries.push(now);
              const limit = ratio * inWindow(requests, now) + (minPerSecond * windowMs) / 1000;
              if (inWindow(retries, now) > limit + 1e-9) violations.push(`at ${now}`);
              return true;
            },
          };
          const clients = backoffs.map((ms) =>
            retry({ timers, idempotent: true, maxAttempts: 5, budget, backoff: constantBackoff(ms) }),
          );
          let settled = 0;
          for (const { startMs, client, failures } of calls) {
            clock.setTimer(() => {
              let left = failures;
              const policy = clients[client] as (typeof clients)[number];
              policy
                .execute(() => {
                  if (left-- > 0) throw new HttpStatusError(503);
                  return 'ok';
                })
                .catch(() => 'failed')
                .finally(() => settled++);
            }, startMs);
          }
          while (settled < calls.length) await clock.advanceAsync(50);
          expect(violations).toEqual([]);
          expect(shared.snapshot()).toMatchObject({ granted: retries.length });
        },
      ),
      { numRuns: 40 },
    );
  });

  it('refuses bad configuration, naming the option', () => {
    expect(() => retryBudget({ ratio: 1.5 })).toThrow(InvalidOptionError);
    expect(() => retryBudget({ ratio: 1.5 })).toThrow(/ratio: must be a fraction in \[0, 1\], got 1.5/);
    expect(() => retryBudget({ ratio: -0.1 })).toThrow(/ratio/);
    expect(() => retryBudget({ minPerSecond: -1 })).toThrow(/minPerSecond: must be a number ≥ 0/);
    expect(() => retryBudget({ windowMs: -10 })).toThrow(/windowMs: must be a finite number > 0/);
    expect(() => retryBudget({ windowMs: 0 })).toThrow(/windowMs/);
    expect(() => retryBudget({ buckets: 0 })).toThrow(/buckets: must be an integer from 1/);
  });
});

describe('tokenBucketRetryBudget', () => {
  it('starts full and allows retries only while more than half the tokens are left', () => {
    const budget = tokenBucketRetryBudget({ maxTokens: 10, tokenRatio: 0.1 });
    expect(budget.tokens).toBe(10);
    for (let i = 0; i < 4; i++) budget.recordFailure();
    expect(budget.tokens).toBe(6);
    expect(budget.tryAcquireRetry()).toBe(true);
    budget.recordFailure();
    expect(budget.tokens).toBe(5);
    expect(budget.tryAcquireRetry()).toBe(false);
  });

  it('earns tokens back with successes, never above the maximum', () => {
    const budget = tokenBucketRetryBudget({ maxTokens: 4, tokenRatio: 0.5 });
    for (let i = 0; i < 10; i++) budget.recordFailure();
    expect(budget.tokens).toBe(0);
    for (let i = 0; i < 4; i++) budget.recordSuccess();
    expect(budget.tokens).toBe(2);
    expect(budget.tryAcquireRetry()).toBe(false);
    budget.recordSuccess();
    expect(budget.tryAcquireRetry()).toBe(true);
    for (let i = 0; i < 100; i++) budget.recordSuccess();
    expect(budget.snapshot()).toEqual({
      kind: 'token-bucket',
      tokens: 4,
      maxTokens: 4,
      granted: 1,
      refused: 1,
    });
  });

  it('ignores request counts and time: only outcomes move the bucket', () => {
    const budget = tokenBucketRetryBudget();
    for (let i = 0; i < 1_000; i++) budget.recordRequest();
    expect(budget.tokens).toBe(10);
    expect(grants(budget, 100)).toBe(100);
  });

  it('refuses bad configuration, naming the option', () => {
    expect(() => tokenBucketRetryBudget({ maxTokens: 0 })).toThrow(/maxTokens: must be a finite number > 0/);
    expect(() => tokenBucketRetryBudget({ tokenRatio: -1 })).toThrow(
      /tokenRatio: must be a finite number > 0/,
    );
  });
});
