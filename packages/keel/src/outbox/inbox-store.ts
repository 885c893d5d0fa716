/**
 * The storage contract of the consumer side. Brokers deliver at least once, so a consumer makes its
 * effect exactly once by handling each event inside a transaction that also records
 * `(group, eventId)` in an inbox table: a second delivery finds the row and is skipped. The same
 * store counts failed attempts per event (so the count survives a broker that forgets it), parks
 * poison events as dead letters with everything needed to replay them, and prunes old inbox rows.
 * A store implements these primitives on one database (`keel/sqlite`, `keel/postgres`); the consumer
 * owns retries, back-off and telemetry.
 *
 * @module
 */
import { InvalidOptionError } from '../errors/keel-error.ts';
import { checkInteger, checkNumber } from '../policy/options.ts';
import type { OutboxEvent } from './event.ts';

/** What {@link InboxStore.process} did: ran the work, or found the event already processed. */
export type InboxResult<T> = { readonly duplicate: false; readonly value: T } | { readonly duplicate: true };

/** One failure, as the inbox keeps it: the message and the stack (or its first line). */
export interface FailureSummary {
  /** `Name: message` of the error, at most 2,000 characters. */
  readonly message: string;
  /** The stack trace (at most 8,000 characters), or `null` when the error had none. */
  readonly stack: string | null;
}

/** The failed attempts of one event in one group, counted by the inbox. */
export interface FailedAttempts {
  readonly attempts: number;
  /** Epoch ms of the first and the latest failure. */
  readonly firstFailedAt: number;
  readonly lastFailedAt: number;
  readonly lastError: FailureSummary;
}

/** A parked event: the event as delivered, every field, and the history of its failures. */
export interface DeadLetter {
  readonly group: string;
  readonly event: OutboxEvent;
  /** Failed attempts before it was parked, plus failed re-drives since. */
  readonly attempts: number;
  readonly firstFailedAt: number;
  readonly lastFailedAt: number;
  /** `null` only for an event parked without a recorded failure. */
  readonly lastError: FailureSummary | null;
}

/**
 * Selects events (dead letters to re-drive, outbox events to republish); criteria combine with AND.
 * Each maps to a flag of `keel replay`: `--all`, `--ids`, `--type`, `--aggregate type:id`,
 * `--since`, `--until`, `--limit`.
 */
export interface EventSelection {
  /**
   * Every event. Required when no other criterion is given, so that a forgotten flag never selects
   * everything by accident.
   */
  readonly all?: boolean;
  readonly ids?: readonly string[];
  readonly type?: string;
  readonly aggregateType?: string;
  readonly aggregateId?: string;
  /** The event was appended at or after (epoch ms). */
  readonly since?: number;
  /** The event was appended before (epoch ms). */
  readonly until?: number;
  /**
   * At most this many, oldest event first.
   * @default 1000
   */
  readonly limit?: number;
}

/** Selects dead letters of one group. */
export type DeadLetterFilter = EventSelection;

/** Whether {@link InboxStore.deadLetter} parked the event, or found it already processed. */
export type DeadLetterOutcome = 'dead-lettered' | 'duplicate';

/**
 * The primitives an inbox store implements. `Tx` is what handlers receive: the driver's own
 * transaction handle (the `node:sqlite` database inside `BEGIN IMMEDIATE`, a `pg` client inside
 * `BEGIN`), so their writes commit or roll back with the inbox row.
 */
export interface InboxStore<Tx = unknown> {
  /**
   * Opens a transaction, records `(group, eventId)` and runs `work(tx)` in it, then commits. When
   * the row exists already, `work` is not run and the result is a duplicate; when another
   * transaction is recording the same id at this moment, this one waits for it and then sees a
   * duplicate (or, if it rolled back, runs `work`). A processed event is no longer a failure: its
   * attempts and its dead letter, if any, are removed in the same transaction. When `work` throws,
   * everything rolls back and the error is rethrown.
   */
  process<T>(group: string, eventId: string, work: (tx: Tx) => Promise<T>): Promise<InboxResult<T>>;
  /** True when `(group, eventId)` is in the inbox. */
  isProcessed(group: string, eventId: string): Promise<boolean>;
  /** Counts one failed attempt at `at` (epoch ms) and returns the totals, this one included. */
  recordFailure(group: string, eventId: string, failure: FailureSummary, at: number): Promise<FailedAttempts>;
  /** The failed attempts recorded for an event, or `undefined` when there are none. */
  failedAttempts(group: string, eventId: string): Promise<FailedAttempts | undefined>;
  /**
   * Parks `event` in one transaction with the inbox check: when it has been processed meanwhile,
   * only its attempts are removed and the outcome is `'duplicate'`; otherwise its recorded attempts
   * move into its dead letter (added to the attempts of an existing one, whose last error they
   * replace).
   */
  deadLetter(group: string, event: OutboxEvent): Promise<DeadLetterOutcome>;
  /** Dead letters of `group` matching `filter`, oldest event first. */
  deadLetters(group: string, filter: DeadLetterFilter): Promise<DeadLetter[]>;
  /** Deletes the dead letters of these ids; returns how many there were. */
  removeDeadLetters(group: string, eventIds: readonly string[]): Promise<number>;
  /** How many dead letters `group` has, or every group when omitted (a gauge). */
  countDeadLetters(group?: string): Promise<number>;
  /**
   * Deletes up to `limit` inbox rows processed before `before` (epoch ms), and up to `limit`
   * attempt counts whose last failure is older than that (their event was never delivered again).
   * Returns how many rows were deleted; call it again until it returns 0.
   */
  prune(before: number, limit: number): Promise<number>;
}

