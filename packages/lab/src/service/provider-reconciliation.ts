/**
 * @module
 * The providers' ledgers against ours: every charge a provider made in a recent window must have a
 * payment row here. The providers are the ground truth of who paid — a charge we have no record of
 * is money taken from a customer with no order paid and no invoice, the silent failure a lost
 * response or a crash between phases leaves behind. Charges younger than a grace period are left
 * out: a charge in flight is recorded a moment after the provider makes it.
 */
import { type DataFinding, dataCheck, type Invariant } from 'keel/observe';
import type { SqlRunner } from './database.ts';
import { providerChargesWithoutPayment } from './payment-alerts.ts';
import type { ListedCharge, ProviderClient } from './provider-client.ts';

export interface ProviderReconciliationOptions {
  readonly providers: readonly ProviderClient[];
  /** Where the payments are read (a pooled reader). */
  readonly payments: SqlRunner;
  /** How far back the providers' charges are listed, in ms. */
  readonly windowMs: number;
  /** Charges younger than this are not judged yet, in ms. */
  readonly graceMs: number;
  /** Budget of one listing request, in ms. @default 5_000 */
  readonly requestTimeoutMs?: number;
  /** @default Date.now */
  readonly now?: () => number;
}

/** Pages read per provider and evaluation at most, so one check never runs away. */
const MAX_PAGES = 50;
const PAGE = 100;
/** Charge ids looked up in one statement. */
const LOOKUP_BATCH = 200;

async function listedCharges(
  provider: ProviderClient,
  createdGte: number,
  timeoutMs: number,
): Promise<ListedCharge[]> {
  const charges: ListedCharge[] = [];
  let cursor: string | undefined;
  for (let page = 0; page < MAX_PAGES; page++) {
    const list = await provider.listCharges(
      { createdGte, cursor, limit: PAGE },
      { signal: AbortSignal.timeout(timeoutMs) },
    );
    charges.push(...list.charges);
    cursor = list.nextCursor;
    if (cursor === undefined) break;
  }
  return charges;
}

async function recordedIds(
  payments: SqlRunner,
  provider: string,
  ids: readonly string[],
): Promise<Set<string>> {
  const recorded = new Set<string>();
  for (let i = 0; i < ids.length; i += LOOKUP_BATCH) {
    const batch = ids.slice(i, i + LOOKUP_BATCH);
    const rows = await payments.all<{ provider_charge_id: string }>(
      `SELECT provider_charge_id FROM payments WHERE provider = ? AND provider_charge_id IN (${batch.map(() => '?').join(', ')})`,
      [provider, ...batch],
    );
    for (const row of rows) recorded.add(row.provider_charge_id);
  }
  return recorded;
}

/**
 * `provider_charges_without_payment`: lists each provider's charges of the window on its listing
 * endpoint and reports the ones with no payment row, oldest first, by charge id.
 *
 * @example
 * const check = providerReconciliation({ providers, payments: db.reader('api'), windowMs: 3_600_000, graceMs: 30_000 });
 */
export function providerReconciliation(options: ProviderReconciliationOptions): Invariant {
  const now = options.now ?? Date.now;
  const timeoutMs = options.requestTimeoutMs ?? 5_000;
  const names = options.providers.map((p) => p.name).join(', ');
  const sql = `GET <provider>/charges?created_gte=<now - ${options.windowMs} ms> at providers ${names}, each charge older than ${options.graceMs} ms without
SELECT 1 FROM payments WHERE provider = <provider> AND provider_charge_id = <charge id>`;

  const query = async (): Promise<DataFinding> => {
    const at = now();
    const missing: ListedCharge[] = [];
    for (const provider of options.providers) {
      const judged = (await listedCharges(provider, at - options.windowMs, timeoutMs)).filter(
        (charge) => charge.created <= at - options.graceMs,
      );
      const recorded = await recordedIds(
        options.payments,
        provider.name,
        judged.map((charge) => charge.id),
      );
      missing.push(...judged.filter((charge) => !recorded.has(charge.id)));
    }
    missing.sort((x, y) => x.created - y.created);
    const oldest = missing[0];
    return {
      ids: missing.map((charge) => `${charge.id} (order ${charge.reference})`),
      total: missing.length,
      ...(oldest !== undefined && { oldestAgeMs: at - oldest.created }),
    };
  };

  return dataCheck({
    name: 'provider_charges_without_payment',
    sql,
    query,
    alert: providerChargesWithoutPayment,
  });
}
