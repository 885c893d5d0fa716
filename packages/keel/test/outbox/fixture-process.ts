/**
 * Runs one of `fixtures/` as a child process on the package's sources, for tests that kill or race
 * processes: it resolves with how the process ended and what it wrote to stderr.
 */
import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const packageRoot = join(here, '..', '..');

/** How a fixture process ended. */
export interface FixtureExit {
  readonly code: number | null;
  readonly signal: string | null;
  readonly stderr: string;
}

/**
 * @example
 * const { signal } = await runFixture('relay-crash-worker.ts', [url, table, '300', '17']);
 */
export function runFixture(fixture: string, args: readonly string[]): Promise<FixtureExit> {
  return new Promise((resolve) => {
    const child = spawn(
      process.execPath,
      ['--conditions=keel-source', join(here, 'fixtures', fixture), ...args],
      {
        cwd: packageRoot,
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let stderr = '';
    child.stderr.on('data', (chunk) => {
      stderr += chunk;
    });
    child.on('exit', (code, signal) => resolve({ code, signal, stderr }));
  });
}
