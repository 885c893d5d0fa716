/**
 * @module
 * Starts a provider as a child process and hands back a small typed client for it: its URL, its
 * fault plan, its counters and a way to stop it. The lab and the tests drive providers only through
 * this, so every provider they see is a real process behind a real socket.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { announcedUrl } from '../announced-url.ts';
import type { FaultSettings } from './fault-settings.ts';
import { InvalidProviderOptionError, ProviderRequestError, ProviderStartError } from './provider-errors.ts';
import type { ProviderStats } from './provider-stats.ts';

export interface StartProviderOptions {
  /** Provider name, `[a-z0-9-]`, 1–32 characters; part of every charge id. */
  name: string;
  /** Path of its sqlite ledger, created if missing. */
  ledgerPath: string;
  /** Serve the fault-control API. @default true */
  lab?: boolean;
  /** Seed of the fault randomness. @default 1 */
  seed?: number;
  /** Port to listen on; 0 picks a free one. @default 0 */
  port?: number;
  /** @default '127.0.0.1' */
  host?: string;
  /**
   * Give up when the process has not printed its address by then: generous, since a machine whose
   * host takes its cycles back can take seconds to start a process. @default 30000
   */
  startTimeoutMs?: number;
  /** After SIGTERM, wait this long for a clean exit before SIGKILL. @default 5000 */
  stopTimeoutMs?: number;
  /** Pass the provider's stderr (and its log, when `log`) through to this process's. @default false */
  inheritStderr?: boolean;
  /** Have the provider log requests (pino) to stderr. @default false */
  log?: boolean;
}

/** Reads and changes a provider's fault plan over its control API. */
export interface FaultControl {
  /** Replaces the whole plan; `{}` is no faults. Resolves with the plan now in force. */
  set(settings: FaultSettings): Promise<FaultSettings>;
  /** Removes every fault and lets requests held by a hang go on. */
  clear(): Promise<FaultSettings>;
  get(): Promise<FaultSettings>;
}

/** A provider process started by {@link startProvider}. */
export interface RunningProvider {
  readonly name: string;
  /** Base URL, e.g. `http://127.0.0.1:41234`. */
  readonly url: string;
  readonly pid: number;
  readonly faults: FaultControl;
  stats(): Promise<ProviderStats>;
  /** SIGTERM, then SIGKILL if it does not exit in time; resolves with its exit code (or signal). */
  stop(): Promise<number | NodeJS.Signals>;
}

const PROVIDER_PROCESS = fileURLToPath(new URL('./provider-process.ts', import.meta.url));

/**
 * Spawns `provider-process.ts` with this Node binary and waits until it is listening.
 *
 * @example
 * const a = await startProvider({ name: 'a', ledgerPath: '/tmp/a.db', seed: 7 });
 * await a.faults.set({ errorRate: 0.2, errorStatuses: [503] });
 * await fetch(`${a.url}/charges`, { method: 'POST', … });
 * await a.stop();
 */
export async function startProvider(options: StartProviderOptions): Promise<RunningProvider> {
  const startTimeoutMs = options.startTimeoutMs ?? 30_000;
  const stopTimeoutMs = options.stopTimeoutMs ?? 5_000;
  for (const [name, value] of [
    ['startTimeoutMs', startTimeoutMs],
    ['stopTimeoutMs', stopTimeoutMs],
  ] as const) {
    if (!Number.isInteger(value) || value <= 0) {
      throw new InvalidProviderOptionError(`${name} must be a positive integer, got ${value}`);
    }
  }
  const args = [
    '--conditions=keel-source',
    PROVIDER_PROCESS,
    '--name',
    options.name,
    '--ledger',
    options.ledgerPath,
    '--port',
    String(options.port ?? 0),
    '--host',
    options.host ?? '127.0.0.1',
    '--exit-with-stdin',
  ];
  if (options.lab ?? true) args.push('--lab');
  if (options.seed !== undefined) args.push('--seed', String(options.seed));
  if (options.log) args.push('--log');
  const child = spawn(process.execPath, args, {
    stdio: ['pipe', 'pipe', options.inheritStderr ? 'inherit' : 'pipe'],
  });
  const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
  // A spawn failure rejects `exited`; it is reported through `announcedUrl`, never left unhandled.
  exited.catch(() => undefined);
  const url = await announcedUrl(child, exited, {
    what: 'provider',
    timeoutMs: startTimeoutMs,
    error: (message, options) => new ProviderStartError(message, options),
  });
  const control = controlClient(url);
  let stopping: Promise<number | NodeJS.Signals> | undefined;
  return {
    name: options.name,
    url,
    pid: child.pid ?? -1,
    faults: {
      set: (settings) => control('PUT', '/__faults', settings) as Promise<FaultSettings>,
      clear: () => control('DELETE', '/__faults') as Promise<FaultSettings>,
      get: () => control('GET', '/__faults') as Promise<FaultSettings>,
    },
    stats: () => control('GET', '/__stats') as Promise<ProviderStats>,
    stop: () => {
      stopping ??= stopChild(child, exited, stopTimeoutMs);
      return stopping;
    },
  };
}

async function stopChild(
  child: ChildProcess,
  exited: Promise<[number | null, NodeJS.Signals | null]>,
  timeoutMs: number,
): Promise<number | NodeJS.Signals> {
  if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  try {
    const [code, signal] = await exited;
    return code ?? signal ?? 'SIGKILL';
  } finally {
    clearTimeout(timer);
    child.stdin?.destroy();
  }
}

function controlClient(baseUrl: string) {
  return async (method: string, path: string, body?: unknown): Promise<unknown> => {
    const response = await fetch(`${baseUrl}${path}`, {
      method,
      ...(body === undefined
        ? {}
        : { body: JSON.stringify(body), headers: { 'content-type': 'application/json' } }),
    });
    const payload: unknown = await response.json();
    if (!response.ok) {
      throw new ProviderRequestError(
        response.status,
        payload,
        `${method} ${path} answered ${response.status}`,
      );
    }
    return payload;
  };
}
