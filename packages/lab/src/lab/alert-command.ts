/**
 * @module
 * The lab acts on an alert the way the person paged would: it takes the command the alert's next
 * step prints between backticks, exactly as printed, and runs it — `keel …` as a child process of
 * this repository's `keel` (`node --conditions=keel-source src/cli.ts …`). Nothing is rebuilt from
 * the lab's own knowledge of the run, so an alert that names the wrong database, or a command that
 * does not parse, fails the scenario as it would fail the person on call.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { checkInteger, KeelError } from 'keel';

/** An alert's command the lab cannot run as printed: quoting it does not follow, a shell construct. */
export class LabCommandError extends KeelError {
  constructor(message: string) {
    super('KEEL_LAB_ALERT_COMMAND', message);
  }
}

const KEEL_CLI = fileURLToPath(new URL('../cli.ts', import.meta.url));

/**
 * Splits one command line into words as a POSIX shell does for plain words and single quotes (what
 * the alerts print); double quotes, escapes and expansions are refused rather than guessed at.
 *
 * @example
 * shellWords("keel replay --db '/tmp/my lab.db' --missing-invoices");
 * // ['keel', 'replay', '--db', '/tmp/my lab.db', '--missing-invoices']
 */
export function shellWords(line: string): string[] {
  const words: string[] = [];
  let word: string | undefined;
  for (let i = 0; i < line.length; i++) {
    const char = line[i] as string;
    if (char === "'") {
      const end = line.indexOf("'", i + 1);
      if (end < 0) throw new LabCommandError(`unterminated quote in ${JSON.stringify(line)}`);
      word = (word ?? '') + line.slice(i + 1, end);
      i = end;
    } else if (/\s/.test(char)) {
      if (word !== undefined) words.push(word);
      word = undefined;
    } else if (/["\\$`;&|<>]/.test(char)) {
      throw new LabCommandError(`cannot run ${JSON.stringify(line)}: ${char} is not a plain word`);
    } else {
      word = (word ?? '') + char;
    }
  }
  if (word !== undefined) words.push(word);
  return words;
}

/**
 * The first `keel …` command an alert's text prints between backticks, as words.
 *
 * @example
 * commandInAlert('… then run `keel replay --db /tmp/p.db --missing-invoices`: …');
 * // ['keel', 'replay', '--db', '/tmp/p.db', '--missing-invoices']
 */
export function commandInAlert(text: string): string[] | undefined {
  const quoted = /`(keel [^`]+)`/.exec(text);
  return quoted === null ? undefined : shellWords(quoted[1] as string);
}

/** How a command run by {@link runKeelCommand} ended. */
export interface KeelCommandRun {
  readonly exitCode: number;
  readonly stdout: string;
  readonly stderr: string;
  readonly durationMs: number;
}

/**
 * Runs `keel <args>` (the words after `keel`) as a child process and collects what it printed.
 *
 * @example
 * const run = await runKeelCommand(['replay', '--db', '/tmp/p.db', '--missing-invoices']);
 * run.exitCode; // 0
 */
export async function runKeelCommand(
  args: readonly string[],
  options: { timeoutMs?: number } = {},
): Promise<KeelCommandRun> {
  const timeoutMs = checkInteger('timeoutMs', options.timeoutMs ?? 60_000);
  const started = performance.now();
  const child = spawn(process.execPath, ['--conditions=keel-source', KEEL_CLI, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    stdout += chunk;
  });
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
    stderr += chunk;
  });
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  try {
    const [code, signal] = (await once(child, 'exit')) as [number | null, NodeJS.Signals | null];
    return {
      exitCode: code ?? (signal === null ? 1 : 128),
      stdout,
      stderr,
      durationMs: Math.round(performance.now() - started),
    };
  } finally {
    clearTimeout(timer);
  }
}
