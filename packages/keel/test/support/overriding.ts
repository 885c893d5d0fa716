/**
 * An object with some of its properties replaced, the rest read through to it: how the tests give
 * a store or a driver handle one misbehaving method while every other call reaches the real thing.
 */

/**
 * `target` with the properties in `replaced` read from there instead (an own property set to
 * `undefined` hides the target's); every other property reads through to `target`, its methods
 * bound to it, so their private fields still work.
 *
 * @example
 * const failing = overriding(store, { relinquish: async () => Promise.reject(new Error('disk I/O error')) });
 */
export function overriding<T extends object>(
  target: T,
  replaced: { readonly [K in keyof T]?: T[K] | undefined },
): T {
  return new Proxy(target, {
    get(inner, property) {
      if (Object.hasOwn(replaced, property)) return (replaced as Record<PropertyKey, unknown>)[property];
      const value = Reflect.get(inner, property, inner);
      return typeof value === 'function' ? value.bind(inner) : value;
    },
  });
}
