import { InvalidOptionError } from 'keel';
import { describe, expect, it } from 'vitest';
import { arrivalOffsets, runOpenLoop } from '../../src/lab/open-loop.ts';
import { quantile, TimeBuckets } from '../../src/lab/time-buckets.ts';

describe('the open-loop arrival generator', () => {
  it('starts every arrival while none of the earlier ones has been answered', async () => {
    const answers: Array<() => void> = [];
    let startedBeforeAnyAnswer = 0;
    let answered = 0;
    const run = runOpenLoop({
      ratePerSecond: 2_000,
      arrivals: 40,
      seed: 3,
      arrive: () => {
        if (answered === 0) startedBeforeAnyAnswer++;
        return new Promise<void>((resolve) =>
          answers.push(() => {
            answered++;
            resolve();
          }),
        );
      },
    });
    // Nothing is answered until all 40 have arrived: a closed loop would have stalled at the first.
    while (answers.length < 40) await new Promise((resolve) => setTimeout(resolve, 5));
    expect(startedBeforeAnyAnswer).toBe(40);
    for (const answer of answers) answer();
    const result = await run;
    expect(result.arrivals).toBe(40);
    expect(result.maxInFlight).toBe(40);
  });

  it('makes the same arrival times from the same seed, and other times from another', () => {
    const first = arrivalOffsets({ seed: 11, ratePerSecond: 100, count: 200 });
    const again = arrivalOffsets({ seed: 11, ratePerSecond: 100, count: 200 });
    const other = arrivalOffsets({ seed: 12, ratePerSecond: 100, count: 200 });
    expect(again).toEqual(first);
    expect(other).not.toEqual(first);
    expect([...first].sort((x, y) => x - y)).toEqual(first);
  });

  it('spaces arrivals by the requested mean rate (Poisson gaps)', () => {
    const offsets = arrivalOffsets({ seed: 5, ratePerSecond: 50, count: 5_000 });
    const meanGap = (offsets.at(-1) ?? 0) / offsets.length;
    expect(meanGap).toBeGreaterThan(18);
    expect(meanGap).toBeLessThan(22);
  });

  it('rejects with the first error of an arrival, after every arrival settled', async () => {
    let settled = 0;
    const run = runOpenLoop({
      ratePerSecond: 1_000,
      arrivals: 5,
      arrive: async (index) => {
        settled++;
        if (index === 2) throw new Error('arrival 2 broke');
      },
    });
    await expect(run).rejects.toThrow('arrival 2 broke');
    expect(settled).toBe(5);
  });

  it('refuses a rate that is not positive, a negative count and a missing arrive function', async () => {
    expect(() => arrivalOffsets({ seed: 1, ratePerSecond: 0, count: 3 })).toThrow(InvalidOptionError);
    expect(() => arrivalOffsets({ seed: 1, ratePerSecond: 10, count: -1 })).toThrow(InvalidOptionError);
    await expect(
      runOpenLoop({ ratePerSecond: 10, arrivals: 1, arrive: undefined as unknown as () => Promise<void> }),
    ).rejects.toThrow(InvalidOptionError);
  });
});

describe('time buckets', () => {
  it('puts latency in the bucket a request started in and goodput in the one it finished in', () => {
    const buckets = new TimeBuckets({ startedAtMs: 1_000, bucketMs: 100 });
    buckets.record(1_010, 1_030, 'ok');
    buckets.record(1_020, 1_250, 'ok');
    buckets.record(1_050, 1_150, 'unknown');
    const [first, second, third] = buckets.summary();
    expect(first).toMatchObject({ fromMs: 0, count: 3, ok: 2, unknown: 1, maxMs: 230, goodputPerSecond: 10 });
    expect(second).toMatchObject({ fromMs: 100, count: 0, goodputPerSecond: 0 });
    expect(third).toMatchObject({ fromMs: 200, count: 0, goodputPerSecond: 10 });
    expect(buckets.overall()).toMatchObject({ count: 3, ok: 2, fail: 0, unknown: 1, p50Ms: 100 });
  });

  it('takes nearest-rank quantiles', () => {
    const sorted = Array.from({ length: 100 }, (_, i) => i + 1);
    expect(quantile(sorted, 0.5)).toBe(50);
    expect(quantile(sorted, 0.99)).toBe(99);
    expect(quantile([], 0.99)).toBe(0);
  });
});
