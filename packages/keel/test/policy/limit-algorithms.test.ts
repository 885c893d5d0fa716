import fc from 'fast-check';
import {
  aimdLimit,
  GradientLimit,
  gradientLimit,
  InvalidOptionError,
  type LimitAlgorithm,
  type LimitSample,
  vegasLimit,
} from 'keel';
import { describe, expect, it } from 'vitest';

function sample(rtt: number, inflight: number, didDrop = false): LimitSample {
  return { startTime: 0, rtt, inflight, didDrop };
}

/** Feeds `count` identical samples and returns the limits after each. */
function feed(algorithm: LimitAlgorithm, count: number, rtt: number, inflight: number, didDrop = false) {
  const limits: number[] = [];
  for (let i = 0; i < count; i++) limits.push(algorithm.onSample(sample(rtt, inflight, didDrop)));
  return limits;
}

describe('aimdLimit', () => {
  it('adds one for each call that completes while the limit is at least half used', () => {
    const aimd = aimdLimit({ initialLimit: 10, maxLimit: 100 });
    expect(aimd.onSample(sample(5, 5))).toBe(11);
    expect(aimd.onSample(sample(5, 6))).toBe(12);
    expect(aimd.limit).toBe(12);
  });

  it('does not grow while the service is idle, since that proves nothing about capacity', () => {
    const aimd = aimdLimit({ initialLimit: 10 });
    expect(feed(aimd, 5, 5, 4)).toEqual([10, 10, 10, 10, 10]);
  });

  it('multiplies by backoffRatio on a drop and on a call slower than timeoutMs', () => {
    const aimd = aimdLimit({ initialLimit: 100, maxLimit: 100, backoffRatio: 0.5, timeoutMs: 1_000 });
    expect(aimd.onSample(sample(10, 100, true))).toBe(50);
    expect(aimd.onSample(sample(1_001, 50))).toBe(25);
    expect(aimd.onSample(sample(1_000, 25))).toBe(26);
  });

  it('backs off by 0.9 by default and stays within minLimit and maxLimit', () => {
    const aimd = aimdLimit({ initialLimit: 20, minLimit: 15, maxLimit: 22 });
    expect(aimd.onSample(sample(1, 20, true))).toBe(18);
    expect(feed(aimd, 5, 1, 20, true).at(-1)).toBe(15);
    expect(feed(aimd, 20, 1, 22).at(-1)).toBe(22);
  });
});

describe('gradientLimit', () => {
  it('grows while latency stays at its long-term average and the limit is in use', () => {
    const gradient = gradientLimit({ initialLimit: 20, maxLimit: 200 });
    const limits: number[] = [];
    for (let i = 0; i < 50; i++) limits.push(gradient.onSample(sample(10, gradient.limit)));
    // Each sample adds smoothing × queueSize (0.8) while the gradient stays at 1.
    expect(limits.at(-1)).toBe(60);
    for (let i = 1; i < limits.length; i++) expect(limits[i]).toBeGreaterThanOrEqual(limits[i - 1] as number);
  });

  it('stops growing once less than half of the limit is in use', () => {
    const gradient = gradientLimit({ initialLimit: 20, maxLimit: 200 });
    expect(feed(gradient, 50, 10, 20).at(-1)).toBe(40);
  });

  it('shrinks when latency rises well above its long-term average', () => {
    const gradient = gradientLimit({ initialLimit: 50, maxLimit: 200 });
    feed(gradient, 30, 10, 50);
    const before = gradient.limit;
    const limits = feed(gradient, 10, 40, before);
    expect(limits.at(-1)).toBeLessThan(before * 0.7);
    for (let i = 1; i < limits.length; i++) expect(limits[i]).toBeLessThanOrEqual(limits[i - 1] as number);
  });

  it('tolerates latency up to rttTolerance times the average without shrinking', () => {
    const gradient = gradientLimit({ initialLimit: 50, maxLimit: 200, rttTolerance: 2 });
    feed(gradient, 20, 10, 50);
    const before = gradient.limit;
    gradient.onSample(sample(19, before));
    expect(gradient.limit).toBeGreaterThanOrEqual(before);
  });

  it('leaves the limit alone while less than half of it is in use', () => {
    const gradient = gradientLimit({ initialLimit: 40 });
    expect(feed(gradient, 10, 500, 10)).toEqual(Array(10).fill(40));
  });

  it('treats a drop as the strongest decrease, even when the service is not busy', () => {
    const gradient = gradientLimit({ initialLimit: 100, maxLimit: 100, smoothing: 1, queueSize: 0 });
    expect(gradient.onSample(sample(1, 1, true))).toBe(50);
    // The drop's truncated rtt does not enter the long-term average.
    expect(gradient.longRtt).toBe(0);
  });

  it('pulls an inflated long-term average down once latency recovers', () => {
    const gradient = new GradientLimit({ initialLimit: 20, longWindow: 100 });
    feed(gradient, 20, 100, 20);
    const inflated = gradient.longRtt;
    feed(gradient, 5, 10, 20);
    expect(gradient.longRtt).toBeLessThan(inflated * 0.8);
  });

  it('accepts queueSize as a function of the limit', () => {
    const gradient = gradientLimit({
      initialLimit: 100,
      maxLimit: 1_000,
      smoothing: 1,
      queueSize: (l) => l / 10,
    });
    expect(gradient.onSample(sample(10, 100))).toBe(110);
  });
});

