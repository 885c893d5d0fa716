/**
 * @module
 * The durable record of where each provider key was sent (`charge_targets`), so that a retry of a
 * charge whose outcome is unknown goes back to the same provider. See `ChargeTargets`.
 */
import type { Database } from './database.ts';
import type { ChargeTargets } from './provider-routing.ts';

/**
 * @example
 * const routing = providerRouting({ providers, targets: chargeTargets(db), attemptTimeoutMs, deadlineMs });
 */
export function chargeTargets(db: Database): ChargeTargets {
  return {
    async pin(key, provider) {
      // Committed before the call leaves, so a crash right after it still knows where the key went.
      await db.transaction('api', (tx) =>
        tx.run(
          `INSERT INTO charge_targets (provider_key, provider, pinned_at) VALUES (?, ?, ?)
           ON CONFLICT (provider_key) DO UPDATE SET provider = excluded.provider, pinned_at = excluded.pinned_at`,
          [key, provider, Date.now()],
        ),
      );
    },
    async pinned(key) {
      const row = await db
        .reader('api')
        .get<{ provider: string }>('SELECT provider FROM charge_targets WHERE provider_key = ?', [key]);
      return row?.provider;
    },
  };
}
