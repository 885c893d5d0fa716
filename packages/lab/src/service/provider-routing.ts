/**
 * @module
 * How a guarded charge reaches a provider, all of it Keel's policies: the whole call runs under a
 * deadline; each provider has its own circuit breaker, its own bulkhead and its own retry budget,
 * retries safe errors (the provider key makes a retry of a lost response harmless) and bounds each
 * attempt with a timeout — the provider's answer only, never our own write that pins the key to it;
 * and failover moves to provider B when A refused the call, is known to be down, or already holds
 * as many calls as a healthy provider ever needs.
 *
 * A provider that starts hanging is the costly case: every charge sent to it before its breaker
 * opens stays unknown, since its outcome cannot be learned in time and it is never failed over. So
 * the number of those charges is bounded twice. The bulkhead lets only a few calls wait on one
 * provider at once — a charge that finds them all taken was never sent and goes to B at once — and
 * the breaker opens after a few failures in a row instead of a share of a long window, so it trips
 * as soon as the held calls time out. The attempt timeout can then stay well above the longest
 * stall of a busy machine: a longer timeout delays the trip, but no longer lets more charges in.
 *
 * Failover never follows a timeout or a dropped connection: A may have charged, and B would charge
 * again under a key A never saw. Those stay unknown, and the recovery looks the charge up at every
 * provider by its key before anything is tried again.
 */
import {
  AllTargetsFailedError,
  bulkhead,
  type CircuitBreakerPolicy,
  circuitBreaker,
  deadline,
  type ExecutionContext,
  exponentialBackoff,
  failover,
  HttpStatusError,
  isRejection,
  isTransient,
  isUnprocessed,
  pipeline,
  retry,
  retryBudget,
  type Telemetry,
  timeout,
} from 'keel';
import type { ChargeRequest, ProviderCharge, ProviderClient } from './provider-client.ts';

/**
 * Where each provider key was last sent, kept durably. A charge whose outcome is unknown may still
 * be in flight at that provider (a slow response, a hang), so its retry must go back there with the
 * same key, where the provider deduplicates it — never to the other provider, which would charge a
 * second time under a key the first never shared.
 */
export interface ChargeTargets {
  /** Records that `key` is about to be sent to `provider`; called before every provider call. */
  pin(key: string, provider: string): Promise<void>;
  /** The provider `key` was last sent to, if any. */
  pinned(key: string): Promise<string | undefined>;
}

export interface ProviderRoutingOptions {
  readonly providers: readonly ProviderClient[];
  readonly targets: ChargeTargets;
  /** Budget of one attempt at one provider, in ms. */
  readonly attemptTimeoutMs: number;
  /** Budget of the whole charge across providers and retries, in ms (the request's deadline bounds it too). */
  readonly deadlineMs: number;
  readonly telemetry?: Telemetry | undefined;
}

export interface ProviderRouting {
  /**
   * Charges at the first provider that takes it, with `idempotencyKey` at each. `pinnedTo` is where
   * the key is pinned (`null`: nowhere) when the caller has just read it in its own transaction;
   * without it the routing reads it. `pinnedUnsent` is where the caller pinned a key never sent
   * (with `pinnedTo: null`): failover still applies, and a call there needs no second write.
   */
  charge(
    request: ChargeRequest,
    idempotencyKey: string,
    options?: { readonly pinnedTo?: string | null; readonly pinnedUnsent?: string },
  ): Promise<ProviderCharge>;
  /** The charge made with `idempotencyKey` at any provider, or `undefined` if none made one. */
  lookup(idempotencyKey: string): Promise<ProviderCharge | undefined>;
  /** The breaker of each provider, by provider name (for readiness and tests). */
  readonly breakers: ReadonlyMap<string, CircuitBreakerPolicy>;
}

/** A provider asked us to come back later than this: go elsewhere now instead of waiting. */
const LONGEST_RETRY_AFTER_MS = 500;

/**
 * Calls one provider may hold at once. A healthy provider answers a charge in tens of ms, so fifty
 * charges a second keep one or two slots busy; a charge that finds them all taken goes to the other
 * provider untried, which is safe, instead of joining calls that may be hanging. The slots are what
 * a hang can catch: about this many charges wait on a hanging provider before its breaker opens.
 */
export const PROVIDER_MAX_CONCURRENT_CALLS = 4;

/**
 * Failures in a row that open a provider's breaker. A hanging provider fails every call, so its
 * held calls time out one after another and trip it at once; a provider losing one response in five
 * (a failure each time) fails this many times in a row about once in three thousand calls.
 */
export const PROVIDER_FAILURES_TO_OPEN = 5;

/**
 * The provider certainly did not take the call: it refused it (an open breaker, 429, 503), or it was
 * never reached. A 500 or a timeout leaves the charge in doubt and is never failed over.
 */
export const certainlyNotCharged: (error: unknown) => boolean = isUnprocessed;

