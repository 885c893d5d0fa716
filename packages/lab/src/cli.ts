#!/usr/bin/env node
/**
 * The `keel` command. `keel lab` runs the failure lab; `keel serve` runs the payments service and
 * its two payment providers on this machine; the other commands arrive with the repairs they make.
 */
import { parseArgs } from 'node:util';
import { runDemo } from './demo/cascade-demo.ts';
import { SERVE_USAGE, serve } from './service/serve-command.ts';

const USAGE = `Usage: keel <command> [options]

Commands:
  lab      reproduce the failure patterns against a naive and a guarded configuration
  serve    run the payments service and two payment providers on 127.0.0.1, with a demo user
           (keel serve --help for its options)
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
    case 'serve':
      if (rest.includes('--help') || rest.includes('-h')) {
        process.stdout.write(SERVE_USAGE);
        return 0;
      }
      return serve(rest);
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
