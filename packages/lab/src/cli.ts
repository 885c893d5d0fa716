#!/usr/bin/env node
/**
 * The `keel` command: `keel <command> [options]`, one module per command under `commands/`. A
 * command line that cannot be understood (an unknown flag, a bad number, an unknown scenario) is
 * answered on stderr with exit code 2, before anything starts.
 */
import { type Command, isUsageError, USAGE_ERROR } from './commands/command.ts';
import { labCommand } from './commands/lab-command.ts';
import { serveCommand } from './commands/serve-command.ts';

const COMMANDS: readonly Command[] = [labCommand, serveCommand];

const USAGE = `Usage: keel <command> [options]

Commands:
${COMMANDS.map((command) => `  ${command.name.padEnd(9)}${command.summary}`).join('\n')}
  help     show this message

keel <command> --help shows a command's options.
`;

async function main(argv: string[]): Promise<number> {
  const [name = 'help', ...rest] = argv;
  if (name === 'help' || name === '--help' || name === '-h') {
    process.stdout.write(USAGE);
    return 0;
  }
  const command = COMMANDS.find((candidate) => candidate.name === name);
  if (command === undefined) {
    process.stderr.write(`keel: unknown command '${name}'\n\n${USAGE}`);
    return USAGE_ERROR;
  }
  if (rest.includes('--help') || rest.includes('-h')) {
    process.stdout.write(command.usage);
    return 0;
  }
  try {
    return await command.run(rest);
  } catch (error) {
    // A command line the command could not understand: say why, with its usage, and start nothing.
    if (!isUsageError(error)) throw error;
    process.stderr.write(`keel ${name}: ${error.message}\n\n${command.usage}`);
    return USAGE_ERROR;
  }
}

process.exitCode = await main(process.argv.slice(2));
