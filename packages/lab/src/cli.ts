#!/usr/bin/env node
/**
 * The `keel` command. `keel lab` runs the failure lab; the other commands arrive with the payments
 * service they operate on.
 */
import { parseArgs } from 'node:util';
import { runDemo } from './demo/cascade-demo.ts';

const USAGE = `Usage: keel <command> [options]

Commands:
  lab      reproduce the failure patterns against a naive and a guarded configuration
  help     show this message
`;

async function main(argv: string[]): Promise<number> {
  const [command = 'help', ...rest] = argv;
  switch (command) {
    case 'lab': {
      const { values } = parseArgs({
        args: rest,
        options: { seed: { type: 'string' }, quick: { type: 'boolean', default: false } },
        strict: true,
      });
      const report = await runDemo({ quick: values.quick, seed: Number(values.seed ?? 1) });
      process.stdout.write(report.text);
      return report.pass ? 0 : 1;
    }
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(USAGE);
      return 0;
    default:
      process.stderr.write(`keel: unknown command '${command}'\n\n${USAGE}`);
      return 2;
  }
}

process.exitCode = await main(process.argv.slice(2));
