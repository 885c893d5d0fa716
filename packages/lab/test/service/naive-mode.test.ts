import { DatabaseSync } from 'node:sqlite';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Service } from '../../src/service/service-app.ts';
import {
  charge,
  createOrder,
  eventually,
  type Providers,
  scratchDirectory,
  signIn,
  startProviders,
  startService,
  uniqueKey,
} from './service-harness.ts';

async function chargesAt(url: string, reference: string): Promise<unknown[]> {
  const response = await fetch(`${url}/charges?reference=${encodeURIComponent(reference)}`);
  return ((await response.json()) as { data: unknown[] }).data;
}

/** Tries to take the database's write lock from another connection, without waiting for it. */
function writeLockIsFree(path: string): boolean {
  const probe = new DatabaseSync(path, { timeout: 0 });
  try {
    probe.exec('BEGIN IMMEDIATE');
    probe.exec('ROLLBACK');
    return true;
  } catch (error) {
    if (/locked|busy/i.test(String(error))) return false;
    throw error;
  } finally {
    probe.close();
  }
}

function databasePath(service: Service): string {
  if (service.config.db.kind !== 'sqlite') throw new Error('this test runs on sqlite');
  return service.config.db.path;
}

describe('naive mode, beside guarded mode', () => {
  const scratch = scratchDirectory('naive-mode');
  let providers: Providers;
  let naive: Service;
  let guarded: Service;

  beforeAll(async () => {
    providers = await startProviders(scratch.path);
    [naive, guarded] = await Promise.all([
      startService(scratch.path, providers, { mode: 'naive' }),
      startService(scratch.path, providers, { mode: 'guarded' }),
    ]);
  });

  afterEach(async () => {
    await providers.a.faults.clear();
  });

  afterAll(async () => {
    await Promise.allSettled([naive?.stop(), guarded?.stop()]);
    await providers?.stop();
    scratch.remove();
  });

  /** Starts a charge against a slow provider and reports whether the write lock was free meanwhile. */
  async function lockDuringProviderCall(service: Service, key: string) {
    const user = await signIn(service);
    const order = await createOrder(service, user.authorization);
    await providers.a.faults.set({ latency: { p50Ms: 1_000, p99Ms: 1_000 } });
    const before = (await providers.a.stats()).requests;
    const pending = charge(service, user.authorization, order.id, key);
    await eventually(
      () => providers.a.stats(),
      (stats) => stats.requests > before,
    );
    const free = writeLockIsFree(databasePath(service));
    const answered = await pending;
    return { free, status: answered.statusCode };
  }

  it('naive: calls the provider inside its open transaction, holding the write lock meanwhile', async () => {
    const { free, status } = await lockDuringProviderCall(naive, uniqueKey('naive-lock'));
    expect(status).toBe(201);
    expect(free).toBe(false);
  });

  it('guarded: holds no transaction open while the provider works', async () => {
    const { free, status } = await lockDuringProviderCall(guarded, uniqueKey('guarded-lock'));
    expect(status).toBe(201);
    expect(free).toBe(true);
  });

  it('naive: ignores Idempotency-Key, so a double submit charges the customer twice', async () => {
    const user = await signIn(naive);
    const order = await createOrder(naive, user.authorization);
    await providers.a.faults.set({ latency: { p50Ms: 300, p99Ms: 300 } });
    const key = uniqueKey('double');
    const answers = await Promise.all([
      charge(naive, user.authorization, order.id, key),
      charge(naive, user.authorization, order.id, key),
    ]);
    expect(answers.map((a) => a.statusCode).sort()).toEqual([201, 500]);
    expect(await chargesAt(providers.a.url, order.id)).toHaveLength(2);
  });

  it('guarded: the same double submit charges once', async () => {
    const user = await signIn(guarded);
    const order = await createOrder(guarded, user.authorization);
    await providers.a.faults.set({ latency: { p50Ms: 300, p99Ms: 300 } });
    const key = uniqueKey('double');
    const answers = await Promise.all([
      charge(guarded, user.authorization, order.id, key),
      charge(guarded, user.authorization, order.id, key),
    ]);
    // The copy that finds the key in flight waits for the first and replays its answer.
    expect(answers.map((a) => a.statusCode)).toEqual([201, 201]);
    expect(answers.map((a) => a.headers['idempotent-replayed']).filter(Boolean)).toEqual(['true']);
    expect(answers[0]?.body).toBe(answers[1]?.body);
    expect(await chargesAt(providers.a.url, order.id)).toHaveLength(1);
  });

  it('naive: still writes the invoice and mails it, without an outbox', async () => {
    const user = await signIn(naive);
    const order = await createOrder(naive, user.authorization);
    const paid = await charge(naive, user.authorization, order.id);
    expect(paid.statusCode).toBe(201);
    const mailed = await eventually(
      () => naive.mail.sent().filter((m) => m.to === user.email),
      (sent) => sent.length > 0,
    );
    expect(mailed).toHaveLength(1);
    const driver = naive.db.driver;
    if (driver.dialect !== 'sqlite') throw new Error('sqlite only');
    expect(driver.db.prepare('SELECT count(*) AS n FROM keel_outbox').get()).toEqual({ n: 0 });
  });
});
