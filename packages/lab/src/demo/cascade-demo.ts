/**
 * A preview of the lab's cascade scenario, in one process: provider A starts hanging while login
 * and charge traffic keep arriving (open loop: arrivals never wait for responses). The naive service
 * calls the provider with no timeout while holding a database connection, so charges soon hold every
 * connection and login — which never touches the provider — waits behind them. The guarded service
 * keeps charges in a bulkhead and sends them through a failover whose targets each have a circuit
 * breaker and a timeout, so login keeps its connections and charges move to provider B.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { bulkhead, circuitBreaker, failover, pipeline, timeout } from 'keel';
import { exponentialGap, seededRandom } from '../seeded-random.ts';
import { ConnectionPool } from './connection-pool.ts';
import { SimulatedProvider } from './simulated-provider.ts';

export interface DemoOptions {
  quick: boolean;
  seed: number;
}

export interface PhaseFigures {
  loginP99Ms: number;
  loginTimeoutRate: number;
  chargesSucceeded: number;
  chargesSent: number;
}

export interface RunFigures {
  mode: 'naive' | 'guarded';
  clean: PhaseFigures;
  fault: PhaseFigures;
}

export interface DemoReport {
  runs: RunFigures[];
  pass: boolean;
  text: string;
}

const CLIENT_TIMEOUT_MS = 1_000;
const POOL_SIZE = 8;
const LOGIN_QUERY_MS = 4;
const LOGINS_PER_SECOND = 100;
const CHARGES_PER_SECOND = 40;

interface Service {
  login(): Promise<void>;
  charge(): Promise<void>;
}

function naiveService(pool: ConnectionPool, providerA: SimulatedProvider): Service {
  return {
    login: () => pool.with(() => sleep(LOGIN_QUERY_MS)),
    // The provider call happens inside the open transaction, with no deadline.
    charge: () => pool.with(async () => void (await providerA.charge())),
  };
}

function guardedService(
  pool: ConnectionPool,
  providerA: SimulatedProvider,
  providerB: SimulatedProvider,
): Service {
  const chargeSlots = bulkhead({
    name: 'charges',
    maxConcurrent: POOL_SIZE / 2,
    maxQueued: 40,
    queueTimeoutMs: 500,
  });
  const target = (client: SimulatedProvider) => ({
    name: client.name,
    client,
    policy: pipeline(
      circuitBreaker({
        name: client.name,
        window: { kind: 'count', size: 6 },
        minimumCalls: 3,
        openMs: 5_000,
      }),
      timeout({ ms: 150 }),
    ),
  });
  const providers = failover({ targets: [target(providerA), target(providerB)] });
  return {
    login: () => pool.with(() => sleep(LOGIN_QUERY_MS)),
    charge: () =>
      chargeSlots.execute(() =>
        pool.with(async () => void (await providers.execute((p, { signal }) => p.client.charge(signal)))),
      ),
  };
}

interface Outcome {
  latencyMs: number;
  ok: boolean;
  timedOut: boolean;
}

/** Sends one request as a client with a timeout would: it stops waiting after CLIENT_TIMEOUT_MS. */
async function send(request: () => Promise<void>): Promise<Outcome> {
  const started = performance.now();
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<'timeout'>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), CLIENT_TIMEOUT_MS);
  });
  const result = await Promise.race([
    request().then(
      () => 'ok' as const,
      () => 'error' as const,
    ),
    timedOut,
  ]);
  clearTimeout(timer);
  return { latencyMs: performance.now() - started, ok: result === 'ok', timedOut: result === 'timeout' };
}

async function openLoop(
  durationMs: number,
  perSecond: number,
  random: () => number,
  request: () => Promise<void>,
): Promise<Outcome[]> {
  const pending: Promise<Outcome>[] = [];
  const end = performance.now() + durationMs;
  let next = performance.now();
  while (next < end) {
    next += exponentialGap(random, 1_000 / perSecond);
    const wait = next - performance.now();
    if (wait > 0) await sleep(wait);
    pending.push(send(request));
  }
  return Promise.all(pending);
}