function retryable(error: unknown): boolean {
  if (error instanceof HttpStatusError && (error.retryAfterMs ?? 0) > LONGEST_RETRY_AFTER_MS) return false;
  return isTransient(error) && !isRejection(error);
}

/**
 * @example
 * const routing = providerRouting({ providers: [a, b], attemptTimeoutMs: 2_000, deadlineMs: 8_000, telemetry });
 * const charge = await routing.charge({ amount, currency, reference: orderId }, lease.derivedKey('charge'));
 */
export function providerRouting(options: ProviderRoutingOptions): ProviderRouting {
  const telemetry = options.telemetry === undefined ? {} : { telemetry: options.telemetry };
  const breakers = new Map<string, CircuitBreakerPolicy>();
  // Failures of our own database while pinning a key are no provider's fault: a breaker that
  // counted them would open on a busy pool and turn every charge away from a healthy provider.
  const pinFailures = new WeakSet<object>();
  const targets = options.providers.map((client) => {
    const name = `provider-${client.name}`;
    const breaker = circuitBreaker({
      name,
      window: { kind: 'consecutive', size: PROVIDER_FAILURES_TO_OPEN },
      openMs: 5_000,
      openBackoff: { factor: 2, maxMs: 60_000 },
      isFailure: (error) => !(typeof error === 'object' && error !== null && pinFailures.has(error)),
      ...telemetry,
    });
    breakers.set(client.name, breaker);
    return {
      name,
      client,
      policy: pipeline(
        retry({
          name,
          idempotent: true,
          maxAttempts: 3,
          budget: retryBudget({ ratio: 0.2, minPerSecond: 5 }),
          backoff: exponentialBackoff({ initialMs: 25, maxMs: 400, jitter: 'full' }),
          retryOn: retryable,
          maxRetryAfterMs: LONGEST_RETRY_AFTER_MS,
          ...telemetry,
        }),
        breaker,
        // Inside the breaker: a charge refused here never reached the provider and is no failure of
        // it (a rejection counts neither way); an open breaker refuses before taking a slot.
        bulkhead({ name, maxConcurrent: PROVIDER_MAX_CONCURRENT_CALLS, ...telemetry }),
      ),
      // Only the provider's own answer is timed: the pin before it is a write of ours, which a slow
      // pool may delay without the provider being any slower.
      attempt: timeout({ name, ms: options.attemptTimeoutMs, ...telemetry }),
    };
  });
  const overall = deadline({ name: 'charge', ms: options.deadlineMs, ...telemetry });
  return {
    breakers,
    charge(request, idempotencyKey, chargeOptions = {}) {
      return overall.execute(async (context) => {
        const pinned =
          chargeOptions.pinnedTo === undefined
            ? await options.targets.pinned(idempotencyKey)
            : (chargeOptions.pinnedTo ?? undefined);
        // Set once any attempt may have charged. The error failover sees is only the last attempt's
        // (an open breaker, say), while an earlier retry at the same provider may have been the one
        // whose response was lost.
        let inDoubt = false;
        // Where the key is pinned already: a retry there needs no second write.
        let pinnedHere = pinned ?? chargeOptions.pinnedUnsent;
        const call = async (target: (typeof targets)[number], attemptContext: ExecutionContext) => {
          if (pinnedHere !== target.client.name) {
            try {
              await options.targets.pin(idempotencyKey, target.client.name);
            } catch (error) {
              if (typeof error === 'object' && error !== null) pinFailures.add(error);
              throw error;
            }
            pinnedHere = target.client.name;
          }
          try {
            return await target.attempt.execute(
              ({ signal }) => target.client.charge(request, { idempotencyKey, signal }),
              attemptContext,
            );
          } catch (error) {
            if (!certainlyNotCharged(error)) inDoubt = true;
            throw error;
          }
        };
        if (pinned === undefined) {
          const providers = failover({
            name: 'providers',
            targets,
            failoverOn: (error) => !inDoubt && certainlyNotCharged(error),
            ...telemetry,
          });
          return providers.execute(call, context);
        }
        // This key already went to `pinned` and its outcome was never learned: only there, where the
        // key deduplicates, is another attempt safe. If that provider cannot answer, the charge
        // stays unknown until it can.
        const target = targets.find((t) => t.client.name === pinned);
        if (target === undefined) throw new Error(`provider key pinned to an unknown provider '${pinned}'`);
        return target.policy.execute((ctx) => call(target, ctx), context);
      });
    },
    async lookup(idempotencyKey) {
      return overall.execute(async ({ signal }) => {
        const errors: unknown[] = [];
        for (const client of options.providers) {
          try {
            const found = await client.findCharge(idempotencyKey, { signal });
            if (found !== undefined) return found;
          } catch (error) {
            errors.push(error);
          }
        }
        // A provider that could not be asked may hold the charge: not knowing is not "not charged".
        if (errors.length > 0) throw new AllTargetsFailedError(errors);
        return undefined;
      });
    },
  };
}
