/**
 * Repair after an incident, always by the events' original ids so the inbox keeps every effect to
 * one: `redriveDeadLetters` runs parked events through their handler inside the inbox transaction
 * once the cause is fixed, and `republish` marks outbox events for the relay to publish again, so a
 * consumer that missed them catches up and one that had them skips them as duplicates. Both take a
 * selection that maps to `keel replay` flags, and a `dryRun` that lists what would be done.
 *
 * @module
 */
import { InvalidOptionError } from '../errors/keel-error.ts';
import type { WallClock } from '../idempotency/store.ts';
import { wallClock } from '../idempotency/store.ts';
import type { EventHandlers } from './consumer.ts';
import { UnknownEventTypeError } from './consumer-errors.ts';
import { emitSafely, telemetryBase } from './consumer-telemetry.ts';
import type { OutboxEvent } from './event.ts';
import { checkEventSelection, describeFailure, type EventSelection, type InboxStore } from './inbox-store.ts';
import type { OutboxFilter, OutboxStore } from './outbox-store.ts';
import type { OutboxTelemetry } from './telemetry.ts';

/** An event named in a replay plan or report. */
export interface ReplayedEvent {
  readonly id: string;
  readonly type: string;
  readonly aggregateType: string;
  readonly aggregateId: string;
  readonly createdAt: number;
}

/** Whether to act, or only list what would be done (`--dry-run`). */
export interface DryRunOption {
  /** @default false */
  readonly dryRun?: boolean;
}

/** Which dead letters to re-drive: by ids, type, aggregate, append time, or `all: true`. */
export type RedriveFilter = EventSelection & DryRunOption;

/** What {@link redriveDeadLetters} did, or in a dry run would do. */
export interface RedriveReport {
  readonly dryRun: boolean;
  readonly group: string;
  /** Dead letters the filter selected. */
  readonly matched: number;
  /** Handled now through the inbox and removed from the dead letters (in a dry run: would be). */
  readonly redriven: readonly ReplayedEvent[];
  /** Already in the inbox: only removed from the dead letters (in a dry run: would be). */
  readonly alreadyProcessed: readonly ReplayedEvent[];
  /** Failed again: still dead letters, their attempts and last error updated. Empty in a dry run. */
  readonly failed: readonly (ReplayedEvent & { readonly error: string })[];
}

/** What {@link redriveDeadLetters} needs: the group's inbox and handlers. */
export interface RedriveOptions<Tx = unknown> {
  inbox: InboxStore<Tx>;
  group: string;
  handlers: EventHandlers<Tx>;
  /** Receives `consumed`, `duplicate-skipped` and `consume-failed` for re-driven events. */
  telemetry?: OutboxTelemetry;
  /** @default wallClock */
  clock?: WallClock;
}

function summary(event: OutboxEvent): ReplayedEvent {
  return {
    id: event.id,
    type: event.type,
    aggregateType: event.aggregateType,
    aggregateId: event.aggregateId,
    createdAt: event.createdAt,
  };
}

function checkDryRun(value: unknown): boolean {
  if (value !== undefined && typeof value !== 'boolean') {
    throw new InvalidOptionError('dryRun', `must be a boolean, got ${JSON.stringify(value)}`);
  }
  return value === true;
}

/**
 * Re-drives the selected dead letters of a group, one at a time, oldest first: each runs through its
 * handler inside the inbox transaction under its original id, so it takes effect once and leaves
 * the dead letters in the same commit. One already in the inbox (handled by another route since) is
 * only removed. One that fails again stays parked, with the failure added to its attempts. An
 * `OutboxConsumer`'s `redrive(filter)` calls this with its own inbox and handlers.
 *
 * @example
 * // keel replay --dead-letters --group invoices --type payment.completed --dry-run
 * const plan = await redriveDeadLetters({ inbox, group: 'invoices', handlers },
 *   { type: 'payment.completed', dryRun: true });
 * const report = await redriveDeadLetters({ inbox, group: 'invoices', handlers },
 *   { ids: plan.redriven.map((event) => event.id) });
 */
