/**
 * Batches one kind of statement across concurrent requests. Each round trip to Postgres costs a
 * network hop, a parse and — for a write — a commit; requests that claim, read or complete keys
 * during the same event-loop turn share one statement over arrays (`unnest`) instead. Every caller
 * still gets its own answer, and a statement that fails is retried one operation at a time, so one
 * caller's bad row never becomes another caller's error.
 *
 * @module
 */

interface Pending<Op, Result> {
  readonly op: Op;
  readonly resolve: (result: Result) => void;
  readonly reject: (error: unknown) => void;
}

/** How a batch runs: many operations in one statement, or one alone (the fallback). */
export interface StatementBatchOptions<Op, Result> {
  /** Runs `ops` in one statement; returns their results in the same order. */
  readonly many: (ops: readonly Op[]) => Promise<Result[]>;
  /** Runs one operation in its own statement. */
  readonly one: (op: Op) => Promise<Result>;
  /** The row an operation touches. */
  readonly keyOf: (op: Op) => string;
  /**
   * Whether a statement may carry two operations on the same row. An `UPDATE … FROM` joined to
   * two rows for one target applies only one of them, so writes keep their keys distinct and run a
   * second operation on a key in the next statement.
   */
  readonly distinctKeys: boolean;
  /** Most operations per statement. */
  readonly maxBatch: number;
  /**
   * Most statements of this kind in flight at once. While they are, new operations wait and join
   * the next statement: under load the batches grow instead of the round trips, and an idle
   * service sends each operation at once.
   */
  readonly maxInFlight: number;
}

/** Queues operations of one kind and runs those of one event-loop turn together. */
export class StatementBatch<Op, Result> {
  readonly #options: StatementBatchOptions<Op, Result>;
  #queue: Pending<Op, Result>[] = [];
  #scheduled = false;
  #inFlight = 0;

  constructor(options: StatementBatchOptions<Op, Result>) {
    this.#options = options;
  }

  run(op: Op): Promise<Result> {
    return new Promise<Result>((resolve, reject) => {
      this.#queue.push({ op, resolve, reject });
      this.#schedule();
    });
  }

  #schedule(): void {
    if (this.#scheduled || this.#inFlight >= this.#options.maxInFlight || this.#queue.length === 0) return;
    this.#scheduled = true;
    setImmediate(this.#flush);
  }

  readonly #flush = (): void => {
    this.#scheduled = false;
    let rest = this.#queue;
    this.#queue = [];
    while (rest.length > 0 && this.#inFlight < this.#options.maxInFlight) {
      const { batch, deferred } = this.#take(rest);
      rest = deferred;
      this.#inFlight++;
      void this.#send(batch).finally(this.#sent);
    }
    // What did not fit goes first in the next statement.
    if (rest.length > 0) this.#queue = rest.concat(this.#queue);
  };

  readonly #sent = (): void => {
    this.#inFlight--;
    this.#schedule();
  };

  /** The next statement's operations, and those that must wait for a later one. */
  #take(queue: Pending<Op, Result>[]): { batch: Pending<Op, Result>[]; deferred: Pending<Op, Result>[] } {
    const { maxBatch, distinctKeys, keyOf } = this.#options;
    if (!distinctKeys && queue.length <= maxBatch) return { batch: queue, deferred: [] };
    const batch: Pending<Op, Result>[] = [];
    const deferred: Pending<Op, Result>[] = [];
    const keys = new Set<string>();
    for (const pending of queue) {
      const key = keyOf(pending.op);
      if (batch.length >= maxBatch || (distinctKeys && keys.has(key))) deferred.push(pending);
      else {
        keys.add(key);
        batch.push(pending);
      }
    }
    return { batch, deferred };
  }

  async #send(batch: Pending<Op, Result>[]): Promise<void> {
    if (batch.length === 1) return this.#sendOne(batch[0] as Pending<Op, Result>);
    let results: Result[];
    try {
      results = await this.#options.many(batch.map((p) => p.op));
    } catch {
      // The statement failed as a whole: find out which operation it was by running each alone.
      await Promise.all(batch.map((pending) => this.#sendOne(pending)));
      return;
    }
    for (let i = 0; i < batch.length; i++) (batch[i] as Pending<Op, Result>).resolve(results[i] as Result);
  }

  async #sendOne(pending: Pending<Op, Result>): Promise<void> {
    try {
      pending.resolve(await this.#options.one(pending.op));
    } catch (error) {
      pending.reject(error);
    }
  }
}
