/**
 * The idempotency engine, independent of any HTTP framework: it validates and scopes the key,
 * fingerprints the request, and decides — run the handler under a lease, replay the stored
 * response, or refuse with a problem (400 missing/invalid, 409 in flight or superseded, 422 reused
 * with another payload). Stores only supply atomic primitives; every rule lives here.
 *
 * Answers: duplicate requests (a refresh or a client retry runs the handler once) and partial
 * failures (a crashed worker's key is taken over after a short lease, resuming at its recovery point).
 *
 * @module
 */
import { createHash, randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { InvalidOptionError } from '../errors/keel-error.ts';
import { remainingMs } from '../policy/deadline.ts';
import { checkFunction, checkInteger, checkOneOf } from '../policy/options.ts';
import {
  IdempotencyKeyInFlightError,
  IdempotencyKeyMismatchError,
  IdempotencyKeyMissingError,
  IdempotencyLeaseLostError,
  IdempotencyPayloadError,
  IdempotencySupersededError,
} from './errors.ts';
import { canonicalJson, fingerprintOfCanonical, scopedKey } from './fingerprint.ts';
import { validateIdempotencyKey } from './key.ts';
import {
  type IdempotencyRecord,
  type IdempotencyStore,
  type StoredResponse,
  type TransactionHandle,
  type WallClock,
  wallClock,
} from './store.ts';
import type { IdempotencyTelemetry, IdempotencyTelemetryEvent } from './telemetry.ts';

/** Headers never stored or replayed, whatever the allow-list says. */
const NEVER_REPLAYED: ReadonlySet<string> = new Set([
  'set-cookie',
  'authorization',
  'proxy-authorization',
  'cookie',
  'www-authenticate',
]);

/** Options of {@link idempotency}. */
export interface IdempotencyOptions {
  store: IdempotencyStore;
  /**
   * `'replay'`: a finished key replays its first response. `'latest-wins'`: requests carry a
   * sequence; a newer one supersedes an older in-flight or stored one, which gets a 409.
   * @default 'replay'
   */
  mode?: 'replay' | 'latest-wins';
  /**
   * Whether a request without a key is refused (400) or run without idempotency.
   * @default true
   */
  required?: boolean;
  /**
   * How long a worker owns an in-flight key before another request may take it over.
   * @default 30_000
   */
  leaseMs?: number;
  /**
   * How long a request whose key is in flight waits for the holder before it is refused with a 409:
   * meanwhile it looks at the record every `inFlightPollMs`, replays the holder's response as soon
   * as it is stored, and takes the key over as soon as the holder's lease runs out (a worker that
   * crashed). A client's retry after a lost connection thus gets the first result instead of a 409
   * it would have to retry past the lease. The request's deadline, when there is one, shortens it.
   * @default 0 (refuse at once)
   */
  inFlightWaitMs?: number;
  /**
   * Time between two looks at an in-flight record while waiting (see `inFlightWaitMs`).
   * @default 50
   */
  inFlightPollMs?: number;
  /**
   * How long a finished key replays its response.
   * @default 86_400_000 (24 h)
   */
  retentionMs?: number;
  /**
   * Which statuses are deterministic and stored; the others release the key so a retry runs again.
   * @default 2xx and 4xx
   */
  shouldStore?: (status: number) => boolean;
  /**
   * Response headers stored and replayed (lower-case). `set-cookie` and credentials never are.
   * @default ['content-type', 'location', 'content-language', 'cache-control']
   */
  replayHeaders?: readonly string[];
  /** Redacts or encrypts a response before it is stored. */
  beforeStore?: (response: StoredResponse) => StoredResponse;
  /** Request header that carries the key, lower-case. @default 'idempotency-key' */
  header?: string;
  /** Largest canonical payload fingerprinted, in characters. @default 1_048_576 */
  maxPayloadChars?: number;
  /** @default wallClock (`Date.now`; leases are compared across processes) */
  clock?: WallClock;
  /** Receives replays, conflicts, mismatches, completions and lost leases (see `keel/observe`). */
  telemetry?: IdempotencyTelemetry;
  /** Names this engine in telemetry, usually the route or service it guards. @default 'idempotency' */
  name?: string;
}

const DEFAULTS = Object.freeze({
  mode: 'replay' as const,
  required: true,
  leaseMs: 30_000,
  inFlightWaitMs: 0,
  inFlightPollMs: 50,
  retentionMs: 86_400_000,
  shouldStore: (status: number) => status >= 200 && status < 500,
  replayHeaders: Object.freeze(['content-type', 'location', 'content-language', 'cache-control']),
  header: 'idempotency-key',
  maxPayloadChars: 1_048_576,
});

/** What the engine needs to know about a request. */
export interface IdempotentRequest {
  /** The raw key header value; `undefined` when absent. */
  readonly key: string | undefined;
  /** Who is calling (user, API key, tenant). Keys of different principals never meet. */
  readonly principal: string;
  readonly method: string;
  /** The route pattern (`/orders/:id/charge`), not the concrete URL. */
  readonly route: string;
  /** The parsed body; fingerprinted as canonical JSON. */
  readonly payload?: unknown;
  /** Other request parts that make two requests different (path parameters, a query). */
  readonly parts?: Readonly<Record<string, unknown>>;
  /** Latest-wins mode: the client's sequence or version for this update. */
  readonly sequence?: number;
}

/** The engine's verdict on a request. */
export type IdempotencyDecision =
  | { readonly kind: 'execute'; readonly lease: IdempotencyLease }
  | { readonly kind: 'replay'; readonly response: StoredResponse }
  | { readonly kind: 'bypass' };

/** See {@link idempotency}. */
export class IdempotencyEngine {
  readonly store: IdempotencyStore;
  readonly mode: 'replay' | 'latest-wins';
  readonly required: boolean;
  readonly leaseMs: number;
  readonly inFlightWaitMs: number;
  readonly inFlightPollMs: number;
  readonly retentionMs: number;
  readonly header: string;
  readonly clock: WallClock;
  readonly name: string;
  readonly #telemetry: IdempotencyTelemetry | undefined;
  readonly #shouldStore: (status: number) => boolean;
  readonly #replayHeaders: ReadonlySet<string>;
  readonly #beforeStore: ((response: StoredResponse) => StoredResponse) | undefined;
  readonly #maxPayloadChars: number;

  constructor(options: IdempotencyOptions) {
    if (!options || typeof options.store?.insertIfAbsent !== 'function') {
      throw new TypeError('store: must be an IdempotencyStore');
    }
    this.store = options.store;
    this.mode = checkOneOf('mode', options.mode ?? DEFAULTS.mode, ['replay', 'latest-wins']);
    this.required = options.required ?? DEFAULTS.required;
    this.leaseMs = checkInteger('leaseMs', options.leaseMs ?? DEFAULTS.leaseMs, 10);
    this.inFlightWaitMs = checkInteger(
      'inFlightWaitMs',
      options.inFlightWaitMs ?? DEFAULTS.inFlightWaitMs,
      0,
    );
    this.inFlightPollMs = checkInteger(
      'inFlightPollMs',
      options.inFlightPollMs ?? DEFAULTS.inFlightPollMs,
      1,
    );
    this.retentionMs = checkInteger('retentionMs', options.retentionMs ?? DEFAULTS.retentionMs, 1);
    if (this.retentionMs < this.leaseMs) {
      throw new InvalidOptionError('retentionMs', `must be at least leaseMs (${this.leaseMs})`);
    }
    this.#shouldStore = checkFunction('shouldStore', options.shouldStore ?? DEFAULTS.shouldStore);
    this.#replayHeaders = new Set(
      (options.replayHeaders ?? DEFAULTS.replayHeaders)
        .map((h) => h.toLowerCase())
        .filter((h) => !NEVER_REPLAYED.has(h)),
    );
    this.#beforeStore = options.beforeStore && checkFunction('beforeStore', options.beforeStore);
    this.header = (options.header ?? DEFAULTS.header).toLowerCase();
    this.#maxPayloadChars = checkInteger(
      'maxPayloadChars',
      options.maxPayloadChars ?? DEFAULTS.maxPayloadChars,
    );
    this.clock = options.clock ?? wallClock;
    this.name = options.name ?? 'idempotency';
    if (typeof this.name !== 'string' || this.name.length === 0) {
      throw new InvalidOptionError('name', 'must be a non-empty string');
    }
    if (options.telemetry !== undefined && typeof options.telemetry?.emit !== 'function') {
      throw new InvalidOptionError('telemetry', 'must have an emit(event) method');
    }
    this.#telemetry = options.telemetry;
  }

  /** @internal Delivers a telemetry event; a throwing sink never breaks a request. */
  report(event: IdempotencyTelemetryEvent): void {
    if (this.#telemetry === undefined) return;
    try {
      this.#telemetry.emit(event);
    } catch (error) {
      process.emitWarning(`A Keel idempotency telemetry sink threw: ${String(error)}`, {
        code: 'KEEL_LISTENER_THREW',
      });
    }
  }

  /** @internal True when someone listens, so events are built only then. */
  get reporting(): boolean {
    return this.#telemetry !== undefined;
  }

  /**
   * Decides what to do with a request. Throws an `IdempotencyError` (which knows its problem
   * body) for requests that must be refused.
   */
  async begin(request: IdempotentRequest): Promise<IdempotencyDecision> {
    if (this.#telemetry === undefined || request.key === undefined) return this.#decide(request);
    const base = { name: this.name, key: request.key };
    try {
      const decision = await this.#decide(request);
      if (decision.kind === 'execute') {
        this.report({ ...base, type: 'executed', resumed: decision.lease.resumed });
      } else if (decision.kind === 'replay') {
        this.report({ ...base, type: 'replayed', status: decision.response.status });
      }
      return decision;
    } catch (error) {
      if (error instanceof IdempotencyKeyInFlightError) this.report({ ...base, type: 'in-flight-conflict' });
      else if (error instanceof IdempotencyKeyMismatchError) this.report({ ...base, type: 'mismatch' });
      else if (error instanceof IdempotencySupersededError) this.report({ ...base, type: 'superseded' });
      throw error;
    }
  }

  async #decide(request: IdempotentRequest): Promise<IdempotencyDecision> {
    if (request.key === undefined) {
      if (this.required) throw new IdempotencyKeyMissingError(this.header);
      return { kind: 'bypass' };
    }
    validateIdempotencyKey(request.key);
    const sequence = this.#sequenceOf(request);
    const print = this.#fingerprint(request);
    const key = scopedKey(request.principal, request.method, request.route, request.key);

    // A few rounds at most: each lost race means another request changed the record meanwhile.
    // Most keys are new: try to claim first and read only when someone holds the key already.
    const first = this.#newRecord(key, print, sequence, this.clock.now());
    if (await this.store.insertIfAbsent(first)) {
      return { kind: 'execute', lease: new IdempotencyLease(this, first, false, request.key) };
    }
    // Waiting for an in-flight holder is timed on the monotonic clock, not `this.clock`: leases are
    // compared on the wall clock, but the wait must end even when a test's clock stands still.
    let waitUntil: number | undefined;
    let lostRaces = 0;
    while (lostRaces < 5) {
      const now = this.clock.now();
      const existing = await this.store.get(key);
      if (existing === undefined || existing.expiresAt <= now) {
        const fresh = this.#newRecord(key, print, sequence, now);
        const won =
          existing === undefined
            ? await this.store.insertIfAbsent(fresh)
            : await this.store.replace(existing.token, fresh);
        if (won) return { kind: 'execute', lease: new IdempotencyLease(this, fresh, false, request.key) };
        lostRaces++;
        continue;
      }
      if (this.mode === 'latest-wins' && sequence !== null && existing.sequence !== null) {
        if (sequence < existing.sequence) throw new IdempotencySupersededError(sequence, existing.sequence);
        if (sequence > existing.sequence) {
          const fresh = this.#newRecord(key, print, sequence, now);
          if (await this.store.replace(existing.token, fresh)) {
            return { kind: 'execute', lease: new IdempotencyLease(this, fresh, false, request.key) };
          }
          lostRaces++;
          continue;
        }
      }
      if (existing.fingerprint !== print) throw new IdempotencyKeyMismatchError();
      if (existing.state === 'completed' && existing.response) {
        return { kind: 'replay', response: existing.response };
      }
      if (existing.leaseUntil > now) {
        waitUntil ??= performance.now() + Math.min(this.inFlightWaitMs, remainingMs());
        const left = waitUntil - performance.now();
        if (left <= 0) {
          throw new IdempotencyKeyInFlightError(Math.max(1, Math.ceil((existing.leaseUntil - now) / 1000)));
        }
        // Look again when the holder may have finished, or right after its lease ends.
        await sleep(Math.max(1, Math.min(left, this.inFlightPollMs, existing.leaseUntil - now + 1)));
        continue;
      }
      // The holder's lease ran out (it crashed or stalled): take over and resume where it stopped.
      const takeover: IdempotencyRecord = {
        ...existing,
        token: randomUUID(),
        ...renewedLease(existing, now + this.leaseMs),
        updatedAt: now,
      };
      if (await this.store.replace(existing.token, takeover)) {
        return { kind: 'execute', lease: new IdempotencyLease(this, takeover, true, request.key) };
      }
      lostRaces++;
    }
    throw new IdempotencyKeyInFlightError(1);
  }

  /** @internal Keeps only the allow-listed headers and applies the redaction hook. */
  prepareForStore(response: StoredResponse): StoredResponse {
    const headers: Record<string, string> = {};
    for (const [name, value] of Object.entries(response.headers)) {
      const lower = name.toLowerCase();
      if (this.#replayHeaders.has(lower)) headers[lower] = value;
    }
    const kept = { status: response.status, headers, body: response.body };
    if (!this.#beforeStore) return kept;
    // The hook may add headers; secrets stay out whatever it returns.
    const hooked = this.#beforeStore(kept);
    const safe: Record<string, string> = {};
    for (const [name, value] of Object.entries(hooked.headers)) {
      if (!NEVER_REPLAYED.has(name.toLowerCase())) safe[name.toLowerCase()] = value;
    }
    return { status: hooked.status, headers: safe, body: hooked.body };
  }

  /** @internal */
  shouldStore(status: number): boolean {
    return this.#shouldStore(status);
  }

  #sequenceOf(request: IdempotentRequest): number | null {
    if (this.mode !== 'latest-wins') return null;
    const { sequence } = request;
    if (sequence === undefined || !Number.isSafeInteger(sequence) || sequence < 0) {
      throw new IdempotencyPayloadError(400, 'Latest-wins updates need a non-negative integer sequence');
    }
    return sequence;
  }

  #fingerprint(request: IdempotentRequest): string {
    // One pass builds the canonical form; its length bounds the payload and it is what gets hashed.
    const payload = canonicalJson(request.payload ?? null);
    const size = typeof request.payload === 'string' ? request.payload.length : payload.length;
    if (size > this.#maxPayloadChars) {
      throw new IdempotencyPayloadError(413, `The request body exceeds ${this.#maxPayloadChars} characters`);
    }
    return fingerprintOfCanonical(payload, request.parts ?? {});
  }

  #newRecord(key: string, print: string, sequence: number | null, now: number): IdempotencyRecord {
    return {
      key,
      fingerprint: print,
      state: 'in-flight',
      token: randomUUID(),
      leaseUntil: now + this.leaseMs,
      expiresAt: now + this.retentionMs,
      sequence,
      response: null,
      recoveryPoint: null,
      phases: {},
      createdAt: now,
      updatedAt: now,
    };
  }
}

