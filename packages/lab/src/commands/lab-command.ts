/**
 * @module
 * `keel lab [scenario…] [--quick] [--seed N] [--pace auto|P] [--db postgres://…] [--broker nats://…|amqp://…]`:
 * the failure lab. Each scenario runs naive then guarded; the scoreboard is printed and the report
 * written to `--report` (default `lab-report/`). Exits 0 when every scenario passed its bars, 1
 * otherwise.
 */
import { parseArgs } from 'node:util';
import { LAB_SCENARIOS, runLab } from '../lab/run-lab.ts';
import type { Command } from './command.ts';

export const labCommand: Command = {
  name: 'lab',
  summary: 'reproduce the failure patterns against a naive and a guarded configuration',
  usage: `Usage: keel lab [scenario…] [options]

Runs the named scenarios (default: all of them: ${Object.keys(LAB_SCENARIOS).join(', ')}), each
against the naive configuration and then the guarded one, prints a scoreboard and writes
lab-report/index.html and lab-report/results.json.

Options:
  --quick              a short run (for tests and CI)
  --seed N             makes a run repeatable (default 1)
  --pace auto|P        share of the nominal load rates, 0.3 to 1, each load phase stretched by as
                       much; auto measures before each scenario how much CPU this machine gives
                       the lab and paces it to that (default auto)
  --db URL             postgres://… for the service's database (default: a sqlite file)
  --broker URL         nats://… or amqp://… for events (default: in-process)
  --report DIR         where the report goes (default lab-report)
`,
  async run(argv) {
    const { values, positionals } = parseArgs({
      args: [...argv],
      options: {
        quick: { type: 'boolean', default: false },
        seed: { type: 'string', default: '1' },
        pace: { type: 'string', default: 'auto' },
        db: { type: 'string' },
        broker: { type: 'string' },
        report: { type: 'string', default: 'lab-report' },
      },
      allowPositionals: true,
      strict: true,
    });
    const lab = await runLab({
      scenarios: positionals,
      quick: values.quick,
      seed: Number(values.seed),
      pace: values.pace === 'auto' ? 'auto' : Number(values.pace),
      reportDirectory: values.report,
      ...(values.db !== undefined && { db: values.db }),
      ...(values.broker !== undefined && { broker: values.broker }),
    });
    return lab.pass ? 0 : 1;
  },
};
