/**
 * An alert that a tired engineer can act on at 3 a.m. Every alert states four things: what broke,
 * where to look (the entity ids, the query that lists them all, the log filter), why it matters to
 * the business, and what to do next — plus a severity and a grouping key. Leaving any part out is a
 * type error, an empty part is a type error when written as a literal, and `defineAlert()` checks the
 * same at run time so an alert read from untyped JSON configuration cannot slip through half-built.
 *
 * @module
 */
import { KeelError } from '../errors/keel-error.ts';

/** How urgently a human must act: `critical` pages, `warning` waits for working hours, `info` is a record. */
export type AlertSeverity = 'critical' | 'warning' | 'info';

const SEVERITIES: readonly AlertSeverity[] = ['critical', 'warning', 'info'];

/** The four parts and the routing every alert must carry, as written by the team. */
export interface AlertSpec {
  /** What broke, in one line: `'Paid orders without a payment'`. Becomes the summary. */
  readonly what: string;
  /**
   * Where to look: the log filter, dashboard or table to open. The offending ids and the query
   * that lists them all are added by the invariant at the time it fires.
   */
  readonly where: string;
  /** Why it matters, in business terms: `'Customers were charged but get no goods'`. */
  readonly impact: string;
  /** What to do next: steps or a command, e.g. `'keel replay --type payment.completed --since 1h'`. */
  readonly next: string;
  /** How urgently a human must act. */
  readonly severity: AlertSeverity;
  /** Groups related alerts into one notification (Alertmanager `group_by`), e.g. `'payments'`. */
  readonly group: string;
}

/** The string-valued parts of an {@link AlertSpec} that must not be empty. */
export type AlertTextPart = 'what' | 'where' | 'impact' | 'next' | 'group';

const TEXT_PARTS: readonly AlertTextPart[] = ['what', 'where', 'impact', 'next', 'group'];

/** `never` for the empty string literal, so `what: ''` does not type-check. */
export type NonEmpty<S> = S extends '' ? never : S;

/** An alert spec whose literal parts are checked to be non-empty. */
export type CheckedAlertSpec<S extends AlertSpec> = S & { readonly [K in AlertTextPart]: NonEmpty<S[K]> };

declare const checkedAlert: unique symbol;

/**
 * An alert that passed {@link defineAlert}: all four parts present and non-empty, a known
 * severity and a group. Only `defineAlert()` makes one, so holding the type means it was checked.
 */
export type AlertDefinition = Readonly<AlertSpec> & { readonly [checkedAlert]: true };

/** Thrown by {@link defineAlert} when a part is missing, empty or of the wrong type. */
export class InvalidAlertError extends KeelError {
  /** The parts that were missing or invalid. */
  readonly parts: readonly string[];
  constructor(parts: readonly string[], message: string) {
    super('KEEL_INVALID_ALERT', message);
    this.parts = parts;
  }
}

/**
 * Checks an alert's four parts, severity and group, and returns it frozen.
 *
 * @throws {InvalidAlertError} naming every missing or empty part (for alerts from untyped config).
 *
 * @example
 * const alert = defineAlert({
 *   what: 'Paid orders without a payment',
 *   where: 'logs: event="order.paid" without "payment.recorded"; table orders',
 *   impact: 'Customers were charged but the order is not fulfilled',
 *   next: 'keel replay --type payment.completed --since 1h',
 *   severity: 'critical',
 *   group: 'payments',
 * });
 */
export function defineAlert<const S extends AlertSpec>(spec: CheckedAlertSpec<S>): AlertDefinition {
  return validateAlert(spec as unknown);
}

/**
 * {@link defineAlert} for values of unknown shape, such as parsed JSON configuration.
 *
 * @throws {InvalidAlertError} naming every missing or empty part.
 *
 * @example
 * const alert = alertFromConfig(JSON.parse(await readFile('alerts/paid-orders.json', 'utf8')));
 */
export function alertFromConfig(config: unknown): AlertDefinition {
  return validateAlert(config);
}

function validateAlert(value: unknown): AlertDefinition {
  if (typeof value !== 'object' || value === null) {
    throw new InvalidAlertError(
      ['what', 'where', 'impact', 'next', 'severity', 'group'],
      'An alert must be an object',
    );
  }
  const record = value as Record<string, unknown>;
  const bad: string[] = [];
  for (const part of TEXT_PARTS) {
    const text = record[part];
    if (typeof text !== 'string' || text.trim() === '') bad.push(part);
  }
  if (!SEVERITIES.includes(record.severity as AlertSeverity)) bad.push('severity');
  if (bad.length > 0) {
    throw new InvalidAlertError(
      bad,
      `An alert needs what broke, where to look, why it matters and what to do next, a severity (${SEVERITIES.join(', ')}) and a group; missing or empty: ${bad.join(', ')}`,
    );
  }
  return Object.freeze({
    what: record.what as string,
    where: record.where as string,
    impact: record.impact as string,
    next: record.next as string,
    severity: record.severity as AlertSeverity,
    group: record.group as string,
  }) as AlertDefinition;
}

/** What a breach found: a sample of the offending ids, their total, and how to list them all. */
export interface BreachEvidence {
  /** A sample of the offending entity ids (bounded by the check). */
  readonly ids: readonly string[];
  /** How many entities are offending in total. */
  readonly total: number;
  /** Age of the oldest offending entity, when the check knows it. */
  readonly oldestAgeMs?: number | undefined;
  /** The query (SQL, PromQL) that lists every offending entity. */
  readonly query?: string | undefined;
  /** The measured value that broke the invariant (a ratio, a count, an age). */
  readonly value: number;
  /** One line saying what was measured against what. */
  readonly detail: string;
}

/**
 * One notification about one invariant, as every sink receives it: `firing` when the breach has
 * lasted its `for:` duration (and again on each re-notify), `resolved` once the invariant holds again.
 */
export interface AlertNotification {
  readonly status: 'firing' | 'resolved';
  /** The invariant's name, also the alert name. */
  readonly name: string;
  readonly alert: AlertDefinition;
  /** Evidence of the latest breaching evaluation (for `resolved`, the last one before it held). */
  readonly evidence: BreachEvidence;
  /** Wall time (ms since the epoch) the breach started, not when the alert first fired. */
  readonly startsAt: number;
  /** Wall time it resolved; absent while firing. */
  readonly endsAt?: number | undefined;
  /**
   * While firing: wall time after which a receiver may consider the alert stale unless it is sent
   * again (Alertmanager's `endsAt` for a firing alert).
   */
  readonly expiresAt?: number | undefined;
  /** 1 for the first notification of this breach, then 2, 3… for each re-notify. */
  readonly sequence: number;
}

/**
 * The text of a notification for humans (logs, chat): the four parts, the sample ids and the query.
 *
 * @example
 * console.log(formatAlert(notification));
 */
export function formatAlert(notification: AlertNotification): string {
  const { alert, evidence } = notification;
  const lines = [
    `[${notification.status.toUpperCase()}] [${alert.severity}] ${notification.name}: ${alert.what}`,
    `  measured: ${evidence.detail}`,
    `  where: ${alert.where}`,
  ];
  if (evidence.total > 0) {
    const more = evidence.total > evidence.ids.length ? ` (${evidence.ids.length} of ${evidence.total})` : '';
    lines.push(`  ids: ${evidence.ids.join(', ')}${more}`);
  }
  if (evidence.query !== undefined) lines.push(`  query: ${evidence.query}`);
  lines.push(`  impact: ${alert.impact}`, `  next: ${alert.next}`);
  return lines.join('\n');
}
