import fc from 'fast-check';
import {
  type AdaptiveThrottleOptions,
  adaptiveThrottle,
  BulkheadRejectedError,
  FakeClock,
  HttpStatusError,
  InvalidOptionError,
  isOverloadSignal,
  isRejection,
  type PolicyEvent,
  ThrottledError,
} from 'keel';
import { describe, expect, it } from 'vitest';

function setup(options: AdaptiveThrottleOptions = {}) {
  const clock = new FakeClock();
  const draws = { next: 0.999_999, count: 0 };
  const random = () => {
    draws.count++;
    return draws.next;
  };
  const throttle = adaptiveThrottle({ clock, random, minRequests: 0, ...options });
  const events: PolicyEvent[] = [];
  throttle.onEvent((e) => events.push(e));
  return { clock, throttle, draws, events };
}

const overloaded = () => Promise.reject(new HttpStatusError(503));
const ok = () => 'ok';

async function outcome(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    (value) => value,
    (error: unknown) => error,
  );
}

describe('adaptiveThrottle', () => {
  it('lets every call through while the backend accepts them', async () => {
    const { throttle, draws } = setup();
    for (let i = 0; i < 100; i++) await throttle.execute(ok);
    expect(throttle.snapshot()).toEqual({ requests: 100, accepts: 100, probability: 0 });
    expect(draws.count).toBe(0);
  });

  it('refuses with the probability (requests − k × accepts) / (requests + 1)', async () => {
    const { throttle, draws, events } = setup({ k: 2 });
    for (let i = 0; i < 5; i++) await throttle.execute(ok);
    for (let i = 0; i < 15; i++) await outcome(throttle.execute(overloaded));
    const p = (20 - 2 * 5) / 21;
    expect(throttle.rejectionProbability).toBeCloseTo(p, 12);

    let called = false;
    draws.next = p - 0.001;
    const refused = await outcome(
      throttle.execute(() => {
        called = true;
      }),
    );
    expect(called).toBe(false);
    expect(refused).toBeInstanceOf(ThrottledError);
    expect(isRejection(refused)).toBe(true);
    expect((refused as ThrottledError).probability).toBeCloseTo(p, 12);
    expect(events).toEqual([{ policy: 'throttle', name: 'throttle', type: 'rejection', error: refused }]);

    // The refused call counted as a request: 21 requests, 5 accepts.
    const next = (21 - 2 * 5) / 22;
    expect(throttle.rejectionProbability).toBeCloseTo(next, 12);
    draws.next = next + 0.001;
    await expect(throttle.execute(ok)).resolves.toBe('ok');
  });

  it('matches the formula for any sequence of outcomes and draws', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.double({ min: 1, max: 4, noNaN: true }),
        fc.array(
          fc.record({
            accepted: fc.boolean(),
            draw: fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }),
          }),
          { maxLength: 80 },
        ),
        async (k, calls) => {
          let draw = 0;
          const throttle = adaptiveThrottle({
            clock: new FakeClock(),
            k,
            minRequests: 0,
            random: () => draw,
          });
          let requests = 0;
          let accepts = 0;
          for (const call of calls) {
            const p = Math.max(0, (requests - k * accepts) / (requests + 1));
            expect(throttle.rejectionProbability).toBeCloseTo(p, 9);
            draw = call.draw;
            const result = await outcome(throttle.execute(call.accepted ? ok : overloaded));
            requests++;
            if (draw < p) {
              expect(result).toBeInstanceOf(ThrottledError);
            } else {
              expect(result instanceof ThrottledError).toBe(false);
              if (call.accepted) accepts++;
            }
          }
        },
      ),
      { numRuns: 200 },
    );
  });

  it('recovers as accepts return', async () => {
    const { throttle } = setup({ k: 2 });
    for (let i = 0; i < 50; i++) await outcome(throttle.execute(overloaded));
    expect(throttle.rejectionProbability).toBeGreaterThan(0.95);
    // With k = 2, n successes after 50 refusals leave (50 − n) / (51 + n): zero at n = 50.
    let probability = throttle.rejectionProbability;
    for (let n = 1; n <= 50; n++) {
      await throttle.execute(ok);
      expect(throttle.rejectionProbability).toBeLessThan(probability);
      probability = throttle.rejectionProbability;
      expect(probability).toBeCloseTo((50 - n) / (51 + n), 12);
    }
    expect(probability).toBe(0);
  });

  it('forgets old rejections as the window slides', async () => {
    const { clock, throttle } = setup({ windowMs: 120_000, buckets: 60 });
    for (let i = 0; i < 50; i++) await outcome(throttle.execute(overloaded));
    expect(throttle.rejectionProbability).toBeGreaterThan(0.9);
    clock.advance(60_000);
    for (let i = 0; i < 10; i++) await throttle.execute(ok);
    // 60 requests, 10 accepts: (60 − 20) / 61.
    expect(throttle.rejectionProbability).toBeCloseTo(40 / 61, 12);
    clock.advance(60_000);
    // The failures' buckets have left the window; only the 10 successes remain.
    expect(throttle.snapshot()).toEqual({ requests: 10, accepts: 10, probability: 0 });
  });

  it('does not throttle until the window holds minRequests requests', async () => {
    const { throttle, draws } = setup({ minRequests: 10 });
    draws.next = 0;
    for (let i = 0; i < 10; i++) {
      const result = await outcome(throttle.execute(overloaded));
      expect(result).toBeInstanceOf(HttpStatusError);
    }
    expect(await outcome(throttle.execute(ok))).toBeInstanceOf(ThrottledError);
  });

  it('counts 429, 503 and rejections as refusals but other failures as accepted', async () => {
    expect(isOverloadSignal(new HttpStatusError(429))).toBe(true);
    expect(isOverloadSignal(new HttpStatusError(503))).toBe(true);
    expect(isOverloadSignal(new BulkheadRejectedError(1, 0, 'full'))).toBe(true);
    expect(isOverloadSignal(new HttpStatusError(500))).toBe(false);
    expect(isOverloadSignal(new Error('bug'))).toBe(false);

    const { throttle } = setup();
    await outcome(throttle.execute(() => Promise.reject(new HttpStatusError(500))));
    await outcome(throttle.execute(() => Promise.reject(new Error('validation'))));
    await outcome(throttle.execute(() => Promise.reject(new HttpStatusError(429))));
    expect(throttle.snapshot()).toMatchObject({ requests: 3, accepts: 2 });
  });

  it('lets isAccepted judge results too', async () => {
    const { throttle } = setup({
      isAccepted: (value, failed) => !failed && (value as { status: number }).status !== 503,
    });
    await throttle.execute(() => ({ status: 503 }));
    await throttle.execute(() => ({ status: 200 }));
    await outcome(throttle.execute(() => Promise.reject(new Error('network'))));
    expect(throttle.snapshot()).toMatchObject({ requests: 3, accepts: 1 });
  });

  it('refuses bad configuration, naming the option', () => {
    expect(() => adaptiveThrottle({ k: 0.5 })).toThrow(InvalidOptionError);
    expect(() => adaptiveThrottle({ k: 0.5 })).toThrow(/k: must be a number ≥ 1, got 0.5/);
    expect(() => adaptiveThrottle({ windowMs: -1 })).toThrow(/windowMs: must be a finite number > 0/);
    expect(() => adaptiveThrottle({ minRequests: -1 })).toThrow(/minRequests: must be an integer ≥ 0/);
    expect(() => adaptiveThrottle({ buckets: 0 })).toThrow(/buckets/);
    expect(() => adaptiveThrottle({ isAccepted: true as never })).toThrow(/isAccepted: must be a function/);
  });
});
