/**
 * @module
 * Dead man's switches for the service's two background jobs, as Keel heartbeats the invariant
 * evaluator watches beside the data checks. The invoice consumer checks in on a tick of its own with
 * the invoices it wrote since the last one — a consumer that stopped stops checking in (late), and
 * one that runs but leaves `payment.completed` events waiting longer than a tick while payments flow
 * fails its check-in. The sales report job runs the heavy report on a schedule and must produce rows
 * (`expectWork`): a report over an empty table is a silent failure too.
 */
import { type AlertDefinition, type Heartbeat, heartbeat } from 'keel/observe';
import type { SqlRunner } from './database.ts';
import { invoiceConsumerHeartbeat, salesReportHeartbeat } from './payment-alerts.ts';
import { salesReport } from './sales-report.ts';

/** A job run on a timer until stopped. */
export interface ScheduledJob {
  readonly heartbeat: Heartbeat;
  start(): void;
  /** Stops the schedule and waits for a run in progress. */
  stop(): Promise<void>;
}

function everyInterval(
  intervalMs: number,
  run: () => Promise<void>,
): { start(): void; stop(): Promise<void> } {
  let timer: NodeJS.Timeout | undefined;
  let active = false;
  let current: Promise<void> | undefined;
  const schedule = () => {
    if (!active) return;
    timer = setTimeout(() => {
      current = run().finally(() => {
        current = undefined;
        schedule();
      });
    }, intervalMs);
    timer.unref();
  };
  return {
    start() {
      if (active) return;
      active = true;
      schedule();
    },
    async stop() {
      active = false;
      clearTimeout(timer);
      await current;
    },
  };
}

export interface InvoiceConsumerJob extends ScheduledJob {
  /** Counts one invoice written (the consumer calls it). */
  invoiceWritten(): void;
}

/**
 * @example
 * const job = invoiceConsumerJob({ everyMs: 60_000, backlog: paymentEventBacklog(db.driver) });
 * await startInvoiceConsumers({ …, onInvoice: job.invoiceWritten });
 * job.start();
 */
export function invoiceConsumerJob(options: {
  readonly everyMs: number;
  /** Events published more than `olderThanMs` ago and not consumed yet. */
  readonly backlog: (olderThanMs: number) => Promise<number>;
  /** @default invoiceConsumerHeartbeat, for the default database */
  readonly alert?: AlertDefinition | undefined;
}): InvoiceConsumerJob {
  const beat = heartbeat({
    name: 'invoice_consumer',
    everyMs: options.everyMs,
    graceMs: options.everyMs,
    alert: options.alert ?? invoiceConsumerHeartbeat,
  });
  let written = 0;
  const tick = async () => {
    const rows = written;
    written = 0;
    try {
      const waiting = rows > 0 ? 0 : await options.backlog(options.everyMs);
      if (waiting > 0) {
        beat.fail(
          new Error(`${waiting} payment.completed events waited over a tick and no invoice was written`),
        );
      } else {
        beat.success({ rows });
      }
    } catch (error) {
      beat.fail(error);
    }
  };
  const schedule = everyInterval(options.everyMs, tick);
  return {
    heartbeat: beat,
    invoiceWritten: () => void written++,
    start: schedule.start,
    stop: schedule.stop,
  };
}

/**
 * @example
 * const job = salesReportJob({ reports: db.reader('report'), everyMs: 3_600_000 });
 * job.start();
 */
export function salesReportJob(options: {
  readonly reports: SqlRunner;
  readonly everyMs: number;
}): ScheduledJob {
  const beat = heartbeat({
    name: 'sales_report',
    everyMs: options.everyMs,
    graceMs: options.everyMs,
    expectWork: true,
    alert: salesReportHeartbeat,
  });
  const run = async () => {
    await beat
      .run(
        async () =>
          (await salesReport(options.reports, { from: '2024-01-01', to: '2025-12-31', limit: 100 })).length,
      )
      .catch(() => undefined);
  };
  const schedule = everyInterval(options.everyMs, run);
  return { heartbeat: beat, start: schedule.start, stop: schedule.stop };
}
