/**
 * @module
 * One run of a charging scenario against one mode: two provider processes with their faults,
 * service instances over one database, customers and orders made through the API, then open-loop
 * charges by the scenario's clients while its disruption (a SIGKILL, say) plays out, a wait for the
 * completer and the invoices to settle, and the ground truth read from the ledgers and the rows.
 * `partial` and `duplicates` are plans for this run; they differ in faults, clients and bars.
 */
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { FaultSettings } from '../providers/fault-settings.ts';
import { startProvider } from '../providers/provider-launcher.ts';
import type { ServiceMode } from '../service/config.ts';
import { sampleBreakers } from './breaker-sampler.ts';
import { type ClientBehaviour, httpChargeSender } from './clients.ts';
import { checkGroundTruth, type GroundTruth } from './ground-truth.ts';
import { type ServiceInstances, startInstances } from './instances.ts';
import { createCustomerOrders } from './lab-customers.ts';
import { runOpenLoop } from './open-loop.ts';
import type {
  BarCheck,
  BreakerSample,
  FaultWindow,
  HeadlineFigure,
  RunMark,
  RunTimeline,
  ScenarioSettings,
} from './scenario.ts';
import { type BucketSummary, type LatencySummary, type OutcomeKind, TimeBuckets } from './time-buckets.ts';

export interface ChargeLoadPlan {
  /** Names the run in keys, e-mails and event channels; letters, digits and `_`. */
  readonly name: string;
  readonly instances: number;
  /** Orders made, each charged once (as one logical charge) during the load. */
  readonly orders: number;
  readonly ratePerSecond: number;
  readonly client: ClientBehaviour;
  /** The client's timeout per request, in ms. */
  readonly clientTimeoutMs: number;
  readonly faults: { readonly a?: FaultSettings; readonly b?: FaultSettings };
  /** More `service-process` flags (leases, timeouts, sweep interval). */
  readonly serviceFlags: readonly string[];
  /**
   * Plays out alongside the load (it starts with it): kills, restarts. Resolves with what it did and
   * when (ms from the start of the load), for the result and the report's timeline.
   */
  readonly disrupt?: (instances: ServiceInstances, loadMs: number) => Promise<RunMark[]>;
  /** How long to wait, after the load, for no order `charging` and every payment invoiced. */
  readonly settleMs: number;
  /** Width of a timeline bucket, in ms. @default 500 */
  readonly bucketMs?: number;
}

/** The ground truth of a run, and what its clients saw. */
export interface ChargeLoadFigures extends GroundTruth {
  /** Logical charges sent (one per order). */
  readonly charges: number;
  readonly ratePerSecond: number;
  /** How the logical charges ended for their clients. */
  readonly clientOutcomes: Readonly<Record<OutcomeKind, number>>;
  /** Final refusals by HTTP status, e.g. `{ "409": 2 }`. */
  readonly refusals: Readonly<Record<string, number>>;
  /** HTTP requests sent, every retry and copy counted. */
  readonly requests: number;
  /** Per request, the whole run. */
  readonly latency: LatencySummary;
  readonly timeline: readonly BucketSummary[];
  /** The latest an arrival started after it was due (the lab machine falling behind), in ms. */
  readonly maxArrivalLagMs: number;
  /** From the end of the load until settled (or the wait ran out), in ms. */
  readonly settleMs: number;
  /** What the disruption did, and when. */
  readonly disruptions: readonly RunMark[];
  /** The providers' faults, as windows over the load. */
  readonly faultWindows: readonly FaultWindow[];
  /** Breaker changes seen on the first instance's `/metrics` (none in naive mode: it has none). */
  readonly breakers: readonly BreakerSample[];
  /** Width of a timeline bucket, in ms. */
  readonly bucketMs: number;
  /** Provider A's own count of the faults it played: responses dropped of the charges it answered. */
  readonly providerA: {
    readonly charges: number;
    readonly replays: number;
    readonly droppedResponses: number;
    /** Dropped responses over charges and replays answered. */
    readonly dropShare: number;
  };
  /** Where the run's time went, in ms: starting processes, making orders, the load, settling. */
  readonly phasesMs: {
    readonly start: number;
    readonly orders: number;
    readonly load: number;
    readonly settle: number;
  };
}

/** Share of orders a guarded run must have paid by its end: safety bought by refusing work is none. */
export const GUARDED_MIN_PAID_SHARE = 0.9;

