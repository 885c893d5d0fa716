/**
 * @module
 * Draws added latency from a lognormal distribution, the usual shape of service latency: most calls
 * near the median, a long right tail. A p50/p99 pair is turned into the same distribution, so the
 * lab can say "p50 40 ms, p99 400 ms" and get a tail that looks like production.
 */
import type { FaultSettings } from './fault-settings.ts';

/** The standard normal quantile at 0.99. */
const Z_99 = 2.326_347_874;

/** A lognormal distribution by its median and the sigma of the underlying normal. */
export interface LognormalLatency {
  medianMs: number;
  sigma: number;
}

/**
 * The lognormal a latency setting describes: a p50/p99 pair fixes median and sigma.
 *
 * @example
 * lognormalOf({ p50Ms: 40, p99Ms: 400 }); // { medianMs: 40, sigma: ≈0.99 }
 */
export function lognormalOf(latency: NonNullable<FaultSettings['latency']>): LognormalLatency {
  if ('p50Ms' in latency) {
    const sigma = latency.p50Ms > 0 ? Math.log(latency.p99Ms / latency.p50Ms) / Z_99 : 0;
    return { medianMs: latency.p50Ms, sigma };
  }
  return { medianMs: latency.medianMs, sigma: latency.sigma };
}

/**
 * One draw in milliseconds, from two uniform draws of `random` (Box–Muller).
 *
 * @example
 * const random = seededRandom(1);
 * const delayMs = sampleLatencyMs({ medianMs: 40, sigma: 1 }, random);
 */
export function sampleLatencyMs(latency: LognormalLatency, random: () => number): number {
  if (latency.medianMs === 0) return 0;
  if (latency.sigma === 0) return latency.medianMs;
  // 1 - random() lies in (0, 1], so the logarithm stays finite.
  const radius = Math.sqrt(-2 * Math.log(1 - random()));
  const normal = radius * Math.cos(2 * Math.PI * random());
  return latency.medianMs * Math.exp(latency.sigma * normal);
}