function percentile(values: number[], p: number): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)] as number;
}

async function phase(service: Service, durationMs: number, random: () => number): Promise<PhaseFigures> {
  const [logins, charges] = await Promise.all([
    openLoop(durationMs, LOGINS_PER_SECOND, random, () => service.login()),
    openLoop(durationMs, CHARGES_PER_SECOND, random, () => service.charge()),
  ]);
  return {
    loginP99Ms: percentile(
      logins.map((o) => o.latencyMs),
      0.99,
    ),
    loginTimeoutRate: logins.filter((o) => o.timedOut).length / Math.max(1, logins.length),
    chargesSucceeded: charges.filter((o) => o.ok).length,
    chargesSent: charges.length,
  };
}

async function run(mode: 'naive' | 'guarded', options: DemoOptions): Promise<RunFigures> {
  const random = seededRandom(options.seed);
  const pool = new ConnectionPool(POOL_SIZE);
  const providerA = new SimulatedProvider('provider-a', 20);
  const providerB = new SimulatedProvider('provider-b', 30);
  const service =
    mode === 'naive' ? naiveService(pool, providerA) : guardedService(pool, providerA, providerB);
  const [cleanMs, faultMs] = options.quick ? [1_000, 2_500] : [2_000, 6_000];
  const clean = await phase(service, cleanMs, random);
  providerA.hanging = true;
  const fault = await phase(service, faultMs, random);
  providerA.recover();
  return { mode, clean, fault };
}

const pct = (x: number) => `${(x * 100).toFixed(1)} %`;
const ms = (x: number) => `${x.toFixed(1)} ms`;

/** Runs the naive then the guarded service under the same load and fault, and judges both. */
export async function runDemo(options: DemoOptions): Promise<DemoReport> {
  const naive = await run('naive', options);
  const guarded = await run('guarded', options);
  const goodput = (r: RunFigures) =>
    r.fault.chargesSucceeded /
    r.fault.chargesSent /
    Math.max(1e-9, r.clean.chargesSucceeded / r.clean.chargesSent);
  const naiveFails =
    naive.fault.loginP99Ms >= 5 * naive.clean.loginP99Ms || naive.fault.loginTimeoutRate > 0.1;
  const guardedHolds = guarded.fault.loginP99Ms <= 2 * guarded.clean.loginP99Ms && goodput(guarded) >= 0.9;
  const rows: Array<[string, string, string]> = [
    ['login p99, no fault', ms(naive.clean.loginP99Ms), ms(guarded.clean.loginP99Ms)],
    ['login p99, provider A hanging', ms(naive.fault.loginP99Ms), ms(guarded.fault.loginP99Ms)],
    [
      'logins timed out, provider A hanging',
      pct(naive.fault.loginTimeoutRate),
      pct(guarded.fault.loginTimeoutRate),
    ],
    ['charge goodput vs no fault', pct(goodput(naive)), pct(goodput(guarded))],
    [
      'verdict',
      naiveFails ? 'fails (as it should)' : 'DID NOT FAIL',
      guardedHolds ? 'holds' : 'DID NOT HOLD',
    ],
  ];
  const width = Math.max(...rows.map((r) => r[0].length));
  const text = [
    'keel lab — cascade preview (in-process; the full lab runs the payments service)',
    `provider A hangs; ${LOGINS_PER_SECOND} logins/s and ${CHARGES_PER_SECOND} charges/s arrive open-loop; clients give up after ${CLIENT_TIMEOUT_MS} ms`,
    '',
    `${''.padEnd(width)}  ${'naive'.padEnd(22)}guarded`,
    ...rows.map(([label, a, b]) => `${label.padEnd(width)}  ${a.padEnd(22)}${b}`),
    '',
    'guarded bar: login p99 during the fault ≤ 2× without it, charge goodput ≥ 90 % (failover to provider B)',
    'naive must fail: login p99 ≥ 5× or more than 10 % of logins time out',
    '',
  ].join('\n');
  return { runs: [naive, guarded], pass: naiveFails && guardedHolds, text };
}
