/**
 * The sqlite producer of the outbox benchmark's lag phase, on a thread of its own: it opens its own
 * connection on the benchmark's file, appends on an open-loop schedule, and reports each
 * transaction's event numbers and commit time to the benchmark's thread, which wakes the relay with
 * them. A service's request handlers are not the relay's thread either: sharing one thread with the
 * relay and the consumer, the producer fell behind the rate it was asked for, so the lag it measured
 * was not the lag at that rate.
 *
 * What a tick owes is appended in groups of at most {@link MAX_GROUP} events, one `append` call and
 * one transaction each, one transaction at a time, as the Postgres producer appends each turn's
 * events with one call. Appending each event with a call of its own, a promise and a closure
 * apiece, cost this thread as much as SQLite's work did: beside the relay it reached half the rate
 * asked of it, so again the lag was measured at a rate below the one named.
 *
 * @module
 */
import { DatabaseSync } from 'node:sqlite';
import { type MessagePort, parentPort, workerData } from 'node:worker_threads';
import { sqliteOutbox } from 'keel/sqlite';
import { groupedSqliteAppends } from './grouped-sqlite-appends.ts';
import { paymentEvent } from './payment-event.ts';

/** What the benchmark hands the thread at start. */
export interface ProducerInit {
  readonly path: string;
}

/** A schedule to run: `total` appends at `rate` per second, issued every `tickMs`. */
export interface ProducerRun {
  readonly rate: number;
  readonly total: number;
  readonly tickMs: number;
}

/** What the thread reports. */
export type ProducerReport =
  | { readonly kind: 'committed'; readonly ns: readonly number[]; readonly at: number }
  | { readonly kind: 'done'; readonly produced: number; readonly transactions: number };

/** Most events one transaction carries: the Postgres producer's limit too. */
const MAX_GROUP = 256;

if (parentPort === null) throw new Error('sqlite-producer-worker runs as a worker thread');
const port: MessagePort = parentPort;
const { path } = workerData as ProducerInit;
const db = new DatabaseSync(path, { timeout: 5_000 });
db.exec('PRAGMA synchronous = NORMAL');
const store = sqliteOutbox({ db });
const grouped = groupedSqliteAppends(db, store);

async function produce({ rate, total, tickMs }: ProducerRun): Promise<void> {
  let issued = 0;
  let committed = 0;
  const transactionsBefore = grouped.transactions;
  const allCommitted = Promise.withResolvers<void>();
  /**
   * Groups owed and not yet issued. The next is issued once the one before has committed, so each
   * commits on its own: while the write lock is taken, groups queued in the group commit would join
   * one transaction, which would then hold the lock the longer.
   */
  const owedGroups: number[][] = [];
  let pumping = false;
  const pump = () => {
    const ns = owedGroups.shift();
    if (ns === undefined) {
      pumping = false;
      return;
    }
    grouped.append(ns.map(paymentEvent)).then(() => {
      port.postMessage({ kind: 'committed', ns, at: Date.now() } satisfies ProducerReport);
      committed += ns.length;
      if (committed === total) allCommitted.resolve();
      pump();
    }, allCommitted.reject);
  };
  const started = performance.now();
  const timer = setInterval(() => {
    // Owed by the clock, not by the ticks: a late timer issues what it owes at once.
    const owed = Math.floor(Math.min(total, rate * ((performance.now() - started) / 1000)));
    while (issued < owed) {
      const ns: number[] = [];
      while (issued < owed && ns.length < MAX_GROUP) ns.push(issued++);
      owedGroups.push(ns);
    }
    if (!pumping && owedGroups.length > 0) {
      pumping = true;
      pump();
    }
    if (issued >= total) clearInterval(timer);
  }, tickMs);
  if (total > 0) await allCommitted.promise;
  else clearInterval(timer);
  const produced = total / ((performance.now() - started) / 1000);
  port.postMessage({
    kind: 'done',
    produced,
    transactions: grouped.transactions - transactionsBefore,
  } satisfies ProducerReport);
}

port.on('message', (run: ProducerRun | 'close') => {
  if (run === 'close') {
    db.close();
    port.close();
    return;
  }
  void produce(run);
});
