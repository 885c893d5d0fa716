/**
 * @module
 * Runs the lab: the named scenarios, each naive then guarded, one after the other (they would
 * otherwise share two cores and measure each other), writes `results.json` and the HTML report
 * `index.html` beside it, and prints a plain scoreboard. Progress shows as bars on a terminal and
 * as plain lines anywhere else. The `keel lab` command is built on this.
 *
 * Each scenario runs at a pace (machine-pace.ts): the share of the nominal load rates this machine
 * can carry, measured before it. A scenario whose runs missed only rules of capacity (the baseline
 * without a fault unhealthy, orders left unpaid) is played again, both modes, at 0.6 of that pace,
 * down to the floor; the notes say why, and the verdict is the last play's.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { checkInteger } from 'keel';
import { UnknownScenarioError } from './lab-errors.ts';
import {
  canMeasureCpuShare,
  checkPace,
  FULL_SPEED_SHARE,
  MIN_PACE,
  measureCpuShare,
  PACE_PROBE_MS,
  paceForShare,
  slowerPace,
} from './machine-pace.ts';
import { labProgress } from './progress.ts';
import { renderHtmlReport } from './report/html-report.ts';
import {
  type HeadlineFigure,
  missedChecks,
  overloaded,
  runScenario,
  type Scenario,
  type ScenarioResult,
} from './scenario.ts';
import { cascadeScenario } from './scenarios/cascade.ts';
import { duplicatesScenario } from './scenarios/duplicates.ts';
import { partialScenario } from './scenarios/partial.ts';
import { silentScenario } from './scenarios/silent.ts';

/** The scenarios the lab has, by name, in the order a full run plays them. */
export const LAB_SCENARIOS: Readonly<Record<string, Scenario<object>>> = Object.freeze({
  cascade: cascadeScenario,
  partial: partialScenario,
  duplicates: duplicatesScenario,
  silent: silentScenario,
});

export interface RunLabOptions {
  /** Names from {@link LAB_SCENARIOS}; none (or an empty list) runs them all. @default all of them */
  scenarios?: readonly string[];
  /** @default false */
  quick?: boolean;
  /** @default 1 */
  seed?: number;
  /** A `postgres://` URL for the service; sqlite files otherwise. */
  db?: string;
  /** `nats://…` or `amqp://…`; in-process events otherwise. */
  broker?: string;
  /**
   * Share of the nominal load rates to offer, from 0.3 to 1, or `'auto'`: measure before each
   * scenario how much CPU this machine gives the lab and pace the scenario to it (see
   * machine-pace.ts). Either way, a scenario that misses only rules of capacity is played again
   * more slowly. @default 'auto'
   */
  pace?: number | 'auto';
  /** Where `results.json` and `index.html` go. @default 'lab-report' */
  reportDirectory?: string;
  /** Receives the scoreboard and progress lines. @default process.stdout */
  out?: (text: string) => void;
  /**
   * A terminal to draw progress bars on, when it is a TTY; plain lines through `out` otherwise.
   * @default process.stderr when `out` is the default, none otherwise
   */
  progressTerminal?: NodeJS.WriteStream;
}

/** A scenario that could not be played to the end. */
export interface ScenarioError {
  readonly name: string;
  /** `name: message` of the error, and of its causes. */
  readonly error: string;
}

export interface LabResults {
  readonly startedAt: string;
  readonly quick: boolean;
  readonly seed: number;
  readonly db: 'sqlite' | 'postgres';
  readonly broker: string;
  /** How each scenario's pace was chosen: measured before it, or given. */
  readonly pacing: 'auto' | 'fixed';
  readonly results: readonly ScenarioResult<object>[];
  /**
   * Scenarios that could not be played to the end (a provider or an instance that would not start,
   * a database that went away), with the error: the lab goes on with the next one.
   */
  readonly errors: readonly ScenarioError[];
  /** Every scenario passed. */
  readonly pass: boolean;
  readonly durationMs: number;
}

/**
 * @example
 * const lab = await runLab({ scenarios: ['partial'], quick: true, seed: 7 });
 * process.exitCode = lab.pass ? 0 : 1;
 */