export async function redriveDeadLetters<Tx>(
  options: RedriveOptions<Tx>,
  filter: RedriveFilter,
): Promise<RedriveReport> {
  const dryRun = checkDryRun(filter?.dryRun);
  checkEventSelection(filter);
  const { inbox, group, handlers, telemetry } = options;
  const clock = options.clock ?? wallClock;
  const letters = await inbox.deadLetters(group, filter);
  const redriven: ReplayedEvent[] = [];
  const alreadyProcessed: ReplayedEvent[] = [];
  const failed: (ReplayedEvent & { error: string })[] = [];

  for (const letter of letters) {
    const { event } = letter;
    if (dryRun) {
      ((await inbox.isProcessed(group, event.id)) ? alreadyProcessed : redriven).push(summary(event));
      continue;
    }
    const handler = Object.hasOwn(handlers, event.type) ? handlers[event.type] : undefined;
    const context = { group, attempt: letter.attempts + 1, redrive: true };
    try {
      if (handler === undefined) throw new UnknownEventTypeError(event.type, group);
      const result = await inbox.process(group, event.id, async (tx) => {
        await handler(event, tx, context);
      });
      if (result.duplicate) {
        await inbox.removeDeadLetters(group, [event.id]);
        alreadyProcessed.push(summary(event));
        emitSafely(telemetry, { type: 'duplicate-skipped', consumer: group, ...telemetryBase(event) });
      } else {
        redriven.push(summary(event));
        const lagMs = Math.max(0, clock.now() - event.createdAt);
        emitSafely(telemetry, { type: 'consumed', consumer: group, lagMs, ...telemetryBase(event) });
      }
    } catch (error) {
      const failure = describeFailure(error);
      const attempts = await inbox.recordFailure(group, event.id, failure, clock.now());
      // Back into the dead letters: its attempts are added to the letter's, its error replaces the last.
      await inbox.deadLetter(group, event);
      failed.push({ ...summary(event), error: failure.message });
      emitSafely(telemetry, {
        type: 'consume-failed',
        consumer: group,
        attempt: letter.attempts + attempts.attempts,
        error,
        ...telemetryBase(event),
      });
    }
  }
  return { dryRun, group, matched: letters.length, redriven, alreadyProcessed, failed };
}

/** Which outbox events to publish again: by ids, type, aggregate, append time, or `all: true`. */
export type RepublishFilter = EventSelection & DryRunOption;

/** What {@link republish} did, or in a dry run would do. */
export interface RepublishReport {
  readonly dryRun: boolean;
  /** Outbox events the filter selected. */
  readonly matched: number;
  /** Published events marked for the relay to publish again, same ids (in a dry run: would be). */
  readonly requeued: readonly ReplayedEvent[];
  /** Not published yet: the relay publishes them anyway, so they were left alone. */
  readonly pending: readonly ReplayedEvent[];
}

/**
 * Marks the selected outbox events for publishing again, keeping their ids: the relay publishes
 * them anew, a consumer that missed them handles them, and one that had them skips them as
 * duplicates. Events the relay has not published yet are reported as pending and left alone.
 *
 * @example
 * // keel replay --type payment.completed --since 2026-11-23T10:00Z --dry-run
 * const plan = await republish(outboxStore, { type: 'payment.completed', since, dryRun: true });
 * const report = await republish(outboxStore, { aggregateType: 'payment', aggregateId: 'p-42' });
 */
export async function republish(outbox: OutboxStore, filter: RepublishFilter): Promise<RepublishReport> {
  const dryRun = checkDryRun(filter?.dryRun);
  const checked = checkEventSelection(filter);
  const query: { -readonly [K in keyof OutboxFilter]: OutboxFilter[K] } = { limit: checked.limit };
  if (checked.ids !== null) query.ids = checked.ids;
  if (checked.since !== null) query.since = checked.since;
  if (checked.until !== null) query.until = checked.until;
  if (checked.type !== null) query.type = checked.type;
  if (checked.aggregateType !== null) query.aggregateType = checked.aggregateType;
  if (checked.aggregateId !== null) query.aggregateId = checked.aggregateId;
  const events = await outbox.find(query);
  const published = events.filter((event) => event.publishedAt !== null);
  const pending = events.filter((event) => event.publishedAt === null).map(summary);
  if (!dryRun && published.length > 0) await outbox.requeue(published.map((event) => event.id));
  return { dryRun, matched: events.length, requeued: published.map(summary), pending };
}
