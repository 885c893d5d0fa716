/**
 * Everything that can go wrong with an `Idempotency-Key`, each an error with a stable code and the
 * RFC 9457 problem (status and type) it turns into.
 *
 * @module
 */
import { KeelError } from '../errors/keel-error.ts';
import { type ProblemDetails, type ProblemSource, problemType } from '../http/problem.ts';

/** Base of every idempotency error; `status` and `type` say which HTTP problem it becomes. */
export abstract class IdempotencyError extends KeelError implements ProblemSource {
  abstract readonly status: number;
  abstract readonly problemName: string;
  abstract readonly title: string;
  get problemHeaders(): Readonly<Record<string, string>> | undefined {
    return undefined;
  }
  toProblem(instance?: string): ProblemDetails {
    return {
      type: problemType(this.problemName),
      title: this.title,
      status: this.status,
      detail: this.message,
      ...(instance === undefined ? {} : { instance }),
    };
  }
}

/** The route requires an `Idempotency-Key` and the request had none. → 400 */
export class IdempotencyKeyMissingError extends IdempotencyError {
  readonly status = 400;
  readonly problemName = 'idempotency-key-missing';
  readonly title = 'Idempotency-Key header required';
  constructor(header: string) {
    super('KEEL_IDEMPOTENCY_KEY_MISSING', `This operation requires an ${header} header`);
  }
}

/** The key is empty, longer than 255 characters, or holds characters other than printable ASCII. → 400 */
export class IdempotencyKeyInvalidError extends IdempotencyError {
  readonly status = 400;
  readonly problemName = 'idempotency-key-invalid';
  readonly title = 'Invalid Idempotency-Key';
  constructor(reason: string) {
    super('KEEL_IDEMPOTENCY_KEY_INVALID', reason);
  }
}

/** The key was used before with a different request payload. → 422 */
export class IdempotencyKeyMismatchError extends IdempotencyError {
  readonly status = 422;
  readonly problemName = 'idempotency-key-reused';
  readonly title = 'Idempotency-Key reused with a different request';
  constructor() {
    super(
      'KEEL_IDEMPOTENCY_KEY_MISMATCH',
      'This Idempotency-Key was already used with a different request body; use a new key for a new request',
    );
  }
}

/** A request with the same key is still being processed. → 409 with `Retry-After` */
export class IdempotencyKeyInFlightError extends IdempotencyError {
  readonly status = 409;
  readonly problemName = 'idempotency-key-in-flight';
  readonly title = 'A request with this Idempotency-Key is in progress';
  readonly retryAfterSeconds: number;
  constructor(retryAfterSeconds: number) {
    super(
      'KEEL_IDEMPOTENCY_IN_FLIGHT',
      `The first request with this key has not finished; retry in ${retryAfterSeconds} s to get its result`,
    );
    this.retryAfterSeconds = retryAfterSeconds;
  }
  override get problemHeaders(): Readonly<Record<string, string>> {
    return { 'retry-after': String(this.retryAfterSeconds) };
  }
}

/** A newer request (higher sequence) superseded this one in latest-wins mode. → 409 */
export class IdempotencySupersededError extends IdempotencyError {
  readonly status = 409;
  readonly problemName = 'idempotency-superseded';
  readonly title = 'Superseded by a newer request';
  readonly sequence: number;
  readonly latestSequence: number;
  constructor(sequence: number, latestSequence: number) {
    super(
      'KEEL_IDEMPOTENCY_SUPERSEDED',
      `Request sequence ${sequence} is older than sequence ${latestSequence}, which has already been accepted`,
    );
    this.sequence = sequence;
    this.latestSequence = latestSequence;
  }
  override toProblem(instance?: string): ProblemDetails {
    return { ...super.toProblem(instance), sequence: this.sequence, latestSequence: this.latestSequence };
  }
}

/**
 * This worker's lease on the key expired and another worker took it over, so this worker may not
 * complete or overwrite the record. → 409
 */
export class IdempotencyLeaseLostError extends IdempotencyError {
  readonly status = 409;
  readonly problemName = 'idempotency-lease-lost';
  readonly title = 'The request took too long and was taken over';
  constructor() {
    super(
      'KEEL_IDEMPOTENCY_LEASE_LOST',
      'Processing took longer than the idempotency lease and another attempt took over; retry to get its result',
    );
  }
}

/** The request payload could not be fingerprinted (not JSON-serialisable, too large). → 400 or 413 */
export class IdempotencyPayloadError extends IdempotencyError {
  readonly status: number;
  readonly problemName: string;
  readonly title: string;
  constructor(status: 400 | 413, reason: string) {
    super('KEEL_IDEMPOTENCY_PAYLOAD', reason);
    this.status = status;
    this.problemName = status === 413 ? 'payload-too-large' : 'payload-invalid';
    this.title = status === 413 ? 'Request body too large' : 'Request body cannot be fingerprinted';
  }
}
