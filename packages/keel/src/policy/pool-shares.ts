/**
 * Connection shares per route class: the accounting both database pool guards (`guardPool` for
 * Postgres, `guardSqlitePool` for SQLite) run before they take a connection from the pool.
 *
 * A pool of N connections is split so that each class's reserved connections can only ever be used
 * by that class — a flood of reports can borrow the unreserved connections, never the ones login
 * is promised — and a class may also be capped by a `max`. A request waits for a connection at most
 * the acquire timeout, and never past its own deadline; then it is refused with a typed error. The
 * check and the count happen in one synchronous step, so the shares hold under any interleaving.
 *
 * Answers: resource exhaustion — one slow query class takes every connection and even login waits.
 *
 * @module
 */
import { InvalidOptionError } from '../errors/keel-error.ts';
import { DeadlineExceededError } from '../errors/policy-errors.ts';
import { PoolAcquireTimeoutError } from '../errors/pool-errors.ts';
import type { Clock } from './clock.ts';
import { currentDeadline } from './deadline.ts';
import { type CommonOptions, checkInteger, checkNumber, resolveTime } from './options.ts';
import { type Disposable, EventSource, type PolicyListener } from './telemetry.ts';
import { TimerEntry, type TimerWheel } from './timer-wheel.ts';

/** The share of one route class. */
export interface PoolClassOptions {
  /**
   * Connections only this class may use; other classes never take them, even when idle.
   * @default 0
   */
  reserved?: number;
  /**
   * Most connections this class holds at once, reserved ones included.
   * @default the pool size
   */
  max?: number;
}

/** Route classes by name, e.g. `{ login: { reserved: 2 }, api: { reserved: 4 }, report: { max: 2 } }`. */
export type PoolClasses<C extends string> = Readonly<Record<C, PoolClassOptions>>;

/** Options of {@link poolShares}. */
export interface PoolSharesOptions<C extends string> extends CommonOptions {
  /** Connections in the pool. */
  size: number;
  /** The route classes and their shares. Reserved connections must sum to at most `size`. */
  classes: PoolClasses<C>;
  /**
   * Longest wait for a connection; a request's remaining deadline shortens it.
   * @default 1000
   */
  acquireTimeoutMs?: number;
}

/** Usage of one route class. */
export interface PoolClassStats {
  readonly reserved: number;
  readonly max: number;
  /** Connections the class holds, including ones held until an abandoned statement ends. */
  readonly inUse: number;
  /** Requests of the class waiting for a connection. */
  readonly waiting: number;
}

/** Usage of the whole pool and of each class, for `/metrics` and tests. */
export interface PoolSharesStats<C extends string> {
  readonly size: number;
  readonly inUse: number;
  readonly waiting: number;
  readonly classes: Readonly<Record<C, PoolClassStats>>;
}

const DEFAULTS = Object.freeze({ acquireTimeoutMs: 1_000 });

/** One request waiting for a connection: its entry on the timer wheel and its promise in one. */
class Waiter extends TimerEntry {
  readonly #shares: PoolShares<string>;
  readonly index: number;
  readonly startedAt: number;
  /** True when the request's deadline, not the acquire timeout, is what the wheel fires for. */
  readonly byDeadline: boolean;
  resolve!: () => void;
  reject!: (reason: unknown) => void;
  readonly promise: Promise<void>;

