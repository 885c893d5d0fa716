import { describe, expect, it } from 'vitest';
import { lognormalOf, sampleLatencyMs } from '../../src/providers/latency-sampler.ts';
import { seededRandom } from '../../src/seeded-random.ts';

function quantile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? Number.NaN;
}

function draw(latency: Parameters<typeof sampleLatencyMs>[0], seed: number, count: number): number[] {
  const random = seededRandom(seed);
  return Array.from({ length: count }, () => sampleLatencyMs(latency, random));
}

describe('latency sampler', () => {
  it('draws a distribution whose p50 and p99 are the ones asked for', () => {
    const samples = draw(lognormalOf({ p50Ms: 40, p99Ms: 400 }), 5, 20_000).sort((a, b) => a - b);
    expect(quantile(samples, 0.5)).toBeGreaterThan(36);
    expect(quantile(samples, 0.5)).toBeLessThan(44);
    expect(quantile(samples, 0.99)).toBeGreaterThan(330);
    expect(quantile(samples, 0.99)).toBeLessThan(480);
    expect(samples[0]).toBeGreaterThan(0);
  });

  it('takes a lognormal by median and sigma, and is fixed when the spread is zero', () => {
    expect(lognormalOf({ distribution: 'lognormal', medianMs: 25, sigma: 0.5 })).toEqual({
      medianMs: 25,
      sigma: 0.5,
    });
    expect(new Set(draw(lognormalOf({ p50Ms: 30, p99Ms: 30 }), 1, 100))).toEqual(new Set([30]));
    expect(new Set(draw(lognormalOf({ p50Ms: 0, p99Ms: 0 }), 1, 100))).toEqual(new Set([0]));
  });

  it('repeats the same draws for the same seed', () => {
    const latency = { medianMs: 10, sigma: 1 };
    expect(draw(latency, 9, 50)).toEqual(draw(latency, 9, 50));
    expect(draw(latency, 9, 50)).not.toEqual(draw(latency, 10, 50));
  });
});
