/**
 * A fallback: when the call fails, answer with something else — a cached copy, a default, a degraded
 * response — instead of the error. It is the outermost layer of a pipeline, so it sees the error
 * only after retries, breakers and timeouts have had their say.
 *
 * Answers: a page that fails as a whole because one non-essential dependency (recommendations, a
 * currency rate) is down.
 *
 * @module
 */
import { InvalidOptionError } from '../errors/keel-error.ts';
import { type CommonOptions, checkFunction, resolveTime } from './options.ts';
import { BasePolicy, type Context, type ExecutionContext, type Next, type Operation } from './policy.ts';
import { EventSource } from './telemetry.ts';

/** What a fallback answers with: a fixed value, or a function of the error. */
export type FallbackAction<F> =
  | { readonly value: F }
  | { readonly fn: (error: unknown, context: ExecutionContext) => F | PromiseLike<F> };

/** Options of {@link fallback}. */
export interface FallbackOptions extends CommonOptions {
  /**
   * Which errors the fallback answers; any other error is rethrown.
   * @default every error
   */
  handles?: (error: unknown) => boolean;
}

const handlesEverything = (): boolean => true;

const DEFAULTS = Object.freeze({ handles: handlesEverything });

/** See {@link fallback}. */
export class FallbackPolicy<F> extends BasePolicy<F> {
  readonly handles: (error: unknown) => boolean;
  readonly #value: F | undefined;
  readonly #fn: ((error: unknown, context: ExecutionContext) => F | PromiseLike<F>) | undefined;

  constructor(action: FallbackAction<F>, options: FallbackOptions = {}) {
    const { timers } = resolveTime(options);
    super(new EventSource('fallback', options.name ?? 'fallback', options.telemetry), timers);
    const hasValue = typeof action === 'object' && action !== null && 'value' in action;
    const hasFn = typeof action === 'object' && action !== null && 'fn' in action;
    if (hasValue === hasFn) {
      throw new InvalidOptionError('action', 'must be either { value } or { fn }');
    }
    if ('fn' in action) {
      this.#fn = checkFunction('fn', action.fn);
    } else {
      this.#value = action.value;
    }
    this.handles = checkFunction('handles', options.handles ?? DEFAULTS.handles);
  }

  async run<T>(fn: Operation<T>, context: Context, next: Next): Promise<T | F> {
    try {
      return await next.run(fn, context);
    } catch (error) {
      if (!this.handles(error)) throw error;
      if (this.events.active)
        this.events.emit({ policy: 'fallback', name: this.events.name, type: 'fallback', error });
      return this.#fn === undefined ? (this.#value as F) : await this.#fn(error, context);
    }
  }
}

/**
 * Answers with `value`, or with what `fn` makes of the error, when the call fails with an error that
 * `handles` accepts. The result type widens to `T | F`.
 *
 * @example
 * const rates = pipeline(fallback({ fn: () => cache.lastRates() }), retry(), timeout({ ms: 300 }));
 * const quote = await rates.execute(({ signal }) => fx.latest({ signal }));
 *
 * @example
 * const noRecommendations = fallback({ value: [] as Product[] }, { handles: isTransient });
 */
export function fallback<F>(action: FallbackAction<F>, options?: FallbackOptions): FallbackPolicy<F> {
  return new FallbackPolicy(action, options);
}
