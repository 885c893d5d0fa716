/**
 * @module
 * The payments service's invariants as `keel check` and `keel rules` see them: the same declarations
 * the guarded service evaluates (`paymentInvariants`, the providers' reconciliation, the two
 * heartbeats), with the service's default settings, split by what can judge them. The data checks
 * read only the database, so a command can evaluate them once against it; the reconciliation reads
 * the providers' ledgers over HTTP and the heartbeats are check-ins of running jobs, so only a
 * running service can evaluate those — here they are declared, for their rules, and never run.
 */
import type { Invariant } from 'keel/observe';
import { serviceConfig } from '../service/config.ts';
import type { DatabaseDriver, SqlRunner } from '../service/database.ts';
import { paymentEventBacklog, paymentInvariants } from '../service/payment-invariants.ts';
import { providerReconciliation } from '../service/provider-reconciliation.ts';
import { invoiceConsumerJob, salesReportJob } from '../service/service-heartbeats.ts';

/** An invariant only a running service can judge, and why. */
export interface LiveCheck {
  readonly check: Invariant;
  readonly needs: string;
}

export interface ServiceChecks {
  /** Judged from the database alone. */
  readonly database: readonly Invariant[];
  /** Judged only by a running service. */
  readonly live: readonly LiveCheck[];
}

export interface ServiceChecksOptions {
  /** How long a payment may wait for its invoice; the service's default when absent. */
  readonly invoiceGraceMs?: number | undefined;
  /** The database as the alerts' next step names it (`keel replay --db …`). */
  readonly replayDb?: string | undefined;
}

/** The service's defaults; the provider URLs are placeholders no declaration here calls. */
function serviceDefaults() {
  return serviceConfig({ providerA: 'http://127.0.0.1:1', providerB: 'http://127.0.0.1:2' });
}

/** Stands in for the readers of checks that are declared here and never evaluated. */
const NOT_EVALUATED: SqlRunner = {
  all: () => Promise.reject(new Error('this check is evaluated by the running service only')),
  get: () => Promise.reject(new Error('this check is evaluated by the running service only')),
  run: () => Promise.reject(new Error('this check is evaluated by the running service only')),
};

/**
 * Every invariant of the guarded service, in the order it evaluates them, on `driver`.
 *
 * @example
 * const { database, live } = serviceChecks(driver, { invoiceGraceMs: 60_000 });
 * const results = await invariants({ checks: database }).evaluateOnce();
 */
export function serviceChecks(driver: DatabaseDriver, options: ServiceChecksOptions = {}): ServiceChecks {
  const config = serviceDefaults();
  const database = paymentInvariants({
    driver,
    invoiceGraceMs: options.invoiceGraceMs ?? config.invoiceGraceMs,
    chargeLeaseMs: config.chargeLeaseMs,
    abandonedLimit: config.abandonedLimit,
    replayDb: options.replayDb,
  });
  const reconciliation = providerReconciliation({
    providers: [],
    payments: NOT_EVALUATED,
    windowMs: config.reconcileWindowMs,
    graceMs: config.chargeLeaseMs + config.completerIntervalMs,
    requestTimeoutMs: config.providerTimeoutMs,
  });
  const consumer = invoiceConsumerJob({
    everyMs: config.consumerHeartbeatMs,
    backlog: paymentEventBacklog(driver),
  });
  const report = salesReportJob({ reports: NOT_EVALUATED, everyMs: config.reportIntervalMs });
  return {
    database,
    live: [
      { check: reconciliation, needs: "the providers' ledgers, listed over HTTP by the running service" },
      { check: consumer.heartbeat, needs: 'check-ins of the running invoice consumer (a heartbeat)' },
      { check: report.heartbeat, needs: 'check-ins of the running sales report job (a heartbeat)' },
    ],
  };
}
