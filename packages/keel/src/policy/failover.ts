/**
 * Failover across an ordered list of targets — payment providers, regions, replicas — each behind its
 * own policy (typically a pipeline with that target's circuit breaker and timeout). A call goes to
 * the first target whose policy admits it; when that target fails with an error worth failing over
 * on, or refuses the call (its breaker is open), the next target gets it. While the primary's breaker
 * stays open, calls go straight to the secondary without touching the primary; once it closes again,
 * traffic returns to the primary by itself.
 *
 * Composition: the operation is told its target, so `execute` takes `(target, context)` rather than
 * a plain operation, and a failover is not a layer of `pipeline()`. Put the per-target layers in each
 * target's `policy`, and put the failover inside whatever bounds the whole call — pass the outer
 * context on as the second argument so the caller's signal and deadline reach every target:
 *
 *     overall.execute((ctx) => providers.execute((provider, c) => provider.charge(order, c), ctx))
 *
 * where `overall` is, say, `pipeline(fallback(...), timeout({ ms: 10_000 }))`.
 *
 * Answers: an outage of one provider taking down checkout when a second provider could have served.
 *
 * @module
 */

import { isTransient, isUnprocessed } from '../errors/is-transient.ts';
import { InvalidOptionError } from '../errors/keel-error.ts';
import { AllTargetsFailedError } from '../errors/policy-errors.ts';
import type { Clock } from './clock.ts';
import { type CommonOptions, checkFunction, resolveTime } from './options.ts';
import {
  CALL,
  Context,
  type ExecuteOptions,
  type ExecutionContext,
  type Operation,
  type Policy,
} from './policy.ts';
import { type Disposable, EventSource, type PolicyListener } from './telemetry.ts';
import type { TimerWheel } from './timer-wheel.ts';

/** One place a call can go. Add whatever the operation needs to reach it (a client, a URL). */
export interface FailoverTarget {
  /** Names the target in events and errors. */
  readonly name: string;
  /**
   * The layers this target's calls run through — usually its circuit breaker and timeout. Without
   * one, the target is called bare. Keep fallbacks out of it: a fallback answers for the whole
   * call, so it belongs outside the failover, after every target has had its chance.
   */
  readonly policy?: Policy<unknown> | undefined;
}

/** An operation that is told which target it runs against. */
export type FailoverOperation<Target, T> = (target: Target, context: ExecutionContext) => PromiseLike<T> | T;

/** Options of {@link failover}. */
export interface FailoverOptions<Target extends FailoverTarget> extends CommonOptions {
  /** The targets in order of preference: the primary first. */
  targets: readonly Target[];
  /**
   * Whether repeating the call on another target is harmless even when the first target may have
   * acted on it (a read, or a write the targets deduplicate between them). A charge is not: after a
   * timeout at provider A the card may be charged, and provider B would charge it again.
   * @default false
   */
  idempotent?: boolean;
  /**
   * Which errors move the call on to the next target. Any other error — a declined card, a
   * validation error, a 4xx, or an outcome that is unknown — is rethrown at once.
   * @default isUnprocessed (the call certainly did not take effect: an open breaker, a refused
   * connection, 429/503), or isTransient (also timeouts, resets and 5xx) when `idempotent` is true
   */
  failoverOn?: (error: unknown) => boolean;
}

/** See {@link failover}. */
export class FailoverPolicy<Target extends FailoverTarget = FailoverTarget> {
  readonly targets: readonly Target[];
  readonly failoverOn: (error: unknown) => boolean;
  readonly clock: Clock;
  readonly timers: TimerWheel;
  readonly #events: EventSource;

