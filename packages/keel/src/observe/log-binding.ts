/**
 * Binds the async context to any pino-compatible logger, so every line logged while handling a
 * request or an event names the request, the idempotency key and the entities — without a child
 * logger passed through every call. And one shape for failure lines, so a failure always says what
 * it happened to, why, and what happens next: the three questions an on-call engineer asks first.
 *
 * @module
 */
import { isKeelError } from '../errors/keel-error.ts';
import { currentContext } from './context.ts';

/** The flat fields a log line gets from the context: `requestId`, `orderId`, … */
export type ContextLogFields = Record<string, string>;

/**
 * A mixin for pino's `mixin` option (or any logger that merges an object into each line): returns
 * the current context's ids as flat fields — `requestId`, `correlationId`, `idempotencyKey`, then
 * each entity id under its own name (`orderId`, `paymentId`). Outside a context it returns an empty
 * object. A fresh object every call, because pino merges the line into it.
 *
 * @example
 * const logger = pino({ mixin: logMixin() });
 * runInContext({ requestId: 'r-1', entities: { orderId: 'o-42' } }, () => logger.info('charging'));
 * // {"level":30,"requestId":"r-1","orderId":"o-42","msg":"charging",…}
 */
export function logMixin(): () => ContextLogFields {
  return contextLogFields;
}

/** The current context's ids as flat log fields (what {@link logMixin}'s function returns). */
export function contextLogFields(): ContextLogFields {
  const context = currentContext();
  const fields: ContextLogFields = {};
  if (context === undefined) return fields;
  // Entities first, so an entity named like a reserved field can never overwrite it.
  Object.assign(fields, context.entities);
  if (context.requestId !== undefined) fields.requestId = context.requestId;
  if (context.correlationId !== undefined) fields.correlationId = context.correlationId;
  if (context.idempotencyKey !== undefined) fields.idempotencyKey = context.idempotencyKey;
  return fields;
}

/** What a failure line must say. */
export interface FailureLogInput {
  /** The entity the failure happened to, by id: `{ orderId: 'o-42' }` (at least one id). */
  readonly entity: Readonly<Record<string, string>>;
  /** Why it failed, in words an operator understands: `'provider-a timed out after 3 attempts'`. */
  readonly reason: string;
  /** What happens next, or what a human must do: `'the relay retries in 30 s'`, `'run keel replay'`. */
  readonly next: string;
  /** The error behind it; logged under `err` so pino's error serializer applies. */
  readonly error?: unknown;
}

/** The object {@link failureLog} builds: the entity ids flat, plus the fields below. */
export interface FailureLogRecord {
  /** Always `'failure'`, so failure lines can be found with one query. */
  readonly event: 'failure';
  /** The entity in one field: `'orderId=o-42'` (several ids joined by a space). */
  readonly entity: string;
  readonly reason: string;
  readonly next: string;
  readonly err?: unknown;
  /** The stable `KEEL_*` code when the error is a Keel error. */
  readonly errorCode?: string;
  readonly [id: string]: unknown;
}

/**
 * Builds a failure line that names the entity, the reason and the next step. Context ids are added
 * by {@link logMixin}; this adds the entity ids flat too, so `orderId` is searchable the same way
 * whether it came from the context or from the failure.
 *
 * @example
 * logger.error(
 *   failureLog({ entity: { orderId }, reason: 'payment provider unavailable', next: 'order left pending; the relay retries', error }),
 *   'charge failed',
 * );
 */
export function failureLog(input: FailureLogInput): FailureLogRecord {
  const entityText = Object.entries(input.entity)
    .map(([name, id]) => `${name}=${id}`)
    .join(' ');
  return {
    ...input.entity,
    event: 'failure',
    entity: entityText,
    reason: input.reason,
    next: input.next,
    ...(input.error !== undefined && { err: input.error }),
    ...(isKeelError(input.error) && { errorCode: input.error.code }),
  };
}
