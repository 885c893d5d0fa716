import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { InvalidOptionError } from 'keel';
import { type IdempotencyRecord, idempotency } from 'keel/idempotency';
import { redisStore } from 'keel/redis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { describeWithService } from '../support/services.ts';
import { recordFixture } from './record-fixture.ts';
import { runStoreConformance } from './store-conformance.ts';
import { raceTwoProcesses } from './two-process-race.ts';

const record = (key: string, overrides: Partial<IdempotencyRecord> = {}) =>
  recordFixture(key, overrides, 1_000_000);

describe('redisStore options', () => {
  const client = { eval: async () => 0, get: async () => null };

  it('refuses a client without eval and get, naming the option', () => {
    expect(() => redisStore({ client: {} as never })).toThrow(InvalidOptionError);
    expect(() => redisStore({ client: { get: client.get } as never })).toThrow(/^client: /);
  });

  it('refuses a prefix that is not a string', () => {
    expect(() => redisStore({ client, prefix: 42 as never })).toThrow(/^prefix: /);
  });

  it('refuses a negative or fractional limit, and the key reserved for the lease index', async () => {
    const store = redisStore({ client });
    await expect(store.expiredLeases(0, -1)).rejects.toThrow(/^limit: /);
    await expect(store.purgeExpired(0, 0.5)).rejects.toThrow(/^limit: /);
    await expect(store.get(':in-flight')).rejects.toThrow(/^key: /);
  });
});

