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
