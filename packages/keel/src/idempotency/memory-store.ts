import type { IdempotencyRecord, IdempotencyStore } from './store.ts';

/**
 * An in-process store for tests and single-process tools. Records are copied in and out so callers
 * cannot mutate what is stored.
 *
 * @example
 * const engine = idempotency({ store: memoryStore() });
 */
export class MemoryIdempotencyStore implements IdempotencyStore {
  readonly #records = new Map<string, IdempotencyRecord>();

  async get(key: string): Promise<IdempotencyRecord | undefined> {
    const record = this.#records.get(key);
    return record && structuredClone(record);
  }

  async insertIfAbsent(record: IdempotencyRecord): Promise<boolean> {
    if (this.#records.has(record.key)) return false;
    this.#records.set(record.key, structuredClone(record));
    return true;
  }

  async replace(expectedToken: string, record: IdempotencyRecord): Promise<boolean> {
    const current = this.#records.get(record.key);
    if (current?.token !== expectedToken) return false;
    this.#records.set(record.key, structuredClone(record));
    return true;
  }

  async delete(key: string, expectedToken: string): Promise<boolean> {
    if (this.#records.get(key)?.token !== expectedToken) return false;
    return this.#records.delete(key);
  }

  async expiredLeases(now: number, limit: number): Promise<IdempotencyRecord[]> {
    return [...this.#records.values()]
      .filter((r) => r.state === 'in-flight' && r.leaseUntil < now)
      .sort((a, b) => a.leaseUntil - b.leaseUntil)
      .slice(0, limit)
      .map((r) => structuredClone(r));
  }

  async purgeExpired(now: number, limit: number): Promise<number> {
    let purged = 0;
    for (const [key, record] of this.#records) {
      if (purged >= limit) break;
      if (record.expiresAt < now) {
        this.#records.delete(key);
        purged++;
      }
    }
    return purged;
  }

  /** Number of records held. */
  get size(): number {
    return this.#records.size;
  }
}

/** Builds a {@link MemoryIdempotencyStore}. */
export function memoryStore(): MemoryIdempotencyStore {
  return new MemoryIdempotencyStore();
}