/**
 * A lease renewed until `leaseUntil`. The retention never ends before the lease: a record whose
 * retention ended counts as absent, so an earlier expiry would let another request start afresh
 * (and the purge delete the record) while its holder still runs.
 */
function renewedLease(
  record: IdempotencyRecord,
  leaseUntil: number,
): Pick<IdempotencyRecord, 'leaseUntil' | 'expiresAt'> {
  return { leaseUntil, expiresAt: Math.max(record.expiresAt, leaseUntil) };
}

/** Options of the lease's writes. */
export interface LeaseWriteOptions {
  /** The caller's open transaction, so the business write and this record commit together. */
  readonly tx?: TransactionHandle;
}

/**
 * The right to run the handler for one key, until `leaseUntil`. Every write presents the lease's
 * token; if another request took the key over meanwhile, the write fails with
 * {@link IdempotencyLeaseLostError} (or `IdempotencySupersededError` in latest-wins mode).
 */
export class IdempotencyLease {
  readonly #engine: IdempotencyEngine;
  #record: IdempotencyRecord;
  /** True when this lease took over a key whose previous holder stopped before finishing. */
  readonly resumed: boolean;

  /** The client's key as sent, for telemetry. */
  readonly #clientKey: string;

  constructor(engine: IdempotencyEngine, record: IdempotencyRecord, resumed: boolean, clientKey = '') {
    this.#engine = engine;
    this.#record = record;
    this.resumed = resumed;
    this.#clientKey = clientKey;
  }

