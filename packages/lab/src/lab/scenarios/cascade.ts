/**
 * @module
 * **cascade** — reports spike with heavy queries and provider A starts hanging, while logins and
 * charges keep arriving at the same rate; every client times out and retries at once. Guarded,
 * login keeps its share of the connection pool and its p99 at most doubles, no more charges wait on
 * A than its bulkhead holds, the rest go to B untried, A's breaker opens once those time out, and the
 * reports beyond their share are shed.
 * Naive, charges hold pooled connections while A hangs, reports take the rest, and login — which
 * never touches a provider — waits behind both until its clients give up.
 */
import { type CascadeFigures, type CascadePhase, type CascadePlan, runCascadeLoad } from '../cascade-load.ts';
import { paced } from '../machine-pace.ts';
import type { BarCheck, HeadlineFigure, RunTimeline, Scenario, ScenarioSettings } from '../scenario.ts';

/** Guarded: login p99 during the fault at most this many times its no-fault p99. */
export const CASCADE_GUARDED_MAX_LOGIN_P99_RATIO = 2;
/** Guarded: charge goodput during the fault at least this share of the no-fault goodput. */
export const CASCADE_GUARDED_MIN_GOODPUT_RATIO = 0.9;
/** Naive must show the cascade: login p99 at least this many times its no-fault p99 … */
export const CASCADE_NAIVE_MIN_LOGIN_P99_RATIO = 5;
/** … or more than this share of login requests timed out. */
export const CASCADE_NAIVE_MIN_LOGIN_TIMEOUT_SHARE = 0.1;
/** Guarded, without the fault: at least this share of charges acknowledged … */
export const CASCADE_BASELINE_MIN_GOODPUT_SHARE = 0.95;
/** … and at most this share of login requests timed out, or the ratios compare against a broken run … */
export const CASCADE_BASELINE_MAX_LOGIN_TIMEOUT_SHARE = 0.01;
/** … and a login p99 of at most this share of the login client's timeout (room left for the fault). */
export const CASCADE_BASELINE_MAX_LOGIN_P99_SHARE = 0.25;
/** Sales rows the heavy report reads (each report a full scan, a grouping and a sort). */
export const CASCADE_SALES_ROWS = 300_000;

/**
 * The phases' lengths, after a warm-up of the no-fault load that is never measured. Both phases are
 * as long as each other, so a stall of the shared machine is as likely to land in either and their
 * p99s rank the same share of as many logins; the quick fault phase is still long enough that the
 * few charges a hang catches before A's breaker opens stay a small share of those it offers.
 */
const PHASES_MS = {
  quick: { warmUp: 1_000, noFault: 3_500, fault: 3_500 },
  full: { warmUp: 1_000, noFault: 9_000, fault: 9_000 },
};

/**
 * Provider A's hang is told from a stalled machine by its length: an attempt times out only after
 * this long, well past a scheduling stall of a loaded machine (which must not open B's breaker too),
 * while the provider's bulkhead and its breaker's run of failures bound the charges a hang catches.
 */
const PROVIDER_TIMEOUT_MS = 400;

/**
 * The plan of one run; exported so a test or a report can show it.
 *
 * @example
 * const figures = await runCascadeLoad('guarded', settings, cascadePlan(settings));
 */
export function cascadePlan(settings: ScenarioSettings): CascadePlan {
  const phases = settings.quick ? PHASES_MS.quick : PHASES_MS.full;
  const { rate, span } = paced(settings);
  return {
    warmUpMs: span(phases.warmUp),
    noFaultMs: span(phases.noFault),
    faultMs: span(phases.fault),
    loginsPerSecond: rate(60),
    chargesPerSecond: rate(30),
    // Above the guarded report budget already: both phases carry about as much report work, and
    // the spike adds refusals, so the login ratio compares the fault with a baseline that has reports.
    reportsPerSecond: rate(2),
    reportSpikePerSecond: rate(6),
    salesRows: CASCADE_SALES_ROWS,
    clientTimeoutsMs: { login: 1_000, charge: 1_500, report: 1_500 },
    attempts: 2,
    providerBaseline: {},
    faultA: { hang: true },
    serviceFlags: [
      '--request-timeout',
      '1500',
      '--provider-timeout',
      String(PROVIDER_TIMEOUT_MS),
      '--invariant-interval',
      '60000',
    ],
  };
}

const percent = (share: number) => `${Math.round(share * 1_000) / 10} %`;

/** The fault really played: A's hang held the guarded service's calls until their timeout. */
function hangPlayed(figures: CascadeFigures): BarCheck {
  return {
    rule: `provider A's hang held requests (${figures.providerA.held})`,
    met: figures.providerA.held > 0,
  };
}

/**
 * The ratios mean something only against a healthy baseline: the guarded run did the work, and
 * with room to spare — a login p99 already near the client's timeout without a fault means the
 * machine was saturated, and a ratio against it measures the machine's queues, not the guards.
 */
