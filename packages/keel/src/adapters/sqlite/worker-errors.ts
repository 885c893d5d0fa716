/**
 * SQLite errors across a worker thread's boundary: a worker flattens an error into plain data, since
 * structured clone would drop the fields `node:sqlite` gives it (`code`, `errcode`, `errstr`), and
 * the service's side rebuilds an `Error` with them, so a caller tells `SQLITE_BUSY` from other
 * failures as it would on its own handle. The worker scripts import this module, so it imports
 * nothing.
 *
 * @module
 */

/** A SQLite error as a worker posts it. */
export interface WorkerErrorData {
  readonly name: string;
  readonly message: string;
  readonly code?: unknown;
  readonly errcode?: unknown;
  readonly errstr?: unknown;
}

/** The error as plain data a worker can post. */
export function flattenError(error: unknown): WorkerErrorData {
  if (!(error instanceof Error)) return { name: 'Error', message: String(error) };
  const { code, errcode, errstr } = error as { code?: unknown; errcode?: unknown; errstr?: unknown };
  return { name: error.name, message: error.message, code, errcode, errstr };
}

/** An `Error` with the fields of the flattened one. */
export function rebuildError(data: WorkerErrorData): Error {
  const error = new Error(data.message);
  error.name = data.name;
  if (data.code !== undefined) Object.assign(error, { code: data.code });
  if (data.errcode !== undefined) Object.assign(error, { errcode: data.errcode });
  if (data.errstr !== undefined) Object.assign(error, { errstr: data.errstr });
  return error;
}

/** `node:sqlite`'s SQLITE_BUSY and SQLITE_LOCKED, with any extended code. */
export function isBusyError(error: unknown): boolean {
  const code = (error as { errcode?: unknown } | null)?.errcode;
  return typeof code === 'number' && ((code & 0xff) === 5 || (code & 0xff) === 6);
}
