/**
 * @module
 * **duplicates** — two service instances over one database, and every charge submitted two or
 * three times at once, the copies spread across the instances (a double click, a retry racing its
 * original, two tabs), each copy retrying on its own with the same key. Guarded, the shared
 * idempotency record lets one copy charge and the others replay its answer, and the inbox lets one
 * invoice through per payment: exactly one charge and one invoice per order. Naive, the copies that
 * arrive while the first is still charging charge again.
 */
import { seededRandom } from '../../seeded-random.ts';
import { PAYMENT_COMPLETED } from '../../service/payment-events.ts';
import {
  type ChargeLoadFigures,
  type ChargeLoadPlan,
  chargeChart,
  chargeHeadline,
  paidEnough,
  runChargeLoad,
} from '../charge-load.ts';
import { doubleSubmit, retryWithBackoff } from '../clients.ts';
import { paced } from '../machine-pace.ts';
import type { HeadlineFigure, RunMark, RunTimeline, Scenario, ScenarioSettings } from '../scenario.ts';
import { labFaultState, setLabFaults } from '../service-lab-api.ts';

/** Orders of a full run. */
export const DUPLICATES_FULL_ORDERS = 500;
/** Orders of a quick run. */
export const DUPLICATES_QUICK_ORDERS = 100;

/** Share of `payment.completed` deliveries the broker hands to the invoice consumer a second time. */
export const DUPLICATES_REDELIVER_SHARE = 0.2;

/** A duplicates run's figures: the charging run's, and the redeliveries the broker played. */
export interface DuplicatesFigures extends ChargeLoadFigures {
  /** Deliveries of `payment.completed` handed to the invoice consumers twice, over every instance. */
  readonly redeliveredEvents: number;
}

/** What the disruption saw, for the figures. */
interface Redeliveries {
  count: number;
}

/**
 * The plan of one run; exported so a test or a report can show it. `redeliveries` receives the
 * count the instances' brokers played.
 *
 * @example
 * const figures = await runChargeLoad('guarded', settings, duplicatesPlan(settings, { count: 0 }));
 */
export function duplicatesPlan(settings: ScenarioSettings, redeliveries: Redeliveries): ChargeLoadPlan {
  const random = seededRandom(settings.seed + 3);
  return {
    name: 'duplicates',
    instances: 2,
    orders: settings.quick ? DUPLICATES_QUICK_ORDERS : DUPLICATES_FULL_ORDERS,
    ratePerSecond: paced(settings).rate(25),
    client: doubleSubmit({
      minCopies: 2,
      maxCopies: 3,
      random,
      each: retryWithBackoff({ attempts: 3, baseMs: 50, maxMs: 500, random }),
    }),
    clientTimeoutMs: 2_000,
    faults: { a: { latency: { p50Ms: 20, p99Ms: 80 } } },
    serviceFlags: [
      '--lab',
      '--request-timeout',
      '2500',
      '--provider-timeout',
      '1000',
      '--charge-lease',
      '3000',
      '--completer-interval',
      '500',
      '--invariant-interval',
      '60000',
    ],
    // The broker redelivers a share of the events to the invoice consumers from the first charge on.
    disrupt: async (instances, loadMs) => {
      const started = performance.now();
      const faults = {
        redeliverShare: DUPLICATES_REDELIVER_SHARE,
        types: [PAYMENT_COMPLETED],
        seed: settings.seed,
      };
      await Promise.all(instances.urls.map((url) => setLabFaults(url, faults)));
      const marks: RunMark[] = [
        {
          atMs: Math.round(performance.now() - started),
          label: `broker redelivers ${DUPLICATES_REDELIVER_SHARE * 100} % of ${PAYMENT_COMPLETED}`,
        },
      ];
      // Invoices trail the charges: count the redeliveries a little after the last arrival.
      await new Promise((resolve) => setTimeout(resolve, loadMs + 1_000));
      const states = await Promise.all(instances.urls.map((url) => labFaultState(url)));
      redeliveries.count = states.reduce((sum, state) => sum + state.redelivered, 0);
      marks.push({
        atMs: Math.round(performance.now() - started),
        label: `${redeliveries.count} deliveries redelivered so far`,
      });
      return marks;
    },
    settleMs: 8_000,
  };
}

function headline(figures: DuplicatesFigures): HeadlineFigure[] {
  return [...chargeHeadline(figures), { label: 'redelivered', value: figures.redeliveredEvents }];
}

function chart(figures: DuplicatesFigures): RunTimeline {
  const timeline = chargeChart(figures);
  const from = figures.disruptions[0]?.atMs ?? 0;
  return {
    ...timeline,
    faults: [
      ...timeline.faults,
      { label: 'broker redelivers events', fromMs: from, toMs: figures.disruptions.at(-1)?.atMs ?? from },
    ],
  };
}

const redeliveredSome = (figures: DuplicatesFigures) => ({
  rule: `the broker redelivered events (${figures.redeliveredEvents})`,
  met: figures.redeliveredEvents > 0,
});

/**
 * @example
 * const result = await runScenario(duplicatesScenario, { quick: true, seed: 7, workDirectory });
 */
export const duplicatesScenario: Scenario<DuplicatesFigures> = {
  name: 'duplicates',
  summary: `two instances over one database; every charge submitted 2–3 times at once across them; the broker redelivers ${DUPLICATES_REDELIVER_SHARE * 100} % of payment events`,
  async run(mode, settings) {
    const redeliveries = { count: 0 };
    const figures = await runChargeLoad(mode, settings, duplicatesPlan(settings, redeliveries));
    return { ...figures, redeliveredEvents: redeliveries.count };
  },
  guardedBar: (figures) => [
    { rule: '0 orders charged more than once', met: figures.doubleCharges === 0 },
    { rule: '0 orders with more than one invoice', met: figures.duplicateInvoices === 0 },
    { rule: 'every payment invoiced', met: figures.paymentsWithoutInvoice === 0 },
    {
      rule: 'every charged order has exactly one payment',
      met: figures.chargedOrders === figures.payments && figures.chargedButUnrecorded === 0,
    },
    { rule: '0 acknowledged-but-missing charges', met: figures.acknowledgedButMissing === 0 },
    paidEnough(figures),
    redeliveredSome(figures),
  ],
  naiveBar: (figures) => [
    {
      rule: 'duplicates > 0 (orders charged or invoiced more than once)',
      met: figures.doubleCharges + figures.duplicateInvoices > 0,
    },
    redeliveredSome(figures),
  ],
  headline,
  chart,
  notes: (settings) => [
    ...(settings.quick
      ? [`quick: ${DUPLICATES_QUICK_ORDERS} orders per mode instead of ${DUPLICATES_FULL_ORDERS}`]
      : []),
  ],
};
