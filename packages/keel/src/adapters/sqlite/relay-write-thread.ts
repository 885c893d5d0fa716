/**
 * The service's side of the SQLite outbox's write thread (`sqliteOutbox({ writeThread: true })`):
 * it starts the thread on the first write, sends it each write of the relay and settles the write's
 * promise with the answer. The thread has its own connection on the outbox's file, so a mark's row
 * rewrites, the checkpoints its commits start (with their `fsync`) and its waits for another
 * connection's write lock all happen off the event loop. The thread holds the process open only
 * while a write is under way, and a thread that fails or exits fails the writes it had and is
 * started afresh by the next one.
 *
 * @module
 */
import { Worker } from 'node:worker_threads';
import { OutboxWriteThreadError } from '../../outbox/errors.ts';
import type {
  RelayWriteInit,
  RelayWriteParam,
  RelayWriteReply,
  RelayWriteRequest,
} from './relay-write-worker.ts';
import { rebuildError } from './worker-errors.ts';
import { workerScript } from './worker-script.ts';

/** A write sent and not answered yet. */
interface PendingWrite {
  readonly resolve: (value: unknown) => void;
  readonly reject: (reason: unknown) => void;
}

/**
 * @example
 * const thread = new RelayWriteThread({ path: '/srv/app.db', setup: ['PRAGMA synchronous = 1'], table: 'keel_outbox_lease' });
 * const changes = await thread.run('UPDATE keel_outbox SET published_at = ? WHERE seq = ?', [now, 41], 5_000);
 * await thread.close();
 */
export class RelayWriteThread {
  readonly #init: RelayWriteInit;
  readonly #script = workerScript('relay-write-worker', import.meta.url);
  #worker: Worker | undefined;
  readonly #pending = new Map<number, PendingWrite>();
  #nextId = 1;
  /** Set by the first `close()`, which every later one returns. */
  #closing: Promise<void> | undefined;

  constructor(init: RelayWriteInit) {
    this.#init = Object.freeze({ path: init.path, setup: Object.freeze([...init.setup]), table: init.table });
  }

  /** Runs a write and resolves with the number of rows it changed. */
  async run(sql: string, params: readonly RelayWriteParam[], waitMs: number): Promise<number> {
    return Number(await this.#send('run', sql, params, waitMs));
  }

  /** Runs a write with `RETURNING` and resolves with its first row, or `undefined`. */
  get(sql: string, params: readonly RelayWriteParam[], waitMs: number): Promise<unknown> {
    return this.#send('get', sql, params, waitMs);
  }

  /** Ends the thread once its writes are answered. Later writes fail. */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    const worker = this.#worker;
    if (worker === undefined) return;
    // Listened for before anything is awaited: a thread lost meanwhile has exited by then.
    const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
    if (this.#pending.size > 0) {
      await new Promise<void>((resolve) => {
        const check = () => {
          if (this.#pending.size > 0) return;
          worker.off('message', check);
          worker.off('exit', check);
          resolve();
        };
        // Listeners added after the store's own, so they run once the last answer has settled.
        worker.on('message', check);
        worker.on('exit', check);
      });
    }
    if (this.#worker === worker) {
      // Held open until the thread has closed its connection and exited.
      worker.ref();
      worker.postMessage('close');
    }
    await exited;
  }

  #send(
    op: 'run' | 'get',
    sql: string,
    params: readonly RelayWriteParam[],
    waitMs: number,
  ): Promise<unknown> {
    if (this.#closing !== undefined) return Promise.reject(new OutboxWriteThreadError('was closed'));
    const worker = this.#worker ?? this.#start();
    const id = this.#nextId++;
    const answered = new Promise<unknown>((resolve, reject) => this.#pending.set(id, { resolve, reject }));
    worker.postMessage({ id, op, sql, params, waitMs } satisfies RelayWriteRequest);
    // Held open while a write is under way: a relay awaiting its mark is work in progress.
    if (this.#pending.size === 1) worker.ref();
    return answered;
  }

  #start(): Worker {
    const worker = new Worker(this.#script, { workerData: this.#init });
    worker.unref();
    worker.on('message', (reply: RelayWriteReply) => {
      const pending = this.#pending.get(reply.id);
      if (pending === undefined) return;
      this.#pending.delete(reply.id);
      if (this.#pending.size === 0) worker.unref();
      if (reply.ok) pending.resolve(reply.value);
      else pending.reject(rebuildError(reply.error));
    });
    worker.on('error', (error) => this.#lose(worker, new OutboxWriteThreadError('failed', { cause: error })));
    worker.once('exit', (code) => this.#lose(worker, new OutboxWriteThreadError(`exited with code ${code}`)));
    this.#worker = worker;
    return worker;
  }

  /** Fails the writes `worker` had not answered; the next write starts a new thread. */
  #lose(worker: Worker, reason: OutboxWriteThreadError): void {
    if (this.#worker !== worker) return;
    this.#worker = undefined;
    for (const pending of this.#pending.values()) pending.reject(reason);
    this.#pending.clear();
  }
}
