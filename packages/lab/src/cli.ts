#!/usr/bin/env node
/**
 * The `keel` command: `keel <command> [options]`, one module per command under `commands/`. A
 * command's module is loaded only when that command runs — the lab and the service are large, and a
 * repair run from an alert should start at once. A command line that cannot be understood (an
 * unknown flag, a bad value, an unknown scenario) is answered on stderr with exit code 2, before
 * anything starts.
 */
import { enableCompileCache } from 'node:module';
import { type Command, isUsageError, USAGE_ERROR } from './commands/command.ts';

// The command runs from its TypeScript source, and the lab starts dozens of processes from it (the
// providers, every service instance, each restart after a SIGKILL, the repair commands): Node's
// compile cache keeps their stripped and compiled modules, so only the first start pays for that.
// The children inherit the cache through the environment.
const compileCache = enableCompileCache();
if (compileCache.directory !== undefined) process.env.NODE_COMPILE_CACHE ??= compileCache.directory;

/** Every command, by name, and how to load it. */
const COMMANDS: Readonly<Record<string, () => Promise<Command>>> = {
  lab: async () => (await import('./commands/lab-command.ts')).labCommand,
  serve: async () => (await import('./commands/serve-command.ts')).serveCommand,
  check: async () => (await import('./commands/check-command.ts')).checkCommand,
  replay: async () => (await import('./commands/replay-command.ts')).replayCommand,
  backfill: async () => (await import('./commands/backfill-command.ts')).backfillCommand,
  rules: async () => (await import('./commands/rules-command.ts')).rulesCommand,
};

async function usage(): Promise<string> {
  const commands = await Promise.all(Object.values(COMMANDS).map((load) => load()));
  return `Usage: keel <command> [options]

Commands:
${commands.map((command) => `  ${command.name.padEnd(9)}${command.summary}`).join('\n')}
  help     show this message

keel <command> --help shows a command's options.
`;
}

async function main(argv: string[]): Promise<number> {
  const [name = 'help', ...rest] = argv;
  if (name === 'help' || name === '--help' || name === '-h') {
    process.stdout.write(await usage());
    return 0;
  }
  const load = Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined;
  if (load === undefined) {
    process.stderr.write(`keel: unknown command '${name}'\n\n${await usage()}`);
    return USAGE_ERROR;
  }
  const command = await load();
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
