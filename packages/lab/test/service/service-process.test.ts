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

  it('prints its URL once listening, serves, and exits 0 on SIGTERM', async () => {
    const child = spawn(
      process.execPath,
      [
        '--conditions=keel-source',
        SERVICE_PROCESS,
        '--db',
        join(scratch.path, 'process.db'),
        '--provider-a',
        providers.a.url,
        '--provider-b',
        providers.b.url,
        '--port',
        '0',
        '--rows',
        '100',
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    const exited = once(child, 'exit');
    const lines = createInterface({ input: child.stdout });
    const [line] = (await once(lines, 'line')) as [string];
    const announced = JSON.parse(line) as { url: string; mode: string };
    expect(announced.mode).toBe('guarded');
    const live = await fetch(`${announced.url}/health/live`);
    expect(live.status).toBe(200);
    child.kill('SIGTERM');
    const [code] = await exited;
    expect(code).toBe(0);
  });
});