  constructor(shares: PoolShares<string>, index: number, startedAt: number, byDeadline: boolean) {
    super();
    this.#shares = shares;
    this.index = index;
    this.startedAt = startedAt;
    this.byDeadline = byDeadline;
    this.promise = new Promise<void>((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
  }

  expire(): void {
    this.#shares.expireWaiter(this);
  }
}

/** Fires when the pool itself is slower than the time left to acquire. */
class LateConnection extends TimerEntry {
  fired = false;
  readonly #onExpire: () => void;
  constructor(onExpire: () => void) {
    super();
    this.#onExpire = onExpire;
  }
  expire(): void {
    this.fired = true;
    this.#onExpire();
  }
}

function noop(): void {}

/** See {@link poolShares}. */
export class PoolShares<C extends string> {
  readonly size: number;
  readonly acquireTimeoutMs: number;
  readonly classNames: readonly C[];
  readonly clock: Clock;
  readonly timers: TimerWheel;
  readonly events: EventSource;
  readonly #reserved: readonly number[];
  readonly #max: readonly number[];
  readonly #inUse: number[];
  readonly #waiting: number[];
  #total = 0;
  /** Waiting requests in arrival order, all classes together. */
  #waiters: Waiter[] = [];

  constructor(options: PoolSharesOptions<C>) {
    const { clock, timers } = resolveTime(options);
    this.clock = clock;
    this.timers = timers;
    this.events = new EventSource('bulkhead', options.name ?? 'pool', options.telemetry);
    this.size = checkInteger('size', options.size);
    this.acquireTimeoutMs = checkNumber(
      'acquireTimeoutMs',
      options.acquireTimeoutMs ?? DEFAULTS.acquireTimeoutMs,
    );
    const classes = options.classes as Readonly<Record<string, PoolClassOptions | undefined>> | undefined;
    if (typeof classes !== 'object' || classes === null || Object.keys(classes).length === 0) {
      throw new InvalidOptionError('classes', 'must name at least one route class');
    }
    const names = Object.keys(classes) as C[];
    const reserved: number[] = [];
    const max: number[] = [];
    for (const name of names) {
      const share = classes[name];
      if (typeof share !== 'object' || share === null) {
        throw new InvalidOptionError(`classes.${name}`, 'must be an object such as { reserved: 2 }');
      }
      const own = checkInteger(`classes.${name}.reserved`, share.reserved ?? 0, 0, this.size);
      const cap = checkInteger(`classes.${name}.max`, share.max ?? this.size, 1, this.size);
      if (own > cap) {
        throw new InvalidOptionError(`classes.${name}.reserved`, `must be ≤ its max (${cap}), got ${own}`);
      }
      reserved.push(own);
      max.push(cap);
    }
    const totalReserved = reserved.reduce((sum, n) => sum + n, 0);
    if (totalReserved > this.size) {
      throw new InvalidOptionError(
        'classes',
        `reserved connections must sum to at most the pool size (${this.size}), got ${totalReserved}`,
      );
    }
    const starved = names.find((_, i) => reserved[i] === 0 && totalReserved >= this.size);
    if (starved !== undefined) {
      throw new InvalidOptionError(
        `classes.${starved}`,
        `would never get a connection: the other classes reserve all ${this.size}`,
      );
    }
    this.classNames = Object.freeze(names);
    this.#reserved = Object.freeze(reserved);
    this.#max = Object.freeze(max);
    this.#inUse = names.map(() => 0);
    this.#waiting = names.map(() => 0);
  }

  /** Subscribes to the events of this pool; returns a disposer. */
  onEvent(listener: PolicyListener): Disposable {
    return this.events.subscribe(listener);
  }

  /**
   * The clock time by which a request arriving now must hold a connection: the acquire timeout from
   * now, or the request's deadline when that comes first.
   */
  acquireBy(): number {
    return Math.min(this.clock.now() + this.acquireTimeoutMs, currentDeadline());
  }

  /**
   * Takes one connection of `routeClass`'s share, waiting until `until` at most. Rejects with
   * `PoolAcquireTimeoutError` when the acquire timeout passes, or `DeadlineExceededError` when the
   * request's deadline passes (or has passed) first. Every resolved call must be paired with one
   * {@link release} (or {@link releaseAfter}).
   */
  acquire(routeClass: C, until: number = this.acquireBy()): Promise<void> {
    const index = this.indexOf(routeClass);
    const now = this.clock.now();
    const deadline = currentDeadline();
    if (deadline <= now) return Promise.reject(this.#report(new DeadlineExceededError(deadline - now)));
    if (this.#admit(index)) return Promise.resolve();
    if (until <= now) return Promise.reject(this.rejection(routeClass, now, until >= deadline));
    const waiter = new Waiter(this as PoolShares<string>, index, now, until >= deadline);
    this.#waiters.push(waiter);
    this.#waiting[index] = (this.#waiting[index] as number) + 1;
    this.timers.schedule(waiter, until);
    return waiter.promise;
  }

  /**
   * Takes a share of `routeClass` and then the connection itself with `connect`, both within the
   * acquire timeout and the request's deadline. The shares never admit more than the pool holds, so
   * `connect` is normally immediate; when the pool is also used unguarded it may not be, and the
   * bound still holds: the share is given back, and a connection that arrives late goes to
   * `discard`.
   */
  async take<T>(routeClass: C, connect: () => Promise<T>, discard: (late: T) => void): Promise<T> {
    const startedAt = this.clock.now();
    const until = this.acquireBy();
    await this.acquire(routeClass, until);
    let connecting: Promise<T>;
    try {
      connecting = connect();
    } catch (error) {
      this.release(routeClass);
      throw error;
    }
    let timer: LateConnection | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = new LateConnection(() =>
        reject(this.rejection(routeClass, startedAt, until >= currentDeadline())),
      );
      this.timers.schedule(timer, until);
    });
    try {
      return await Promise.race([connecting, late]);
    } catch (error) {
      if (timer?.fired) connecting.then(discard, noop);
      this.release(routeClass);
      throw error;
    } finally {
      if (timer) this.timers.cancel(timer);
    }
  }

  /** Gives back one connection of `routeClass`'s share and hands it to the first request it may serve. */
  release(routeClass: C): void {
    const index = this.indexOf(routeClass);
    if ((this.#inUse[index] as number) <= 0) {
      throw new Error(`PoolShares.release: route class '${routeClass}' holds no connection`);
    }
    this.#inUse[index] = (this.#inUse[index] as number) - 1;
    this.#total--;
    this.#serveWaiters();
  }

  /**
   * Keeps the connection counted until `work` settles, then releases it: a statement abandoned by a
   * timeout still loads the database, so the guard admits no more work than the pool's size.
   */
  releaseAfter(routeClass: C, work: Promise<unknown>): void {
    const release = (): void => this.release(routeClass);
    work.then(release, release);
  }

  /**
   * Builds the refusal for a request that waited since `startedAt`, and reports it. Guards call it
   * when the pool itself is slower than the time left.
   */
  rejection(
    routeClass: C,
    startedAt: number,
    byDeadline: boolean,
  ): DeadlineExceededError | PoolAcquireTimeoutError {
    const error = byDeadline
      ? new DeadlineExceededError(0)
      : new PoolAcquireTimeoutError(
          routeClass,
          this.clock.now() - startedAt,
          this.acquireTimeoutMs,
          this.events.name,
        );
    return this.#report(error);
  }

  /** @internal The wheel fired for a request still waiting: refuse it. */
  expireWaiter(waiter: Waiter): void {
    if (!this.#unlink(waiter)) return;
    waiter.reject(this.rejection(this.classNames[waiter.index] as C, waiter.startedAt, waiter.byDeadline));
  }

  /** Usage of the pool and of every class. */
  stats(): PoolSharesStats<C> {
    const classes = {} as Record<C, PoolClassStats>;
    this.classNames.forEach((name, i) => {
      classes[name] = {
        reserved: this.#reserved[i] as number,
        max: this.#max[i] as number,
        inUse: this.#inUse[i] as number,
        waiting: this.#waiting[i] as number,
      };
    });
    return { size: this.size, inUse: this.#total, waiting: this.#waiters.length, classes };
  }

  /** The position of `routeClass`; throws for a class the pool was not configured with. */
  indexOf(routeClass: C): number {
    const index = this.classNames.indexOf(routeClass);
    if (index < 0) {
      throw new InvalidOptionError(
        'routeClass',
        `must be one of ${this.classNames.map((n) => `'${n}'`).join(', ')}, got '${String(routeClass)}'`,
      );
    }
    return index;
  }

  /** Counts a connection for class `index` when its share allows one now. */
  #admit(index: number): boolean {
    if (this.#total >= this.size) return false;
    const own = this.#inUse[index] as number;
    if (own >= (this.#max[index] as number)) return false;
    if (own >= (this.#reserved[index] as number)) {
      // Beyond its reserve a class borrows, but never the reserved connections other classes have
      // not used yet: they must find them free when they come.
      let reservedFree = 0;
      for (let i = 0; i < this.#reserved.length; i++) {
        const free = (this.#reserved[i] as number) - (this.#inUse[i] as number);
        if (free > 0) reservedFree += free;
      }
      if (this.#total + reservedFree >= this.size) return false;
    }
    this.#inUse[index] = own + 1;
    this.#total++;
    return true;
  }

  /** Admits, in arrival order, every waiting request whose class may take a connection now. */
  #serveWaiters(): void {
    if (this.#waiters.length === 0) return;
    for (const waiter of [...this.#waiters]) {
      if (this.#total >= this.size) return;
      if (this.#admit(waiter.index)) {
        this.#unlink(waiter);
        waiter.resolve();
      }
    }
  }

  #unlink(waiter: Waiter): boolean {
    const at = this.#waiters.indexOf(waiter);
    if (at < 0) return false;
    this.#waiters.splice(at, 1);
    this.#waiting[waiter.index] = (this.#waiting[waiter.index] as number) - 1;
    this.timers.cancel(waiter);
    return true;
  }

  #report<E extends DeadlineExceededError | PoolAcquireTimeoutError>(error: E): E {
    if (this.events.active) {
      this.events.emit({ policy: 'bulkhead', name: this.events.name, type: 'rejection', error });
    }
    return error;
  }
}

/**
 * Splits a pool of `size` connections into shares per route class. Used by the database pool
 * guards; use it directly to guard any other pool of scarce connections.
 *
 * @example
 * const shares = poolShares({ size: 10, classes: { login: { reserved: 2 }, report: { max: 3 } } });
 * await shares.acquire('report');
 * try { await runReport() } finally { shares.release('report') }
 */
export function poolShares<C extends string>(options: PoolSharesOptions<C>): PoolShares<C> {
  return new PoolShares(options);
}