export async function runLab(options: RunLabOptions = {}): Promise<LabResults> {
  const names = options.scenarios?.length ? options.scenarios : Object.keys(LAB_SCENARIOS);
  const scenarios = names.map((name) => {
    const scenario = LAB_SCENARIOS[name];
    if (scenario === undefined) throw new UnknownScenarioError(name, Object.keys(LAB_SCENARIOS));
    return scenario;
  });
  const seed = checkInteger('seed', options.seed ?? 1, 0, 2 ** 31);
  const quick = options.quick ?? false;
  const pacing = options.pace ?? 'auto';
  const fixedPace = pacing === 'auto' ? undefined : checkPace(pacing);
  const out = options.out ?? ((text: string) => void process.stdout.write(text));
  const started = performance.now();
  const startedAt = new Date().toISOString();
  const progress = labProgress({
    out,
    terminal: options.progressTerminal ?? (options.out === undefined ? process.stderr : undefined),
  });
  const workDirectory = mkdtempSync(join(tmpdir(), 'keel-lab-'));
  const results: ScenarioResult<object>[] = [];
  const errors: ScenarioError[] = [];
  // Ctrl-C ends the process through `exit`, where the instances' last-resort handler kills them;
  // the default SIGINT action would skip it and leave services running.
  const interrupted = () => process.exit(130);
  process.once('SIGINT', interrupted);
  process.once('SIGTERM', interrupted);
  try {
    for (const scenario of scenarios) {
      progress.line(`${scenario.name}: ${scenario.summary}`);
      const { pace, note } = await paceFor(fixedPace);
      if (note !== undefined) progress.line(`  ${note}`);
      const play = (at: number) =>
        runScenario(scenario, {
          quick,
          seed,
          pace: at,
          db: options.db,
          broker: options.broker,
          workDirectory,
          progress: (line) => progress.line(`  ${line}`),
          phase: (name, total) => progress.phase(name, total),
        });
      const notes = note === undefined ? [] : [note];
      const scenarioStarted = performance.now();
      try {
        let result = await play(pace);
        // A run that missed only rules of capacity measured the machine, not the guard: both modes
        // are played again, slower, until they pass or the pace reaches its floor.
        while (overloaded(result) && result.pace > MIN_PACE) {
          const slower = slowerPace(result.pace);
          const missed = missedChecks(result).map((check) => check.rule);
          const why = `at pace ${result.pace} the machine did not carry the load (${missed.join('; ')})`;
          progress.line(`  ${scenario.name}: ${why}; playing it again at pace ${slower}`);
          notes.push(`${why}: played again at pace ${slower}`);
          result = await play(slower);
        }
        // The scenario's time is every play's, the slower replays included.
        results.push({
          ...result,
          notes: [...result.notes, ...notes],
          durationMs: Math.round(performance.now() - scenarioStarted),
        });
      } catch (error) {
        // Its processes are stopped by the scenario's own clean-up; the other scenarios still run.
        const described = describeError(error);
        progress.line(`  ${scenario.name}: could not be played: ${described}`);
        errors.push({ name: scenario.name, error: described });
      }
    }
  } finally {
    progress.stop();
    process.off('SIGINT', interrupted);
    process.off('SIGTERM', interrupted);
    rmSync(workDirectory, { recursive: true, force: true });
  }
  const lab: LabResults = {
    startedAt,
    quick,
    seed,
    db: options.db === undefined ? 'sqlite' : 'postgres',
    broker: options.broker?.split('://')[0] ?? 'in-process',
    pacing: fixedPace === undefined ? 'auto' : 'fixed',
    results,
    errors,
    pass: errors.length === 0 && results.every((result) => result.verdict === 'pass'),
    durationMs: Math.round(performance.now() - started),
  };
  const directory = resolve(options.reportDirectory ?? 'lab-report');
  mkdirSync(directory, { recursive: true });
  writeFileSync(join(directory, 'results.json'), `${JSON.stringify(lab, null, 2)}\n`);
  writeFileSync(join(directory, 'index.html'), renderHtmlReport(lab));
  out(scoreboard(lab));
  out(`results: ${join(directory, 'results.json')}\n`);
  out(`report:  ${join(directory, 'index.html')}\n`);
  return lab;
}

/** An error and its causes on one line. */
function describeError(error: unknown): string {
  const parts: string[] = [];
  for (let at: unknown = error; at !== undefined && parts.length < 4; ) {
    parts.push(at instanceof Error ? `${at.name}: ${at.message}` : String(at));
    at = at instanceof Error ? at.cause : undefined;
  }
  return parts.join(' ← ');
}

/** The pace of the next scenario: the one given, or one measured now, with what was measured. */
async function paceFor(fixed: number | undefined): Promise<{ pace: number; note?: string }> {
  if (fixed !== undefined) return { pace: fixed };
  if (!canMeasureCpuShare()) {
    return { pace: 1, note: 'pace 1: this Node cannot measure a thread’s CPU time (Node ≥ 23.9 can)' };
  }
  const share = await measureCpuShare();
  const pace = paceForShare(share);
  return {
    pace,
    note: `pace ${pace}: busy threads got ${Math.round(share * 100)} % of this machine's CPU time over ${PACE_PROBE_MS / 1_000} s before the scenario (pace 1 from ${FULL_SPEED_SHARE * 100} %)`,
  };
}

/** The figures a scoreboard row shows for a run. */
function headline(figures: readonly HeadlineFigure[]): string {
  return figures.map((figure) => `${figure.label} ${figure.value}`).join(', ');
}

/**
 * The scoreboard as plain text: one block per scenario, naive and guarded side by side with their
 * bars.
 *
 * @example
 * process.stdout.write(scoreboard(await runLab({ quick: true })));
 */
export function scoreboard(lab: LabResults): string {
  const lines = [
    `\nKeel lab — ${lab.quick ? 'quick' : 'full'} run, seed ${lab.seed}, ${lab.db}, ${lab.broker}\n`,
  ];
  for (const result of lab.results) {
    lines.push(`${result.verdict === 'pass' ? 'PASS' : 'FAIL'}  ${result.name}  (${result.durationMs} ms)`);
    for (const run of [result.naive, result.guarded]) {
      lines.push(`  ${run.mode.padEnd(8)}${headline(run.headline)}`);
      for (const check of run.checks) lines.push(`          ${check.met ? '✓' : '✗'} ${check.rule}`);
    }
    for (const note of result.notes) lines.push(`  note: ${note}`);
  }
  for (const failed of lab.errors) lines.push(`ERROR ${failed.name}: ${failed.error}`);
  lines.push(`\n${lab.pass ? 'every scenario passed' : 'some scenarios failed'} in ${lab.durationMs} ms\n`);
  return `${lines.join('\n')}\n`;
}
