import fc from 'fast-check';
import {
  AbortedError,
  FakeClock,
  InvalidOptionError,
  isRejection,
  type PolicyEvent,
  RateLimitedError,
  rateLimiter,
} from 'keel';
import { describe, expect, it } from 'vitest';

function setup(options: { ratePerSecond: number; burst?: number; maxWaitMs?: number }) {
  const clock = new FakeClock();
  const limiter = rateLimiter({ clock, ...options });
  const events: PolicyEvent[] = [];
  limiter.onEvent((e) => events.push(e));
  return { clock, limiter, events };
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => {
      throw new Error('expected a rejection');
    },
    (error: unknown) => error,
  );
}

describe('rateLimiter', () => {
  it('lets a full burst through at once and rejects the next call', async () => {
    const { limiter, events } = setup({ ratePerSecond: 10, burst: 3 });
    for (let i = 0; i < 3; i++) await expect(limiter.execute(() => i)).resolves.toBe(i);
    let called = false;
    const error = await rejection(
      limiter.execute(() => {
        called = true;
      }),
    );
    expect(called).toBe(false);
    expect(error).toBeInstanceOf(RateLimitedError);
    expect(isRejection(error)).toBe(true);
    expect(events.map((e) => e.type)).toEqual(['rejection']);
  });

  it('refills tokens from the clock, one per interval, up to the burst', async () => {
    const { clock, limiter } = setup({ ratePerSecond: 10, burst: 2 });
    expect(limiter.tryAcquire()).toBe(true);
    expect(limiter.tryAcquire()).toBe(true);
    expect(limiter.tryAcquire()).toBe(false);
    clock.advance(99);
    expect(limiter.tryAcquire()).toBe(false);
    clock.advance(1);
    expect(limiter.tryAcquire()).toBe(true);
    expect(limiter.tryAcquire()).toBe(false);
    // A long idle period refills only up to the burst.
    clock.advance(10_000);
    expect(limiter.tokens).toBe(2);
    expect(limiter.tryAcquire(2)).toBe(true);
    expect(limiter.tryAcquire()).toBe(false);
  });

  it('runs no timer while idle', () => {
    const { clock, limiter } = setup({ ratePerSecond: 5, burst: 1 });
    limiter.tryAcquire();
    expect(clock.pendingTimers).toBe(0);
  });

  it('tells in retryAfterMs exactly when the next token is due', async () => {
    const { clock, limiter } = setup({ ratePerSecond: 4, burst: 1 });
    await limiter.execute(() => 'first');
    clock.advance(100);
    const error = (await rejection(limiter.execute(() => 'second'))) as RateLimitedError;
    expect(error.retryAfterMs).toBeCloseTo(150, 6);
    clock.advance(149);
    await expect(rejection(limiter.execute(() => 'third'))).resolves.toBeInstanceOf(RateLimitedError);
    clock.advance(1);
    await expect(limiter.execute(() => 'fourth')).resolves.toBe('fourth');
  });

  it('waits up to maxWaitMs for a token instead of rejecting', async () => {
    const { clock, limiter } = setup({ ratePerSecond: 10, burst: 1, maxWaitMs: 250 });
    await limiter.execute(() => 0);
    const startedAt: number[] = [];
    const second = limiter.execute(() => startedAt.push(clock.now()));
    const third = limiter.execute(() => startedAt.push(clock.now()));
    // The fourth would need 300 ms: more than it may wait.
    const fourth = await rejection(limiter.execute(() => startedAt.push(clock.now())));
    expect(fourth).toBeInstanceOf(RateLimitedError);
    expect((fourth as RateLimitedError).retryAfterMs).toBeCloseTo(300, 6);
    await clock.advanceAsync(300);
    await Promise.all([second, third]);
    // Waiters queue behind each other in arrival order, one interval apart.
    expect(startedAt).toEqual([100, 200]);
  });

  it('does not wait past the call deadline', async () => {
    const { clock, limiter } = setup({ ratePerSecond: 1, burst: 1, maxWaitMs: 5_000 });
    limiter.tryAcquire();
    const error = await rejection(limiter.execute(() => 'late', { deadline: clock.now() + 500 }));
    expect(error).toBeInstanceOf(RateLimitedError);
    expect(clock.pendingTimers).toBe(0);
  });

  it('stops waiting when the caller aborts and hands the reserved token back', async () => {
    const { clock, limiter } = setup({ ratePerSecond: 10, burst: 1, maxWaitMs: 1_000 });
    limiter.tryAcquire();
    const controller = new AbortController();
    let called = false;
    const waiting = rejection(
      limiter.execute(
        () => {
          called = true;
        },
        { signal: controller.signal },
      ),
    );
    await clock.advanceAsync(40);
    controller.abort(new Error('client went away'));
    const error = await waiting;
    expect(error).toBeInstanceOf(AbortedError);
    expect((error as AbortedError).cause).toEqual(new Error('client went away'));
    expect(called).toBe(false);
    expect(clock.pendingTimers).toBe(0);
    // The aborted waiter's token is available to the next caller when it is due.
    clock.advance(60);
    expect(limiter.tryAcquire()).toBe(true);
  });

  it('rejects at once a caller that had already aborted', async () => {
    const { limiter } = setup({ ratePerSecond: 10, burst: 1, maxWaitMs: 1_000 });
    limiter.tryAcquire();
    const error = await rejection(limiter.execute(() => 1, { signal: AbortSignal.abort() }));
    expect(error).toBeInstanceOf(AbortedError);
    expect(limiter.tryAcquire()).toBe(false);
  });

  it('never admits more than burst + rate × elapsed calls in any schedule', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 50 }),
        fc.integer({ min: 1, max: 10 }),
        fc.array(fc.integer({ min: 0, max: 300 }), { minLength: 1, maxLength: 200 }),
        (ratePerSecond, burst, gaps) => {
          const clock = new FakeClock();
          const limiter = rateLimiter({ clock, ratePerSecond, burst });
          let admitted = 0;
          let elapsed = 0;
          for (const gap of gaps) {
            clock.advance(gap);
            elapsed += gap;
            if (limiter.tryAcquire()) admitted++;
            expect(admitted).toBeLessThanOrEqual(burst + Math.floor((elapsed * ratePerSecond) / 1000) + 1e-9);
          }
        },
      ),
    );
  });

  it('refuses bad configuration, naming the option', () => {
    expect(() => rateLimiter({ ratePerSecond: 0, burst: 1 })).toThrow(InvalidOptionError);
    expect(() => rateLimiter({ ratePerSecond: 0, burst: 1 })).toThrow(
      /ratePerSecond: must be a finite number > 0/,
    );
    expect(() => rateLimiter({ ratePerSecond: 10, burst: 0 })).toThrow(/burst: must be an integer ≥ 1/);
    expect(() => rateLimiter({ ratePerSecond: 10, burst: 1.5 })).toThrow(/burst/);
    expect(() => rateLimiter({ ratePerSecond: 10, maxWaitMs: -1 })).toThrow(/maxWaitMs/);
  });

  it('defaults the burst to one second of tokens', () => {
    expect(rateLimiter({ ratePerSecond: 2.5 }).burst).toBe(3);
    expect(rateLimiter({ ratePerSecond: 0.2 }).burst).toBe(1);
  });
});
