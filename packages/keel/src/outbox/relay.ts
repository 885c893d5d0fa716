/**
 * The relay moves committed events from an outbox store to a broker, at least once and in order per
 * aggregate. It claims a batch under a lease, publishes the events of different aggregates
 * concurrently and those of one aggregate one after another, stops an aggregate at its first failed
 * publish (so nothing overtakes it), and marks the batch published in one write. A failed event
 * comes back after an exponential, jittered back-off; a batch in which every publish failed pauses
 * the whole relay the same way, so a broker that is down is not hammered and the events simply wait
 * in the table until it returns. While a full batch is being published, or appends keep coming, the
 * next one is claimed and published beside it (its events are leased, so that claim skips their aggregates), so the store's
 * round trips overlap the broker's. Once a batch comes back short the relay sleeps until the store
 * reports an append (`NOTIFY`, a same-process commit) or the poll interval passes, and it prunes
 * old published events.
 *
 * @module
 */
import { InvalidOptionError } from '../errors/keel-error.ts';
import type { WallClock } from '../idempotency/store.ts';
import { wallClock } from '../idempotency/store.ts';
import { type Backoff, exponentialBackoff } from '../policy/backoff.ts';
import { nextTurn } from '../policy/next-turn.ts';
import { checkFunction, checkInteger, checkNumber } from '../policy/options.ts';
import type { OutboxEvent } from './event.ts';
import { ClaimedEvent, type ClaimedOutboxEvent, type OutboxStore } from './outbox-store.ts';
import type { OutboxGauges, OutboxTelemetry, OutboxTelemetryEvent } from './telemetry.ts';
import type { Transport } from './transport.ts';

/** Options of {@link outboxRelay}. */
export interface OutboxRelayOptions {
  /** Where the events are (`sqliteOutbox`, `postgresOutbox`). */
  store: OutboxStore;
  /** Where they go (`inProcessTransport`, `natsTransport`, `amqpTransport`). */
  transport: Transport;
  /**
   * Names this relay's claims; must differ between relays sharing a store. At most 255 characters.
   * @default 'relay-<pid>-<random>'
   */
  relayId?: string;
  /**
   * Most events claimed at once.
   * @default 100
   */
  batchSize?: number;
  /**
   * Most aggregates published at once within a batch. With a transport that confirms only once the
   * consumers have settled an event (`inProcessTransport`'s default), a publish lasts as long as the
   * consumer's transaction, so this is also how many of the batch's events the consumers can be
   * handling at once.
   * @default 16
   */
  concurrency?: number;
  /**
   * How long a claim is held (on SQLite, the claim on the whole outbox, renewed by every claim). A
   * relay that dies holding one leaves its events to others after this; a relay that is still
   * publishing when 80% of it has passed leaves the rest of its batch.
   * @default 30_000
   */
  leaseMs?: number;
  /**
   * Longest sleep between batches when no append is reported (other processes' appends, a lost
   * notification, retry times coming due).
   * @default 1_000
   */
  pollIntervalMs?: number;
  /**
   * Delay before a failed event is tried again (from its attempt count), and the pause after a batch
   * in which every publish failed (from the number of such batches in a row), also used after a
   * store error.
   * @default exponentialBackoff({ initialMs: 100, maxMs: 30_000, jitter: 'full' })
   */
  backoff?: Backoff;
  /**
   * Uniform source in [0, 1) for the back-off's jitter.
   * @default Math.random
   */
  random?: () => number;
  /**
   * Published events older than this are deleted; `Infinity` keeps them.
   * @default 7 days
   */
  publishedRetentionMs?: number;
  /**
   * How often the relay prunes.
   * @default 60_000
   */
  pruneIntervalMs?: number;
  /**
   * Events deleted per statement; a prune runs statements until fewer are left (at most 10 per round).
   * @default 1_000
   */
  pruneBatchSize?: number;
  /** Receives `published` and `publish-failed`. */
  telemetry?: OutboxTelemetry;
  /**
   * Called with errors of the store (a claim, a mark or a prune that failed) that the relay
   * survives by backing off, and with failures of its append wake-up (`store.appended` throwing or
   * rejecting), which the relay survives by polling. Counted in {@link OutboxRelay.stats}. Publish
   * errors go to `telemetry` instead.
   * @default ignore
   */
  onError?: (error: unknown) => void;
  /**
   * Wall time for retry times and lag.
   * @default wallClock
   */
  clock?: WallClock;
}

