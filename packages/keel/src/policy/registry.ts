/**
 * One configuration, one set of instances per key: each endpoint or provider gets its own breaker,
 * budget and limiter, built the same way, created on first use and reused after.
 *
 * @module
 */
import { checkFunction } from './options.ts';

/**
 * A lazily filled map from key to whatever `build` makes for it.
 *
 * @example
 * const providers = policyRegistry((name: 'a' | 'b') =>
 *   pipeline(retry({ budget: retryBudget() }), circuitBreaker({ name }), timeout({ ms: 2_000, name })));
 * await providers.get('a').execute(chargeOnA);
 */
export class PolicyRegistry<K, V> {
  readonly #build: (key: K) => V;
  readonly #instances = new Map<K, V>();

  constructor(build: (key: K) => V) {
    this.#build = checkFunction('build', build);
  }

  /** The instance for `key`, built on first use. */
  get(key: K): V {
    let value = this.#instances.get(key);
    if (value === undefined) {
      value = this.#build(key);
      this.#instances.set(key, value);
    }
    return value;
  }

  /** Whether `key` has an instance yet. */
  has(key: K): boolean {
    return this.#instances.has(key);
  }

  /** Every instance built so far, for health checks and state snapshots. */
  entries(): IterableIterator<[K, V]> {
    return this.#instances.entries();
  }

  /** Forgets the instance for `key`; the next `get` builds a fresh one. */
  delete(key: K): boolean {
    return this.#instances.delete(key);
  }
}

/** Builds a {@link PolicyRegistry}. */
export function policyRegistry<K, V>(build: (key: K) => V): PolicyRegistry<K, V> {
  return new PolicyRegistry(build);
}
