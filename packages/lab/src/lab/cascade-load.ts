/**
 * @module
 * One run of the cascade against one mode: providers A and B as processes, one service instance
 * over a database holding the seeded sales rows, and two phases of open-loop load from clients that
 * time out and retry at once. First a short warm-up of the same load, unmeasured, so the service's
 * JIT and cold paths are paid for before the baseline. Without a fault: steady logins, charges and
 * a light report rate. Then the same logins and charges while reports spike and provider A hangs.
 * Everything is measured from the clients' side, per request class and per phase (a logical call
 * belongs to the phase it arrived in, its retries with it), with the breakers read off `/metrics`
 * on the way.
 */
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { checkInteger } from 'keel';
import type { FaultSettings } from '../providers/fault-settings.ts';
import { type RunningProvider, startProvider } from '../providers/provider-launcher.ts';
import type { ServiceMode } from '../service/config.ts';
import { sampleBreakers } from './breaker-sampler.ts';
import {
  type ClientBehaviour,
  httpCallSender,
  httpChargeSender,
  type LogicalCall,
  type LogicalOutcome,
  type RequestRecorder,
  timeoutThenRetryImmediately,
} from './clients.ts';
import { startInstances } from './instances.ts';
import { type CustomerOrder, createCustomerOrders } from './lab-customers.ts';
import { arrivalOffsets, runOpenLoop } from './open-loop.ts';
import { phaseRatio } from './phase-ratio.ts';
import { copySalesTemplate } from './sales-template.ts';
import type { BreakerSample, FaultWindow, ScenarioSettings } from './scenario.ts';
import { type BucketSummary, type LatencySummary, type OutcomeKind, TimeBuckets } from './time-buckets.ts';

export interface CascadePlan {
  /**
   * Length of the warm-up, in ms: the no-fault load (logins, charges, light reports) run before the
   * no-fault phase and never measured, so the baseline is not the service's first, slowest second.
   * @default 0
   */
  readonly warmUpMs?: number;
  /** Length of the no-fault phase, in ms. */
  readonly noFaultMs: number;
  /** Length of the fault phase, in ms: provider A hangs and reports spike for this long. */
  readonly faultMs: number;
  readonly loginsPerSecond: number;
  readonly chargesPerSecond: number;
  /** The light report rate, in both phases. */
  readonly reportsPerSecond: number;
  /** Reports per second added on top during the fault: the spike. */
  readonly reportSpikePerSecond: number;
  /** Sales rows the report reads. */
  readonly salesRows: number;
  /** The clients' timeout per request, by class, in ms. */
  readonly clientTimeoutsMs: { readonly login: number; readonly charge: number; readonly report: number };
  /** Requests per logical call, the first included, for every class. */
  readonly attempts: number;
  /** Both providers' behaviour without a fault (a little latency). */
  readonly providerBaseline: FaultSettings;
  /** Provider A's faults during the fault phase. */
  readonly faultA: FaultSettings;
  /** More `service-process` flags (timeouts, pool size). */
  readonly serviceFlags: readonly string[];
  /** Width of a timeline bucket, in ms. @default 500 */
  readonly bucketMs?: number;
}

/** How the logical calls of one class ended for their clients, in one phase. */
export type OutcomeCounts = Readonly<Record<OutcomeKind, number>> & { readonly offered: number };

/** What the report clients got, in one phase. */
export interface ReportCounts {
  readonly offered: number;
  /** Answered with the report. */
  readonly answered: number;
  /** Refused or cut short by the service (a 503 from the pool guard, a 504 past the deadline). */
  readonly shed: number;
  /** No answer within the client's timeout, on every attempt. */
  readonly timedOut: number;
}

/** What the clients saw in one phase. */
export interface CascadePhase {
  readonly label: 'no fault' | 'fault';
  /** The phase's span, in ms from the start of the load. */
  readonly fromMs: number;
  readonly toMs: number;
  /** Per login request (every retry counted). */
  readonly login: LatencySummary;
  /** Login requests that got no answer within the client's timeout, over login requests. */
  readonly loginTimeoutShare: number;
  readonly logins: OutcomeCounts;
  /** Per charge request. */
  readonly charge: LatencySummary;
  readonly charges: OutcomeCounts;
  /** Charges acknowledged (2xx) per second of the phase. */
  readonly chargeGoodputPerSecond: number;
  /** Charges acknowledged per charge offered: goodput with the phase's offered load taken out. */
  readonly chargeGoodputShare: number;
  /** Per report request. */
  readonly report: LatencySummary;
  readonly reports: ReportCounts;
}

