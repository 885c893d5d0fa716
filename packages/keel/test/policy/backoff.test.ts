import fc from 'fast-check';
import { constantBackoff, exponentialBackoff, InvalidOptionError } from 'keel';
import { describe, expect, it } from 'vitest';

const fixed = (value: number) => () => value;
const randomValue = fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true });

describe('constantBackoff', () => {
  it('waits the same time before every retry', () => {
    const backoff = constantBackoff(250);
    expect([1, 2, 7].map((attempt) => backoff(attempt, 250, Math.random))).toEqual([250, 250, 250]);
  });

  it('refuses a negative delay, naming the option', () => {
    expect(() => constantBackoff(-1)).toThrow(InvalidOptionError);
    expect(() => constantBackoff(-1)).toThrow(/ms: must be a number ≥ 0/);
  });
});

describe('exponentialBackoff', () => {
  it('without jitter multiplies by the factor and stops at the cap', () => {
    const backoff = exponentialBackoff({ initialMs: 100, maxMs: 1_000, factor: 3, jitter: 'none' });
    const delays = [1, 2, 3, 4, 5].map((attempt) => backoff(attempt, 0, fixed(0.5)));
    expect(delays).toEqual([100, 300, 900, 1_000, 1_000]);
  });

  it('never overflows the cap, even after thousands of attempts', () => {
    const backoff = exponentialBackoff({ initialMs: 100, maxMs: 5_000, jitter: 'none' });
    expect(backoff(5_000, 0, Math.random)).toBe(5_000);
  });

  it('with full jitter draws uniformly between 0 and the capped exponential', () => {
    const backoff = exponentialBackoff({ initialMs: 100, maxMs: 1_000, factor: 2, jitter: 'full' });
    expect(backoff(3, 0, fixed(0))).toBe(0);
    expect(backoff(3, 0, fixed(0.5))).toBe(200);
    expect(backoff(3, 0, fixed(0.999))).toBeCloseTo(399.6);
    expect(backoff(10, 0, fixed(0.5))).toBe(500);
  });

  it('keeps every full-jitter delay within [0, min(max, initial × factor^(n−1))]', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 1_000 }),
        fc.integer({ min: 0, max: 100_000 }),
        fc.double({ min: 1, max: 5, noNaN: true }),
        fc.integer({ min: 1, max: 60 }),
        randomValue,
        (initialMs, extra, factor, attempt, r) => {
          const maxMs = initialMs + extra;
          const backoff = exponentialBackoff({ initialMs, maxMs, factor, jitter: 'full' });
          const delay = backoff(attempt, 0, () => r);
          expect(delay).toBeGreaterThanOrEqual(0);
          expect(delay).toBeLessThanOrEqual(Math.min(maxMs, initialMs * factor ** (attempt - 1)));
        },
      ),
    );
  });

  it('with decorrelated jitter draws between the initial delay and three times the previous one', () => {
    const backoff = exponentialBackoff({ initialMs: 100, maxMs: 10_000, jitter: 'decorrelated' });
    // The first retry has no previous delay and is seeded with the initial one: [100, 300).
    expect(backoff(1, 0, fixed(0))).toBe(100);
    expect(backoff(1, 0, fixed(0.5))).toBe(200);
    // After a 1 s wait: [100, 3 000).
    expect(backoff(2, 1_000, fixed(0.5))).toBe(1_550);
    // Capped at maxMs.
    expect(backoff(3, 9_000, fixed(0.9))).toBe(10_000);
  });

  it('keeps every decorrelated delay within [initial, min(max, previous × 3)]', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 1_000 }),
        fc.integer({ min: 0, max: 100_000 }),
        fc.array(randomValue, { minLength: 1, maxLength: 30 }),
        (initialMs, extra, draws) => {
          const maxMs = initialMs + extra;
          const backoff = exponentialBackoff({ initialMs, maxMs, jitter: 'decorrelated' });
          let previous = 0;
          draws.forEach((r, i) => {
            const delay = backoff(i + 1, previous, () => r);
            expect(delay).toBeGreaterThanOrEqual(initialMs);
            expect(delay).toBeLessThanOrEqual(Math.min(maxMs, Math.max(previous, initialMs) * 3));
            previous = delay;
          });
        },
      ),
    );
  });

  it('defaults to full jitter from 100 ms up to 10 s', () => {
    const backoff = exponentialBackoff();
    expect(backoff(1, 0, fixed(0.999_999))).toBeCloseTo(100, 3);
    expect(backoff(30, 0, fixed(0.999_999))).toBeCloseTo(10_000, 1);
    expect(backoff(1, 0, fixed(0))).toBe(0);
  });

  it('refuses bad configuration, naming the option', () => {
    expect(() => exponentialBackoff({ initialMs: -5 })).toThrow(/initialMs: must be a number ≥ 0/);
    expect(() => exponentialBackoff({ initialMs: 500, maxMs: 100 })).toThrow(/maxMs: must be a number ≥ 500/);
    expect(() => exponentialBackoff({ factor: 0.5 })).toThrow(/factor: must be a number ≥ 1/);
    expect(() => exponentialBackoff({ jitter: 'equal' as 'full' })).toThrow(/jitter: must be one of/);
  });
});