  /** The scoped key (a hash; never the client's raw key). */
  get key(): string {
    return this.#record.key;
  }

  get leaseUntil(): number {
    return this.#record.leaseUntil;
  }

  /** The last committed phase, when resuming. */
  get recoveryPoint(): string | null {
    return this.#record.recoveryPoint;
  }

  /** Results of the committed phases, by name. */
  get phases(): Readonly<Record<string, unknown>> {
    return this.#record.phases;
  }

  /**
   * A stable key for a downstream call made in step `step`: the same on every retry of this
   * request, different for every other request and step, so the downstream deduplicates too.
   *
   * @example
   * await provider.charge({ amount }, { idempotencyKey: lease.derivedKey('charge') });
   */
  derivedKey(step: string): string {
    return createHash('sha256').update(`${this.#record.key}\u0000${step}`).digest('hex').slice(0, 48);
  }

  /** Commits phase `point` with its result as the recovery point and renews the lease. */
  async checkpoint(point: string, result: unknown = null, options: LeaseWriteOptions = {}): Promise<void> {
    const now = this.#engine.clock.now();
    await this.#write(
      {
        ...this.#record,
        recoveryPoint: point,
        phases: { ...this.#record.phases, [point]: result },
        ...renewedLease(this.#record, now + this.#engine.leaseMs),
        updatedAt: now,
      },
      options.tx,
    );
  }

  /** Renews the lease for a long step. */
  async extend(): Promise<void> {
    const now = this.#engine.clock.now();
    await this.#write({
      ...this.#record,
      ...renewedLease(this.#record, now + this.#engine.leaseMs),
      updatedAt: now,
    });
  }