  constructor(options: FailoverOptions<Target>) {
    const { clock, timers } = resolveTime(options);
    this.#events = new EventSource('failover', options.name ?? 'failover', options.telemetry);
    this.clock = clock;
    this.timers = timers;
    const targets = options.targets;
    if (!Array.isArray(targets) || targets.length === 0) {
      throw new InvalidOptionError('targets', 'must be a non-empty array of { name, policy? }');
    }
    const names = new Set<string>();
    targets.forEach((target: Target, i) => {
      if (typeof target?.name !== 'string' || target.name === '') {
        throw new InvalidOptionError(`targets[${i}].name`, 'must be a non-empty string');
      }
      if (names.has(target.name)) {
        throw new InvalidOptionError(`targets[${i}].name`, `must be unique, '${target.name}' is repeated`);
      }
      names.add(target.name);
      if (target.policy !== undefined && typeof target.policy.run !== 'function') {
        throw new InvalidOptionError(`targets[${i}].policy`, 'must be a Keel policy');
      }
    });
    this.targets = Object.freeze([...targets]);
    if (options.idempotent !== undefined && typeof options.idempotent !== 'boolean') {
      throw new InvalidOptionError('idempotent', 'must be a boolean');
    }
    const fallbackRule = options.idempotent === true ? isTransient : isUnprocessed;
    this.failoverOn = checkFunction('failoverOn', options.failoverOn ?? fallbackRule);
  }

  /**
   * Runs `fn` against the first target that takes the call, moving down the list on failures that
   * `failoverOn` accepts. Rejects with `AllTargetsFailedError` (each target's error, in order) when
   * every target failed; with the error itself when it is not one to fail over on, or when the
   * caller aborted or the deadline passed before the next target could be tried.
   *
   * @example
   * const receipt = await providers.execute((provider, { signal }) => provider.client.charge(order, { signal }));
   */
  async execute<T>(
    fn: FailoverOperation<Target, T>,
    options?: ExecuteOptions | ExecutionContext,
  ): Promise<T> {
    const context = Context.from(options, this.timers);
    const events = this.#events;
    const startedAt = events.active ? this.clock.now() : 0;
    const targets = this.targets;
    let errors: unknown[] | undefined;
    for (let i = 0; ; i++) {
      const target = targets[i] as Target;
      try {
        const value = await this.#call(target, fn, context);
        if (events.active) {
          const durationMs = this.clock.now() - startedAt;
          events.emit({ policy: 'failover', name: events.name, type: 'success', durationMs });
        }
        return value;
      } catch (error) {
        errors ??= [];
        errors.push(error);
        const next = targets[i + 1];
        const worthFailingOver = this.failoverOn(error);
        if (
          next === undefined ||
          !worthFailingOver ||
          context.callerAborted ||
          this.clock.now() >= context.deadline
        ) {
          // Every target failed; otherwise the error is the answer (or no time is left to find a better one).
          const failure = next === undefined && worthFailingOver ? new AllTargetsFailedError(errors) : error;
          if (events.active) {
            const durationMs = this.clock.now() - startedAt;
            events.emit({
              policy: 'failover',
              name: events.name,
              type: 'failure',
              durationMs,
              error: failure,
            });
          }
          throw failure;
        }
        if (events.active) {
          events.emit({
            policy: 'failover',
            name: events.name,
            type: 'failover',
            from: target.name,
            to: next.name,
            error,
          });
        }
      }
    }
  }

  /** Subscribes to this failover's events. */
  onEvent(listener: PolicyListener): Disposable {
    return this.#events.subscribe(listener);
  }

  #call<T>(target: Target, fn: FailoverOperation<Target, T>, context: Context): PromiseLike<T> | T {
    const policy = target.policy;
    if (policy === undefined) return fn(target, context);
    const operation: Operation<T> = (ctx) => fn(target, ctx);
    return policy.run(operation, context, CALL) as Promise<T>;
  }
}

/**
 * Tries the targets in order, each behind its own policy, and moves on when one fails with a
 * transient error or refuses the call.
 *
 * @example
 * const providers = failover({
 *   targets: [
 *     { name: 'stripe', client: stripe, policy: pipeline(circuitBreaker({ name: 'stripe' }), timeout({ ms: 2_000 })) },
 *     { name: 'adyen', client: adyen, policy: pipeline(circuitBreaker({ name: 'adyen' }), timeout({ ms: 2_000 })) },
 *   ],
 * });
 * const receipt = await providers.execute((provider, { signal }) => provider.client.charge(order, { signal }));
 */
export function failover<Target extends FailoverTarget>(
  options: FailoverOptions<Target>,
): FailoverPolicy<Target> {
  return new FailoverPolicy(options);
}
