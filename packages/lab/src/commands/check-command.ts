/**
 * @module
 * `keel check --db PATH|postgres://… [--json] [--grace MS]`: evaluates the payments service's data
 * invariants once against its database — for cron or CI, or by hand after an alert — and prints each
 * breach with its sample ids, its total, the age of the oldest offending row and the next step.
 * One evaluation reports what is breached now: the `for:` duration that keeps a blip from paging
 * applies to the running evaluator's alerts, not to this answer. The checks only a running service
 * can judge (the providers' ledgers, the heartbeats) are named as skipped. Exits 0 when every
 * check holds, 1 on a breach or a check that could not run, 2 on a bad command line or a database
 * that cannot be opened; it never writes to the database.
 */
import { parseArgs } from 'node:util';
import { type Invariant, type InvariantResult, invariants, promDuration } from 'keel/observe';
import { OUTBOX_TABLE } from '../service/event-outbox.ts';
import { INBOX_TABLE } from '../service/invoice-consumer.ts';
import { type Command, CommandLineError, USAGE_ERROR } from './command.ts';
import { serviceChecks } from './service-checks.ts';
import { DatabaseOpenError, openServiceDatabase, redactedTarget } from './service-database.ts';

const USAGE = `Usage: keel check --db PATH|postgres://… [options]

Evaluates the payments service's data invariants once against its database and prints every
breach with sample ids, total, oldest age and the next step. Checks that only a running service
can judge (the providers' ledgers, the heartbeats) are listed as skipped.

Options:
  --db PATH|URL        the service's sqlite file or postgres:// URL (required; opened read-only)
  --grace MS           how long a payment may wait for its invoice (default: the service's, 300000)
  --json               one JSON document on stdout instead of text

Exit codes: 0 every check holds, 1 a breach (or a check that could not run), 2 a bad command line
or a database that cannot be opened.
`;

/** A check judged here, as printed and as `--json` reports it. */
interface CheckReport {
  readonly name: string;
  readonly kind: string;
  readonly status: InvariantResult['status'];
  readonly severity: string;
  readonly what: string;
  readonly next: string;
  readonly total?: number;
  readonly ids?: readonly string[];
  readonly oldestAgeMs?: number;
  readonly detail?: string;
  readonly query?: string;
  readonly error?: string;
}

function parseGrace(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const value = Number(text);
  if (text.trim() === '' || !Number.isInteger(value) || value < 0) {
    throw new CommandLineError(`--grace must be a whole number of milliseconds ≥ 0, got '${text}'`);
  }
  return value;
}

function describe(check: Invariant, result: InvariantResult): CheckReport {
  const evidence = result.evidence;
  return {
    name: check.name,
    kind: check.kind,
    status: result.status,
    severity: check.alert.severity,
    what: check.alert.what,
    next: check.alert.next,
    ...(evidence !== undefined && {
      total: evidence.total,
      ids: evidence.ids,
      ...(evidence.oldestAgeMs !== undefined && { oldestAgeMs: evidence.oldestAgeMs }),
      detail: evidence.detail,
      ...(evidence.query !== undefined && { query: evidence.query }),
    }),
    ...(result.status === 'error' && {
      error: result.error instanceof Error ? result.error.message : String(result.error),
    }),
  };
}

function text(
  label: string,
  checks: readonly CheckReport[],
  skipped: readonly { name: string; reason: string }[],
) {
  const lines: string[] = [];
  for (const check of checks) {
    if (check.status === 'ok') {
      lines.push(`ok        ${check.name}`);
    } else if (check.status === 'error') {
      lines.push(`ERROR     ${check.name}: could not evaluate: ${check.error}`);
    } else {
      lines.push(`BREACHED  ${check.name} (${check.severity}): ${check.what}`);
      const oldest =
        check.oldestAgeMs === undefined
          ? ''
          : `, oldest ${promDuration(Math.round(Math.max(0, check.oldestAgeMs) / 1_000) * 1_000)} old`;
      lines.push(
        `          total ${check.total}${oldest}${check.kind === 'flow' ? ` (${check.detail})` : ''}`,
      );
      const more = (check.total ?? 0) > (check.ids?.length ?? 0) ? ', …' : '';
      lines.push(`          ids: ${check.ids?.join(', ')}${more}`);
      lines.push(`          next: ${check.next}`);
    }
  }
  for (const skip of skipped) lines.push(`skipped   ${skip.name}: needs ${skip.reason}`);
  const breached = checks.filter((c) => c.status === 'breached').length;
  const failed = checks.filter((c) => c.status === 'error').length;
  lines.push(
    '',
    `${label}: ${breached} breached, ${checks.length - breached - failed} holding` +
      `${failed > 0 ? `, ${failed} could not run` : ''}, ${skipped.length} skipped`,
  );
  return `${lines.join('\n')}\n`;
}

export const checkCommand: Command = {
  name: 'check',
  summary: 'evaluate the payments invariants once against a database; exit 1 on a breach',
  usage: USAGE,
  async run(argv) {
    const { values, positionals } = parseArgs({
      args: [...argv],
      options: {
        db: { type: 'string' },
        json: { type: 'boolean', default: false },
        grace: { type: 'string' },
      },
      allowPositionals: true,
      strict: true,
    });
    if (positionals.length > 0) throw new CommandLineError(`unexpected argument '${positionals[0]}'`);
    if (values.db === undefined || values.db === '') throw new CommandLineError('--db is required');
    const invoiceGraceMs = parseGrace(values.grace);

    let database: Awaited<ReturnType<typeof openServiceDatabase>>;
    try {
      database = await openServiceDatabase(values.db, { readOnly: true });
    } catch (error) {
      if (!(error instanceof DatabaseOpenError)) throw error;
      process.stderr.write(`keel check: ${error.message}\n`);
      return USAGE_ERROR;
    }
    try {
      const { database: dataChecks, live } = serviceChecks(database.driver, {
        invoiceGraceMs,
        replayDb: redactedTarget(values.db),
      });
      const skipped = live.map(({ check, needs }) => ({ name: check.name, reason: needs }));
      // The flow of payment.completed events lives in the outbox and the inbox: a database the
      // guarded service never ran on has neither, and nothing to judge there.
      const noFlow = !database.has(OUTBOX_TABLE) || !database.has(INBOX_TABLE);
      const checks = dataChecks.filter((check) => {
        if (check.kind !== 'flow' || !noFlow) return true;
        skipped.unshift({
          name: check.name,
          reason: `tables ${OUTBOX_TABLE} and ${INBOX_TABLE}, which only the guarded service writes`,
        });
        return false;
      });
      const results = await invariants({ checks }).evaluateOnce();
      const reports = checks.map((check, i) => describe(check, results[i] as InvariantResult));
      const breached = reports.filter((r) => r.status === 'breached').length;
      const failed = reports.filter((r) => r.status === 'error').length;
      if (values.json) {
        process.stdout.write(
          `${JSON.stringify({ database: database.label, ok: breached + failed === 0, checks: reports, skipped }, null, 2)}\n`,
        );
      } else {
        process.stdout.write(text(`keel check ${database.label}`, reports, skipped));
      }
      return breached + failed === 0 ? 0 : 1;
    } finally {
      await database.close();
    }
  },
};