function healthyBaseline(figures: CascadeFigures, settings: ScenarioSettings): BarCheck {
  const { noFault } = figures;
  const maxLoginP99Ms = cascadePlan(settings).clientTimeoutsMs.login * CASCADE_BASELINE_MAX_LOGIN_P99_SHARE;
  return {
    rule: `without the fault, ≥ ${CASCADE_BASELINE_MIN_GOODPUT_SHARE * 100} % of charges acknowledged, ≤ ${CASCADE_BASELINE_MAX_LOGIN_TIMEOUT_SHARE * 100} % of logins timed out and login p99 ≤ ${maxLoginP99Ms} ms (${percent(noFault.chargeGoodputShare)}, ${percent(noFault.loginTimeoutShare)}, ${noFault.login.p99Ms} ms)`,
    met:
      noFault.chargeGoodputShare >= CASCADE_BASELINE_MIN_GOODPUT_SHARE &&
      noFault.loginTimeoutShare <= CASCADE_BASELINE_MAX_LOGIN_TIMEOUT_SHARE &&
      noFault.login.p99Ms <= maxLoginP99Ms,
    capacity: true,
  };
}

function reportsHit(phase: CascadePhase): number {
  return phase.reports.shed + phase.reports.timedOut;
}

/**
 * @example
 * const result = await runScenario(cascadeScenario, { quick: true, seed: 7, workDirectory });
 */
export const cascadeScenario: Scenario<CascadeFigures> = {
  name: 'cascade',
  summary:
    'reports spike with heavy queries and provider A hangs, under steady logins and charges; clients time out and retry at once',
  run: (mode, settings) => runCascadeLoad(mode, settings, cascadePlan(settings)),
  guardedBar: (figures, settings) => {
    const baseline = healthyBaseline(figures, settings);
    // Against a baseline the machine could not carry, the ratios measure the machine: a miss of
    // theirs then counts as one for want of capacity too.
    return [
      {
        rule: `login p99 during the fault ≤ ${CASCADE_GUARDED_MAX_LOGIN_P99_RATIO}× its no-fault p99 (${figures.noFault.login.p99Ms} → ${figures.fault.login.p99Ms} ms)`,
        met: figures.loginP99Ratio <= CASCADE_GUARDED_MAX_LOGIN_P99_RATIO,
        capacity: !baseline.met,
      },
      {
        rule: `charge goodput during the fault ≥ ${CASCADE_GUARDED_MIN_GOODPUT_RATIO * 100} % of no-fault (${percent(figures.chargeGoodputRatio)})`,
        met: figures.chargeGoodputRatio >= CASCADE_GUARDED_MIN_GOODPUT_RATIO,
        capacity: !baseline.met,
      },
      baseline,
      hangPlayed(figures),
      {
        rule: `provider A's breaker opened and charges failed over to B (${figures.providerB.charges} at B)`,
        met:
          figures.breakers.some((sample) => sample.breaker === 'provider-a' && sample.state === 'open') &&
          figures.providerB.charges > 0,
      },
      {
        rule: `reports beyond their share shed during the spike (${reportsHit(figures.fault)} of ${figures.fault.reports.offered})`,
        met: reportsHit(figures.fault) > 0,
      },
    ];
  },
  naiveBar: (figures) => [
    {
      rule: `login p99 during the fault ≥ ${CASCADE_NAIVE_MIN_LOGIN_P99_RATIO}× its no-fault p99, or > ${CASCADE_NAIVE_MIN_LOGIN_TIMEOUT_SHARE * 100} % of logins timed out (${figures.loginP99Ratio}×, ${percent(figures.fault.loginTimeoutShare)})`,
      met:
        figures.loginP99Ratio >= CASCADE_NAIVE_MIN_LOGIN_P99_RATIO ||
        figures.fault.loginTimeoutShare > CASCADE_NAIVE_MIN_LOGIN_TIMEOUT_SHARE,
    },
  ],
  headline: (figures): HeadlineFigure[] => [
    { label: 'login p99 ms, no fault', value: figures.noFault.login.p99Ms },
    { label: 'login p99 ms, fault', value: figures.fault.login.p99Ms },
    { label: 'logins timed out', value: percent(figures.fault.loginTimeoutShare) },
    { label: 'charge goodput vs no fault', value: percent(figures.chargeGoodputRatio) },
    {
      label: 'reports answered/shed',
      value: `${figures.fault.reports.answered}/${reportsHit(figures.fault)}`,
    },
  ],
  chart: (figures): RunTimeline => ({
    bucketMs: figures.bucketMs,
    series: figures.timeline,
    faults: figures.faultWindows,
    breakers: figures.breakers,
    alerts: [],
    marks: [],
  }),
  notes: (settings) => {
    const phases = settings.quick ? PHASES_MS.quick : PHASES_MS.full;
    return [
      ...(settings.quick
        ? [
            `quick: ${phases.noFault / 1_000} s without the fault and ${phases.fault / 1_000} s with it, instead of ${PHASES_MS.full.noFault / 1_000} s and ${PHASES_MS.full.fault / 1_000} s`,
          ]
        : []),
      `each mode first runs ${phases.warmUp / 1_000} s of the no-fault load unmeasured (JIT and cold paths), then both phases are measured whole`,
      settings.db === undefined
        ? `${CASCADE_SALES_ROWS} sales rows seeded once per lab run into a template file that each mode copies`
        : `${CASCADE_SALES_ROWS} sales rows seeded by the service when its table is empty (kept between runs)`,
      'charge goodput is acknowledged charges per charge offered, each phase against its own offered load',
    ];
  },
};
