import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { DEMO_USER } from '../../src/service/serve-command.ts';
import { scratchDirectory } from './service-harness.ts';

const CLI = fileURLToPath(new URL('../../src/cli.ts', import.meta.url));

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('keel serve', () => {
  const scratch = scratchDirectory('keel-serve');
  afterAll(() => scratch.remove());

  it('prints its URLs, answers the sample requests, and stops everything with exit 0 on SIGINT', async () => {
    const data = scratch.file('data');
    const child = spawn(
      process.execPath,
      ['--conditions=keel-source', CLI, 'serve', '--port', '0', '--rows', '200', '--data', data],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      stderr += chunk;
    });
    const printed: string[] = [];
    for await (const line of createInterface({ input: child.stdout })) {
      printed.push(line);
      if (line.startsWith('Ctrl-C')) break;
    }
    const banner = printed.join('\n');
    const url = /^\s+service\s+(http:\/\/\S+)$/m.exec(banner)?.[1];
    const providers = [...banner.matchAll(/^\s+provider ([ab])\s+(http:\/\/\S+)\s+\(pid (\d+);/gm)].map(
      (m) => ({
        name: m[1],
        url: m[2] as string,
        pid: Number(m[3]),
      }),
    );
    expect(url, stderr).toBeDefined();
    expect(providers.map((p) => p.name)).toEqual(['a', 'b']);
    expect(banner).toContain(`${url}/metrics`);
    expect(banner).toContain('Idempotency-Key: $KEY');
    for (const provider of providers) expect((await fetch(`${provider.url}/health`)).status).toBe(200);

    // The printed sequence, as fetch calls: login → create order → charge with Idempotency-Key.
    const json = { 'content-type': 'application/json' };
    const login = await fetch(`${url}/login`, {
      method: 'POST',
      headers: json,
      body: JSON.stringify(DEMO_USER),
    });
    expect(login.status).toBe(200);
    const { token } = (await login.json()) as { token: string };
    const authorization = `Bearer ${token}`;
    const created = await fetch(`${url}/orders`, {
      method: 'POST',
      headers: { ...json, authorization },
      body: JSON.stringify({ amount: 2_500, currency: 'eur' }),
    });
    expect(created.status).toBe(201);
    const order = (await created.json()) as { id: string };
    const key = crypto.randomUUID();
    const charge = () =>
      fetch(`${url}/orders/${order.id}/charge`, {
        method: 'POST',
        headers: { authorization, 'idempotency-key': key },
      });
    const first = await charge();
    expect(first.status).toBe(201);
    const payment = (await first.json()) as { orderId: string };
    expect(payment.orderId).toBe(order.id);
    const again = await charge();
    expect(again.status).toBe(201);
    expect(again.headers.get('idempotent-replayed')).toBe('true');

    child.kill('SIGINT');
    const [code] = await exited;
    expect(code, stderr).toBe(0);
    expect(stderr).toContain('SIGINT received');
    for (const provider of providers) expect(alive(provider.pid)).toBe(false);
    // `--data` is kept: the ledgers and the database are where they were asked to be.
    expect(existsSync(`${data}/provider-a.db`)).toBe(true);
    expect(existsSync(`${data}/payments.db`)).toBe(true);
  });

  it('refuses an unknown option with exit 2 and the usage', async () => {
    const child = spawn(process.execPath, ['--conditions=keel-source', CLI, 'serve', '--colour'], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      stderr += chunk;
    });
    const [code] = (await once(child, 'exit')) as [number | null];
    expect(code).toBe(2);
    expect(stderr).toContain('Usage: keel serve');
  });
});