/** Counters of an {@link OutboxRelay}; see {@link OutboxRelay.stats}. */
export interface OutboxRelayStats {
  /** Store errors reported to `onError` (a claim, mark, release or prune that failed). */
  readonly storeErrors: number;
  /** Failures of the store's append wake-up reported to `onError`; the relay polls meanwhile. */
  readonly wakeErrors: number;
}

/** What one batch did. */
export interface RelayBatchResult {
  /** Events claimed. */
  readonly claimed: number;
  /** Events the broker confirmed (and marked published). */
  readonly published: number;
  /** Events whose publish failed: released to be retried after a back-off. */
  readonly failed: number;
  /** Events not attempted (behind a failure of their aggregate, or past the lease): released as they were. */
  readonly deferred: number;
}

const DAY_MS = 24 * 60 * 60 * 1_000;

const DEFAULTS = Object.freeze({
  batchSize: 100,
  concurrency: 16,
  leaseMs: 30_000,
  pollIntervalMs: 1_000,
  publishedRetentionMs: 7 * DAY_MS,
  pruneIntervalMs: 60_000,
  pruneBatchSize: 1_000,
});

/** Prune statements per round, so pruning a large backlog never starves publishing. */
const MAX_PRUNE_ROUNDS = 10;
/** Share of the lease after which a relay starts no more publishes of its batch. */
const LEASE_USABLE_FRACTION = 0.8;
const MAX_ERROR_LENGTH = 2_000;

function describeError(error: unknown): string {
  const text =
    error instanceof Error
      ? `${error.name}: ${error.message}`
      : typeof error === 'string'
        ? error
        : String(error);
  return text.length > MAX_ERROR_LENGTH ? `${text.slice(0, MAX_ERROR_LENGTH - 1)}…` : text;
}

function defaultRelayId(): string {
  const pid = (globalThis as { process?: { pid?: number } }).process?.pid ?? 0;
  const random = new Uint8Array(4);
  globalThis.crypto.getRandomValues(random);
  return `relay-${pid}-${Array.from(random, (byte) => byte.toString(16).padStart(2, '0')).join('')}`;
}

/**
 * The event as appended, without the store's bookkeeping, for the transport. A {@link ClaimedEvent}
 * already is exactly that; other claimed events are copied.
 */
function asPublished(event: ClaimedOutboxEvent): OutboxEvent {
  if (event instanceof ClaimedEvent) return event;
  return {
    id: event.id,
    type: event.type,
    aggregateType: event.aggregateType,
    aggregateId: event.aggregateId,
    payload: event.payload,
    headers: event.headers,
    createdAt: event.createdAt,
  };
}

/**
 * A relay over one store and one transport. Build it with {@link outboxRelay}.
 *
 * @example
 * const relay = outboxRelay({ store: outbox, transport });
 * relay.start();
 * process.on('SIGTERM', () => relay.stop());
 */
