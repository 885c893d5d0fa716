/**
 * @module
 * What a scenario is and how one is judged. A scenario runs twice with the same seed, load and
 * faults — first against the naive configuration, then against the guarded one — and each run is
 * held to its own bar: the guarded run must meet the guarantee the scenario is about, and the naive
 * run must visibly break it. A naive run that looks fine demonstrates nothing, so it fails the
 * scenario as surely as a guarded run that breaks its guarantee.
 */
import type { ServiceMode } from '../service/config.ts';
import type { BucketSummary } from './time-buckets.ts';

/** How a scenario is run. */
export interface ScenarioSettings {
  /** A short run, for tests and CI; the result says what it scaled down. */
  readonly quick: boolean;
  readonly seed: number;
  /** A `postgres://` URL for the service's database; a sqlite file in the run's directory otherwise. */
  readonly db?: string | undefined;
  /** `nats://…` or `amqp://…`; in-process events otherwise. */
  readonly broker?: string | undefined;
  /** A directory the run may write to (ledgers, the sqlite database); removed afterwards. */
  readonly workDirectory: string;
  /**
   * Share of the nominal load rates the run offers, each load phase stretched by as much (see
   * machine-pace.ts): 1 on a machine that gives the lab all its CPU. @default 1
   */
  readonly pace?: number | undefined;
  /** Plain progress lines, e.g. to stderr. @default none */
  readonly progress?: ((line: string) => void) | undefined;
  /**
   * Starts a phase with a known amount of work (`total` steps), for a progress bar; what is
   * returned is told how far it got. @default none
   */
  readonly phase?: ((name: string, total: number) => PhaseProgress) | undefined;
}

/** How far a phase started by {@link ScenarioSettings.phase} got. */
export interface PhaseProgress {
  /** `done` of the phase's steps are done. */
  tick(done: number): void;
  /** The phase is over, whether or not every step was done. */
  end(): void;
}

/** A span of a run during which a fault played, in ms from the start of the load. */
export interface FaultWindow {
  readonly label: string;
  readonly fromMs: number;
  readonly toMs: number;
}

/** A breaker's state as the lab saw it on the service's `/metrics`. */
export interface BreakerSample {
  readonly atMs: number;
  readonly breaker: string;
  readonly state: 'closed' | 'half-open' | 'open' | 'isolated';
}

/** An alert notification the service sent, as the lab received it. */
export interface AlertMark {
  readonly atMs: number;
  readonly alert: string;
  readonly status: 'firing' | 'resolved';
  /** What broke, as the alert says it (entity ids included). */
  readonly summary: string;
}

/** Something the lab did during the run: a SIGKILL, a restart, a repair command. */
export interface RunMark {
  readonly atMs: number;
  readonly label: string;
}

/**
 * What the report draws for one run, on one time axis (ms from the start of the load): latency
 * percentiles and goodput per request class, the fault windows shaded, breaker states, alerts and
 * the lab's own actions.
 */
export interface RunTimeline {
  /** Width of a bucket of `series`, in ms. */
  readonly bucketMs: number;
  /** Buckets per request class, e.g. `charge`, `login`, `report`. */
  readonly series: Readonly<Record<string, readonly BucketSummary[]>>;
  readonly faults: readonly FaultWindow[];
  readonly breakers: readonly BreakerSample[];
  readonly alerts: readonly AlertMark[];
  readonly marks: readonly RunMark[];
}

/** One figure of a scoreboard row, e.g. `{ label: 'double-charged', value: 0 }`. */
export interface HeadlineFigure {
  readonly label: string;
  readonly value: number | string;
}

/** One rule of a bar, and whether the run met it. */
export interface BarCheck {
  readonly rule: string;
  readonly met: boolean;
  /**
   * The rule judges whether the machine carried the load (a healthy baseline without the fault,
   * the orders paid), not the guarantee or the failure the scenario is about: a scenario whose
   * runs miss only such rules is played again at a slower pace (see run-lab.ts).
   */
  readonly capacity?: boolean;
}

/**
 * True when `result` failed only for want of capacity: every rule either run missed is a
 * {@link BarCheck.capacity} rule.
 *
 * @example
 * if (overloaded(result)) playAgainSlower();
 */
export function overloaded(result: ScenarioResult<object>): boolean {
  const missed = missedChecks(result);
  return missed.length > 0 && missed.every((check) => check.capacity === true);
}