describeWithService('REDIS_URL', 'redisStore against Redis', (url) => {
  let client: Redis;
  const prefixes: string[] = [];

  function freshStore() {
    const prefix = `keel:test:${randomUUID().slice(0, 8)}:`;
    prefixes.push(prefix);
    return redisStore({ client, prefix });
  }

  beforeAll(() => {
    client = new Redis(url);
  });

  async function removeNamespace(prefix: string) {
    const keys = await client.keys(`${prefix}*`);
    if (keys.length > 0) await client.del(...keys);
  }

  afterAll(async () => {
    for (const prefix of prefixes) await removeNamespace(prefix);
    client.disconnect();
  });

  runStoreConformance('redis', async () => {
    const store = freshStore();
    return { store, close: () => removeNamespace(store.prefix) };
  });

  it('sends scripts by digest, and their text only to a server that has not cached them', async () => {
    const calls: string[] = [];
    let forgetOnce = true;
    const counting = {
      get: (key: string) => client.get(key),
      eval: (script: string, numKeys: number, ...args: (string | number)[]) => {
        calls.push('eval');
        return client.eval(script, numKeys, ...args);
      },
      evalsha: async (sha: string, numKeys: number, ...args: (string | number)[]) => {
        calls.push('evalsha');
        // As after a Redis restart: the server no longer knows the script.
        if (forgetOnce) {
          forgetOnce = false;
          throw new Error('NOSCRIPT No matching script. Please use EVAL.');
        }
        return client.evalsha(sha, numKeys, ...args);
      },
    };
    const prefix = `keel:test:${randomUUID().slice(0, 8)}:`;
    prefixes.push(prefix);
    const store = redisStore({ client: counting, prefix });
    const results = [];
    for (let i = 0; i < 10; i++) results.push(await store.insertIfAbsent(record(`sha-${i}`)));
    expect(results.every(Boolean)).toBe(true);
    expect(calls.slice(0, 2)).toEqual(['evalsha', 'eval']);
    expect(calls.slice(2)).toEqual(Array.from({ length: 9 }, () => 'evalsha'));
  });

  it('round-trips a record and sets its TTL to the remaining retention', async () => {
    const store = freshStore();
    const full = record('k', {
      state: 'completed',
      sequence: 7,
      response: { status: 200, headers: { 'content-type': 'text/plain' }, body: 'ok "quoted" \u00e9' },
      phases: { charge: { id: 'ch_1' } },
      expiresAt: 1_000_000 + 60_000,
    });
    expect(await store.insertIfAbsent(full)).toBe(true);
    expect(await store.get('k')).toEqual(full);
    const ttl = await client.pttl(`${store.prefix}k`);
    expect(ttl).toBeGreaterThan(55_000);
    expect(ttl).toBeLessThanOrEqual(60_000);
    expect(await store.get('missing')).toBeUndefined();
  });

  it('never lets the TTL end before the lease does', async () => {
    const store = freshStore();
    await store.insertIfAbsent(
      record('k', { leaseUntil: 1_000_000 + 90_000, expiresAt: 1_000_000 + 10_000 }),
    );
    expect(await client.pttl(`${store.prefix}k`)).toBeGreaterThan(85_000);
  });

  it('lets exactly one of many concurrent inserts and token-fenced replaces win', async () => {
    const store = freshStore();
    const inserts = await Promise.all(Array.from({ length: 20 }, () => store.insertIfAbsent(record('k'))));
    expect(inserts.filter(Boolean)).toHaveLength(1);
    const current = await store.get('k');
    if (!current) throw new Error('missing');
    const replaces = await Promise.all(
      Array.from({ length: 20 }, () => store.replace(current.token, record('k'))),
    );
    expect(replaces.filter(Boolean)).toHaveLength(1);
    expect(await store.replace(current.token, record('k'))).toBe(false);
    expect(await store.delete('k', current.token)).toBe(false);
  });

  it('compares whole tokens, not prefixes of them', async () => {
    const store = freshStore();
    const first = record('k', { token: 'abc"def' });
    await store.insertIfAbsent(first);
    expect(await store.replace('abc', record('k'))).toBe(false);
    expect(await store.delete('k', 'abc"de')).toBe(false);
    expect(await store.delete('k', 'abc"def')).toBe(true);
    expect(await store.get('k')).toBeUndefined();
  });

  it('keeps the lease index in step: completed, deleted and dropped records leave it', async () => {
    const store = freshStore();
    const a = record('a', { leaseUntil: 100 });
    const b = record('b', { leaseUntil: 200 });
    const c = record('c', { leaseUntil: 300 });
    for (const r of [c, a, b, record('live', { leaseUntil: 5_000 })]) await store.insertIfAbsent(r);
    await store.insertIfAbsent(record('done', { leaseUntil: 50, state: 'completed' }));
    expect((await store.expiredLeases(1_000, 2)).map((r) => r.key)).toEqual(['a', 'b']);
    expect(await store.expiredLeases(1_000, 10)).toEqual([a, b, c]);

    await store.replace(a.token, { ...a, state: 'completed', token: 'a2' });
    await store.delete('b', b.token);
    await client.del(`${store.prefix}c`); // as if its TTL fired
    expect(await store.expiredLeases(1_000, 10)).toEqual([]);
    expect(await client.zrange(store.indexKey, '0', '-1')).toEqual(['live']);
  });

  it('purges index entries whose record is gone or whose retention ended, up to the limit', async () => {
    const store = freshStore();
    const at = (leaseUntil: number, expiresAt: number) => ({
      leaseUntil,
      expiresAt,
      createdAt: 0,
      updatedAt: 0,
    });
    for (let i = 0; i < 5; i++) await store.insertIfAbsent(record(`gone-${i}`, at(100 + i, 60_000)));
    for (let i = 0; i < 5; i++) await client.del(`${store.prefix}gone-${i}`);
    // Retention ended by the caller's clock although Redis still holds it (clock skew).
    await store.insertIfAbsent(record('skewed', at(150, 5_000)));
    // Lease expired, retention not: kept.
    await store.insertIfAbsent(record('resumable', at(120, 60_000)));
    expect(await store.purgeExpired(10_000, 4)).toBe(4);
    expect(await store.purgeExpired(10_000, 10)).toBe(2);
    expect(await store.purgeExpired(10_000, 10)).toBe(0);
    expect(await store.get('skewed')).toBeUndefined();
    expect((await store.expiredLeases(10_000, 10)).map((r) => r.key)).toEqual(['resumable']);
  });

  it('replays a completed key through the engine', async () => {
    const store = freshStore();
    const engine = idempotency({ store });
    const request = { key: 'k1', principal: 'u', method: 'POST', route: '/x', payload: { a: 1 } };
    const decision = await engine.begin(request);
    if (decision.kind !== 'execute') throw new Error('expected to execute');
    await expect(engine.begin(request)).rejects.toMatchObject({ status: 409 });
    const response = { status: 201, headers: {}, body: 'made' };
    await decision.lease.complete(response);
    expect(await engine.begin(request)).toEqual({ kind: 'replay', response });
    expect(await client.zcard(store.indexKey)).toBe(0);
  });

  it('runs each key once when two OS processes race over the same 100 keys', async () => {
    const prefix = `keel:test:${randomUUID().slice(0, 8)}:`;
    prefixes.push(prefix);
    const outcomes = await raceTwoProcesses(['redis', url, prefix, '100', '2']);
    for (const o of outcomes) {
      expect(o.errors).toEqual([]);
      expect(o.executed + o.replayed + o.conflicted).toBe(200);
    }
    const counters = await client.mget(...Array.from({ length: 100 }, (_, i) => `${prefix}effect:key-${i}`));
    expect(counters.every((n) => n === '1')).toBe(true);
    expect(outcomes.reduce((sum, o) => sum + o.executed, 0)).toBe(100);
    expect(outcomes.every((o) => o.executed > 0)).toBe(true);
    expect(await client.zcard(`${prefix}:in-flight`)).toBe(0);
  }, 60_000);
});