export interface CascadeFigures {
  readonly salesRows: number;
  /** Time spent seeding the sales rows for this run, in ms (0 when the lab's template was reused). */
  readonly seedMs: number;
  /** Logical calls the open loops made over the whole run, by class (the spike's reports included). */
  readonly arrivals: Readonly<Record<'login' | 'charge' | 'report', number>>;
  readonly noFault: CascadePhase;
  readonly fault: CascadePhase;
  /** Login p99 during the fault over its no-fault p99 (`NaN` without a baseline). */
  readonly loginP99Ratio: number;
  /** Charge goodput share during the fault over the no-fault share (`NaN` without a baseline). */
  readonly chargeGoodputRatio: number;
  /** Provider A's own counts: charges made, and requests its hang held (still held or given up on). */
  readonly providerA: { readonly charges: number; readonly held: number };
  /** Provider B's charges: the failover target takes none while A is healthy. */
  readonly providerB: { readonly charges: number };
  /** Breaker changes seen on `/metrics` (none in naive mode: it has none). */
  readonly breakers: readonly BreakerSample[];
  readonly faultWindows: readonly FaultWindow[];
  /** Buckets of every request, by class, on one time axis. */
  readonly timeline: Readonly<Record<'login' | 'charge' | 'report', readonly BucketSummary[]>>;
  readonly bucketMs: number;
  /** The latest an arrival started after it was due (the lab machine falling behind), in ms. */
  readonly maxArrivalLagMs: number;
  /** Where the run's time went, in ms. */
  readonly phasesMs: {
    readonly start: number;
    readonly setup: number;
    /** The unmeasured warm-up load (part of `setup`). */
    readonly warmUp: number;
    readonly load: number;
    readonly stop: number;
  };
}

const CLASSES = ['login', 'charge', 'report'] as const;
type RequestClass = (typeof CLASSES)[number];
const LOGIN_USERS = 4;
/** Requests of each class sent before the load, unmeasured: the service's first ones pay for JIT and cold workers. */
const WARM_UP = 4;
const LOGIN_PASSWORD = 'cascade login password';

/** Records nothing: the warm-up's requests. */
const UNRECORDED: RequestRecorder = { record() {} };

function tee(...recorders: RequestRecorder[]): RequestRecorder {
  return {
    record(startedAtMs, finishedAtMs, kind) {
      for (const recorder of recorders) recorder.record(startedAtMs, finishedAtMs, kind);
    },
  };
}

/** Counts of logical outcomes, filled as calls end. */
function tally() {
  const counts = { ok: 0, fail: 0, unknown: 0 };
  return {
    add(outcome: LogicalOutcome) {
      counts[outcome.kind]++;
    },
    counts(): OutcomeCounts {
      return { ...counts, offered: counts.ok + counts.fail + counts.unknown };
    },
  };
}

async function signUp(url: string, email: string): Promise<void> {
  const response = await fetch(`${url}/signup`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email, password: LOGIN_PASSWORD }),
    signal: AbortSignal.timeout(30_000),
  });
  if (!response.ok) throw new Error(`POST /signup answered ${response.status}: ${await response.text()}`);
}

/** A few logins, charges and one report, one class at a time, before anything is measured. */
async function warmUp(
  url: string,
  orders: readonly CustomerOrder[],
  emails: readonly string[],
  authorization: string,
): Promise<void> {
  const post = (path: string, headers: Record<string, string>, body?: unknown) =>
    fetch(`${url}${path}`, {
      method: 'POST',
      headers: { ...headers, ...(body !== undefined && { 'content-type': 'application/json' }) },
      ...(body !== undefined && { body: JSON.stringify(body) }),
      signal: AbortSignal.timeout(10_000),
    }).then((response) => response.text());
  await Promise.all(emails.map((email) => post('/login', {}, { email, password: LOGIN_PASSWORD })));
  await Promise.all(
    orders.map((order) =>
      post(`/orders/${order.orderId}/charge`, {
        authorization: order.authorization,
        'idempotency-key': `warm-up-${order.orderId}`,
      }),
    ),
  );
  await fetch(`${url}/reports/sales`, {
    headers: { authorization },
    signal: AbortSignal.timeout(10_000),
  }).then((response) => response.text());
}