/**
 * The bar every charging scenario adds to its guarded run: it did the work — at least
 * {@link GUARDED_MIN_PAID_SHARE} of its orders paid — so its zeros count for something.
 *
 * @example
 * const check = paidEnough(figures); // { rule: '≥ 90 % of orders paid', met: true }
 */
export function paidEnough(figures: ChargeLoadFigures): BarCheck {
  return {
    rule: `≥ ${GUARDED_MIN_PAID_SHARE * 100} % of orders paid (${figures.payments} of ${figures.charges})`,
    met: figures.payments >= figures.charges * GUARDED_MIN_PAID_SHARE,
    capacity: true,
  };
}

/**
 * @example
 * const figures = await runChargeLoad('guarded', settings, partialPlan(settings));
 * figures.doubleCharges; // from the providers' ledgers
 */
export async function runChargeLoad(
  mode: ServiceMode,
  settings: ScenarioSettings,
  plan: ChargeLoadPlan,
): Promise<ChargeLoadFigures> {
  const runId = `${plan.name}_${mode}_${settings.seed}_${process.pid}_${Date.now().toString(36)}`;
  const say = (line: string) => settings.progress?.(`${plan.name}/${mode}: ${line}`);
  const phaseStarted = performance.now();
  const [a, b] = await Promise.all([
    startProvider({
      name: 'a',
      ledgerPath: join(settings.workDirectory, `${runId}-a.db`),
      seed: settings.seed,
    }),
    startProvider({
      name: 'b',
      ledgerPath: join(settings.workDirectory, `${runId}-b.db`),
      seed: settings.seed + 1,
    }),
  ]);
  let instances: ServiceInstances | undefined;
  try {
    const db = settings.db ?? join(settings.workDirectory, `${runId}-service.db`);
    instances = await startInstances(plan.instances, {
      mode,
      db,
      providerA: a.url,
      providerB: b.url,
      seed: settings.seed,
      ...(settings.broker !== undefined && { broker: settings.broker }),
      flags: [
        '--rows',
        '0',
        '--scrypt-cost',
        '1024',
        // SQLite connections are worker threads, dear on two cores; Postgres ones are cheap here.
        '--db-pool',
        settings.db === undefined ? '2' : '8',
        ...(settings.broker !== undefined ? ['--event-channel', runId.toLowerCase().slice(0, 40)] : []),
        ...plan.serviceFlags,
      ],
    });
    say(`${plan.instances} instance(s) up; making ${plan.orders} orders`);
    const ordersStarted = performance.now();
    const orders = await createCustomerOrders({
      url: instances.urls[0] as string,
      orders: plan.orders,
      seed: settings.seed,
      runId: runId.toLowerCase(),
    });
    if (plan.faults.a !== undefined) await a.faults.set({ ...plan.faults.a, seed: settings.seed });
    if (plan.faults.b !== undefined) await b.faults.set({ ...plan.faults.b, seed: settings.seed + 1 });

    const loadStarted = performance.now();
    const bucketMs = plan.bucketMs ?? 500;
    const buckets = new TimeBuckets({ startedAtMs: loadStarted, bucketMs });
    const breakerSampler = sampleBreakers({ url: instances.urls[0] as string, startedAtMs: loadStarted });
    const sender = httpChargeSender({ urls: instances.urls, timeoutMs: plan.clientTimeoutMs, buckets });
    const outcomes: Record<OutcomeKind, number> = { ok: 0, fail: 0, unknown: 0 };
    const acknowledged: string[] = [];
    const refusals: Record<string, number> = {};
    let requests = 0;
    const loadMs = (plan.orders / plan.ratePerSecond) * 1_000;
    say(`charging at ${plan.ratePerSecond}/s for ~${Math.round(loadMs)} ms`);
    const disruption = plan.disrupt?.(instances, loadMs) ?? Promise.resolve([]);
    const loadPhase = settings.phase?.(`${plan.name}/${mode}: charges`, orders.length);
    let arrivalsDone = 0;
    const load = await runOpenLoop({
      ratePerSecond: plan.ratePerSecond,
      arrivals: orders.length,
      seed: settings.seed,
      arrive: async (index) => {
        const order = orders[index];
        if (order === undefined) return;
        const outcome = await plan.client(
          {
            orderId: order.orderId,
            idempotencyKey: `${runId}-${order.orderId}`,
            authorization: order.authorization,
            instance: index,
          },
          sender,
        );
        outcomes[outcome.kind]++;
        requests += outcome.attempts;
        if (outcome.kind === 'ok') acknowledged.push(order.orderId);
        if (outcome.kind === 'fail') {
          const status = String(outcome.status ?? 'none');
          refusals[status] = (refusals[status] ?? 0) + 1;
        }
        loadPhase?.tick(++arrivalsDone);
      },
    }).finally(() => loadPhase?.end());
    const disruptions = await disruption;
    const loadEndedMs = Math.round(performance.now() - loadStarted);

    const orderIds = orders.map((order) => order.orderId);
    const providers = [
      { name: 'a', url: a.url },
      { name: 'b', url: b.url },
    ];
    const truth = () => checkGroundTruth({ providers, db, orderIds, acknowledged });
    const settleStarted = performance.now();
    // Naive has no completer: what is half-way stays so; only its fire-and-forget invoices may still land.
    const settleLimit = mode === 'guarded' ? plan.settleMs : Math.min(plan.settleMs, 1_500);
    for (;;) {
      const now = await truth();
      if (now.ordersInBetween === 0 && now.paymentsWithoutInvoice === 0) break;
      if (performance.now() - settleStarted > settleLimit) break;
      await sleep(250);
    }
    const settleMs = Math.round(performance.now() - settleStarted);
    const statsA = await a.stats();
    const breakers = await breakerSampler.stop();
    await instances.stop();
    instances = undefined;
    const final = await truth();
    say(
      `${final.doubleCharges} double charges, ${final.acknowledgedButMissing} acknowledged but missing, ${final.ordersInBetween} in between`,
    );
    return {
      ...final,
      charges: orders.length,
      ratePerSecond: plan.ratePerSecond,
      clientOutcomes: outcomes,
      refusals,
      requests,
      latency: buckets.overall(),
      timeline: buckets.summary(),
      maxArrivalLagMs: load.maxLagMs,
      settleMs,
      disruptions,
      faultWindows: (['a', 'b'] as const)
        .filter((provider) => plan.faults[provider] !== undefined)
        .map((provider) => ({
          label: `provider ${provider.toUpperCase()} faults`,
          fromMs: 0,
          toMs: loadEndedMs,
        })),
      breakers,
      bucketMs,
      providerA: {
        charges: statsA.charges,
        replays: statsA.replays,
        droppedResponses: statsA.droppedResponses,
        dropShare:
          Math.round((statsA.droppedResponses / Math.max(1, statsA.charges + statsA.replays)) * 1_000) /
          1_000,
      },
      phasesMs: {
        start: Math.round(ordersStarted - phaseStarted),
        orders: Math.round(loadStarted - ordersStarted),
        load: Math.round(settleStarted - loadStarted),
        settle: settleMs,
      },
    };
  } finally {
    await instances?.stop();
    await Promise.allSettled([a.stop(), b.stop()]);
  }
}

/**
 * The scoreboard figures of a charging run.
 *
 * @example
 * chargeHeadline(figures); // [{ label: 'charges', value: 300 }, { label: 'double-charged', value: 0 }, …]
 */
export function chargeHeadline(figures: ChargeLoadFigures): HeadlineFigure[] {
  return [
    { label: 'charges', value: figures.charges },
    { label: 'double-charged', value: figures.doubleCharges },
    { label: 'ack-missing', value: figures.acknowledgedButMissing },
    { label: 'in between', value: figures.ordersInBetween },
    { label: 'dup invoices', value: figures.duplicateInvoices },
    { label: 'uninvoiced', value: figures.paymentsWithoutInvoice },
    { label: 'p99 ms', value: figures.latency.p99Ms },
  ];
}

/**
 * The report's timeline of a charging run: charges over time, the providers' fault windows, the
 * breakers and the disruptions.
 *
 * @example
 * chargeChart(figures).series.charge; // buckets of the charge requests
 */
export function chargeChart(figures: ChargeLoadFigures): RunTimeline {
  return {
    bucketMs: figures.bucketMs,
    series: { charge: figures.timeline },
    faults: figures.faultWindows,
    breakers: figures.breakers,
    alerts: [],
    marks: figures.disruptions,
  };
}
