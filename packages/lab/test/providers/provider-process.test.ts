import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import type { Charge } from '../../src/providers/charge-ledger.ts';
import { ProviderStartError } from '../../src/providers/provider-errors.ts';
import { type RunningProvider, startProvider } from '../../src/providers/provider-launcher.ts';
import {
  chargeBody,
  eventually,
  ledgerDirectory,
  listCharges,
  postCharge,
  uniqueKey,
} from './provider-requests.ts';

const PROVIDER_PROCESS = fileURLToPath(new URL('../../src/providers/provider-process.ts', import.meta.url));

describe('payment provider process', () => {
  const ledgers = ledgerDirectory();
  const started: RunningProvider[] = [];
  const spawned: ChildProcess[] = [];

  afterAll(async () => {
    await Promise.allSettled(started.map((provider) => provider.stop()));
    for (const child of spawned)
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    ledgers.remove();
  });

  async function start(name: string, ledger: string): Promise<RunningProvider> {
    const provider = await startProvider({ name, ledgerPath: ledgers.path(ledger) });
    started.push(provider);
    return provider;
  }

  it('stops cleanly on SIGTERM and keeps its ledger and keys for the next run', async () => {
    const key = uniqueKey('restart');
    const body = chargeBody();
    const first = await start('a', 'restart');
    const charge = (await (await postCharge(first.url, body, { key })).json()) as Charge;
    expect(await first.stop()).toBe(0);

    const second = await start('a', 'restart');
    const replay = await postCharge(second.url, body, { key });
    expect(replay.status).toBe(201);
    expect(replay.headers.get('idempotent-replayed')).toBe('true');
    expect(((await replay.json()) as Charge).id).toBe(charge.id);
    expect((await listCharges(second.url, { idempotency_key: key })).data).toHaveLength(1);
    expect((await second.stats()).ledgerCharges).toBe(1);
    expect(await second.stop()).toBe(0);
  });

  it('stops cleanly while a request is held by a hang, without charging it', async () => {
    const provider = await start('a', 'hang-stop');
    await provider.faults.set({ hang: true });
    const outcome = postCharge(provider.url, chargeBody()).then(
      (response) => response.status,
      () => 'connection closed',
    );
    await eventually(async () => (await provider.stats()).hanging === 1);
    expect(await provider.stop()).toBe(0);
    expect(await outcome).toBe('connection closed');

    const reopened = await start('a', 'hang-stop');
    expect((await reopened.stats()).ledgerCharges).toBe(0);
  });

  it('prints its address as one JSON line and exits when its launcher closes stdin', async () => {
    const child = spawn(
      process.execPath,
      [PROVIDER_PROCESS, '--name', 'c', '--ledger', ledgers.path('stdin'), '--exit-with-stdin'],
      { stdio: ['pipe', 'pipe', 'inherit'] },
    );
    spawned.push(child);
    const exited = once(child, 'exit');
    const [line] = (await once(createInterface({ input: child.stdout }), 'line')) as [string];
    const address = JSON.parse(line) as { name: string; url: string };
    expect(address.name).toBe('c');
    expect(address.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const health = await fetch(`${address.url}/health`);
    expect(await health.json()).toEqual({ status: 'ok', name: 'c', lab: false });
    child.stdin.end();
    expect(await exited).toEqual([0, null]);
  });

  it('reports a provider that cannot start, with its reason', async () => {
    await expect(startProvider({ name: 'Not A Name', ledgerPath: ledgers.path('bad') })).rejects.toSatisfy(
      (error) => error instanceof ProviderStartError && /name must match/.test(error.message),
    );
    await expect(
      startProvider({ name: 'a', ledgerPath: ledgers.path('bad'), startTimeoutMs: 0 }),
    ).rejects.toThrow(/startTimeoutMs/);
  });
});
