/**
 * @module
 * Watches a service's circuit breakers from the outside, the way an operator would: it reads
 * `keel_breaker_state` on `/metrics` every interval and keeps each change, so the report can draw
 * when a breaker opened and closed against the faults that opened it. A scrape that fails (the
 * instance killed, say) is skipped; the sampler never fails the run it watches.
 */
import { checkInteger } from 'keel';
import type { BreakerSample } from './scenario.ts';

const STATES: readonly BreakerSample['state'][] = ['closed', 'half-open', 'open', 'isolated'];
const BREAKER_LINE = /^keel_breaker_state\{[^}]*\bname="([^"]+)"[^}]*\}\s+(\d+)/gm;

export interface BreakerSamplerOptions {
  /** The service whose `/metrics` is read, e.g. `http://127.0.0.1:4100`. */
  readonly url: string;
  /** The start of the run, on the `performance.now()` clock. */
  readonly startedAtMs: number;
  /** @default 250 */
  readonly intervalMs?: number;
}

export interface BreakerSampler {
  /** Stops sampling; resolves with every change seen, oldest first. */
  stop(): Promise<BreakerSample[]>;
}

/**
 * Reads the breaker states out of a Prometheus text exposition.
 *
 * @example
 * breakerStates('keel_breaker_state{name="provider-a"} 2\n'); // Map { 'provider-a' => 'open' }
 */
export function breakerStates(exposition: string): Map<string, BreakerSample['state']> {
  const states = new Map<string, BreakerSample['state']>();
  for (const [, name, value] of exposition.matchAll(BREAKER_LINE)) {
    const state = STATES[Number(value)];
    if (name !== undefined && state !== undefined) states.set(name, state);
  }
  return states;
}

/**
 * @example
 * const sampler = sampleBreakers({ url: instances.urls[0], startedAtMs: performance.now() });
 * // … the load runs …
 * const breakers = await sampler.stop(); // [{ atMs: 0, breaker: 'provider-a', state: 'closed' }, …]
 */
export function sampleBreakers(options: BreakerSamplerOptions): BreakerSampler {
  const intervalMs = checkInteger('intervalMs', options.intervalMs ?? 250, 10);
  const samples: BreakerSample[] = [];
  const last = new Map<string, BreakerSample['state']>();
  let stopped = false;
  const scrape = async () => {
    try {
      const response = await fetch(new URL('/metrics', options.url), {
        signal: AbortSignal.timeout(intervalMs * 4),
      });
      if (!response.ok) return;
      const atMs = Math.round(performance.now() - options.startedAtMs);
      for (const [breaker, state] of breakerStates(await response.text())) {
        if (last.get(breaker) === state) continue;
        last.set(breaker, state);
        samples.push({ atMs, breaker, state });
      }
    } catch {
      // The instance may be down (killed on purpose); the next scrape tries again.
    }
  };
  const loop = (async () => {
    while (!stopped) {
      await scrape();
      await new Promise((resolve) => setTimeout(resolve, intervalMs));
    }
  })();
  return {
    async stop() {
      stopped = true;
      await loop;
      return samples;
    },
  };
}
