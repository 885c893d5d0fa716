/**
 * Starts two worker processes on the same store, lets both connect, then releases them at once, so
 * the race is between processes and not decided by start-up time.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export interface WorkerOutcomes {
  executed: number;
  replayed: number;
  conflicted: number;
  errors: string[];
}

/** Starts the two workers, lets them connect, then releases both at once. */
export async function raceTwoProcesses(args: string[]): Promise<WorkerOutcomes[]> {
  const children = [0, 1].map(() =>
    spawn(process.execPath, ['--conditions=keel-source', WORKER, ...args], {
      stdio: ['pipe', 'pipe', 'inherit'],
    }),
  );
  const outputs = children.map((child) => {
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
    const ready = new Promise<void>((resolve, reject) => {
      child.stdout.on('data', () => out.startsWith('ready\n') && resolve());
      child.once('exit', () => reject(new Error(`worker exited before ready: ${out}`)));
    });
    const done = new Promise<string>((resolve, reject) =>
      child.once('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`worker exited ${code}`)))),
    );
    done.catch(() => undefined); // awaited below; this only keeps an early exit from going unhandled
    return { ready, done };
  });
  await Promise.all(outputs.map((o) => o.ready));
  for (const child of children) child.stdin.end('go\n');
  const results = await Promise.all(outputs.map((o) => o.done));
  return results.map((out) => JSON.parse(out.slice('ready\n'.length)) as WorkerOutcomes);
}
const WORKER = fileURLToPath(new URL('./fixtures/two-process-worker.ts', import.meta.url));
