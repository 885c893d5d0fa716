/**
 * Bulkheads: a fixed number of calls run at once, a bounded number wait in line, and everything
 * beyond is refused at once. A slow dependency then ties up its own slots, not every request
 * handler of the service.
 *
 * Waiting calls leave the line the moment their caller gives up, their queue timeout passes or their
 * deadline passes, so the line never fills with calls nobody waits for. A call abandoned by an inner
 * timeout keeps its slot until the abandoned work really ends, so the bulkhead never lets more work
 * run than it allows.
 *
 * Answers: resource exhaustion — one slow dependency takes every connection, socket or worker.
 *
 * @module
 */
import { AbortedError } from '../errors/keel-error.ts';
import { BulkheadRejectedError, DeadlineExceededError, TimeoutError } from '../errors/policy-errors.ts';
import type { Clock } from './clock.ts';
import { type CommonOptions, checkInteger, checkNumber, resolveTime } from './options.ts';
import { BasePolicy, type Context, type Next, type Operation } from './policy.ts';
import { EventSource } from './telemetry.ts';
import { TimerEntry } from './timer-wheel.ts';

/** Options of {@link bulkhead}. */
export interface BulkheadOptions extends CommonOptions {
  /** How many calls may run at once. */
  maxConcurrent: number;
  /**
   * How many calls may wait for a slot; a call beyond that is refused at once.
   * @default 0
   */
  maxQueued?: number;
  /**
   * How long a call may wait for a slot before it is refused with `BulkheadRejectedError`.
   * @default Infinity (bounded only by the call's deadline)
   */
  queueTimeoutMs?: number;
}

const DEFAULTS = Object.freeze({ maxQueued: 0, queueTimeoutMs: Number.POSITIVE_INFINITY });

/**
 * One call waiting for a slot: a node of the bulkhead's intrusive FIFO list, an entry on the timer
 * wheel and the listener of its caller's signal, all in one object.
 */
class QueuedCall extends TimerEntry {
  readonly #policy: BulkheadPolicy;
  readonly signal: AbortSignal | undefined;
  /** True when the deadline, not the queue timeout, is what the wheel will fire for. */
  readonly byDeadline: boolean;
  prev: QueuedCall | undefined = undefined;
  next: QueuedCall | undefined = undefined;
  /** False once the call has left the line, so a late timer or abort cannot take it out twice. */
  waiting = true;
  resolve!: () => void;
  reject!: (reason: unknown) => void;
  readonly promise: Promise<void>;

  constructor(policy: BulkheadPolicy, signal: AbortSignal | undefined, byDeadline: boolean) {
    super();
    this.#policy = policy;
    this.signal = signal;
    this.byDeadline = byDeadline;
    this.promise = new Promise<void>((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
  }

  expire(): void {
    this.#policy.leaveQueue(
      this,
      this.byDeadline ? new DeadlineExceededError(0) : this.#policy.rejection('queue-timeout'),
    );
  }

  /** The caller's signal aborted. */
  handleEvent(): void {
    this.#policy.leaveQueue(this, new AbortedError(this.signal?.reason));
  }
}

/** See {@link bulkhead}. */
export class BulkheadPolicy extends BasePolicy {
  readonly maxConcurrent: number;
  readonly maxQueued: number;
  readonly queueTimeoutMs: number;
  readonly clock: Clock;
  #running = 0;
  #queued = 0;
  #head: QueuedCall | undefined = undefined;
  #tail: QueuedCall | undefined = undefined;
  /** Shared by every call whose slot is held until abandoned work ends, instead of a closure each. */
  readonly #releaseSlot = (): void => this.#release();

  constructor(options: BulkheadOptions) {
    const { clock, timers } = resolveTime(options);
    super(new EventSource('bulkhead', options.name ?? 'bulkhead', options.telemetry), timers);
    this.maxConcurrent = checkInteger('maxConcurrent', options.maxConcurrent);
    this.maxQueued = checkInteger('maxQueued', options.maxQueued ?? DEFAULTS.maxQueued, 0);
    this.queueTimeoutMs = checkNumber(
      'queueTimeoutMs',
      options.queueTimeoutMs ?? DEFAULTS.queueTimeoutMs,
      0,
      true,
    );
    this.clock = clock;
  }

  /** Calls holding a slot, including ones abandoned by a timeout whose work has not ended. */
  get running(): number {
    return this.#running;
  }

  /** Calls waiting for a slot. */
  get queued(): number {
    return this.#queued;
  }

