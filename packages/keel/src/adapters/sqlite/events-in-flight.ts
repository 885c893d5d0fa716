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

/** One event in flight. */
interface InFlight {
  readonly seq: number;
  readonly aggregateType: string;
  readonly aggregateId: string;
}

/**
 * @example
 * const inFlight = new EventsInFlight();
 * inFlight.add('evt-1', 41, 'order', 'o-1');
 * inFlight.holdsAggregate('order', 'o-1'); // true: o-1's later events wait
 * inFlight.settle('evt-1'); // 41
 */
export class EventsInFlight {
  readonly #byId = new Map<string, InFlight>();
  /**
   * Events in flight per aggregate, by type then id: two lookups of the strings a row holds, where
   * one key joined from both would build a new string for every row a claim reads.
   */
  readonly #perAggregate = new Map<string, Map<string, number>>();

  get size(): number {
    return this.#byId.size;
  }

  add(id: string, seq: number, aggregateType: string, aggregateId: string): void {
    if (this.#byId.has(id)) return;
    this.#byId.set(id, { seq, aggregateType, aggregateId });
    let ofType = this.#perAggregate.get(aggregateType);
    if (ofType === undefined) {
      ofType = new Map();
      this.#perAggregate.set(aggregateType, ofType);
    }
    ofType.set(aggregateId, (ofType.get(aggregateId) ?? 0) + 1);
  }

  /** The `seq` of `id` while it is in flight. */
  seqOf(id: string): number | undefined {
    return this.#byId.get(id)?.seq;
  }

  /** Takes `id` off the events in flight; returns its `seq`, or `undefined` if it was not in flight. */
  settle(id: string): number | undefined {
    const event = this.#byId.get(id);
    if (event === undefined) return undefined;
    this.#byId.delete(id);
    const ofType = this.#perAggregate.get(event.aggregateType);
    if (ofType !== undefined) {
      const left = (ofType.get(event.aggregateId) ?? 1) - 1;
      if (left > 0) ofType.set(event.aggregateId, left);
      else {
        ofType.delete(event.aggregateId);
        if (ofType.size === 0) this.#perAggregate.delete(event.aggregateType);
      }
    }
    return event.seq;
  }

  /** Whether an event of the aggregate is in flight, which holds back the aggregate's other events. */
  holdsAggregate(aggregateType: string, aggregateId: string): boolean {
    return this.#perAggregate.get(aggregateType)?.has(aggregateId) === true;
  }

  /** The span of the `seq` in flight, for a claim to skip them as a range when they are one run. */
  span(): SeqSpan {
    if (this.#byId.size === 0) return NOTHING;
    let lowest = Number.POSITIVE_INFINITY;
    let highest = Number.NEGATIVE_INFINITY;
    for (const { seq } of this.#byId.values()) {
      if (seq < lowest) lowest = seq;
      if (seq > highest) highest = seq;
    }
    // The seqs are distinct (one per id), so as many as the range is wide fill it.
    return { lowest, highest, contiguous: highest - lowest + 1 === this.#byId.size };
  }

  /** Every `seq` in flight, in no particular order. */
  seqs(): number[] {
    const seqs: number[] = [];
    for (const { seq } of this.#byId.values()) seqs.push(seq);
    return seqs;
  }

  clear(): void {
    this.#byId.clear();
    this.#perAggregate.clear();
  }
}