  /**
   * Finishes the key with `response`: stored for replay when its status is deterministic, otherwise
   * the key is released so a retry runs again. Returns what was stored, or `undefined`.
   */
  async complete(
    response: StoredResponse,
    options: LeaseWriteOptions = {},
  ): Promise<StoredResponse | undefined> {
    if (!this.#engine.shouldStore(response.status)) {
      // A failure after committed phases keeps them: the retry resumes instead of starting over.
      if (this.#record.recoveryPoint !== null) await this.suspend();
      else await this.release();
      this.#report('released');
      return undefined;
    }
    const stored = this.#engine.prepareForStore(response);
    const now = this.#engine.clock.now();
    await this.#write(
      {
        ...this.#record,
        state: 'completed',
        response: stored,
        leaseUntil: now,
        expiresAt: now + this.#engine.retentionMs,
        updatedAt: now,
      },
      options.tx,
    );
    if (this.#engine.reporting) {
      this.#engine.report({
        name: this.#engine.name,
        key: this.#clientKey,
        type: 'completed',
        status: stored.status,
      });
    }
    return stored;
  }

  /**
   * Ends the lease now but keeps the record and its recovery point, so the next request with the key
   * takes over at once and resumes after the last committed phase.
   */
  async suspend(): Promise<void> {
    const now = this.#engine.clock.now();
    await this.#write({ ...this.#record, leaseUntil: now, updatedAt: now });
  }

  /** Gives the key up without a response, so the next request with it runs the handler. */
  async release(): Promise<void> {
    const released = await this.#engine.store.delete(this.#record.key, this.#record.token);
    if (!released) await this.#lost();
  }

  async #write(next: IdempotencyRecord, tx?: TransactionHandle): Promise<void> {
    const ok = await this.#engine.store.replace(this.#record.token, next, tx);
    if (!ok) await this.#lost(tx);
    this.#record = next;
  }

  #report(type: 'released' | 'lease-lost'): void {
    if (this.#engine.reporting) this.#engine.report({ name: this.#engine.name, key: this.#clientKey, type });
  }

  async #lost(tx?: TransactionHandle): Promise<never> {
    this.#report('lease-lost');
    // Inside the caller's transaction, a second connection to read the winner could wait on the very
    // pool that transaction holds; the lease is lost either way, so say so without looking.
    if (tx !== undefined) throw new IdempotencyLeaseLostError();
    const current = await this.#engine.store.get(this.#record.key);
    const mine = this.#record.sequence;
    if (current?.sequence != null && mine !== null && current.sequence > mine) {
      throw new IdempotencySupersededError(mine, current.sequence);
    }
    throw new IdempotencyLeaseLostError();
  }
}

/**
 * Builds the idempotency engine over a store.
 *
 * @example
 * const engine = idempotency({ store: sqliteStore({ db }), leaseMs: 10_000 });
 * const decision = await engine.begin({ key, principal: user.id, method: 'POST', route: '/charges', payload });
 */
export function idempotency(options: IdempotencyOptions): IdempotencyEngine {
  return new IdempotencyEngine(options);
}
