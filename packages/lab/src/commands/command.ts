/**
 * @module
 * What a `keel` command is: a name, a line for the command list, its usage, and a run that takes
 * the arguments after its name and resolves with the process's exit code — 0 done, 1 the check or
 * the lab failed, 2 the command line was wrong.
 */
import { InvalidOptionError, KeelError } from 'keel';
import { UnknownScenarioError } from '../lab/lab-errors.ts';

export interface Command {
  readonly name: string;
  /** One line for `keel help`. */
  readonly summary: string;
  /** The full usage text for `keel <name> --help`. */
  readonly usage: string;
  run(argv: readonly string[]): Promise<number>;
}

/** Exit code of a command line that could not be understood. */
export const USAGE_ERROR = 2;

/** A command line a command cannot act on: a missing argument, a value out of range. */
export class CommandLineError extends KeelError {
  constructor(message: string) {
    super('KEEL_LAB_COMMAND_LINE', message);
  }
}

/**
 * The error is about the command line, not about the work: an unknown flag, a bad value, an
 * unknown scenario. The command answers it with its usage and exit code {@link USAGE_ERROR}.
 *
 * @example
 * if (isUsageError(error)) return USAGE_ERROR;
 */
export function isUsageError(error: unknown): error is Error {
  if (error instanceof CommandLineError || error instanceof InvalidOptionError) return true;
  if (error instanceof UnknownScenarioError) return true;
  return error instanceof TypeError && 'code' in error && String(error.code).startsWith('ERR_PARSE_ARGS');
}
