/**
 * @module
 * The provider's fault state and every decision taken from it: whether a request meets an outage,
 * an injected error or a hang, how long it takes, and whether its response is dropped after the
 * charge committed. All randomness comes from one seeded source, so the same seed and the same
 * order of requests give the same faults.
 */
import { seededRandom } from '../seeded-random.ts';
import type { FaultSettings } from './fault-settings.ts';
import { type LognormalLatency, lognormalOf, sampleLatencyMs } from './latency-sampler.ts';

/** Wall time in epoch milliseconds; outage windows are read from it. */
export interface ProviderClock {
  now(): number;
}

/** An answer the provider gives instead of doing the work. */
export interface InjectedRejection {
  kind: 'outage' | 'error';
  status: number;
  /** Seconds for `Retry-After`, when the status carries one. */
  retryAfterSeconds?: number;
}

/** What happens to a faulted request before its work starts. */
export type Admission =
  | { kind: 'proceed' }
  | InjectedRejection
  /** The client gave up while the request was held by a hang, or the provider is closing. */
  | { kind: 'abandoned' };

const DEFAULT_ERROR_STATUSES: readonly number[] = [500, 503, 429];
const DEFAULT_RETRY_AFTER_SECONDS = 1;

interface HeldRequest {
  release(proceed: boolean): void;
}

export class FaultInjector {
  readonly #clock: ProviderClock;
  readonly #held = new Set<HeldRequest>();
  #random: () => number;
  #settings: FaultSettings = {};
  #latency: LognormalLatency | undefined;

  constructor(seed: number, clock: ProviderClock) {
    this.#random = seededRandom(seed);
    this.#clock = clock;
  }

  /** The plan in force, as last set. */
  get settings(): FaultSettings {
    return this.#settings;
  }

  /** Requests currently held by a hang. */
  get held(): number {
    return this.#held.size;
  }

  /** Replaces the plan. Lifting a hang lets every held request go on. */
  set(settings: FaultSettings): void {
    this.#settings = structuredClone(settings);
    this.#latency = settings.latency ? lognormalOf(settings.latency) : undefined;
    if (settings.seed !== undefined) this.#random = seededRandom(settings.seed);
    if (!settings.hang) this.#releaseAll(true);
  }

  clear(): void {
    this.set({});
  }

  /** Whether faults apply to a request; writes always, reads only when the plan says so. */
  applies(isRead: boolean): boolean {
    return !isRead || this.#settings.applyToReads === true;
  }

  /**
   * Decides, in order, outage, injected error and hang. A hang resolves when it is lifted, or as
   * `abandoned` when `clientGone` fires first.
   */
  async admit(clientGone: AbortSignal): Promise<Admission> {
    const outageEnd = this.#outageEnd(this.#clock.now());
    if (outageEnd !== undefined) {
      const retryAfterSeconds = Math.max(1, Math.ceil((outageEnd - this.#clock.now()) / 1_000));
      return { kind: 'outage', status: 503, retryAfterSeconds };
    }
    const errorRate = this.#settings.errorRate ?? 0;
    if (errorRate > 0 && this.#random() < errorRate) return this.#injectedError();
    if (this.#settings.hang) {
      const proceed = await this.#hold(clientGone);
      return proceed ? { kind: 'proceed' } : { kind: 'abandoned' };
    }
    return { kind: 'proceed' };
  }

  /** Added processing time for one request, in milliseconds. */
  latencyMs(): number {
    return this.#latency ? sampleLatencyMs(this.#latency, this.#random) : 0;
  }

  /** Whether to destroy the socket instead of sending a successful response. */
  dropsResponse(): boolean {
    const rate = this.#settings.dropResponseRate ?? 0;
    return rate > 0 && this.#random() < rate;
  }

  /** Lets go of every held request without doing its work: the provider is shutting down. */
  abandonHeld(): void {
    this.#releaseAll(false);
  }

  #injectedError(): InjectedRejection {
    const statuses = this.#settings.errorStatuses ?? DEFAULT_ERROR_STATUSES;
    const status = statuses[Math.floor(this.#random() * statuses.length)] ?? 500;
    if (status !== 429 && status !== 503) return { kind: 'error', status };
    const retryAfterSeconds = this.#settings.retryAfterSeconds ?? DEFAULT_RETRY_AFTER_SECONDS;
    return { kind: 'error', status, retryAfterSeconds };
  }

  #outageEnd(now: number): number | undefined {
    const outage = this.#settings.outage;
    if (!outage) return undefined;
    if ('untilMs' in outage) return now < outage.untilMs ? outage.untilMs : undefined;
    let end: number | undefined;
    for (const window of outage.windows) {
      if (window.fromMs <= now && now < window.untilMs) end = Math.max(end ?? 0, window.untilMs);
    }
    return end;
  }

  #hold(clientGone: AbortSignal): Promise<boolean> {
    if (clientGone.aborted) return Promise.resolve(false);
    return new Promise<boolean>((resolve) => {
      const onGone = () => held.release(false);
      const held: HeldRequest = {
        release: (proceed) => {
          this.#held.delete(held);
          clientGone.removeEventListener('abort', onGone);
          resolve(proceed);
        },
      };
      this.#held.add(held);
      clientGone.addEventListener('abort', onGone, { once: true });
    });
  }

  #releaseAll(proceed: boolean): void {
    for (const held of [...this.#held]) held.release(proceed);
  }
}
