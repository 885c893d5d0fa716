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
import {
  type ChargeLoadFigures,
  type ChargeLoadPlan,
  chargeChart,
  chargeHeadline,
  paidEnough,
  runChargeLoad,
} from '../charge-load.ts';
import { doubleSubmit, retryWithBackoff } from '../clients.ts';
import type { Scenario, ScenarioSettings } from '../scenario.ts';

/** Orders of a full run. */
export const DUPLICATES_FULL_ORDERS = 500;
/** Orders of a quick run. */
export const DUPLICATES_QUICK_ORDERS = 100;

/**
 * The plan of one run; exported so a test or a report can show it.
 *
 * @example
 * const figures = await runChargeLoad('guarded', settings, duplicatesPlan(settings));
 */
export function duplicatesPlan(settings: ScenarioSettings): ChargeLoadPlan {
  const random = seededRandom(settings.seed + 3);
  return {
    name: 'duplicates',
    instances: 2,
    orders: settings.quick ? DUPLICATES_QUICK_ORDERS : DUPLICATES_FULL_ORDERS,
    ratePerSecond: 25,
    client: doubleSubmit({
      minCopies: 2,
      maxCopies: 3,
      random,
      each: retryWithBackoff({ attempts: 3, baseMs: 50, maxMs: 500, random }),
    }),
    clientTimeoutMs: 2_000,
    faults: { a: { latency: { p50Ms: 20, p99Ms: 80 } } },
    serviceFlags: [
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
    settleMs: 8_000,
  };
}

/**
 * @example
 * const result = await runScenario(duplicatesScenario, { quick: true, seed: 7, workDirectory });
 */
export const duplicatesScenario: Scenario<ChargeLoadFigures> = {
  name: 'duplicates',
  summary: 'two instances over one database; every charge submitted 2–3 times at once across them',
  run: (mode, settings) => runChargeLoad(mode, settings, duplicatesPlan(settings)),
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
  ],
  naiveBar: (figures) => [
    {
      rule: 'duplicates > 0 (orders charged or invoiced more than once)',
      met: figures.doubleCharges + figures.duplicateInvoices > 0,
    },
  ],
  headline: chargeHeadline,
  chart: chargeChart,
  notes: (settings) => [
    ...(settings.quick
      ? [`quick: ${DUPLICATES_QUICK_ORDERS} orders per mode instead of ${DUPLICATES_FULL_ORDERS}`]
      : []),
    'events are not redelivered by the lab yet: the inbox is exercised by the two relays only',
  ],
};
