/**
 * A database connection pool as most services have one: a fixed number of connections and an
 * unbounded FIFO queue where callers wait as long as it takes. This is the shared resource that one
 * slow dependency exhausts.
 */
export class ConnectionPool {
  readonly size: number;
  #free: number;
  readonly #waiters: Array<() => void> = [];

  constructor(size: number) {
    this.size = size;
    this.#free = size;
  }

  get waiting(): number {
    return this.#waiters.length;
  }

  async acquire(): Promise<void> {
    if (this.#free > 0) {
      this.#free--;
      return;
    }
    await new Promise<void>((resolve) => this.#waiters.push(resolve));
  }

  release(): void {
    const next = this.#waiters.shift();
    if (next) next();
    else this.#free++;
  }

  async with<T>(work: () => Promise<T>): Promise<T> {
    await this.acquire();
    try {
      return await work();
    } finally {
      this.release();
    }
  }
}
