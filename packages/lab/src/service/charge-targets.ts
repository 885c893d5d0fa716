/**
 * @module
 * The durable record of where each provider key was sent (`charge_targets`), so that a retry of a
 * charge whose outcome is unknown goes back to the same provider. See `ChargeTargets`.
 */
import type { Database, SqlRunner } from './database.ts';
import type { ChargeTargets } from './provider-routing.ts';

const PIN_SQL = `INSERT INTO charge_targets (provider_key, provider, pinned_at) VALUES (?, ?, ?)
  ON CONFLICT (provider_key) DO UPDATE SET provider = excluded.provider, pinned_at = excluded.pinned_at`;

const PINNED_SQL = 'SELECT provider FROM charge_targets WHERE provider_key = ?';

const PIN_FIRST_SQL = `INSERT INTO charge_targets (provider_key, provider, pinned_at) VALUES (?, ?, ?)
  ON CONFLICT (provider_key) DO NOTHING`;

/** Where a charge's key stands after {@link pinFirstIn}. */
export type FirstPin =
  /** The key was pinned before, to `provider`: it may have been sent there. */
  | { readonly pinnedBefore: string }
  /** The key is pinned now, to `provider`, and was never sent anywhere. */
  | { readonly pinnedNow: string };

/**
 * Pins `key` to `provider` in the caller's transaction unless it is pinned already, and says which.
 * A first attempt pins its first choice with the order's move to `charging`, so the provider call
 * needs no write of its own; a key pinned before keeps its pin, as a retry must go back there. A
 * pin never sent is harmless: the routing may still fail over, and pins again where it goes.
 *
 * @example
 * const pin = await pinFirstIn(db.join(handle), lease.derivedKey('charge'), 'a');
 */
export async function pinFirstIn(runner: SqlRunner, key: string, provider: string): Promise<FirstPin> {
  if ((await runner.run(PIN_FIRST_SQL, [key, provider, Date.now()])) === 1) return { pinnedNow: provider };
  const before = await pinnedIn(runner, key);
  if (before === undefined) throw new Error(`charge_targets: the pin of ${key} vanished`);
  return { pinnedBefore: before };
}

/**
 * The provider `key` is pinned to, read with `runner` (a transaction the caller has open).
 *
 * @example
 * const provider = await pinnedIn(db.join(handle), lease.derivedKey('charge')); // 'a' | undefined
 */
export async function pinnedIn(runner: SqlRunner, key: string): Promise<string | undefined> {
  return (await runner.get<{ provider: string }>(PINNED_SQL, [key]))?.provider;
}

/**
 * @example
 * const routing = providerRouting({ providers, targets: chargeTargets(db), attemptTimeoutMs, deadlineMs });
 */
export function chargeTargets(db: Database): ChargeTargets {
  return {
    async pin(key, provider) {
      // Committed before the call leaves, so a crash right after it still knows where the key went.
      // One statement commits on its own: on Postgres that spares the BEGIN and COMMIT round trips of
      // a transaction; SQLite writes go through the one writer connection, in its transaction.
      const values = [key, provider, Date.now()];
      if (db.driver.dialect === 'postgres') await db.reader('api').run(PIN_SQL, values);
      else await db.transaction('api', (tx) => tx.run(PIN_SQL, values));
    },
    pinned: (key) => pinnedIn(db.reader('api'), key),
  };
}
