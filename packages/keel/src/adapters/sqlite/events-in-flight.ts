/**
 * The events a SQLite outbox store has handed to its relay and not yet seen marked, released or
 * put back: by id, their `seq` and their aggregate. Only one relay claims from a SQLite outbox at a
 * time, so its store's memory is the one place that knows what is in flight, and a claim reads
 * around it instead of writing a claim into each row. An aggregate with an event in flight has its
 * later events held back, so per-aggregate order does not depend on an index of aggregates that
 * every append would write into a page picked by the aggregate's id.
 *
 * @module
 */

/** The range the `seq` of the events in flight span, and whether they fill it. */
export interface SeqSpan {
  readonly lowest: number;
  readonly highest: number;
  /** Every `seq` from `lowest` to `highest` is in flight (always true when none is). */
  readonly contiguous: boolean;
}

/** No event in flight: the empty range 1–0. */
const NOTHING: SeqSpan = Object.freeze({ lowest: 1, highest: 0, contiguous: true });

/**
 * The key under which an aggregate's events are held back. Aggregate types and ids never hold
 * U+0000 (appends refuse it), so the pair maps to one key and back.
 */
export function aggregateKey(aggregateType: string, aggregateId: string): string {
  return `${aggregateType}\u0000${aggregateId}`;
}

/**
 * @example
 * const inFlight = new EventsInFlight();
 * inFlight.add('evt-1', 41, aggregateKey('order', 'o-1'));
 * inFlight.holdsAggregate(aggregateKey('order', 'o-1')); // true: o-1's later events wait
 * inFlight.settle('evt-1'); // 41
 */
export class EventsInFlight {
  readonly #seqById = new Map<string, number>();
  readonly #aggregateById = new Map<string, string>();
  /** Events in flight per aggregate key. */
  readonly #perAggregate = new Map<string, number>();

  get size(): number {
    return this.#seqById.size;
  }

  add(id: string, seq: number, aggregate: string): void {
    if (this.#seqById.has(id)) return;
    this.#seqById.set(id, seq);
    this.#aggregateById.set(id, aggregate);
    this.#perAggregate.set(aggregate, (this.#perAggregate.get(aggregate) ?? 0) + 1);
  }

  /** Takes `id` off the events in flight; returns its `seq`, or `undefined` if it was not in flight. */
  settle(id: string): number | undefined {
    const seq = this.#seqById.get(id);
    if (seq === undefined) return undefined;
    const aggregate = this.#aggregateById.get(id) as string;
    this.#seqById.delete(id);
    this.#aggregateById.delete(id);
    const left = (this.#perAggregate.get(aggregate) ?? 1) - 1;
    if (left === 0) this.#perAggregate.delete(aggregate);
    else this.#perAggregate.set(aggregate, left);
    return seq;
  }

  /** Whether an event of `aggregate` is in flight, which holds back the aggregate's other events. */
  holdsAggregate(aggregate: string): boolean {
    return this.#perAggregate.has(aggregate);
  }

  /** The span of the `seq` in flight, for a claim to skip them as a range when they are one run. */
  span(): SeqSpan {
    if (this.#seqById.size === 0) return NOTHING;
    let lowest = Number.POSITIVE_INFINITY;
    let highest = Number.NEGATIVE_INFINITY;
    for (const seq of this.#seqById.values()) {
      if (seq < lowest) lowest = seq;
      if (seq > highest) highest = seq;
    }
    // The seqs are distinct (one per id), so as many as the range is wide fill it.
    return { lowest, highest, contiguous: highest - lowest + 1 === this.#seqById.size };
  }

  /** Every `seq` in flight, in no particular order. */
  seqs(): number[] {
    return [...this.#seqById.values()];
  }

  clear(): void {
    this.#seqById.clear();
    this.#aggregateById.clear();
    this.#perAggregate.clear();
  }
}
