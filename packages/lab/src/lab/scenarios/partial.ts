/**
 * @module
 * **partial** — the charge happens at the provider, and then its answer is lost: provider A drops
 * the response of a share of its charges, and one service instance is killed with SIGKILL in the
 * middle of the run and started again. Clients retry with back-off, with the same key. Guarded, the
 * derived provider key and the recovery points make every retry and the completer find the charge
 * already made: no order is charged twice, nothing acknowledged is missing, nothing stays half-way.
 * Naive, the blind retries charge again.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { seededRandom } from '../../seeded-random.ts';
import {
  type ChargeLoadFigures,
  type ChargeLoadPlan,
  chargeChart,
  chargeHeadline,
  paidEnough,
  runChargeLoad,
} from '../charge-load.ts';
import { retryWithBackoff } from '../clients.ts';
import { paced } from '../machine-pace.ts';
import type { BarCheck, Scenario, ScenarioSettings } from '../scenario.ts';

/** Share of provider A's charges whose response is dropped (the bar: at least 10 %). */
export const PARTIAL_DROP_RATE = 0.2;
/** Charges of a full run (the bar's minimum). */
export const PARTIAL_FULL_CHARGES = 2_000;
/** Charges of a quick run. */
export const PARTIAL_QUICK_CHARGES = 300;
/** Charges of a full run on Postgres (the bar for the distributed setup). */
export const PARTIAL_POSTGRES_FULL_CHARGES = 100_000;
/** Charges per second of the runs on the embedded default, and of quick runs. */
const RATE_PER_SECOND = 100;
/**
 * Charges per second of a full run on Postgres: 100,000 charges take 13 minutes a mode. On two cores
 * that also carry Postgres, NATS, the providers and the lab's clients, two guarded instances paid
 * every order at 150/s and fell behind at 200/s (median answer 1.1 s, 9 % refused); this leaves
 * them room for the SIGKILL, the restart and a database that grows by 100,000 orders.
 */
const POSTGRES_FULL_RATE_PER_SECOND = 125;

function onPostgres(settings: ScenarioSettings): boolean {
  return settings.db !== undefined;
}

function chargesOf(settings: ScenarioSettings): number {
  if (settings.quick) return PARTIAL_QUICK_CHARGES;
  return onPostgres(settings) ? PARTIAL_POSTGRES_FULL_CHARGES : PARTIAL_FULL_CHARGES;
}

function nominalRate(settings: ScenarioSettings): number {
  return !settings.quick && onPostgres(settings) ? POSTGRES_FULL_RATE_PER_SECOND : RATE_PER_SECOND;
}

/**
 * The plan of one run; exported so a test or a report can show it.
 *
 * @example
 * const figures = await runChargeLoad('naive', settings, partialPlan(settings));
 */
export function partialPlan(settings: ScenarioSettings): ChargeLoadPlan {
  return {
    name: 'partial',
    instances: 2,
    orders: chargesOf(settings),
    ratePerSecond: paced(settings).rate(nominalRate(settings)),
    client: retryWithBackoff({
      attempts: 4,
      baseMs: 100,
      maxMs: 1_000,
      random: seededRandom(settings.seed + 2),
    }),
    clientTimeoutMs: 2_000,
    faults: { a: { dropResponseRate: PARTIAL_DROP_RATE, latency: { p50Ms: 10, p99Ms: 60 } } },
    serviceFlags: [
      '--request-timeout',
      '1500',
      '--provider-timeout',
      '400',
      '--charge-lease',
      '2000',
      '--completer-interval',
      '250',
      '--invariant-interval',
      '60000',
    ],
    disrupt: async (instances, loadMs) => {
      const started = performance.now();
      const at = () => Math.round(performance.now() - started);
      await sleep(loadMs * 0.4);
      const pid = instances.pids()[0];
      await instances.kill(0);
      const killed = { atMs: at(), label: `SIGKILL instance 0 (pid ${pid})` };
      await sleep(300);
      const starts = await instances.restart(0);
      return [
        killed,
        {
          atMs: at(),
          label: `instance 0 restarted (pid ${instances.pids()[0]}, ${starts} start${starts === 1 ? '' : 's'})`,
        },
      ];
    },
    settleMs: 8_000,
  };
}

/** The fault really played: provider A dropped at least 10 % of the charge responses it sent. */
function droppedEnough(figures: ChargeLoadFigures): BarCheck {
  return {
    rule: 'provider A dropped ≥ 10 % of its charge responses',
    met: figures.providerA.dropShare >= 0.1,
  };
}

/**
 * @example
 * const result = await runScenario(partialScenario, { quick: true, seed: 7, workDirectory });
 */
export const partialScenario: Scenario<ChargeLoadFigures> = {
  name: 'partial',
  summary: `provider A charges then drops ${PARTIAL_DROP_RATE * 100} % of responses; one instance SIGKILLed mid-run and restarted; clients retry with back-off`,
  run: (mode, settings) => runChargeLoad(mode, settings, partialPlan(settings)),
  guardedBar: (figures, settings) => [
    { rule: '0 double charges', met: figures.doubleCharges === 0 },
    { rule: '0 acknowledged-but-missing charges', met: figures.acknowledgedButMissing === 0 },
    { rule: 'no order left charging after the completer ran', met: figures.ordersInBetween === 0 },
    { rule: 'every provider charge recorded as a payment', met: figures.chargedButUnrecorded === 0 },
    { rule: `at least ${chargesOf(settings)} charges`, met: figures.charges >= chargesOf(settings) },
    droppedEnough(figures),
    paidEnough(figures),
  ],
  naiveBar: (figures) => [
    { rule: 'double charges > 0', met: figures.doubleCharges > 0 },
    droppedEnough(figures),
  ],
  headline: chargeHeadline,
  chart: chargeChart,
  notes: (settings) =>
    settings.quick
      ? [`quick: ${PARTIAL_QUICK_CHARGES} charges per mode instead of ${PARTIAL_FULL_CHARGES}`]
      : onPostgres(settings)
        ? [
            `on Postgres: ${PARTIAL_POSTGRES_FULL_CHARGES} charges per mode at ${POSTGRES_FULL_RATE_PER_SECOND}/s (the embedded default: ${PARTIAL_FULL_CHARGES} at ${RATE_PER_SECOND}/s)`,
          ]
        : [],
};