  run<T>(fn: Operation<T>, context: Context, next: Next): Promise<T> {
    // The common case — a free slot, nobody listening — settles through two shared handlers
    // instead of an async frame.
    if (!this.events.active && this.#running < this.maxConcurrent && !context.callerAborted) {
      this.#running++;
      return next.run(fn, context).then(this.#passValue, this.#passError) as Promise<T>;
    }
    return this.#guardedRun(fn, context, next);
  }

  readonly #passValue = <T>(value: T): T => {
    this.#release();
    return value;
  };

  readonly #passError = (error: unknown): never => {
    this.#releaseAfter(error);
    throw error;
  };

  /** Frees the slot of a failed call — or, when a timeout abandoned its work, once that work ends. */
  #releaseAfter(error: unknown): void {
    if (error instanceof TimeoutError && error.work !== undefined) {
      error.work.then(this.#releaseSlot, this.#releaseSlot);
    } else {
      this.#release();
    }
  }

  async #guardedRun<T>(fn: Operation<T>, context: Context, next: Next): Promise<T> {
    if (context.callerAborted) throw new AbortedError(context.parentSignal?.reason);
    if (this.#running < this.maxConcurrent) {
      this.#running++;
    } else if (this.#queued < this.maxQueued) {
      await this.#waitForSlot(context);
      // The slot was handed over, but the caller may have given up before this continuation ran.
      if (context.callerAborted) {
        this.#release();
        throw new AbortedError(context.parentSignal?.reason);
      }
    } else {
      throw this.rejection('full');
    }
    const startedAt = this.events.active ? this.clock.now() : 0;
    let value: T;
    try {
      value = await next.run(fn, context);
    } catch (error) {
      if (this.events.active) {
        const durationMs = this.clock.now() - startedAt;
        this.events.emit({ policy: 'bulkhead', name: this.events.name, type: 'failure', durationMs, error });
      }
      this.#releaseAfter(error);
      throw error;
    }
    this.#release();
    if (this.events.active) {
      const durationMs = this.clock.now() - startedAt;
      this.events.emit({ policy: 'bulkhead', name: this.events.name, type: 'success', durationMs });
    }
    return value;
  }

  /** @internal Builds a refusal and reports it. */
  rejection(reason: 'full' | 'queue-timeout'): BulkheadRejectedError {
    const error = new BulkheadRejectedError(this.maxConcurrent, this.maxQueued, reason);
    if (this.events.active) {
      this.events.emit({ policy: 'bulkhead', name: this.events.name, type: 'rejection', error });
    }
    return error;
  }

  /** @internal Takes a waiting call out of line (timeout, deadline or abort) and refuses it. */
  leaveQueue(call: QueuedCall, error: unknown): void {
    if (!call.waiting) return;
    this.#unlink(call);
    call.reject(error);
  }

  #waitForSlot(context: Context): Promise<void> {
    const queueDeadline = this.clock.now() + this.queueTimeoutMs;
    const byDeadline = context.deadline < queueDeadline;
    const call = new QueuedCall(this, context.parentSignal, byDeadline);
    call.prev = this.#tail;
    if (this.#tail) this.#tail.next = call;
    else this.#head = call;
    this.#tail = call;
    this.#queued++;
    const expiresAt = byDeadline ? context.deadline : queueDeadline;
    if (expiresAt !== Number.POSITIVE_INFINITY) this.timers.schedule(call, expiresAt);
    call.signal?.addEventListener('abort', call, { once: true });
    return call.promise;
  }

  /** Frees a slot, handing it straight to the first waiting call so no newcomer can jump the line. */
  #release(): void {
    const first = this.#head;
    if (first === undefined) {
      this.#running--;
      return;
    }
    this.#unlink(first);
    first.resolve();
  }

  #unlink(call: QueuedCall): void {
    if (!call.waiting) return;
    call.waiting = false;
    if (call.prev) call.prev.next = call.next;
    else this.#head = call.next;
    if (call.next) call.next.prev = call.prev;
    else this.#tail = call.prev;
    call.prev = undefined;
    call.next = undefined;
    this.#queued--;
    this.timers.cancel(call);
    call.signal?.removeEventListener('abort', call);
  }
}

/**
 * Caps how many calls run at once and how many wait; refuses the rest immediately with
 * `BulkheadRejectedError`, which a breaker never counts against the dependency.
 *
 * @example
 * const pool = bulkhead({ maxConcurrent: 10, maxQueued: 20, queueTimeoutMs: 500 });
 * const rows = await pool.execute(({ signal }) => db.query(sql, { signal }));
 */
export function bulkhead(options: BulkheadOptions): BulkheadPolicy {
  return new BulkheadPolicy(options);
}