export class OutboxRelay {
  readonly relayId: string;
  readonly store: OutboxStore;
  readonly transport: Transport;
  readonly #batchSize: number;
  readonly #concurrency: number;
  readonly #leaseMs: number;
  readonly #pollIntervalMs: number;
  readonly #backoff: Backoff;
  readonly #random: () => number;
  readonly #retentionMs: number;
  readonly #pruneIntervalMs: number;
  readonly #pruneBatchSize: number;
  readonly #telemetry: OutboxTelemetry | undefined;
  readonly #onError: ((error: unknown) => void) | undefined;
  readonly #clock: WallClock;
  #running: Promise<void> | undefined;
  #lifetime = new AbortController();
  /** The last batch started (by the loop or `runOnce()`): `runOnce()` waits for it. */
  #batchTail: Promise<unknown> = Promise.resolve();
  /** The last `runOnce()` batch: the loop claims only once it has settled. */
  #runOnceTail: Promise<unknown> = Promise.resolve();
  #pendingWake: Promise<void> | undefined;
  #woken = false;
  #nudge: (() => void) | undefined;
  #nextPruneAt = 0;
  #storeErrors = 0;
  #wakeErrors = 0;
  /**
   * The marks of published batches, one after another; never rejects. The loop claims and
   * publishes the next batch while a mark is under way (see `#publishBatch`).
   */
  #marks: Promise<void> = Promise.resolve();
  /** A mark of the loop's failed since the loop last paused for one. */
  #markFailed = false;
  /** The loop's marks begun and settled so far. */
  #marksBegun = 0;
  #marksSettled = 0;

