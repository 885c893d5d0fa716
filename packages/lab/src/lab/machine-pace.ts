/**
 * @module
 * The lab's load is sized for this project's reference machine: two cores the lab has to itself.
 * A machine that gives it less — a virtual machine whose host takes cycles back (steal), other work
 * on the same cores — cannot serve that load even with no fault at all, and then every scenario
 * measures an overload the scenario did not cause: the guarded service sheds what the machine
 * cannot carry, and its bars fail for want of CPU rather than for want of a guard.
 *
 * So before each scenario the lab measures how much CPU it can count on, and paces the scenario to
 * it: the pace scales every arrival rate down and stretches every load phase by as much, so a run
 * offers the same number of requests, faults and retries, only more slowly. Timeouts, leases and
 * the services' own configuration stay as they are: the pace slows the load, never the guards.
 */
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { InvalidOptionError } from 'keel';

/** The slowest pace the lab runs at: below it, runs would take too long to be worth it. */
export const MIN_PACE = 0.3;
/** A measured CPU share at or above this counts as the whole machine (pace 1). */
export const FULL_SPEED_SHARE = 0.85;
/** How long the measurement keeps every core busy. */
export const PACE_PROBE_MS = 1_000;

/**
 * A busy loop per core for `ms`: each thread reports the CPU time it got, which a machine that
 * takes cycles back (steal) or shares them with other work gives less of than the wall time.
 */
const PROBE_THREAD = `
const { parentPort, workerData } = require('node:worker_threads');
const startedAt = performance.now();
const started = process.threadCpuUsage();
const end = startedAt + workerData.ms;
let sink = 0;
while (performance.now() < end) for (let i = 0; i < 10000; i++) sink += i % 7;
const used = process.threadCpuUsage(started);
parentPort.postMessage({ cpuMs: (used.user + used.system) / 1000, wallMs: performance.now() - startedAt, sink });
`;

/**
 * Whether this Node can measure a thread's CPU time (`process.threadCpuUsage`, Node ≥ 23.9), which
 * {@link measureCpuShare} needs; without it the lab runs at the pace it is given, 1 by default.
 *
 * @example
 * const pace = canMeasureCpuShare() ? paceForShare(await measureCpuShare()) : 1;
 */
export function canMeasureCpuShare(): boolean {
  return typeof (process as { threadCpuUsage?: unknown }).threadCpuUsage === 'function';
}

/**
 * The share of this machine's CPU time a thread per core got over `ms` milliseconds of busy work:
 * 1 when the lab has every core to itself, less when the host or other processes take some.
 *
 * @example
 * const share = await measureCpuShare(); // e.g. 0.62 on a virtual machine whose host is busy
 */
export async function measureCpuShare(ms = PACE_PROBE_MS): Promise<number> {
  if (!canMeasureCpuShare()) {
    throw new InvalidOptionError(
      'pace',
      'this Node cannot measure a thread’s CPU time (process.threadCpuUsage, Node ≥ 23.9)',
    );
  }
  const cores = availableParallelism();
  const spans = await Promise.all(
    Array.from(
      { length: cores },
      () =>
        new Promise<{ cpuMs: number; wallMs: number }>((resolve, reject) => {
          const worker = new Worker(PROBE_THREAD, { eval: true, workerData: { ms } });
          worker.once('message', resolve);
          worker.once('error', reject);
        }),
    ),
  );
  // Each thread over its own busy span: how long a thread takes to start is noise of its own.
  let cpuMs = 0;
  let wallMs = 0;
  for (const span of spans) {
    cpuMs += span.cpuMs;
    wallMs += span.wallMs;
  }
  return Math.min(1, cpuMs / wallMs);
}

/**
 * The pace for a measured CPU share: 1 at {@link FULL_SPEED_SHARE} or more, proportionally less
 * below it, never under {@link MIN_PACE}; rounded to 0.05 so small wobbles do not change the load.
 *
 * @example
 * paceForShare(0.95); // 1
 * paceForShare(0.51); // 0.6
 */
export function paceForShare(share: number): number {
  if (!Number.isFinite(share) || share < 0) {
    throw new InvalidOptionError('share', `must be a number ≥ 0, got ${share}`);
  }
  return roundedPace(Math.min(1, share / FULL_SPEED_SHARE));
}

/** Each replay of a scenario the machine could not carry runs at this share of the previous pace. */
export const SLOWDOWN = 0.6;

/**
 * The pace of a scenario's next play, after one the machine could not carry: {@link SLOWDOWN} of
 * `pace`, never under {@link MIN_PACE}.
 *
 * @example
 * slowerPace(1); // 0.6
 * slowerPace(0.35); // 0.3
 */
export function slowerPace(pace: number): number {
  return roundedPace(pace * SLOWDOWN);
}

/** Rounded to 0.05, so small wobbles do not change the load, and never under {@link MIN_PACE}. */
function roundedPace(pace: number): number {
  return Math.max(MIN_PACE, Math.round(pace * 20) / 20);
}

/**
 * Checks a pace given by hand (`keel lab --pace 0.5`).
 *
 * @example
 * checkPace(0.5); // 0.5
 */
export function checkPace(pace: number): number {
  if (!Number.isFinite(pace) || pace < MIN_PACE || pace > 1) {
    throw new InvalidOptionError('pace', `must be a number from ${MIN_PACE} to 1, got ${pace}`);
  }
  return pace;
}

/** A scenario's timing, paced: rates slowed and phases stretched by the same factor. */
export interface Paced {
  /** The pace itself, 1 on a machine that gives the lab all its CPU. */
  readonly pace: number;
  /** A nominal rate (per second), slowed to the pace. */
  rate(perSecond: number): number;
  /** A nominal load phase (ms), stretched to the pace. */
  span(ms: number): number;
}

/**
 * The pace helpers for a scenario's settings.
 *
 * @example
 * const { rate, span } = paced(settings);
 * const plan = { loginsPerSecond: rate(60), noFaultMs: span(3_500) };
 */
export function paced(settings: { readonly pace?: number | undefined }): Paced {
  const pace = settings.pace ?? 1;
  return {
    pace,
    rate: (perSecond) => perSecond * pace,
    span: (ms) => Math.round(ms / pace),
  };
}
