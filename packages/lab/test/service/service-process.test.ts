import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Providers, scratchDirectory, startProviders } from './service-harness.ts';

const SERVICE_PROCESS = fileURLToPath(new URL('../../src/service/service-process.ts', import.meta.url));

describe('the service as a process', () => {
  const scratch = scratchDirectory('service-process');
  let providers: Providers;

  beforeAll(async () => {
    providers = await startProviders(scratch.path);
  });

  afterAll(async () => {
    await providers?.stop();
    scratch.remove();
  });

  const start = async (db: string, extra: string[], stdin: 'ignore' | 'pipe') => {
    const child = spawn(
      process.execPath,
      [
        '--conditions=keel-source',
        SERVICE_PROCESS,
        '--db',
        join(scratch.path, db),
        '--provider-a',
        providers.a.url,
        '--provider-b',
        providers.b.url,
        '--port',
        '0',
        '--rows',
        '100',
        ...extra,
      ],
      { stdio: [stdin, 'pipe', 'inherit'] },
    );
    const exited = once(child, 'exit');
    const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
    const [line] = (await once(lines, 'line')) as [string];
    const announced = JSON.parse(line) as { url: string; mode: string };
    return { child, exited, announced };
  };

  it('prints its URL once listening, serves, and exits 0 on SIGTERM', async () => {
    const { child, exited, announced } = await start('process.db', [], 'ignore');
    expect(announced.mode).toBe('guarded');
    const live = await fetch(`${announced.url}/health/live`);
    expect(live.status).toBe(200);
    child.kill('SIGTERM');
    const [code] = await exited;
    expect(code).toBe(0);
  });

  it('with --exit-with-stdin, stops cleanly when its parent closes the pipe (as a dying lab does)', async () => {
    const { child, exited, announced } = await start('lifeline.db', ['--exit-with-stdin'], 'pipe');
    expect((await fetch(`${announced.url}/health/live`)).status).toBe(200);
    child.stdin?.end();
    const [code, signal] = await exited;
    expect({ code, signal }).toEqual({ code: 0, signal: null });
    await expect(fetch(`${announced.url}/health/live`)).rejects.toThrow();
  });
});
