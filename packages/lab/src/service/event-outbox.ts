/**
 * @module
 * The service's transactional outbox, on Keel's outbox store for its database (`sqliteOutbox` on
 * the main-thread handle the guarded transactions use, `postgresOutbox` on the pool) and Keel's
 * `outboxRelay`: `append` writes an event through the caller's open transaction, so it commits with
 * the payment (or the invoice) or not at all, and the relay publishes committed events to the
 * transport at least once, in order per entity. The consumers' inbox absorbs the duplicates.
 */
import {
  type NewOutboxEvent,
  type OutboxEvent,
  type OutboxTelemetry,
  outboxRelay,
  type Transport,
} from 'keel/outbox';
import { postgresOutbox } from 'keel/postgres';
import { sqliteOutbox } from 'keel/sqlite';
import type { Database, SqlTransaction } from './database.ts';

/** The outbox table (Keel's default name), which the published-vs-consumed invariant reads. */
export const OUTBOX_TABLE = 'keel_outbox';

export interface EventOutbox {
  /** Writes `event` inside `tx`; it is published after the transaction commits. */
  append(tx: SqlTransaction, event: NewOutboxEvent): Promise<OutboxEvent>;
  /** Starts relaying. */
  start(): void;
  /** Stops relaying after the batch in flight. */
  stop(): Promise<void>;
  /** Events committed and not yet confirmed by the transport. */
  unpublished(): Promise<number>;
}

export interface EventOutboxOptions {
  db: Database;
  transport: Transport;
  telemetry?: OutboxTelemetry | undefined;
}

/**
 * Creates the outbox table unless it exists, and a relay that is started by `start()`.
 *
 * @example
 * const outbox = await eventOutbox({ db, transport, telemetry: keel.outbox });
 * await db.transaction('api', (tx) => outbox.append(tx, paymentCompleted(payment)));
 * outbox.start();
 */
export async function eventOutbox(options: EventOutboxOptions): Promise<EventOutbox> {
  const { db, transport } = options;
  const telemetry = options.telemetry === undefined ? {} : { telemetry: options.telemetry };
  const driver = db.driver;
  const store =
    driver.dialect === 'sqlite'
      ? sqliteOutbox({ db: driver.db, table: OUTBOX_TABLE, ...telemetry })
      : postgresOutbox({ pool: driver.pool, table: OUTBOX_TABLE, ...telemetry });
  if ('ensureSchema' in store && driver.dialect === 'postgres') await store.ensureSchema();
  // The events a killed instance had claimed wait for its lease to run out before another relay
  // takes them, and their invoices wait with them: publishing takes milliseconds here, so a 10 s
  // lease (above the in-process transport's 5 s confirmation timeout) keeps that gap short.
  const relay = outboxRelay({ store, transport, pollIntervalMs: 250, leaseMs: 10_000, ...telemetry });
  let started = false;
  return {
    async append(tx, event) {
      const [stored] = await store.append(tx.handle, event);
      return stored as OutboxEvent;
    },
    start() {
      if (started) return;
      started = true;
      relay.start();
    },
    async stop() {
      if (!started) return;
      started = false;
      await relay.stop();
    },
    async unpublished() {
      return (await store.gauges()).unpublished;
    },
  };
}
