/**
 * @module
 * Runs the lab: the named scenarios, each naive then guarded, one after the other (they would
 * otherwise share two cores and measure each other), writes `results.json` and the HTML report
 * `index.html` beside it, and prints a plain scoreboard. Progress shows as bars on a terminal and
 * as plain lines anywhere else. The `keel lab` command is built on this.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { checkInteger } from 'keel';
import { UnknownScenarioError } from './lab-errors.ts';
import { labProgress } from './progress.ts';
import { renderHtmlReport } from './report/html-report.ts';
import { type HeadlineFigure, runScenario, type Scenario, type ScenarioResult } from './scenario.ts';
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

export interface LabResults {
  readonly startedAt: string;
  readonly quick: boolean;
  readonly seed: number;
  readonly db: 'sqlite' | 'postgres';
  readonly broker: string;
  readonly results: readonly ScenarioResult<object>[];
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
  const out = options.out ?? ((text: string) => void process.stdout.write(text));
  const started = performance.now();
  const startedAt = new Date().toISOString();
  const progress = labProgress({
    out,
    terminal: options.progressTerminal ?? (options.out === undefined ? process.stderr : undefined),
  });
  const workDirectory = mkdtempSync(join(tmpdir(), 'keel-lab-'));
  const results: ScenarioResult<object>[] = [];
  // Ctrl-C ends the process through `exit`, where the instances' last-resort handler kills them;
  // the default SIGINT action would skip it and leave services running.
  const interrupted = () => process.exit(130);
  process.once('SIGINT', interrupted);
  process.once('SIGTERM', interrupted);
  try {
    for (const scenario of scenarios) {
      progress.line(`${scenario.name}: ${scenario.summary}`);
      results.push(
        await runScenario(scenario, {
          quick,
          seed,
          db: options.db,
          broker: options.broker,
          workDirectory,
          progress: (line) => progress.line(`  ${line}`),
          phase: (name, total) => progress.phase(name, total),
        }),
      );
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
    results,
    pass: results.every((result) => result.verdict === 'pass'),
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
  lines.push(`\n${lab.pass ? 'every scenario passed' : 'some scenarios failed'} in ${lab.durationMs} ms\n`);
  return `${lines.join('\n')}\n`;
}
