/**
 * The outbox benchmark's sqlite producer write: each append joins the group commit of its event-loop
 * turn (one `BEGIN IMMEDIATE` … `COMMIT` for every append of the turn, as a service under load
 * groups its request handlers' writes), and the groups are counted, so the benchmark can report how
 * many events a transaction held. Used on the benchmark's thread and on the producer's own thread.
 *
 * @module
 */
import type { DatabaseSync } from 'node:sqlite';
import type { NewOutboxEvent } from 'keel/outbox';
import type { SqliteOutboxStore } from 'keel/sqlite';
import { GroupCommit } from '../src/adapters/sqlite/group-commit.ts';

export interface GroupedAppends {
  /**
   * Appends `events` (one, or several with one call of the store's `append`, as a request that
   * appends several does) in this turn's group; resolves once the group committed.
   */
  append(events: NewOutboxEvent | readonly NewOutboxEvent[]): Promise<void>;
  /** Groups (transactions) committed or under way so far. */
  readonly transactions: number;
}

/**
 * @example
 * const appends = groupedSqliteAppends(db, sqliteOutbox({ db }));
 * await Promise.all(events.map((event) => appends.append(event)));
 * appends.transactions; // 1: the appends of one turn share a transaction
 */
export function groupedSqliteAppends(db: DatabaseSync, store: SqliteOutboxStore): GroupedAppends {
  const groupCommit = new GroupCommit(db);
  let transactions = 0;
  let counted = false;
  const append = (events: NewOutboxEvent | readonly NewOutboxEvent[]) =>
    groupCommit
      .run(() => {
        // The writes of one group run back to back, with no microtask in between: the first one
        // counts the group's transaction.
        if (!counted) {
          counted = true;
          transactions++;
          queueMicrotask(() => {
            counted = false;
          });
        }
        // `append` writes synchronously on a sqlite handle; its promise carries the outcome.
        return store.append(db, events);
      })
      .then(() => undefined);
  return {
    append,
    get transactions() {
      return transactions;
    },
  };
}
