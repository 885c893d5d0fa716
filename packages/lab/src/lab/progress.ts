/**
 * @module
 * How a lab run shows its progress. On a terminal, a progress bar for each phase with a known
 * amount of work (the charges of a load, say), drawn while it runs, with the plain lines printed
 * above it and the bar left as it ended. Anywhere else — a CI log, a file, a test — plain lines
 * only, one per event and one when a phase ends, because redrawn bars turn a log into noise.
 */
import { MultiBar, Presets, type SingleBar } from 'cli-progress';
import { checkFunction } from 'keel';
import type { PhaseProgress } from './scenario.ts';

export interface LabProgressOptions {
  /** Where plain lines go when there are no bars. */
  out: (text: string) => void;
  /**
   * A terminal to draw bars on; plain lines only when absent or not a TTY.
   * @default none
   */
  terminal?: NodeJS.WriteStream | undefined;
}

/** A run's progress: plain lines, and phases with a known amount of work. */
export interface LabProgress {
  /** Whether bars are drawn (a TTY) rather than plain lines only. */
  readonly bars: boolean;
  /** One plain line (no newline). */
  line(text: string): void;
  /** Starts a phase of `total` steps. */
  phase(name: string, total: number): PhaseProgress;
  /** Removes the bars, leaving the terminal to what is printed next; idempotent. */
  stop(): void;
}

function plainProgress(out: (text: string) => void): LabProgress {
  return {
    bars: false,
    line: (text) => out(`${text}\n`),
    phase(name, total) {
      const started = performance.now();
      let reached = 0;
      let ended = false;
      return {
        tick(done) {
          reached = done;
        },
        end() {
          if (ended) return;
          ended = true;
          out(`    ${name}: ${reached} of ${total} done in ${Math.round(performance.now() - started)} ms\n`);
        },
      };
    },
    stop: () => undefined,
  };
}

function terminalProgress(terminal: NodeJS.WriteStream, out: (text: string) => void): LabProgress {
  // Bars exist only while a phase runs; lines printed then go above them, through the bars.
  let bars: MultiBar | undefined;
  let running = 0;
  const barsNow = () =>
    (bars ??= new MultiBar(
      {
        stream: terminal,
        format: '    {name} {bar} {value}/{total} {duration}s',
        barsize: 30,
        hideCursor: true,
        autopadding: true,
        fps: 10,
      },
      Presets.shades_classic,
    ));
  return {
    bars: true,
    line(text) {
      if (bars === undefined) out(`${text}\n`);
      else bars.log(`${text}\n`);
    },
    phase(name, total) {
      const bar: SingleBar = barsNow().create(total, 0, { name });
      running++;
      let ended = false;
      return {
        tick: (done) => bar.update(done),
        end() {
          if (ended) return;
          ended = true;
          running--;
          if (running > 0 || bars === undefined) return;
          // The last phase ended: flush the lines logged meanwhile, leave the bars as they ended.
          bars.update();
          bars.stop();
          bars = undefined;
        },
      };
    },
    stop() {
      bars?.stop();
      bars = undefined;
    },
  };
}

/**
 * Progress bars on a terminal, plain lines elsewhere.
 *
 * @example
 * const progress = labProgress({ out, terminal: process.stderr });
 * const load = progress.phase('duplicates/naive: charges', 100);
 * load.tick(40);
 * load.end();
 * progress.stop();
 */
export function labProgress(options: LabProgressOptions): LabProgress {
  const out = checkFunction('out', options.out);
  return options.terminal?.isTTY === true ? terminalProgress(options.terminal, out) : plainProgress(out);
}
