/**
 * @module
 * `keel backfill invoices --db PATH|postgres://… [--dry-run] [--since 24h] [--batch-size N]
 * [--pause MS] [--restart] [--json]`: repairs the history a naive configuration left — payments
 * with no invoice and no `payment.completed` event waiting for the consumer — by appending the
 * missing events to the outbox in small transactions, each with its checkpoint, for the guarded service's relay and
 * invoice consumer to finish. Killed or interrupted, it resumes from its checkpoint when run again;
 * `--dry-run` counts and lists the first payments and writes nothing. Exits 0 when the walk reached
 * the end, 1 when it stopped early (a signal, another run of it), 2 on a bad command line or a
 * database that cannot be opened.
 */
import { parseArgs } from 'node:util';
import { isBackfillConflict } from 'keel/repair';
import { type Command, CommandLineError, USAGE_ERROR } from './command.ts';
import { backfillInvoices, INVOICE_BACKFILL, type InvoiceBackfillReport } from './invoice-backfill.ts';
import { DatabaseOpenError, openServiceDatabase, type ServiceDatabase } from './service-database.ts';

const USAGE = `Usage: keel backfill invoices --db PATH|postgres://… [options]

Appends payment.completed to the outbox for every payment that has no invoice and no such event
waiting for the invoice consumer (payments a naive configuration recorded, or recorded before the
outbox existed, or whose event was consumed and whose invoice is gone), in small transactions
that each save a checkpoint: run it again after a crash and it resumes. The guarded service's
relay publishes the events and its invoice consumer writes one invoice each. Payments that have
an invoice, or whose event still waits for the consumer (keel replay's), are left alone.

Options:
  --db PATH|URL        the service's sqlite file or postgres:// URL (required)
  --dry-run            count and list the first payments; write nothing
  --since DURATION     only payments created within it: 90s, 30m, 24h, 7d (default: all)
  --batch-size N       payments per transaction, 1 to 10000 (default 100)
  --pause MS           pause between batches, to leave room for live traffic (default 0)
  --restart            walk from the first payment, not from the checkpoint
  --json               the report as one JSON document on stdout

Exit codes: 0 done, 1 stopped before the end (run it again to resume), 2 a bad command line or a
database that cannot be opened.
`;

const UNITS: Readonly<Record<string, number>> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 };

function parseDuration(text: string): number {
  const match = /^(\d+)(ms|s|m|h|d)$/.exec(text.trim());
  if (match === null)
    throw new CommandLineError(`--since must be a duration such as 30m, 24h or 7d, got '${text}'`);
  return Number(match[1]) * (UNITS[match[2] as string] as number);
}

function parseWhole(option: string, text: string, min: number, max: number): number {
  const value = Number(text);
  if (text.trim() === '' || !Number.isInteger(value) || value < min || value > max) {
    throw new CommandLineError(`${option} must be a whole number from ${min} to ${max}, got '${text}'`);
  }
  return value;
}

function summary(report: InvoiceBackfillReport, database: ServiceDatabase): string {
  const from = report.resumedFrom === null ? 'from the first payment' : `resumed after ${report.resumedFrom}`;
  const first =
    report.sample.length === 0
      ? ''
      : `\nfirst: ${report.sample.join(', ')}${report.items > report.sample.length ? ', …' : ''}`;
  const left =
    `left alone: ${report.alreadyInvoiced} already invoiced without an event, ` +
    `${report.awaitingConsumer} whose event waits for the consumer (keel replay)`;
  if (report.dryRun) {
    return `keel backfill ${INVOICE_BACKFILL} --dry-run on ${database.label} (${from}): ${report.items} payment${report.items === 1 ? '' : 's'} would get a payment.completed event; ${left}; nothing written${first}\n`;
  }
  const state = report.finished ? 'done' : 'stopped before the end: run it again to resume';
  const checkpoint =
    report.checkpoint === undefined
      ? ''
      : `; checkpoint at ${JSON.stringify(report.checkpoint.cursor)} after ${report.checkpoint.applied} in all`;
  return `keel backfill ${INVOICE_BACKFILL} on ${database.label} (${from}): ${report.items} event${report.items === 1 ? '' : 's'} appended in ${report.batches} batch${report.batches === 1 ? '' : 'es'}, ${state}; ${left}${checkpoint}${first}\n`;
}

export const backfillCommand: Command = {
  name: 'backfill',
  summary: 'append the payment.completed events missing from the outbox (checkpointed, resumable)',
  usage: USAGE,
  async run(argv) {
    const { values, positionals } = parseArgs({
      args: [...argv],
      options: {
        db: { type: 'string' },
        'dry-run': { type: 'boolean', default: false },
        since: { type: 'string' },
        'batch-size': { type: 'string', default: '100' },
        pause: { type: 'string', default: '0' },
        restart: { type: 'boolean', default: false },
        json: { type: 'boolean', default: false },
      },
      allowPositionals: true,
      strict: true,
    });
    const [target, ...extra] = positionals;
    if (target === undefined) throw new CommandLineError(`name what to backfill: ${INVOICE_BACKFILL}`);
    if (target !== INVOICE_BACKFILL) {
      throw new CommandLineError(`cannot backfill '${target}': the one backfill is ${INVOICE_BACKFILL}`);
    }
    if (extra.length > 0) throw new CommandLineError(`unexpected argument '${extra[0]}'`);
    if (values.db === undefined || values.db === '') throw new CommandLineError('--db is required');
    const batchSize = parseWhole('--batch-size', values['batch-size'], 1, 10_000);
    const pauseMs = parseWhole('--pause', values.pause, 0, 3_600_000);
    const sinceMs = values.since === undefined ? undefined : parseDuration(values.since);
    const dryRun = values['dry-run'];

    let database: ServiceDatabase;
    try {
      database = await openServiceDatabase(values.db, { readOnly: dryRun });
    } catch (error) {
      if (!(error instanceof DatabaseOpenError)) throw error;
      process.stderr.write(`keel backfill: ${error.message}\n`);
      return USAGE_ERROR;
    }
    // A signal stops the walk between batches: the batch in flight commits with its checkpoint.
    const stop = new AbortController();
    const onSignal = () => stop.abort();
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
    try {
      const report = await backfillInvoices({
        database,
        dryRun,
        batchSize,
        pauseMs,
        restart: values.restart,
        createdSince: sinceMs === undefined ? undefined : Date.now() - sinceMs,
        signal: stop.signal,
        onProgress: (progress) => {
          if (progress.dryRun) return;
          process.stderr.write(
            `keel backfill: batch ${progress.batches}: ${progress.batchItems} appended, ${progress.items} this run, checkpoint ${JSON.stringify(progress.cursor)}\n`,
          );
        },
      });
      process.stdout.write(values.json ? `${JSON.stringify(report, null, 2)}\n` : summary(report, database));
      return report.finished ? 0 : 1;
    } catch (error) {
      if (!isBackfillConflict(error)) throw error;
      process.stderr.write(`keel backfill: ${error.message}\n`);
      return 1;
    } finally {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      await database.close();
    }
  },
};
