/**
 * @module
 * The lab starts servers as child processes — providers, service instances — that print one JSON
 * line with their URL once they listen. Waiting for that line, with a time limit, a clear error
 * when the child dies first, and its stderr kept for the message, is the same for every one of them.
 */
import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';

export interface AnnouncedUrlOptions {
  /** Names the child in errors: `'provider'`, `'service'`. */
  readonly what: string;
  readonly timeoutMs: number;
  /** Builds the caller's own error type. */
  readonly error: (message: string, options?: { cause?: unknown }) => Error;
}

/**
 * Resolves with the `url` of the child's first stdout line. The child's stderr is drained for its
 * whole life (a full pipe would block it) and its tail goes into errors; on failure the child is
 * killed.
 *
 * @example
 * const url = await announcedUrl(child, exited, { what: 'provider', timeoutMs: 10_000, error: (m, o) => new ProviderStartError(m, o) });
 */
export async function announcedUrl(
  child: ChildProcess,
  exited: Promise<unknown>,
  options: AnnouncedUrlOptions,
): Promise<string> {
  const { what, timeoutMs } = options;
  const ours = new WeakSet<Error>();
  const error = (message: string, errorOptions?: { cause?: unknown }) => {
    const made = options.error(message, errorOptions);
    ours.add(made);
    return made;
  };
  let stderr = '';
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (chunk: string) => {
    stderr = (stderr + chunk).slice(-4_000);
  });
  const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
  let timer: NodeJS.Timeout | undefined;
  try {
    const line = await Promise.race([
      once(lines, 'line').then(([first]) => String(first)),
      exited.then(() => {
        throw error(
          `${what} exited with ${child.exitCode ?? child.signalCode} before listening: ${stderr.trim()}`,
        );
      }),
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(error(`${what} did not listen within ${timeoutMs} ms: ${stderr.trim()}`)),
          timeoutMs,
        );
      }),
    ]);
    const announced = JSON.parse(line) as { url?: unknown };
    if (typeof announced.url !== 'string') throw error(`${what} printed no url: ${line}`);
    return announced.url;
  } catch (cause) {
    child.kill('SIGKILL');
    if (cause instanceof Error && ours.has(cause)) throw cause;
    throw error(`${what} printed an unreadable address`, { cause });
  } finally {
    clearTimeout(timer);
    lines.close();
    child.stdout?.resume();
  }
}
