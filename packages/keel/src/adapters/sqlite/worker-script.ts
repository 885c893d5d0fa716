/**
 * Where the SQLite adapters' worker scripts are: beside the module that starts them, as `.ts` when
 * running from source and `.js` when built.
 *
 * @module
 */

/**
 * The worker script `name` beside the module at `base` (its `import.meta.url`).
 *
 * @example
 * new Worker(workerScript('sqlite-worker', import.meta.url));
 */
export function workerScript(name: string, base: string): URL {
  const extension = new URL(base).pathname.endsWith('.ts') ? '.ts' : '.js';
  return new URL(`./${name}${extension}`, base);
}
