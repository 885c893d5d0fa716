/**
 * @module
 * `keel rules [--out FILE]`: writes the Prometheus alerting rules of the payments service — one
 * rule per invariant and heartbeat the guarded service evaluates, from the same declarations, with
 * the alert's four parts as annotations — to stdout or a file that `promtool check rules` accepts.
 * The data checks and heartbeats watch `keel_invariant_breached`, which the running service exports
 * on `/metrics`.
 */
import { writeFileSync } from 'node:fs';
import { DatabaseSync } from 'node:sqlite';
import { parseArgs } from 'node:util';
import { prometheusRules } from 'keel/observe';
import { type Command, CommandLineError } from './command.ts';
import { serviceChecks } from './service-checks.ts';

/** The rule group's name, and the `service` label on every rule. */
const SERVICE = 'payments';

const USAGE = `Usage: keel rules [--out FILE]

Writes the Prometheus alerting rules of the payments service's invariants and heartbeats (one
rule each, with what broke, where to look, the impact and the next step as annotations).

Options:
  --out FILE           write the rule file there (default: stdout)
`;

/**
 * The service's rule file.
 *
 * @example
 * writeFileSync('rules/payments.yml', serviceRules());
 */
export function serviceRules(): string {
  // Declarations only: no query runs, so an in-memory database stands in for the service's.
  const db = new DatabaseSync(':memory:');
  try {
    const { database, live } = serviceChecks({ dialect: 'sqlite', db });
    return prometheusRules([...database, ...live.map(({ check }) => check)], {
      groupName: SERVICE,
      labels: { service: SERVICE },
    });
  } finally {
    db.close();
  }
}

export const rulesCommand: Command = {
  name: 'rules',
  summary: "write the Prometheus alerting rules of the service's invariants",
  usage: USAGE,
  async run(argv) {
    const { values, positionals } = parseArgs({
      args: [...argv],
      options: { out: { type: 'string' } },
      allowPositionals: true,
      strict: true,
    });
    if (positionals.length > 0) throw new CommandLineError(`unexpected argument '${positionals[0]}'`);
    if (values.out === '') throw new CommandLineError('--out needs a file name');
    const rules = serviceRules();
    if (values.out === undefined) {
      process.stdout.write(rules);
      return 0;
    }
    try {
      writeFileSync(values.out, rules);
    } catch (error) {
      throw new CommandLineError(`cannot write ${values.out}: ${(error as Error).message}`);
    }
    process.stderr.write(`keel rules: wrote ${values.out}\n`);
    return 0;
  },
};
