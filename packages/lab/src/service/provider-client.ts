/**
 * @module
 * A plain HTTP client of one payment provider, as the service's own code would have it: create a
 * charge (with an `Idempotency-Key` when given one) and find a charge again by that key on the
 * provider's listing endpoint. It adds no resilience of its own — deadlines, retries, breakers and
 * failover come from Keel's policies around it — but it speaks their language: the caller's
 * `AbortSignal` is passed to `fetch`, and a refused response becomes Keel's `HttpStatusError`
 * (with `Retry-After`), which retry, breaker and failover know how to judge.
 */
import { HttpStatusError, parseRetryAfter } from 'keel';
import { PaymentDeclinedError } from './domain-errors.ts';

/** A charge as the service records it. */
export interface ProviderCharge {
  /** Which provider holds it. */
  readonly provider: string;
  /** The provider's charge id. */
  readonly id: string;
  readonly amount: number;
  readonly currency: string;
}

export interface ChargeRequest {
  readonly amount: number;
  readonly currency: string;
  /** The order id, so charges can be found by order at the provider. */
  readonly reference: string;
}

export interface CallOptions {
  readonly idempotencyKey?: string | undefined;
  readonly signal?: AbortSignal | undefined;
}

export interface ProviderClient {
  readonly name: string;
  charge(request: ChargeRequest, options?: CallOptions): Promise<ProviderCharge>;
  /** The charge made with `idempotencyKey`, or `undefined` when the provider never made one. */
  findCharge(idempotencyKey: string, options?: CallOptions): Promise<ProviderCharge | undefined>;
  /** One page of the charges made at or after `createdGte` (epoch ms), oldest first. */
  listCharges(page: ChargeListPage, options?: CallOptions): Promise<ProviderChargeList>;
}

/** Which page of the provider's charges to read. */
export interface ChargeListPage {
  readonly createdGte: number;
  /** `nextCursor` of the previous page. */
  readonly cursor?: string | undefined;
  /** @default 100 */
  readonly limit?: number;
}

/** A charge as the provider's listing shows it: with the reference (order id) and when it was made. */
export interface ListedCharge extends ProviderCharge {
  readonly reference: string;
  readonly created: number;
}

export interface ProviderChargeList {
  readonly charges: readonly ListedCharge[];
  /** Cursor of the next page, `undefined` on the last one. */
  readonly nextCursor: string | undefined;
}

interface ProviderChargeBody {
  id: string;
  amount: number;
  currency: string;
  reference: string;
  created: number;
}

async function refusal(provider: string, response: Response): Promise<Error> {
  const text = await response.text().catch(() => '');
  const status = response.status;
  if (status === 408 || status === 429 || status >= 500) {
    return new HttpStatusError(
      status,
      `provider ${provider} answered ${status}: ${text.slice(0, 200)}`,
      parseRetryAfter(response.headers.get('retry-after')),
    );
  }
  if (status === 409) {
    // The provider is still working on the same key: not a decline; the outcome is not known yet.
    return new HttpStatusError(status, `provider ${provider} is still processing this key`);
  }
  return new PaymentDeclinedError(
    provider,
    `Provider ${provider} refused the charge (${status}): ${text.slice(0, 200)}`,
  );
}

/**
 * @example
 * const a = providerClient('a', 'http://127.0.0.1:4001');
 * const charge = await a.charge({ amount: 1999, currency: 'eur', reference: orderId }, { idempotencyKey, signal });
 */
export function providerClient(name: string, baseUrl: string): ProviderClient {
  const charge = (body: ProviderChargeBody): ProviderCharge => ({
    provider: name,
    id: body.id,
    amount: body.amount,
    currency: body.currency,
  });
  return {
    name,
    async charge(request, options = {}) {
      const headers: Record<string, string> = { 'content-type': 'application/json' };
      if (options.idempotencyKey !== undefined) headers['idempotency-key'] = options.idempotencyKey;
      const response = await fetch(`${baseUrl}/charges`, {
        method: 'POST',
        headers,
        body: JSON.stringify(request),
        ...(options.signal !== undefined && { signal: options.signal }),
      });
      if (!response.ok) throw await refusal(name, response);
      return charge((await response.json()) as ProviderChargeBody);
    },
    async findCharge(idempotencyKey, options = {}) {
      const query = new URLSearchParams({ idempotency_key: idempotencyKey, limit: '1' });
      const response = await fetch(`${baseUrl}/charges?${query}`, {
        ...(options.signal !== undefined && { signal: options.signal }),
      });
      if (!response.ok) throw await refusal(name, response);
      const list = (await response.json()) as { data: ProviderChargeBody[] };
      const found = list.data[0];
      return found === undefined ? undefined : charge(found);
    },
    async listCharges(page, options = {}) {
      const query = new URLSearchParams({
        created_gte: String(page.createdGte),
        limit: String(page.limit ?? 100),
      });
      if (page.cursor !== undefined) query.set('cursor', page.cursor);
      const response = await fetch(`${baseUrl}/charges?${query}`, {
        ...(options.signal !== undefined && { signal: options.signal }),
      });
      if (!response.ok) throw await refusal(name, response);
      const list = (await response.json()) as { data: ProviderChargeBody[]; next_cursor: string | null };
      return {
        charges: list.data.map((body) => ({
          ...charge(body),
          reference: body.reference,
          created: body.created,
        })),
        nextCursor: list.next_cursor ?? undefined,
      };
    },
  };
}
