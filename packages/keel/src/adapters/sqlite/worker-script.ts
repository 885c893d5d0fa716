/**
 * What the SQLite adapters' worker threads share on the service's side: finding a worker's script
 * beside the module that starts it, and turning the plain error data a worker posts back into an
 * `Error` with the fields `node:sqlite` gives its errors.
 *
 * @module
 */

/**
 * The worker script `name` beside the module at `base` (its `import.meta.url`): `.ts` when running
 * from source, `.js` when built.
 *
 * @example
 * new Worker(workerScript('sqlite-worker', import.meta.url));
 */
export function workerScript(name: string, base: string): URL {
  const extension = new URL(base).pathname.endsWith('.ts') ? '.ts' : '.js';
  return new URL(`./${name}${extension}`, base);
}

/** A SQLite error as a worker posts it: structured clone would drop `code`, `errcode` and `errstr`. */
export interface WorkerErrorData {
  readonly name: string;
  readonly message: string;
  readonly code?: unknown;
  readonly errcode?: unknown;
  readonly errstr?: unknown;
}

/**
 * Rebuilds a SQLite error with the fields `node:sqlite` gives it (`code`, `errcode`, `errstr`), so a
 * caller tells `SQLITE_BUSY` from other failures as it would on its own handle.
 */
export function rebuildError(data: WorkerErrorData): Error {
  const error = new Error(data.message);
  error.name = data.name;
  if (data.code !== undefined) Object.assign(error, { code: data.code });
  if (data.errcode !== undefined) Object.assign(error, { errcode: data.errcode });
  if (data.errstr !== undefined) Object.assign(error, { errstr: data.errstr });
  return error;
}