interface WarmUpLoad {
  readonly url: string;
  readonly plan: CascadePlan;
  readonly load: Readonly<Record<'logins' | 'charges' | 'reports', ReturnType<typeof schedule>>>;
  readonly orders: readonly CustomerOrder[];
  readonly emails: readonly string[];
  readonly reportAuthorization: string;
  readonly runId: string;
}

/**
 * The no-fault load for a while, with the same clients, recorded nowhere: once it ends the service
 * has compiled its hot paths and filled its caches, and the no-fault phase measures it warm.
 */
async function runWarmUpLoad(warm: WarmUpLoad): Promise<void> {
  const { url, plan, load } = warm;
  const urls = [url];
  const caller = timeoutThenRetryImmediately<LogicalCall>({ attempts: plan.attempts });
  const charger = timeoutThenRetryImmediately({ attempts: plan.attempts });
  const login = httpCallSender({ urls, timeoutMs: plan.clientTimeoutsMs.login, buckets: UNRECORDED });
  const charge = httpChargeSender({ urls, timeoutMs: plan.clientTimeoutsMs.charge, buckets: UNRECORDED });
  const report = httpCallSender({ urls, timeoutMs: plan.clientTimeoutsMs.report, buckets: UNRECORDED });
  await Promise.all([
    runOpenLoop({
      ...load.logins,
      arrive: (index) =>
        caller(
          {
            method: 'POST',
            path: '/login',
            body: { email: warm.emails[index % warm.emails.length], password: LOGIN_PASSWORD },
            instance: index,
          },
          login,
        ),
    }),
    runOpenLoop({
      ...load.charges,
      arrive: async (index) => {
        const order = warm.orders[index];
        if (order === undefined) return;
        await charger(
          {
            orderId: order.orderId,
            idempotencyKey: `${warm.runId}-warm-up-${order.orderId}`,
            authorization: order.authorization,
            instance: index,
          },
          charge,
        );
      },
    }),
    runOpenLoop({
      ...load.reports,
      arrive: () =>
        caller(
          {
            method: 'GET',
            path: '/reports/sales',
            headers: { authorization: warm.reportAuthorization },
            instance: 0,
          },
          report,
        ),
    }),
  ]);
}

/**
 * The Poisson arrivals of a class at `ratePerSecond` that fall within `ms`: the schedule ends with
 * its window, so no class runs on past the fault (or starts the fault phase late).
 */
function schedule(ratePerSecond: number, ms: number, seed: number) {
  const expected = (ratePerSecond * ms) / 1_000;
  const offsets = arrivalOffsets({ seed, ratePerSecond, count: Math.ceil(expected * 2 + 10) });
  const arrivals = offsets.filter((offset) => offset < ms).length;
  return { ratePerSecond, arrivals, seed };
}

/**
 * @example
 * const figures = await runCascadeLoad('guarded', settings, cascadePlan(settings));
 * figures.loginP99Ratio; // login p99 during the fault over its no-fault p99
 */
