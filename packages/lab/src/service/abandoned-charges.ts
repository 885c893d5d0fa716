/**
 * @module
 * The completer: a sweep, in guarded mode, over the charges whose worker stopped — killed between
 * phases, hung past its lease, or given up after the providers' answer was lost — so no order stays
 * `charging` forever. For each one Keel's `completeAbandoned` takes the `Idempotency-Key` over, and
 * the sweep reconciles with the providers by the key derived for the charge phase: charged there →
 * the payment row, the order `paid`, `payment.completed` and the stored response commit together, as
 * the request itself would have done; charged nowhere → the order goes back to `pending` and the key
 * is released, so the client's retry with the same key starts afresh (and, having the same derived
 * key, can never charge twice). A provider that cannot be asked leaves the charge for the next sweep.
 */
import {
  type CompleterReport,
  completeAbandoned,
  type IdempotencyEngine,
  type IdempotencyLease,
  type StoredResponse,
} from 'keel/idempotency';
import type { Database } from './database.ts';
import type { EventOutbox } from './event-outbox.ts';
import { CHARGE_PHASE, type ChargeAttempt, recordPayment } from './guarded-charge.ts';
import { moveOrder } from './payment-records.ts';
import type { ProviderCharge } from './provider-client.ts';
import type { ProviderRouting } from './provider-routing.ts';
import type { DomainMetrics } from './service-metrics.ts';

export interface AbandonedChargeSweepOptions {
  /** The idempotency engine the charge route runs under. */
  readonly engine: IdempotencyEngine;
  readonly db: Database;
  readonly routing: ProviderRouting;
  readonly outbox: EventOutbox;
  readonly metrics: DomainMetrics;
  /** Time between two sweeps, in ms. */
  readonly intervalMs: number;
  /** Abandoned charges finished per sweep at most. @default 100 */
  readonly limit?: number;
}

export interface AbandonedChargeSweep {
  /** Sweeps now; a sweep already running is shared, not doubled. */
  sweep(): Promise<CompleterReport>;
  /** Sweeps every `intervalMs` until `stop()`. */
  start(): void;
  /** Stops the schedule and waits for a sweep in progress. */
  stop(): Promise<void>;
}

/** Thrown for a record the sweep cannot finish; it is left for a person (and counted as failed). */
class UnfinishableChargeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UnfinishableChargeError';
  }
}

/**
 * @example
 * const completer = abandonedChargeSweep({ engine, db, routing, outbox, metrics, intervalMs: 15_000 });
 * completer.start();
 * const report = await completer.sweep(); // { found, completed, released, failed, skipped }
 */
export function abandonedChargeSweep(options: AbandonedChargeSweepOptions): AbandonedChargeSweep {
  const { engine, db, routing, outbox, metrics } = options;
  const completedBySweep = new Map<string, string>();

  const finish = async (lease: IdempotencyLease): Promise<StoredResponse | 'release'> => {
    const attempt = lease.phases.attempt as ChargeAttempt | undefined;
    // Nothing committed: the order never left `pending`, and the provider never heard of the key.
    if (attempt === undefined) return 'release';
    if (typeof attempt.orderId !== 'string') {
      throw new UnfinishableChargeError('the attempt phase does not name its order');
    }
    const charge =
      (lease.phases[CHARGE_PHASE] as ProviderCharge | undefined) ??
      (await routing.lookup(lease.derivedKey(CHARGE_PHASE)));
    if (charge === undefined) {
      await db.transaction('api', (tx) => moveOrder(tx, attempt.orderId, ['charging'], 'pending'));
      return 'release';
    }
    const response = await db.transaction('api', async (tx) => {
      const built = await recordPayment(tx, outbox, attempt.orderId, charge);
      await lease.complete(built, { tx: tx.handle });
      return built;
    });
    completedBySweep.set(attempt.orderId, charge.provider);
    return response;
  };

  let running: Promise<CompleterReport> | undefined;
  const sweep = (): Promise<CompleterReport> => {
    running ??= (async () => {
      completedBySweep.clear();
      const report = await completeAbandoned(engine, {
        finish,
        ...(options.limit !== undefined && { limit: options.limit }),
      });
      metrics.chargesSwept.inc({}, report.found);
      metrics.chargesSweptFinished.inc({ outcome: 'completed' }, report.completed);
      metrics.chargesSweptFinished.inc({ outcome: 'released' }, report.released);
      metrics.chargesSweptFinished.inc({ outcome: 'failed' }, report.failed);
      metrics.chargesSweptFinished.inc({ outcome: 'skipped' }, report.skipped);
      for (const provider of completedBySweep.values()) {
        if (provider === 'a' || provider === 'b') metrics.chargesCompleted.inc({ provider });
      }
      return report;
    })().finally(() => {
      running = undefined;
    });
    return running;
  };

  let timer: NodeJS.Timeout | undefined;
  let active = false;
  const schedule = () => {
    if (!active) return;
    timer = setTimeout(() => {
      // A failing sweep (the database is away) is retried on the next tick, never left unhandled.
      sweep()
        .catch(() => undefined)
        .finally(schedule);
    }, options.intervalMs);
    timer.unref();
  };
  return {
    sweep,
    start() {
      if (active) return;
      active = true;
      schedule();
    },
    async stop() {
      active = false;
      clearTimeout(timer);
      await running?.catch(() => undefined);
    },
  };
}