/**
 * The rules either run of `result` missed, naive's first.
 *
 * @example
 * missedChecks(result).map((check) => check.rule);
 */
export function missedChecks(result: ScenarioResult<object>): BarCheck[] {
  return [...result.naive.checks, ...result.guarded.checks].filter((check) => !check.met);
}

/** A scenario's figures for one mode, with the bar that mode was held to. */
export type ModeResult<F> = F & {
  readonly mode: ServiceMode;
  /** Every rule of this mode's bar met: the guarantee held (guarded), or the failure showed (naive). */
  readonly pass: boolean;
  readonly checks: readonly BarCheck[];
  /** The figures the scoreboard shows for this run. */
  readonly headline: readonly HeadlineFigure[];
  /** What the HTML report draws for this run. */
  readonly chart: RunTimeline;
};

export interface ScenarioResult<F = Record<string, unknown>> {
  readonly name: string;
  readonly quick: boolean;
  readonly seed: number;
  /** The pace both runs were offered their load at (1: the nominal rates). */
  readonly pace: number;
  readonly naive: ModeResult<F>;
  readonly guarded: ModeResult<F>;
  /** `pass` only when the guarded run met its bar and the naive run showed the failure. */
  readonly verdict: 'pass' | 'fail';
  /** What this run scaled down or left out, e.g. fewer charges than the full bar in quick mode. */
  readonly notes: readonly string[];
  readonly durationMs: number;
}

/** A failure pattern, naive vs guarded. */
export interface Scenario<F> {
  readonly name: string;
  /** One line: the faults and clients it plays. */
  readonly summary: string;
  /** Runs the scenario once against `mode` and measures it. */
  run(mode: ServiceMode, settings: ScenarioSettings): Promise<F>;
  /** The guarantee, as rules the guarded figures must meet. */
  guardedBar(figures: F, settings: ScenarioSettings): BarCheck[];
  /** The failure, as rules the naive figures must meet to show it. */
  naiveBar(figures: F, settings: ScenarioSettings): BarCheck[];
  /** What `settings` scale down, for the result's notes. */
  notes(settings: ScenarioSettings): string[];
  /** The figures of a scoreboard row. */
  headline(figures: F): HeadlineFigure[];
  /** The timeline the report draws. */
  chart(figures: F): RunTimeline;
}

/** What a pace below 1 changed, for the result's notes. */
function paceNotes(settings: ScenarioSettings): string[] {
  const pace = settings.pace ?? 1;
  if (pace >= 1) return [];
  return [
    `paced to ${pace} of the nominal load: every arrival rate × ${pace} and every load phase ÷ ${pace}, so the same requests arrive more slowly; timeouts and the services' settings unchanged`,
  ];
}

/**
 * Runs `scenario` naive then guarded with the same settings and judges both.
 *
 * @example
 * const result = await runScenario(partialScenario, { quick: true, seed: 7, workDirectory });
 * result.verdict; // 'pass' when guarded held and naive broke
 */
export async function runScenario<F extends object>(
  scenario: Scenario<F>,
  settings: ScenarioSettings,
): Promise<ScenarioResult<F>> {
  const started = performance.now();
  const judged = async (mode: ServiceMode): Promise<ModeResult<F>> => {
    settings.progress?.(`${scenario.name}: ${mode} run`);
    const figures = await scenario.run(mode, settings);
    const checks =
      mode === 'guarded' ? scenario.guardedBar(figures, settings) : scenario.naiveBar(figures, settings);
    const pass = checks.length > 0 && checks.every((check) => check.met);
    settings.progress?.(`${scenario.name}: ${mode} ${pass ? 'met its bar' : 'missed its bar'}`);
    return {
      ...figures,
      mode,
      pass,
      checks,
      headline: scenario.headline(figures),
      chart: scenario.chart(figures),
    };
  };
  const naive = await judged('naive');
  const guarded = await judged('guarded');
  return {
    name: scenario.name,
    quick: settings.quick,
    seed: settings.seed,
    pace: settings.pace ?? 1,
    naive,
    guarded,
    verdict: naive.pass && guarded.pass ? 'pass' : 'fail',
    notes: [...scenario.notes(settings), ...paceNotes(settings)],
    durationMs: Math.round(performance.now() - started),
  };
}
