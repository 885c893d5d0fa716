/**
 * The sqlite producer of the outbox benchmark's lag phase, on a thread of its own: it opens its own
 * connection on the benchmark's file, appends on an open-loop schedule with group commit (the writes
 * of one event-loop turn share a `BEGIN IMMEDIATE` … `COMMIT`), and reports each group's event ids
 * and commit time to the benchmark's thread, which wakes the relay with them. A service's request
 * handlers are not the relay's thread either: sharing one thread with the relay and the consumer,
 * the producer fell behind the rate it was asked for, so the lag it measured was not the lag at that
 * rate.
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

if (parentPort === null) throw new Error('sqlite-producer-worker runs as a worker thread');
const port: MessagePort = parentPort;
const { path } = workerData as ProducerInit;
const db = new DatabaseSync(path, { timeout: 5_000 });
db.exec('PRAGMA synchronous = NORMAL');
const store = sqliteOutbox({ db });
const grouped = groupedSqliteAppends(db, store);

async function produce({ rate, total, tickMs }: ProducerRun): Promise<void> {
  let issued = 0;
  const transactionsBefore = grouped.transactions;
  /** Numbers of the events committed since the last report: one message per commit, not per event. */
  let committed: number[] = [];
  let reportQueued = false;
  const report = () => {
    reportQueued = false;
    port.postMessage({ kind: 'committed', ns: committed, at: Date.now() } satisfies ProducerReport);
    committed = [];
  };
  // Counted rather than kept: hundreds of thousands of settled promises held to the end would only
  // grow the heap the collector walks.
  let outstanding = 0;
  const allCommitted = Promise.withResolvers<void>();
  const onCommitted = (n: number) => {
    // Every append of a group settles in the same turn, right after its COMMIT.
    committed.push(n);
    if (!reportQueued) {
      reportQueued = true;
      queueMicrotask(report);
    }
    if (--outstanding === 0 && issued >= total) allCommitted.resolve();
  };
  const started = performance.now();
  await new Promise<void>((resolve) => {
    const timer = setInterval(() => {
      // Owed by the clock, not by the ticks: a late timer issues what it owes at once.
      let owed = Math.min(total, rate * ((performance.now() - started) / 1000)) - issued;
      while (owed >= 1 && issued < total) {
        owed -= 1;
        const n = issued++;
        outstanding++;
        grouped.append(paymentEvent(n)).then(() => onCommitted(n), allCommitted.reject);
      }
      if (issued >= total) {
        clearInterval(timer);
        resolve();
      }
    }, tickMs);
  });
  if (outstanding > 0) await allCommitted.promise;
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
