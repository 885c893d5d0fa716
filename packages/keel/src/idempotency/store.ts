/**
 * The storage contract. A store implements a handful of atomic primitives — read, insert if absent,
 * compare-and-swap on the lease token, delete on the lease token, and two sweeps — while
 * {@link IdempotencyEngine} owns every rule about keys, leases, fingerprints and retention. One
 * conformance suite runs against every store.
 *
 * @module
 */

/** A response as stored and replayed. */
export interface StoredResponse {
  readonly status: number;
  /** Only the allow-listed headers, lower-cased. */
  readonly headers: Readonly<Record<string, string>>;
  /** The body as sent; `null` for an empty body. */
  readonly body: string | null;
}

/** Where a key is in its life. */
export type RecordState = 'in-flight' | 'completed';

/** One idempotency key's record. Times are wall-clock epoch milliseconds. */
export interface IdempotencyRecord {
  /** The scoped key (a hash of caller, method, route and the client's key). */
  readonly key: string;
  readonly fingerprint: string;
  readonly state: RecordState;
  /**
   * Unique per acquisition. Every write after acquiring must present it, so a worker whose lease
   * expired and was taken over cannot complete or overwrite the record (fencing).
   */
  readonly token: string;
  /** Until when the current holder owns the key; after it, another request may take over. */
  readonly leaseUntil: number;
  /** When the record may be forgotten. */
  readonly expiresAt: number;
  /** Latest-wins mode: the sequence of the request that holds the record. */
  readonly sequence: number | null;
  readonly response: StoredResponse | null;
  /** The last committed phase of a multi-step operation. */
  readonly recoveryPoint: string | null;
  /** Results of committed phases, by phase name. */
  readonly phases: Readonly<Record<string, unknown>>;
  readonly createdAt: number;
  readonly updatedAt: number;
}

/**
 * A driver-specific handle that lets a write join the caller's open transaction (a `pg` client
 * inside `BEGIN`, say). Stores that cannot join one ignore it.
 */
export type TransactionHandle = unknown;

/** The atomic primitives a store implements. */
export interface IdempotencyStore {
  /** The record for `key`, or `undefined`. */
  get(key: string): Promise<IdempotencyRecord | undefined>;
  /** Inserts `record` unless one exists for its key; true when inserted. */
  insertIfAbsent(record: IdempotencyRecord): Promise<boolean>;
  /**
   * Replaces the record for `record.key` only if its current token is `expectedToken`; true when
   * replaced. Joins `tx` when given and supported.
   */
  replace(expectedToken: string, record: IdempotencyRecord, tx?: TransactionHandle): Promise<boolean>;
  /** Deletes the record for `key` only if its token is `expectedToken`; true when deleted. */
  delete(key: string, expectedToken: string): Promise<boolean>;
  /** In-flight records whose lease ended before `now`, oldest first. */
  expiredLeases(now: number, limit: number): Promise<IdempotencyRecord[]>;
  /** Deletes up to `limit` records whose retention ended before `now`; returns how many. */
  purgeExpired(now: number, limit: number): Promise<number>;
}

/** A source of wall-clock epoch milliseconds (leases are compared across processes). */
export interface WallClock {
  now(): number;
}

/** `Date.now()`. */
export const wallClock: WallClock = Object.freeze({ now: () => Date.now() });