describe('vegasLimit', () => {
  it('learns the no-load latency from the fastest calls', () => {
    const vegas = vegasLimit({ initialLimit: 20, probeMultiplier: Number.POSITIVE_INFINITY });
    vegas.onSample(sample(30, 20));
    vegas.onSample(sample(10, 20));
    vegas.onSample(sample(20, 20));
    expect(vegas.rttNoLoad).toBe(10);
  });

  it('grows fast while latency stays at its no-load level', () => {
    const vegas = vegasLimit({ initialLimit: 20, probeMultiplier: Number.POSITIVE_INFINITY });
    vegas.onSample(sample(10, 20));
    // No queue: limit + beta (6 × log10 floor, at least 1).
    expect(vegas.onSample(sample(10, 20))).toBe(26);
    expect(vegas.onSample(sample(10, 26))).toBe(32);
  });

  it('shrinks when latency rises and calls queue at the dependency', () => {
    const vegas = vegasLimit({ initialLimit: 50, probeMultiplier: Number.POSITIVE_INFINITY });
    vegas.onSample(sample(10, 50));
    const limits = feed(vegas, 10, 30, 50);
    expect(limits).toEqual([49, 48, 47, 46, 45, 44, 43, 42, 41, 40]);
  });

  it('holds steady while the estimated queue sits between alpha and beta', () => {
    const vegas = vegasLimit({ initialLimit: 20, probeMultiplier: Number.POSITIVE_INFINITY });
    vegas.onSample(sample(100, 20));
    // queue = ceil(20 × (1 − 100/125)) = 4: between alpha (3) and beta (6).
    expect(feed(vegas, 3, 125, 20)).toEqual([20, 20, 20]);
  });

  it('shrinks on a drop and ignores the service while it is mostly idle', () => {
    const vegas = vegasLimit({ initialLimit: 20, probeMultiplier: Number.POSITIVE_INFINITY });
    expect(vegas.onSample(sample(5, 1, true))).toBe(19);
    vegas.onSample(sample(10, 1));
    expect(feed(vegas, 3, 10, 2)).toEqual([19, 19, 19]);
  });

  it('re-measures the no-load latency periodically so a lasting baseline shift is followed', () => {
    const vegas = vegasLimit({ initialLimit: 10, maxLimit: 10, probeMultiplier: 1, random: () => 0 });
    vegas.onSample(sample(10, 10));
    expect(vegas.rttNoLoad).toBe(10);
    // The baseline moves to 50 ms; within 0.5 × 1 × 10 samples a probe adopts it.
    feed(vegas, 5, 50, 10);
    expect(vegas.rttNoLoad).toBe(50);
  });
});

describe('limit bounds', () => {
  it('keep every algorithm within minLimit and maxLimit for any samples', () => {
    const samples = fc.array(
      fc.record({
        rtt: fc.double({ min: 0, max: 10_000, noNaN: true }),
        inflight: fc.integer({ min: 0, max: 500 }),
        didDrop: fc.boolean(),
      }),
      { maxLength: 200 },
    );
    fc.assert(
      fc.property(
        fc.constantFrom('aimd', 'gradient', 'vegas'),
        fc.integer({ min: 1, max: 50 }),
        fc.integer({ min: 0, max: 100 }),
        samples,
        (kind, minLimit, span, list) => {
          const bounds = { minLimit, maxLimit: minLimit + span };
          const algorithm =
            kind === 'aimd'
              ? aimdLimit(bounds)
              : kind === 'gradient'
                ? gradientLimit(bounds)
                : vegasLimit(bounds);
          for (const s of list) {
            const limit = algorithm.onSample({ startTime: 0, ...s });
            expect(limit).toBe(algorithm.limit);
            expect(Number.isInteger(limit)).toBe(true);
            expect(limit).toBeGreaterThanOrEqual(minLimit);
            expect(limit).toBeLessThanOrEqual(minLimit + span);
          }
        },
      ),
    );
  });

  it('reject bad configuration with an error naming the option', () => {
    const cases: [() => unknown, RegExp][] = [
      [() => aimdLimit({ backoffRatio: 1 }), /^backoffRatio: must be a fraction in \(0, 1\), got 1/],
      [() => aimdLimit({ backoffRatio: 0 }), /^backoffRatio:/],
      [() => aimdLimit({ backoffRatio: -0.5 }), /^backoffRatio:/],
      [() => aimdLimit({ minLimit: 10, maxLimit: 5 }), /^minLimit: must be ≤ maxLimit \(5\), got 10/],
      [() => gradientLimit({ minLimit: 0 }), /^minLimit: must be an integer ≥ 1/],
      [
        () => vegasLimit({ initialLimit: 500, maxLimit: 100 }),
        /^initialLimit: must be an integer from 1 to 100/,
      ],
      [() => aimdLimit({ timeoutMs: -1 }), /^timeoutMs:/],
      [() => gradientLimit({ rttTolerance: 0.5 }), /^rttTolerance: must be a number ≥ 1/],
      [() => gradientLimit({ smoothing: 0 }), /^smoothing: must be a fraction in \(0, 1\]/],
      [() => gradientLimit({ longWindow: 0 }), /^longWindow:/],
      [() => gradientLimit({ queueSize: -1 }), /^queueSize:/],
      [() => vegasLimit({ alphaFactor: 7, betaFactor: 6 }), /^betaFactor: must be ≥ alphaFactor/],
      [() => vegasLimit({ probeMultiplier: 0 }), /^probeMultiplier:/],
    ];
    for (const [build, message] of cases) {
      expect(build).toThrow(InvalidOptionError);
      expect(build).toThrow(message);
    }
  });

  it('start at 20 by default, kept inside the bounds', () => {
    expect(aimdLimit().limit).toBe(20);
    expect(gradientLimit({ maxLimit: 8 }).limit).toBe(8);
    expect(vegasLimit({ minLimit: 30 }).limit).toBe(30);
  });
});
