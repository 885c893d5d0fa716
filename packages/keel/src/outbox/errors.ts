/**
 * Errors of the producing side of the outbox: an event that cannot be appended as it is, and an
 * append made outside the transaction it is meant to share. Each has a stable `KEEL_OUTBOX_*` code.
 *
 * @module
 */
import { KeelError } from '../errors/keel-error.ts';

/**
 * A payload that JSON would not carry unchanged: a function, symbol, `bigint`, `undefined`, a
 * non-finite number, a cycle, a non-plain object (a `Date`, a `Map`, a class instance), a sparse
 * array, a string that is not well-formed Unicode or holds U+0000, or a body over the size limit.
 * `path` names the offending value (`payload.items[2].price`). Nothing was written.
 *
 * @example
 * try { await outbox.append(tx, { type, aggregateType, aggregateId, payload: { at: new Date() } }) }
 * catch (error) { if (error instanceof OutboxPayloadError) error.path; // 'payload.at' }
 */
export class OutboxPayloadError extends KeelError {
  /** Where in the event the value is: `payload`, `payload.items[2]`. */
  readonly path: string;
  constructor(path: string, reason: string) {
    super('KEEL_OUTBOX_PAYLOAD', `${path}: ${reason}`);
    this.path = path;
  }
}

/**
 * An event whose envelope is invalid: `type`, `aggregateType` or `aggregateId` empty, too long or not
 * a string, headers that are not a string-to-string map, or an `id` that is not a non-empty string.
 * `field` names it. Nothing was written.
 *
 * @example
 * await outbox.append(tx, { type: '', aggregateType: 'payment', aggregateId: 'p-1', payload: {} });
 * // throws InvalidOutboxEventError: type: must be a non-empty string …
 */
export class InvalidOutboxEventError extends KeelError {
  /** The field at fault: `type`, `aggregateId`, `headers['x-request-id']`, `events[3]`. */
  readonly field: string;
  constructor(field: string, reason: string) {
    super('KEEL_OUTBOX_INVALID_EVENT', `${field}: ${reason}`);
    this.field = field;
  }
}

/**
 * `append` was given a SQLite handle that has no open transaction: the events would commit on their
 * own, not with the state change they describe. Run `BEGIN` first and `COMMIT` after.
 *
 * @example
 * db.exec('BEGIN IMMEDIATE');
 * await outbox.append(db, event);
 * db.exec('COMMIT');
 */
export class OutboxTransactionError extends KeelError {
  constructor(message: string) {
    super('KEEL_OUTBOX_NO_TRANSACTION', message);
  }
}

/**
 * The SQLite outbox's write thread (`sqliteOutbox({ writeThread: true })`) failed, exited or was
 * closed before it answered a write of the relay. Whether that write committed is not known: the
 * relay reports the error and carries on, and events whose mark is in doubt are published again,
 * which a consumer's inbox absorbs. The next write starts a new thread.
 *
 * @example
 * relay = outboxRelay({ store, transport, onError: (error) => {
 *   if (error instanceof OutboxWriteThreadError) log.warn({ err: error }, 'outbox write thread lost');
 * } });
 */
export class OutboxWriteThreadError extends KeelError {
  constructor(reason: string, options?: { cause?: unknown }) {
    super('KEEL_OUTBOX_WRITE_THREAD', `The outbox's write thread ${reason}`, options);
  }
}
