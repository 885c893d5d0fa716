/**
 * Composition. `pipeline(a, b, c)` runs `a` outermost and `c` innermost around the function. The
 * layers are linked once at construction, so a call through the pipeline allocates no closure per
 * layer.
 *
 * The recommended order, outermost first:
 *
 *   fallback → retry (with a budget) → circuit breaker → bulkhead / limiter → timeout (per attempt)
 *
 * Retry outside the breaker so an open circuit stops the retries; the per-attempt timeout innermost
 * so each attempt gets its own budget while the surrounding deadline bounds them all.
 *
 * @module
 */
import { InvalidOptionError } from '../errors/keel-error.ts';
import {
  CALL,
  type Context,
  type ExecuteOptions,
  type ExecutionContext,
  type FallbackOf,
  type Next,
  type Operation,
  type Policy,
  Context as PolicyContext,
} from './policy.ts';
import type { Disposable, PolicyListener } from './telemetry.ts';
import { sharedTimerWheel, type TimerWheel } from './timer-wheel.ts';

class Link implements Next {
  readonly #policy: Policy<unknown>;
  readonly #next: Next;
  constructor(policy: Policy<unknown>, next: Next) {
    this.#policy = policy;
    this.#next = next;
  }
  run<T>(fn: Operation<T>, context: Context): Promise<T> {
    return this.#policy.run(fn, context, this.#next) as Promise<T>;
  }
}

/** Options of {@link pipeline} when passed as the first argument. */
export interface PipelineOptions {
  /** The wheel whose shared signals the guarded function receives. @default the shared wheel */
  timers?: TimerWheel;
}

/** See {@link pipeline}. */
export class Pipeline<F = never> implements Policy<F> {
  declare readonly fallbackType?: F;
  readonly policies: readonly Policy<unknown>[];
  readonly #head: Next;
  readonly #timers: TimerWheel;

  constructor(policies: readonly Policy<unknown>[], options: PipelineOptions = {}) {
    if (policies.length === 0)
      throw new InvalidOptionError('policies', 'a pipeline needs at least one policy');
    const flat: Policy<unknown>[] = [];
    for (const p of policies) {
      if (p instanceof Pipeline) flat.push(...p.policies);
      else if (p && typeof p.run === 'function') flat.push(p);
      else throw new InvalidOptionError('policies', 'every element must be a Keel policy');
    }
    this.policies = Object.freeze(flat);
    this.#timers = options.timers ?? sharedTimerWheel();
    this.#head = chain(flat, CALL);
  }

  execute<T>(fn: Operation<T>, options?: ExecuteOptions | ExecutionContext): Promise<T | F> {
    return this.#head.run(fn, PolicyContext.from(options, this.#timers));
  }

  run<T>(fn: Operation<T>, context: Context, next: Next): Promise<T | F> {
    // Nested inside another chain: link to that chain's rest for this call.
    return (next === CALL ? this.#head : chain(this.policies, next)).run(fn, context);
  }

  onEvent(listener: PolicyListener): Disposable {
    const subscriptions = this.policies.map((p) => p.onEvent(listener));
    return {
      dispose: () => {
        for (const s of subscriptions) s.dispose();
      },
    };
  }
}

function chain(policies: readonly Policy<unknown>[], tail: Next): Next {
  let next = tail;
  for (let i = policies.length - 1; i >= 0; i--) next = new Link(policies[i] as Policy<unknown>, next);
  return next;
}

/**
 * Composes policies, outermost first.
 *
 * @example
 * const guarded = pipeline(
 *   retry({ maxAttempts: 3, budget: retryBudget({ ratio: 0.2 }) }),
 *   circuitBreaker({ name: 'provider-a' }),
 *   timeout({ ms: 2_000 }),
 * );
 * await guarded.execute(({ signal }) => providerA.charge(req, { signal }));
 */
export function pipeline<P extends readonly Policy<unknown>[]>(
  ...policies: P
): Pipeline<FallbackOf<P[number]>> {
  return new Pipeline(policies);
}