export async function runCascadeLoad(
  mode: ServiceMode,
  settings: ScenarioSettings,
  plan: CascadePlan,
): Promise<CascadeFigures> {
  const noFaultMs = checkInteger('noFaultMs', plan.noFaultMs);
  const faultMs = checkInteger('faultMs', plan.faultMs);
  const runId = `cascade_${mode}_${settings.seed}_${process.pid}_${Date.now().toString(36)}`;
  const say = (line: string) => settings.progress?.(`cascade/${mode}: ${line}`);
  const warmUpMs = checkInteger('warmUpMs', plan.warmUpMs ?? 0, 0);
  const started = performance.now();
  // The providers boot in their own processes while this one seeds or copies the sales table.
  const startingProviders = Promise.allSettled(
    (['a', 'b'] as const).map((name, index) =>
      startProvider({
        name,
        ledgerPath: join(settings.workDirectory, `${runId}-${name}.db`),
        seed: settings.seed + index,
      }),
    ),
  );
  const copying =
    settings.db === undefined
      ? copySalesTemplate(join(settings.workDirectory, `${runId}-service.db`), {
          workDirectory: settings.workDirectory,
          rows: plan.salesRows,
          seed: settings.seed,
        })
      : undefined;
  const [starting, copied] = await Promise.all([startingProviders, Promise.allSettled([copying])]);
  const providers = starting.flatMap((start) => (start.status === 'fulfilled' ? [start.value] : []));
  const failed = [...starting, ...copied].find((start) => start.status === 'rejected');
  if (failed !== undefined) {
    await Promise.allSettled(providers.map((provider) => provider.stop()));
    throw failed.reason;
  }
  const [a, b] = providers as [RunningProvider, RunningProvider];
  let stopInstances: (() => Promise<void>) | undefined;
  try {
    const copy = copied[0]?.status === 'fulfilled' ? copied[0].value : undefined;
    const db = settings.db ?? copy?.path;
    if (db === undefined) throw new Error('cascade: the sales template was not copied');
    const seedMs = copy?.seedMs ?? 0;
    if (seedMs > 0) say(`seeded ${plan.salesRows} sales rows in ${seedMs} ms`);
    const instances = await startInstances(1, {
      mode,
      db,
      providerA: a.url,
      providerB: b.url,
      seed: settings.seed,
      // A guarded report still running at the end is not worth waiting for.
      stopTimeoutMs: 2_000,
      ...(settings.broker !== undefined && { broker: settings.broker }),
      flags: [
        // A full sqlite copy is never seeded again; Postgres seeds its table once, when it is empty.
        '--rows',
        String(plan.salesRows),
        '--scrypt-cost',
        '1024',
        '--db-pool',
        settings.db === undefined ? '4' : '8',
        ...(settings.broker !== undefined ? ['--event-channel', runId.toLowerCase().slice(0, 40)] : []),
        ...plan.serviceFlags,
      ],
    });
    stopInstances = () => instances.stop();
    const url = instances.urls[0] as string;
    const setupStarted = performance.now();
    const totalMs = noFaultMs + faultMs;
    const logins = schedule(plan.loginsPerSecond, totalMs, settings.seed + 11);
    const charges = schedule(plan.chargesPerSecond, totalMs, settings.seed + 12);
    const reports = schedule(plan.reportsPerSecond, totalMs, settings.seed + 13);
    const spike = schedule(plan.reportSpikePerSecond, faultMs, settings.seed + 14);
    const warmUpLoad = {
      logins: schedule(plan.loginsPerSecond, warmUpMs, settings.seed + 21),
      charges: schedule(plan.chargesPerSecond, warmUpMs, settings.seed + 22),
      reports: schedule(plan.reportsPerSecond, warmUpMs, settings.seed + 23),
    };
    const loginEmails = Array.from(
      { length: LOGIN_USERS },
      (_, i) => `cascade-${runId.toLowerCase()}-${i}@example.com`,
    );
    const [made] = await Promise.all([
      createCustomerOrders({
        url,
        orders: WARM_UP + warmUpLoad.charges.arrivals + charges.arrivals,
        seed: settings.seed,
        concurrency: 16,
        runId: runId.toLowerCase(),
      }),
      ...loginEmails.map((email) => signUp(url, email)),
    ]);
    const reportAuthorization = made[0]?.authorization as string;
    await Promise.all(
      providers.map((provider, i) =>
        provider.faults.set({ ...plan.providerBaseline, seed: settings.seed + i }),
      ),
    );
    await warmUp(url, made.slice(0, WARM_UP), loginEmails, reportAuthorization);
    const warmUpStarted = performance.now();
    if (warmUpMs > 0) {
      say(`${warmUpMs} ms of unmeasured load to warm the service up`);
      await runWarmUpLoad({
        url,
        plan,
        load: warmUpLoad,
        orders: made.slice(WARM_UP, WARM_UP + warmUpLoad.charges.arrivals),
        emails: loginEmails,
        reportAuthorization,
        runId,
      });
    }
    const warmUpTookMs = Math.round(performance.now() - warmUpStarted);
    const orders = made.slice(WARM_UP + warmUpLoad.charges.arrivals);

    const loadStarted = performance.now();
    const bucketMs = plan.bucketMs ?? 500;
    const timeline = Object.fromEntries(
      CLASSES.map((name) => [name, new TimeBuckets({ startedAtMs: loadStarted, bucketMs })]),
    ) as Record<RequestClass, TimeBuckets>;
    // One bucket as wide as the run: its overall() is the phase's summary.
    const phases = [0, 1].map(() =>
      Object.fromEntries(
        CLASSES.map((name) => [name, new TimeBuckets({ startedAtMs: loadStarted, bucketMs: totalMs })]),
      ),
    ) as Array<Record<RequestClass, TimeBuckets>>;
    const recorder = (name: RequestClass, phase: number) =>
      tee(timeline[name], (phases[phase] as Record<RequestClass, TimeBuckets>)[name]);
    const urls = instances.urls;
    const senders = [0, 1].map((phase) => ({
      login: httpCallSender({
        urls,
        timeoutMs: plan.clientTimeoutsMs.login,
        buckets: recorder('login', phase),
      }),
      charge: httpChargeSender({
        urls,
        timeoutMs: plan.clientTimeoutsMs.charge,
        buckets: recorder('charge', phase),
      }),
      report: httpCallSender({
        urls,
        timeoutMs: plan.clientTimeoutsMs.report,
        buckets: recorder('report', phase),
      }),
    }));
    const outcomes = [0, 1].map(() => ({ login: tally(), charge: tally(), report: tally() }));
    const client = timeoutThenRetryImmediately({ attempts: plan.attempts });
    const caller: ClientBehaviour<LogicalCall> = timeoutThenRetryImmediately<LogicalCall>({
      attempts: plan.attempts,
    });
    const phaseNow = () => (performance.now() - loadStarted < noFaultMs ? 0 : 1);

    const sinceLoad = () => Math.round(performance.now() - loadStarted);
    const breakerSampler = sampleBreakers({ url, startedAtMs: loadStarted });
    say(
      `${plan.loginsPerSecond} logins/s, ${plan.chargesPerSecond} charges/s, ${plan.reportsPerSecond} reports/s; fault after ${noFaultMs} ms for ${faultMs} ms`,
    );

    const fault = (async () => {
      await sleep(noFaultMs);
      await a.faults.set({ ...plan.providerBaseline, ...plan.faultA, seed: settings.seed });
      const hangAtMs = sinceLoad();
      await sleep(Math.max(0, totalMs - sinceLoad()));
      // Read before the lift: lifting lets the held requests go on and the gauge drops to 0.
      const held = await a.stats();
      await a.faults.set({ ...plan.providerBaseline, seed: settings.seed });
      return { hangAtMs, liftedAtMs: sinceLoad(), held: held.hanging + held.abandoned };
    })();
    const report = (phase: number) => {
      const call: LogicalCall = {
        method: 'GET',
        path: '/reports/sales',
        headers: { authorization: reportAuthorization },
        instance: 0,
      };
      return caller(call, (senders[phase] as (typeof senders)[number]).report).then((outcome) => {
        (outcomes[phase] as (typeof outcomes)[number]).report.add(outcome);
      });
    };
    const loops = await Promise.all([
      runOpenLoop({
        ...logins,
        arrive: async (index) => {
          const phase = phaseNow();
          const call: LogicalCall = {
            method: 'POST',
            path: '/login',
            body: { email: loginEmails[index % LOGIN_USERS], password: LOGIN_PASSWORD },
            instance: index,
          };
          const outcome = await caller(call, (senders[phase] as (typeof senders)[number]).login);
          (outcomes[phase] as (typeof outcomes)[number]).login.add(outcome);
        },
      }),
      runOpenLoop({
        ...charges,
        arrive: async (index) => {
          const order = orders[index];
          if (order === undefined) return;
          const phase = phaseNow();
          const outcome = await client(
            {
              orderId: order.orderId,
              idempotencyKey: `${runId}-${order.orderId}`,
              authorization: order.authorization,
              instance: index,
            },
            (senders[phase] as (typeof senders)[number]).charge,
          );
          (outcomes[phase] as (typeof outcomes)[number]).charge.add(outcome);
        },
      }),
      runOpenLoop({ ...reports, arrive: () => report(phaseNow()) }),
      (async () => {
        await sleep(noFaultMs);
        return runOpenLoop({ ...spike, arrive: () => report(1) });
      })(),
    ]);
    const { hangAtMs, liftedAtMs, held } = await fault;
    const loadMs = sinceLoad();
    const breakers = await breakerSampler.stop();
    const [statsA, statsB] = await Promise.all([a.stats(), b.stats()]);
    const stopStarted = performance.now();
    // Naive may still be working through what piled up; none of it is measured, so it is not awaited.
    if (mode === 'naive') await instances.kill(0);
    await instances.stop();
    stopInstances = undefined;

    const phaseFigures = (phase: 0 | 1): CascadePhase => {
      const buckets = phases[phase] as Record<RequestClass, TimeBuckets>;
      const counts = outcomes[phase] as (typeof outcomes)[number];
      const login = buckets.login.overall();
      const chargeCounts = counts.charge.counts();
      const reportCounts = counts.report.counts();
      const fromMs = phase === 0 ? 0 : noFaultMs;
      const toMs = phase === 0 ? noFaultMs : totalMs;
      return {
        label: phase === 0 ? 'no fault' : 'fault',
        fromMs,
        toMs: Math.round(toMs),
        login,
        loginTimeoutShare: share(login.unknown, login.count),
        logins: counts.login.counts(),
        charge: buckets.charge.overall(),
        charges: chargeCounts,
        chargeGoodputPerSecond: Math.round((chargeCounts.ok / ((toMs - fromMs) / 1_000)) * 10) / 10,
        chargeGoodputShare: share(chargeCounts.ok, chargeCounts.offered),
        report: buckets.report.overall(),
        reports: {
          offered: reportCounts.offered,
          answered: reportCounts.ok,
          shed: reportCounts.fail,
          timedOut: reportCounts.unknown,
        },
      };
    };
    const noFault = phaseFigures(0);
    const faulted = phaseFigures(1);
    say(
      `login p99 ${noFault.login.p99Ms} → ${faulted.login.p99Ms} ms, ${Math.round(faulted.loginTimeoutShare * 1_000) / 10} % timed out; charge goodput ${noFault.chargeGoodputShare} → ${faulted.chargeGoodputShare}`,
    );
    return {
      salesRows: plan.salesRows,
      seedMs,
      arrivals: {
        login: logins.arrivals,
        charge: charges.arrivals,
        report: reports.arrivals + spike.arrivals,
      },
      noFault,
      fault: faulted,
      loginP99Ratio: phaseRatio(faulted.login.p99Ms, noFault.login.p99Ms),
      chargeGoodputRatio: phaseRatio(faulted.chargeGoodputShare, noFault.chargeGoodputShare),
      providerA: { charges: statsA.charges, held },
      providerB: { charges: statsB.charges },
      breakers,
      faultWindows: [
        { label: 'provider A hangs', fromMs: hangAtMs, toMs: liftedAtMs },
        { label: 'report spike', fromMs: noFaultMs, toMs: totalMs },
      ],
      timeline: {
        login: timeline.login.summary(),
        charge: timeline.charge.summary(),
        report: timeline.report.summary(),
      },
      bucketMs,
      maxArrivalLagMs: Math.max(...loops.map((loop) => loop.maxLagMs)),
      phasesMs: {
        start: Math.round(setupStarted - started),
        setup: Math.round(loadStarted - setupStarted),
        warmUp: warmUpTookMs,
        load: loadMs,
        stop: Math.round(performance.now() - stopStarted),
      },
    };
  } finally {
    await stopInstances?.();
    await Promise.allSettled(providers.map((provider) => provider.stop()));
  }
}

/** `part / whole` to three decimals; 0 of nothing is 0. */
function share(part: number, whole: number): number {
  return whole === 0 ? 0 : Math.round((part / whole) * 1_000) / 1_000;
}