  constructor(options: OutboxRelayOptions) {
    const store = options?.store;
    for (const method of ['claim', 'markPublished', 'release', 'unclaim', 'gauges', 'appended'] as const) {
      if (typeof store?.[method] !== 'function') {
        throw new InvalidOptionError('store', `must implement OutboxStore (missing ${method})`);
      }
    }
    if (typeof options.transport?.publish !== 'function') {
      throw new InvalidOptionError('transport', 'must implement Transport (a publish method)');
    }
    this.store = store;
    this.transport = options.transport;
    const relayId = options.relayId ?? defaultRelayId();
    if (typeof relayId !== 'string' || relayId === '' || relayId.length > 255) {
      throw new InvalidOptionError(
        'relayId',
        `must be a non-empty string of at most 255 characters, got ${JSON.stringify(relayId)}`,
      );
    }
    this.relayId = relayId;
    this.#batchSize = checkInteger('batchSize', options.batchSize ?? DEFAULTS.batchSize, 1, 10_000);
    this.#concurrency = checkInteger('concurrency', options.concurrency ?? DEFAULTS.concurrency, 1, 10_000);
    this.#leaseMs = checkInteger('leaseMs', options.leaseMs ?? DEFAULTS.leaseMs, 10);
    this.#pollIntervalMs = checkInteger(
      'pollIntervalMs',
      options.pollIntervalMs ?? DEFAULTS.pollIntervalMs,
      1,
    );
    this.#backoff = checkFunction(
      'backoff',
      options.backoff ?? exponentialBackoff({ initialMs: 100, maxMs: 30_000, jitter: 'full' }),
    );
    this.#random = checkFunction('random', options.random ?? Math.random);
    this.#retentionMs = checkNumber(
      'publishedRetentionMs',
      options.publishedRetentionMs ?? DEFAULTS.publishedRetentionMs,
      0,
      true,
    );
    this.#pruneIntervalMs = checkInteger(
      'pruneIntervalMs',
      options.pruneIntervalMs ?? DEFAULTS.pruneIntervalMs,
      1,
    );
    this.#pruneBatchSize = checkInteger(
      'pruneBatchSize',
      options.pruneBatchSize ?? DEFAULTS.pruneBatchSize,
      1,
      100_000,
    );
    if (options.telemetry !== undefined && typeof options.telemetry?.emit !== 'function') {
      throw new InvalidOptionError('telemetry', 'must have an emit(event) method');
    }
    this.#telemetry = options.telemetry;
    this.#onError = options.onError === undefined ? undefined : checkFunction('onError', options.onError);
    if (options.clock !== undefined && typeof options.clock?.now !== 'function') {
      throw new InvalidOptionError('clock', 'must have a now() method returning epoch milliseconds');
    }
    this.#clock = options.clock ?? wallClock;
  }

  /** True between `start()` and the end of `stop()`. */
  get running(): boolean {
    return this.#running !== undefined;
  }

  /**
   * Starts relaying in the background. Calling it while running does nothing.
   *
   * @example
   * relay.start();
   */
  start(): void {
    if (this.#running !== undefined) return;
    this.#lifetime = new AbortController();
    this.#running = this.#loop();
  }

  /**
   * Stops relaying: the batch in flight is published and marked first, then the relay stops
   * waiting for appends and gives up the store's lease, if it has one (SQLite), so another relay
   * takes over at once. The store and the transport stay open.
   *
   * @example
   * await relay.stop();
   */
  async stop(): Promise<void> {
    const running = this.#running;
    if (running === undefined) return;
    this.#lifetime.abort();
    this.#nudge?.();
    await running;
    await this.#marks;
    try {
      await this.store.relinquish?.(this.relayId);
    } catch (error) {
      // The lease runs out instead, and the next relay starts then.
      this.#report(error);
    }
    this.#running = undefined;
    this.#pendingWake = undefined;
    this.#woken = false;
  }

  /**
   * Claims one batch and publishes it. Useful in tests and one-shot commands; while the relay is
   * started it waits for the batch in progress first.
   *
   * @example
   * const { published } = await relay.runOnce();
   */
  runOnce(): Promise<RelayBatchResult> {
    const batch = this.#batchTail.then(() => this.#runBatch());
    this.#batchTail = batch.catch(() => undefined);
    this.#runOnceTail = this.#batchTail;
    return batch;
  }

  /**
   * Deletes published events older than `publishedRetentionMs`, in statements of `pruneBatchSize`,
   * at most ten per call. Returns how many were deleted. The running relay calls it every
   * `pruneIntervalMs`.
   *
   * @example
   * await relay.prune();
   */
  async prune(): Promise<number> {
    if (this.#retentionMs === Number.POSITIVE_INFINITY) return 0;
    const before = this.#clock.now() - this.#retentionMs;
    let deleted = 0;
    for (let round = 0; round < MAX_PRUNE_ROUNDS; round++) {
      const count = await this.store.prunePublished(before, this.#pruneBatchSize);
      deleted += count;
      if (count < this.#pruneBatchSize) break;
    }
    return deleted;
  }

  /**
   * Errors the relay survived and reported to `onError`, by where they came from: the store's
   * claims, marks, releases and prunes (`storeErrors`), and its append wake-up (`wakeErrors`: a
   * rejection or a synchronous throw of `store.appended`, after which the relay polls instead).
   *
   * @example
   * const { storeErrors, wakeErrors } = relay.stats();
   */
  stats(): OutboxRelayStats {
    return { storeErrors: this.#storeErrors, wakeErrors: this.#wakeErrors };
  }

  /**
   * The store's unpublished count and the oldest unpublished event's age.
   *
   * @example
   * const { unpublished, oldestUnpublishedAgeMs } = await relay.gauges();
   */
  gauges(): Promise<OutboxGauges> {
    return this.store.gauges();
  }

  async #runBatch(): Promise<RelayBatchResult> {
    const claimedAt = this.#clock.now();
    const claimed = await this.store.claim(this.relayId, this.#batchSize, this.#leaseMs);
    return this.#publishBatch(claimed, claimedAt, false);
  }

  /**
   * Publishes a claimed batch: the aggregates' chains run on at most `concurrency` workers, each
   * chain in order; then marks what the broker confirmed and releases the rest. With
   * `markBehind`, the loop's way, it settles once the batch is published and the mark before it
   * has settled, and leaves its own mark under way: the next claim and publishes go on beside it.
   * The mark's events stay leased meanwhile, so no claim takes them or what follows them in their
   * aggregates, and at most one mark is under way, so the leases do not run out behind a queue of
   * marks. A failed mark is reported, and the loop pauses at its next batch. Without it (`runOnce`),
   * it settles with its mark and rejects with its failure.
   */
  async #publishBatch(
    claimed: readonly ClaimedOutboxEvent[],
    claimedAt: number,
    markBehind: boolean,
  ): Promise<RelayBatchResult> {
    const count = claimed.length;
    if (count === 0) return { claimed: 0, published: 0, failed: 0, deferred: 0 };
    const deadline = claimedAt + this.#leaseMs * LEASE_USABLE_FRACTION;
    // The batch's aggregates as chains of indexes: `heads` holds each aggregate's first event,
    // `following[i]` the next event of i's aggregate (-1: none). Claims come oldest first, so each
    // chain is in append order. Indexes rather than an array per aggregate: a batch of distinct
    // aggregates, the usual case, would otherwise build one array per event.
    const following = new Int32Array(count).fill(-1);
    const heads: number[] = [];
    const tails = new Map<string, Map<string, number>>();
    for (let i = 0; i < count; i++) {
      const event = claimed[i] as ClaimedOutboxEvent;
      let ofType = tails.get(event.aggregateType);
      if (ofType === undefined) {
        ofType = new Map();
        tails.set(event.aggregateType, ofType);
      }
      const tail = ofType.get(event.aggregateId);
      if (tail === undefined) heads.push(i);
      else following[tail] = i;
      ofType.set(event.aggregateId, i);
    }
    const published: string[] = [];
    const deferred: string[] = [];
    let failed = 0;
    const deferFrom = (from: number) => {
      for (let i = from; i !== -1; i = following[i] as number) {
        deferred.push((claimed[i] as ClaimedOutboxEvent).id);
      }
    };

    const publishChain = async (head: number) => {
      for (let i = head; i !== -1; i = following[i] as number) {
        const event = claimed[i] as ClaimedOutboxEvent;
        if (this.#clock.now() >= deadline) {
          // Another relay may take these over soon; leave them rather than race it.
          deferFrom(i);
          return;
        }
        try {
          await this.transport.publish(asPublished(event));
        } catch (error) {
          failed++;
          const attempt = event.attempts + 1;
          if (this.#telemetry !== undefined) {
            this.#emit({
              type: 'publish-failed',
              transport: this.transport.name,
              attempt,
              error,
              ...this.#base(event),
            });
          }
          const delay = Math.max(0, this.#backoff(attempt, 0, this.#random) || 0);
          try {
            await this.store.release(this.relayId, event.id, describeError(error), this.#clock.now() + delay);
          } catch (releaseError) {
            // The lease runs out instead; the event is published later all the same.
            this.#report(releaseError);
          }
          deferFrom(following[i] as number);
          return;
        }
        published.push(event.id);
        if (this.#telemetry !== undefined) {
          // One object an event, written out rather than spread: this runs for every event.
          this.#emit({
            type: 'published',
            transport: this.transport.name,
            lagMs: Math.max(0, this.#clock.now() - event.createdAt),
            eventId: event.id,
            eventType: event.type,
            aggregateType: event.aggregateType,
            aggregateId: event.aggregateId,
          });
        }
      }
    };

    let nextHead = 0;
    const worker = async () => {
      while (nextHead < heads.length) await publishChain(heads[nextHead++] as number);
    };
    const workers: Promise<void>[] = [];
    for (let i = Math.min(this.#concurrency, heads.length); i > 0; i--) workers.push(worker());
    await Promise.all(workers);
    const result = {
      claimed: claimed.length,
      published: published.length,
      failed,
      deferred: deferred.length,
    };
    const previous = this.#marks;
    const mark = previous.then(() => this.#markBatch(published, deferred));
    if (!markBehind) {
      this.#marks = mark.then(ignore, ignore);
      await mark;
      return result;
    }
    this.#marksBegun++;
    this.#marks = mark.then(
      () => {
        this.#marksSettled++;
      },
      (error: unknown) => {
        this.#marksSettled++;
        this.#report(error);
        this.#markFailed = true;
      },
    );
    await previous;
    return result;
  }

  async #markBatch(published: readonly string[], deferred: readonly string[]): Promise<void> {
    try {
      await this.store.markPublished(this.relayId, published);
    } finally {
      if (deferred.length > 0) {
        await this.store.unclaim(this.relayId, deferred).catch((error: unknown) => this.#report(error));
      }
    }
  }

  /**
   * Runs batches until `stop()`. While a full batch is being published the next one is already
   * claimed and starts publishing, so the store's round trips overlap the broker's: the claim
   * skips every aggregate the batch in flight holds (its events are leased), so per-aggregate
   * order holds. A short batch keeps the pipeline going while appends are reported (and once more
   * after a batch or a mark that overlapped a claim, for the events it held back); otherwise it
   * ends it. At most two batches are in flight, and one mark behind them; the relay sleeps once the
   * last has settled.
   */
  async #loop(): Promise<void> {
    const signal = this.#lifetime.signal;
    let storeFailures = 0;
    let brokerFailures = 0;
    let inFlight: Promise<RelayBatchResult> | undefined;
    let marksSettledAtClaim = 0;
    /** Settles the batch in flight: the pause it calls for (0: none), and how many it claimed. */
    const settle = async (): Promise<{ pauseMs: number; full: boolean; claimed: number }> => {
      const batch = inFlight;
      inFlight = undefined;
      if (batch === undefined) return { pauseMs: 0, full: false, claimed: 0 };
      let result: RelayBatchResult;
      try {
        result = await batch;
      } catch (error) {
        this.#report(error);
        storeFailures++;
        return { pauseMs: this.#delay(storeFailures), full: false, claimed: 0 };
      }
      if (this.#markFailed) {
        // Reported when it failed. The store is likely down, as when a claim fails: the pauses
        // grow alike while marks keep failing.
        this.#markFailed = false;
        storeFailures++;
        return { pauseMs: this.#delay(storeFailures), full: false, claimed: result.claimed };
      }
      storeFailures = 0;
      if (result.failed > 0 && result.published === 0) {
        // The broker refused everything: pause as a whole, not only per event.
        brokerFailures++;
        return { pauseMs: this.#delay(brokerFailures), full: false, claimed: result.claimed };
      }
      if (result.published > 0) brokerFailures = 0;
      return { pauseMs: 0, full: result.claimed === this.#batchSize, claimed: result.claimed };
    };
    while (!signal.aborted) {
      await this.#pruneIfDue();
      // Listening before the claim, not only while asleep: an append that commits while the batch
      // is under way (after the claim looked) sets `#woken`, so the relay claims once more rather
      // than sleep on it until the poll. However many come, they cost one claim.
      this.#armWake(signal);
      let claimed: ClaimedOutboxEvent[];
      let claimedAt = 0;
      try {
        // A store and a transport that answer within the process (SQLite, in-process) settle every
        // await of a batch as a microtask: without a turn of the event loop between batches, a
        // backlog would drain in one go while the service's requests, timers and the transport's
        // own deliveries wait behind it.
        await nextTurn();
        // Waits for a `runOnce()` in progress, so the two never claim side by side.
        await this.#runOnceTail;
        claimedAt = this.#clock.now();
        marksSettledAtClaim = this.#marksSettled;
        claimed = await this.store.claim(this.relayId, this.#batchSize, this.#leaseMs);
      } catch (error) {
        this.#report(error);
        // Settled first: a batch that went through would otherwise reset the count just raised.
        await settle();
        storeFailures++;
        await this.#sleep(this.#delay(storeFailures), false);
        continue;
      }
      const batch = this.#publishBatch(claimed, claimedAt, true);
      // Keeps `runOnce()` behind this batch, as it would be behind a serial one.
      this.#batchTail = batch.catch(() => undefined);
      const previous = await settle();
      inFlight = batch;
      if (previous.pauseMs > 0) {
        const current = await settle();
        await this.#sleep(Math.max(previous.pauseMs, current.pauseMs), false);
        continue;
      }
      if (claimed.length === this.#batchSize) continue;
      // Appends committed since this claim looked: claim them now, beside this batch, rather than
      // after its publishes and mark, so under a steady stream the store's round trips keep
      // overlapping the broker's and an event waits for at most one batch ahead of it.
      if (claimed.length > 0 && this.#woken) {
        this.#woken = false;
        continue;
      }
      // A batch that was in flight during this claim held its aggregates' later events back from it.
      if (previous.claimed > 0) continue;
      const current = await settle();
      if (current.pauseMs > 0) {
        await this.#sleep(current.pauseMs, false);
        continue;
      }
      if (current.full) continue;
      // A mark under way during the last claim, or begun since, held its aggregates' later events
      // back from it: once it has landed, claim once more rather than sleep on them.
      if (this.#marksBegun !== marksSettledAtClaim) {
        await this.#marks;
        continue;
      }
      await this.#sleep(this.#pollIntervalMs, true);
    }
    await settle();
  }

  #delay(failures: number): number {
    return Math.max(0, this.#backoff(failures, 0, this.#random) || 0);
  }

  async #pruneIfDue(): Promise<void> {
    const now = this.#clock.now();
    if (now < this.#nextPruneAt || this.#retentionMs === Number.POSITIVE_INFINITY) return;
    this.#nextPruneAt = now + this.#pruneIntervalMs;
    try {
      await this.prune();
    } catch (error) {
      this.#report(error);
    }
  }

  /**
   * Sleeps for `ms`, or until `stop()`; with `wakeOnAppend`, also until the store reports an append.
   * A report that came while a batch was running ends the next sleep at once.
   */
  #sleep(ms: number, wakeOnAppend: boolean): Promise<void> {
    const signal = this.#lifetime.signal;
    if (signal.aborted) return Promise.resolve();
    if (wakeOnAppend) {
      if (this.#woken) {
        this.#woken = false;
        return Promise.resolve();
      }
      this.#armWake(signal);
    }
    return new Promise((resolve) => {
      const finish = () => {
        clearTimeout(timer);
        if (this.#nudge === nudge) this.#nudge = undefined;
        resolve();
      };
      const nudge = () => {
        if (signal.aborted) {
          finish();
        } else if (wakeOnAppend) {
          this.#woken = false;
          finish();
        }
      };
      const timer = setTimeout(finish, ms);
      this.#nudge = nudge;
    });
  }

  #armWake(signal: AbortSignal): void {
    if (this.#pendingWake !== undefined) return;
    let appended: Promise<void>;
    try {
      appended = this.store.appended(signal);
      if (typeof appended?.then !== 'function') {
        throw new TypeError(`store.appended() returned ${typeof appended}, not a promise`);
      }
    } catch (error) {
      // A store whose hook throws (rather than rejects) must not end the loop: polling carries on.
      this.#report(error, 'wake');
      return;
    }
    const wake = appended.then(
      () => {
        if (this.#pendingWake !== wake) return;
        this.#pendingWake = undefined;
        if (signal.aborted) return;
        this.#woken = true;
        this.#nudge?.();
      },
      (error: unknown) => {
        // Polling carries on; the next sleep asks again.
        if (this.#pendingWake === wake) this.#pendingWake = undefined;
        this.#report(error, 'wake');
      },
    );
    this.#pendingWake = wake;
  }

  #base(event: OutboxEvent) {
    return {
      eventId: event.id,
      eventType: event.type,
      aggregateType: event.aggregateType,
      aggregateId: event.aggregateId,
    };
  }

  #emit(event: OutboxTelemetryEvent): void {
    if (this.#telemetry === undefined) return;
    try {
      this.#telemetry.emit(event);
    } catch {
      // A broken metrics sink must not stop the relay.
    }
  }

  #report(error: unknown, source: 'store' | 'wake' = 'store'): void {
    if (source === 'wake') this.#wakeErrors++;
    else this.#storeErrors++;
    if (this.#onError === undefined) return;
    try {
      this.#onError(error);
    } catch {
      // The callback is for reporting; the relay carries on regardless.
    }
  }
}

/**
 * Builds an {@link OutboxRelay}. Options are checked here, so a bad value fails at start-up.
 *
 * @example
 * const relay = outboxRelay({
 *   store: postgresOutbox({ pool }),
 *   transport: natsTransport({ jetstream, manager }),
 *   telemetry: { emit: (event) => metrics.record(event) },
 * });
 * relay.start();
 */
export function outboxRelay(options: OutboxRelayOptions): OutboxRelay {
  return new OutboxRelay(options);
}

function ignore(): void {}
