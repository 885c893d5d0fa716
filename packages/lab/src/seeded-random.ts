/** Mulberry32: a small seeded generator, so a run with the same `--seed` makes the same arrivals. */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

/** Exponentially distributed gap with the given mean: Poisson arrivals. */
export function exponentialGap(random: () => number, meanMs: number): number {
  return -Math.log(1 - random()) * meanMs;
}
