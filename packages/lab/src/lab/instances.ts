/**
 * @module
 * Service instances as child processes (`service-process.ts`), so the lab can run two of them over
 * one database and kill one with SIGKILL in the middle of a charge — the crash no `finally` block
 * sees. An instance restarts on its old port, so clients that retry against it find it again. Every
 * child is stopped by `stop()`, and killed outright if this process exits first.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { setPriority } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { checkInteger, InvalidOptionError } from 'keel';
import { announcedUrl } from '../announced-url.ts';
import type { ServiceMode } from '../service/config.ts';
import { InstanceStartError } from './lab-errors.ts';

export interface InstanceOptions {
  mode: ServiceMode;
  /** A sqlite file path or a `postgres://` URL, shared by every instance. */
  db: string;
  providerA: string;
  providerB: string;
  /** `in-process` (each instance its own), `nats://…` or `amqp://…`. @default 'in-process' */
  broker?: string;
  /** @default 1 */
  seed?: number;
  /** More `service-process` flags, e.g. `['--charge-lease', '3000']`. */
  flags?: readonly string[];
  /** Give up on an instance that has not printed its address by then. @default 30000 */
  startTimeoutMs?: number;
  /** After SIGTERM, wait this long before SIGKILL. @default 10000 */
  stopTimeoutMs?: number;
  /** Starts `restart()` tries before it gives up. @default 5 */
  restartAttempts?: number;
}

/** Instances started by {@link startInstances}; index `i` keeps its URL across restarts. */
export interface ServiceInstances {
  readonly urls: readonly string[];
  /** Process id of each instance now (changes on restart). */
  pids(): number[];
  /** SIGKILL: no shutdown, requests in flight cut off, transactions rolled back by the database. */
  kill(index: number): Promise<void>;
  /**
   * Starts instance `index` again on its old port (it must have been killed or stopped), trying
   * again as an orchestrator would when the start fails; resolves with the starts it took.
   */
  restart(index: number): Promise<number>;
  /** SIGTERM to every instance (SIGKILL after the timeout); resolves once all have exited. */
  stop(): Promise<void>;
}

interface Child {
  readonly process: ChildProcess;
  readonly exited: Promise<unknown>;
}

const SERVICE_PROCESS = fileURLToPath(new URL('../service/service-process.ts', import.meta.url));

/**
 * The lab's clients stand for users on other machines; here they share the cores with the service
 * they measure, and a client that waits for a core adds that wait to every latency it records. The
 * instances run a little below the lab's priority, so a busy instance queues its own work, not its
 * clients' clocks. (Set on the process's main thread as it starts: the threads it creates later, its
 * database workers among them, inherit it.) Where the system refuses, they run as they are.
 */
const INSTANCE_NICENESS = 5;

function yieldToClients(pid: number | undefined): void {
  if (pid === undefined) return;
  try {
    setPriority(pid, INSTANCE_NICENESS);
  } catch {
    // Not allowed here: the latencies then include the clients' own waits, as they did before.
  }
}

/**
 * Starts `count` instances: the first alone (it migrates the database), then the others together.
 *
 * @example
 * const instances = await startInstances(2, { mode: 'guarded', db: '/tmp/lab.db', providerA, providerB });
 * await instances.kill(0);
 * await instances.restart(0);
 * await instances.stop();
 */
export async function startInstances(count: number, options: InstanceOptions): Promise<ServiceInstances> {
  checkInteger('count', count, 1, 16);
  const startTimeoutMs = checkInteger('startTimeoutMs', options.startTimeoutMs ?? 30_000);
  const stopTimeoutMs = checkInteger('stopTimeoutMs', options.stopTimeoutMs ?? 10_000);
  const restartAttempts = checkInteger('restartAttempts', options.restartAttempts ?? 5);
  const children: Array<Child | undefined> = [];
  const ports: number[] = [];
  const urls: string[] = [];
  // Last resort: never leave a service running after the lab has gone.
  const killAll = () => {
    for (const child of children) child?.process.kill('SIGKILL');
  };
  process.once('exit', killAll);

  const launch = async (port: number): Promise<{ child: Child; url: string }> => {
    const args = [
      '--conditions=keel-source',
      SERVICE_PROCESS,
      '--mode',
      options.mode,
      '--db',
      options.db,
      '--broker',
      options.broker ?? 'in-process',
      '--provider-a',
      options.providerA,
      '--provider-b',
      options.providerB,
      '--port',
      String(port),
      '--seed',
      String(options.seed ?? 1),
      // Its stdin is a pipe from this process: if the lab dies without stopping it, it stops itself.
      '--exit-with-stdin',
      ...(options.flags ?? []),
    ];
    const spawned = spawn(process.execPath, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    yieldToClients(spawned.pid);
    const exited = once(spawned, 'exit').catch(() => undefined);
    const child = { process: spawned, exited };
    const url = await announcedUrl(spawned, exited, {
      what: 'service',
      timeoutMs: startTimeoutMs,
      error: (message, options) => new InstanceStartError(message, options),
    });
    return { child, url };
  };

  try {
    // The first migrates the database alone; the others start together once it is ready.
    const first = await launch(0);
    const rest = await Promise.allSettled(Array.from({ length: count - 1 }, () => launch(0)));
    for (const launched of [{ status: 'fulfilled' as const, value: first }, ...rest]) {
      if (launched.status === 'rejected') throw launched.reason;
      children.push(launched.value.child);
      urls.push(launched.value.url);
      ports.push(Number(new URL(launched.value.url).port));
    }
  } catch (error) {
    killAll();
    process.off('exit', killAll);
    throw error;
  }

  const at = (index: number): number => {
    if (!Number.isInteger(index) || index < 0 || index >= count) {
      throw new InvalidOptionError('index', `must be an instance index from 0 to ${count - 1}, got ${index}`);
    }
    return index;
  };
  const halt = async (index: number, signal: NodeJS.Signals) => {
    const child = children[index];
    if (child === undefined) return;
    children[index] = undefined;
    if (child.process.exitCode === null && child.process.signalCode === null) child.process.kill(signal);
    const timer = setTimeout(() => child.process.kill('SIGKILL'), stopTimeoutMs);
    await child.exited;
    clearTimeout(timer);
  };

  return {
    urls,
    pids: () => children.map((child) => child?.process.pid ?? -1),
    kill: (index) => halt(at(index), 'SIGKILL'),
    async restart(index) {
      if (children[at(index)] !== undefined) {
        throw new InvalidOptionError('index', `instance ${index} is still running`);
      }
      for (let attempt = 1; ; attempt++) {
        try {
          const { child } = await launch(ports[index] as number);
          children[index] = child;
          return attempt;
        } catch (error) {
          // A start can fail under load (the database busy past its timeout): try again, as a supervisor would.
          if (!(error instanceof InstanceStartError) || attempt >= restartAttempts) throw error;
          await sleep(250);
        }
      }
    },
    async stop() {
      await Promise.all(children.map((_, index) => halt(index, 'SIGTERM')));
      process.off('exit', killAll);
    },
  };
}
