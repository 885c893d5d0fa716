/**
 * @module
 * A provider's ledger: every charge it made and every idempotency key it honoured, in its own
 * sqlite file. This is the ground truth the lab reconciles against, so a charge and the record of
 * its idempotency key are written in one transaction: there is never a charge a replay cannot find,
 * nor a key that points at nothing.
 */
import { DatabaseSync } from 'node:sqlite';

/** A charge as the provider stores and returns it. `created` is epoch milliseconds. */
export interface Charge {
  id: string;
  object: 'charge';
  amount: number;
  currency: string;
  reference: string;
  description: string | null;
  idempotency_key: string | null;
  status: 'succeeded';
  created: number;
}

/** The stored outcome of a request made with an idempotency key, replayed as it was sent. */
export interface IdempotencyRecord {
  key: string;
  fingerprint: string;
  chargeId: string;
  status: number;
  body: string;
}

/** Filters of the listing endpoint. `afterSeq` is the cursor: the last position already seen. */
export interface ChargeFilter {
  reference?: string;
  idempotencyKey?: string;
  createdGte?: number;
  afterSeq?: number;
  limit: number;
}

export interface ChargePage {
  charges: Charge[];
  /** Position of the last charge returned, when more follow. */
  nextSeq: number | undefined;
}

interface ChargeRow {
  seq: number;
  id: string;
  amount: number;
  currency: string;
  reference: string;
  description: string | null;
  idempotency_key: string | null;
  status: 'succeeded';
  created: number;
}

const SCHEMA = `
  CREATE TABLE IF NOT EXISTS charges (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    amount INTEGER NOT NULL,
    currency TEXT NOT NULL,
    reference TEXT NOT NULL,
    description TEXT,
    idempotency_key TEXT UNIQUE,
    status TEXT NOT NULL,
    created INTEGER NOT NULL
  );
  CREATE INDEX IF NOT EXISTS charges_by_reference ON charges (reference, seq);
  CREATE INDEX IF NOT EXISTS charges_by_created ON charges (created, seq);
  CREATE TABLE IF NOT EXISTS idempotency_keys (
    key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    charge_id TEXT NOT NULL REFERENCES charges (id),
    status INTEGER NOT NULL,
    body TEXT NOT NULL,
    created INTEGER NOT NULL
  );
`;

const COLUMNS = 'seq, id, amount, currency, reference, description, idempotency_key, status, created';

export class ChargeLedger {
  readonly #db: DatabaseSync;

  /** Opens (creating if needed) the ledger at `path`; `':memory:'` gives a throwaway one. */
  constructor(path: string) {
    this.#db = new DatabaseSync(path);
    this.#db.exec('PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000;');
    this.#db.exec(SCHEMA);
  }

  /** Writes a charge and, when the request carried a key, its idempotency record, atomically. */
  record(charge: Charge, idempotency?: Omit<IdempotencyRecord, 'chargeId'>): void {
    this.#db.exec('BEGIN IMMEDIATE');
    try {
      this.#db
        .prepare(`INSERT INTO charges (${COLUMNS.slice('seq, '.length)}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`)
        .run(
          charge.id,
          charge.amount,
          charge.currency,
          charge.reference,
          charge.description,
          charge.idempotency_key,
          charge.status,
          charge.created,
        );
      if (idempotency) {
        this.#db
          .prepare(
            'INSERT INTO idempotency_keys (key, fingerprint, charge_id, status, body, created) VALUES (?, ?, ?, ?, ?, ?)',
          )
          .run(
            idempotency.key,
            idempotency.fingerprint,
            charge.id,
            idempotency.status,
            idempotency.body,
            charge.created,
          );
      }
      this.#db.exec('COMMIT');
    } catch (error) {
      this.#db.exec('ROLLBACK');
      throw error;
    }
  }

  findIdempotencyRecord(key: string): IdempotencyRecord | undefined {
    const row = this.#db
      .prepare('SELECT key, fingerprint, charge_id, status, body FROM idempotency_keys WHERE key = ?')
      .get(key) as
      | { key: string; fingerprint: string; charge_id: string; status: number; body: string }
      | undefined;
    if (!row) return undefined;
    return {
      key: row.key,
      fingerprint: row.fingerprint,
      chargeId: row.charge_id,
      status: row.status,
      body: row.body,
    };
  }

  get(id: string): Charge | undefined {
    const row = this.#db.prepare(`SELECT ${COLUMNS} FROM charges WHERE id = ?`).get(id) as
      | ChargeRow
      | undefined;
    return row ? toCharge(row) : undefined;
  }

  /** Charges in the order they were made, filtered, one page at a time. */
  list(filter: ChargeFilter): ChargePage {
    const conditions = ['seq > ?'];
    const values: Array<string | number> = [filter.afterSeq ?? 0];
    if (filter.reference !== undefined) {
      conditions.push('reference = ?');
      values.push(filter.reference);
    }
    if (filter.idempotencyKey !== undefined) {
      conditions.push('idempotency_key = ?');
      values.push(filter.idempotencyKey);
    }
    if (filter.createdGte !== undefined) {
      conditions.push('created >= ?');
      values.push(filter.createdGte);
    }
    // One row past the page tells whether another page follows.
    values.push(filter.limit + 1);
    const rows = this.#db
      .prepare(`SELECT ${COLUMNS} FROM charges WHERE ${conditions.join(' AND ')} ORDER BY seq LIMIT ?`)
      .all(...values) as unknown as ChargeRow[];
    const page = rows.slice(0, filter.limit);
    const last = page.at(-1);
    return {
      charges: page.map(toCharge),
      nextSeq: rows.length > filter.limit && last ? last.seq : undefined,
    };
  }

  count(): number {
    const row = this.#db.prepare('SELECT count(*) AS n FROM charges').get() as { n: number };
    return row.n;
  }

  close(): void {
    if (this.#db.isOpen) this.#db.close();
  }
}

function toCharge(row: ChargeRow): Charge {
  return {
    id: row.id,
    object: 'charge',
    amount: row.amount,
    currency: row.currency,
    reference: row.reference,
    description: row.description,
    idempotency_key: row.idempotency_key,
    status: row.status,
    created: row.created,
  };
}
