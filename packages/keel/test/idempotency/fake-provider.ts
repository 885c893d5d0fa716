import { TimeoutError } from 'keel';

export interface ProviderCharge {
  readonly id: string;
  readonly key: string;
  readonly amount: number;
}

/**
 * A payment provider that deduplicates by idempotency key, keeps a ledger as ground truth, and can
 * charge and then lose the response.
 */
export class FakeProvider {
  readonly ledger = new Map<string, ProviderCharge>();
  calls = 0;
  /** The next `dropResponses` calls charge, then throw a timeout as if the response was lost. */
  dropResponses = 0;
  /** The next `failBefore` calls throw a network error without charging. */
  failBefore = 0;

  async charge(key: string, amount: number): Promise<ProviderCharge> {
    this.calls++;
    if (this.failBefore > 0) {
      this.failBefore--;
      throw Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' });
    }
    let charge = this.ledger.get(key);
    if (!charge) {
      charge = { id: `ch_${this.ledger.size + 1}`, key, amount };
      this.ledger.set(key, charge);
    }
    if (this.dropResponses > 0) {
      this.dropResponses--;
      throw new TimeoutError(2_000);
    }
    return charge;
  }

  async find(key: string): Promise<ProviderCharge | undefined> {
    return this.ledger.get(key);
  }
}