const MAX_MESSAGE = 2_000;
const MAX_STACK = 8_000;

/**
 * Summarises a thrown value for the inbox: `Name: message` and the stack, both bounded, so one
 * runaway error cannot bloat the table.
 *
 * @example
 * describeFailure(new TypeError('amount is missing'));
 * // → { message: 'TypeError: amount is missing', stack: 'TypeError: amount is missing\n    at …' }
 */
export function describeFailure(error: unknown): FailureSummary {
  if (error instanceof Error) {
    const message = error.message === '' ? error.name : `${error.name}: ${error.message}`;
    return {
      message: message.slice(0, MAX_MESSAGE),
      stack: typeof error.stack === 'string' ? error.stack.slice(0, MAX_STACK) : null,
    };
  }
  let text: string;
  try {
    text = typeof error === 'string' ? error : (JSON.stringify(error) ?? String(error));
  } catch {
    text = String(error);
  }
  return { message: text.slice(0, MAX_MESSAGE), stack: null };
}

/** The largest `limit` a selection accepts. */
export const MAX_SELECTION_LIMIT = 10_000;
const DEFAULT_LIMIT = 1_000;

/** An {@link EventSelection} checked and with its defaults, as the stores query it. */
export interface CheckedEventSelection {
  readonly ids: readonly string[] | null;
  readonly type: string | null;
  readonly aggregateType: string | null;
  readonly aggregateId: string | null;
  readonly since: number | null;
  readonly until: number | null;
  readonly limit: number;
}

/**
 * Validates a selection, naming the field at fault. One without `all: true` must name at least one
 * criterion, so that a forgotten flag never re-drives or republishes everything.
 *
 * @example
 * checkEventSelection({ type: 'payment.completed', limit: 50 });
 */
export function checkEventSelection(filter: EventSelection): CheckedEventSelection {
  if (typeof filter !== 'object' || filter === null) {
    throw new InvalidOptionError('filter', 'must be an object');
  }
  const text = (name: string, value: unknown): string | null => {
    if (value === undefined) return null;
    if (typeof value !== 'string' || value === '') {
      throw new InvalidOptionError(name, `must be a non-empty string, got ${JSON.stringify(value)}`);
    }
    return value;
  };
  let ids: readonly string[] | null = null;
  if (filter.ids !== undefined) {
    if (!Array.isArray(filter.ids) || filter.ids.some((id) => typeof id !== 'string' || id === '')) {
      throw new InvalidOptionError('ids', 'must be an array of non-empty strings');
    }
    ids = [...filter.ids];
  }
  const checked: CheckedEventSelection = {
    ids,
    type: text('type', filter.type),
    aggregateType: text('aggregateType', filter.aggregateType),
    aggregateId: text('aggregateId', filter.aggregateId),
    since: filter.since === undefined ? null : checkNumber('since', filter.since),
    until: filter.until === undefined ? null : checkNumber('until', filter.until),
    limit: checkInteger('limit', filter.limit ?? DEFAULT_LIMIT, 1, MAX_SELECTION_LIMIT),
  };
  if (filter.all !== undefined && typeof filter.all !== 'boolean') {
    throw new InvalidOptionError('all', `must be a boolean, got ${JSON.stringify(filter.all)}`);
  }
  const narrowed =
    checked.ids !== null ||
    checked.type !== null ||
    checked.aggregateType !== null ||
    checked.aggregateId !== null ||
    checked.since !== null ||
    checked.until !== null;
  if (!narrowed && filter.all !== true) {
    throw new InvalidOptionError(
      'filter',
      'name ids, a type, an aggregate or a time range, or pass all: true to select every event',
    );
  }
  return checked;
}

/** Checks a prune or sweep `limit`: an integer from 0 to 10,000. */
export function checkPruneLimit(limit: number): number {
  return checkInteger('limit', limit, 0, MAX_SELECTION_LIMIT);
}
