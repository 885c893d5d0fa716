import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeWithService } from '../../../keel/test/support/services.ts';
import { chargeTargets } from '../../src/service/charge-targets.ts';
import type { Database } from '../../src/service/database.ts';
import { postgresDatabase } from '../../src/service/postgres-database.ts';
import { providerClient } from '../../src/service/provider-client.ts';
import { type ProviderRouting, providerRouting } from '../../src/service/provider-routing.ts';
import { migrateSchema } from '../../src/service/schema.ts';
import { type Providers, scratchDirectory, startProviders } from './service-harness.ts';

/**
 * Under load on Postgres the write that pins a provider key waits for its connection or its row
 * lock. That wait is ours: it must neither count against the provider's attempt timeout nor open
 * the provider's breaker, or a busy pool turns every charge away from a healthy provider.
 */
describeWithService('DATABASE_URL', 'pinning a provider key on a slow Postgres', (databaseUrl) => {
  const scratch = scratchDirectory('pin-timeout');
  const attemptTimeoutMs = 300;
  let providers: Providers;
  let db: Database;
  let locker: pg.Client;
  let routing: ProviderRouting;

  beforeAll(async () => {
    providers = await startProviders(scratch.path);
    db = postgresDatabase({ url: databaseUrl, mode: 'guarded', poolSize: 4 });
    await migrateSchema(db.driver);
    locker = new pg.Client({ connectionString: databaseUrl });
    await locker.connect();
    routing = providerRouting({
      providers: [providerClient('a', providers.a.url), providerClient('b', providers.b.url)],
      targets: chargeTargets(db),
      attemptTimeoutMs,
      deadlineMs: 10_000,
    });
  });

  afterAll(async () => {
    await locker?.end();
    await db?.close();
    await providers?.stop();
    scratch.remove();
  });

  /** Another transaction holds the key's row, uncommitted, for `ms`: the pin waits behind it. */
  async function holdRow(key: string, ms: number): Promise<void> {
    await locker.query('BEGIN');
    await locker.query('INSERT INTO charge_targets (provider_key, provider, pinned_at) VALUES ($1, $2, $3)', [
      key,
      'a',
      Date.now(),
    ]);
    setTimeout(() => void locker.query('ROLLBACK'), ms).unref();
  }

  it('charges once the pin is written, however long the pin waited', async () => {
    const key = `pin-${randomUUID()}`;
    // Longer than every attempt of the provider's retry policy put together.
    await holdRow(key, attemptTimeoutMs * 5);
    const charge = await routing.charge({ amount: 700, currency: 'eur', reference: `ord_${key}` }, key);
    expect(charge.provider).toBe('a');
    expect(await chargeTargets(db).pinned(key)).toBe('a');
    expect(routing.breakers.get('a')?.state).toBe('closed');
  });

  it('keeps the breaker closed when pins wait, over more calls than it needs to open', async () => {
    for (let call = 0; call < 5; call++) {
      const key = `pin-${randomUUID()}`;
      await holdRow(key, attemptTimeoutMs * 2);
      await routing.charge({ amount: 100 + call, currency: 'eur', reference: `ord_${key}` }, key);
    }
    expect(routing.breakers.get('a')?.state).toBe('closed');
  });
});
