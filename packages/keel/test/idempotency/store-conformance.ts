/**
 * The conformance suite every idempotency store passes: each primitive on its own, the primitives
 * under real concurrency, and the engine driven over the store. Register it from a store's test file:
 *
 *   runStoreConformance('memory', async () => ({ store: memoryStore(), close: async () => {} }));
 *
 * `makeStore` is called once per test; the sweeps (`expiredLeases`, `purgeExpired`) must see only
 * what that test wrote, so a shared database should hand out a fresh table or namespace each time.
 * Keys carry a random per-run prefix, so two stores or two runs never collide anyway.
 */
import { randomUUID } from 'node:crypto';
import {
  type IdempotencyEngine,
  IdempotencyError,
  IdempotencyKeyInFlightError,
  IdempotencyLeaseLostError,
  type IdempotencyRecord,
  type IdempotencyStore,
  idempotency,
  type StoredResponse,
} from 'keel/idempotency';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { recordFixture } from './record-fixture.ts';

export interface StoreUnderTest {
  store: IdempotencyStore;
  close(): Promise<void>;
}

const T0 = 1_700_000_000_000;

/** Registers the conformance suite for one store. */
export function runStoreConformance(name: string, makeStore: () => Promise<StoreUnderTest>): void {
  describe(`${name} store conformance`, () => {
    const prefix = `conf-${randomUUID().slice(0, 8)}`;
    let counter = 0;
    const uniqueKey = (label: string) => `${prefix}:${label}:${++counter}`;
    let subject: StoreUnderTest | undefined;
    let store: IdempotencyStore;

    beforeEach(async () => {
      subject = undefined;
      subject = await makeStore();
      store = subject.store;
    });
    afterEach(async () => {
      await subject?.close();
    });

    const record = (key: string, overrides: Partial<IdempotencyRecord> = {}) =>
      recordFixture(key, overrides, T0);

    describe('primitives', () => {
      it('returns undefined for a key that was never stored', async () => {
        expect(await store.get(uniqueKey('absent'))).toBeUndefined();
      });

      it('inserts a record once only and keeps the first one', async () => {
        const key = uniqueKey('insert');
        const first = record(key);
        expect(await store.insertIfAbsent(first)).toBe(true);
        expect(await store.insertIfAbsent(record(key, { fingerprint: 'fp-2' }))).toBe(false);
        expect(await store.get(key)).toEqual(first);
      });

      it('replaces a record only when the current token is presented', async () => {
        const key = uniqueKey('replace');
        const first = record(key);
        await store.insertIfAbsent(first);
        const second = record(key, { token: randomUUID(), recoveryPoint: 'charged', updatedAt: T0 + 5 });
        expect(await store.replace(first.token, second)).toBe(true);
        expect(await store.get(key)).toEqual(second);

        // The first token is stale now: a fenced-out writer cannot overwrite the record.
        const stale = record(key, { state: 'completed', updatedAt: T0 + 9 });
        expect(await store.replace(first.token, stale)).toBe(false);
        expect(await store.get(key)).toEqual(second);
      });

      it('does not create a record by replacing a key that is absent', async () => {
        const key = uniqueKey('replace-absent');
        expect(await store.replace(randomUUID(), record(key))).toBe(false);
        expect(await store.get(key)).toBeUndefined();
      });

      it('deletes a record only with its current token', async () => {
        const key = uniqueKey('delete');
        const held = record(key);
        await store.insertIfAbsent(held);
        expect(await store.delete(key, randomUUID())).toBe(false);
        expect(await store.get(key)).toEqual(held);
        expect(await store.delete(key, held.token)).toBe(true);
        expect(await store.get(key)).toBeUndefined();
        expect(await store.delete(key, held.token)).toBe(false);
      });

      it('round-trips every field of a completed record', async () => {
        const key = uniqueKey('round-trip');
        const response: StoredResponse = {
          status: 201,
          headers: { 'content-type': 'application/json; charset=utf-8', location: '/charges/ch_1' },
          body: '{"id":"ch_1","note":"café ✓ \\"quoted\\"","lines":"a\\nb"}',
        };
        const full = record(key, {
          fingerprint: 'a'.repeat(64),
          state: 'completed',
          leaseUntil: T0 + 1,
          expiresAt: T0 + 2,
          sequence: Number.MAX_SAFE_INTEGER,
          response,
          recoveryPoint: 'receipt-sent',
          phases: {
            charged: { id: 'ch_1', amount: 1999, tags: ['a', null, 3.5], nested: { ok: true } },
            'receipt-sent': null,
            unicode: 'żółw',
          },
          createdAt: T0 - 10,
          updatedAt: T0 + 3,
        });
        await store.insertIfAbsent(full);
        expect(await store.get(key)).toEqual(full);
      });

      it('round-trips a null body, empty headers, sequence 0 and a null sequence distinctly', async () => {
        const zero = record(uniqueKey('seq-zero'), {
          sequence: 0,
          state: 'completed',
          response: { status: 204, headers: {}, body: null },
        });
        const none = record(uniqueKey('seq-null'), { sequence: null });
        await store.insertIfAbsent(zero);
        await store.insertIfAbsent(none);
        const [gotZero, gotNone] = [await store.get(zero.key), await store.get(none.key)];
        expect(gotZero).toEqual(zero);
        expect(gotZero?.sequence).toBe(0);
        expect(gotZero?.response?.body).toBeNull();
        expect(gotNone?.sequence).toBeNull();
        expect(gotNone?.response).toBeNull();
        expect(gotNone?.recoveryPoint).toBeNull();
      });

      it('hands out copies, so mutating a read or the inserted object changes nothing stored', async () => {
        const key = uniqueKey('copy');
        const original = record(key, {
          state: 'completed',
          response: { status: 200, headers: { 'content-type': 'text/plain' }, body: 'hi' },
          phases: { step: { n: 1 } },
        });
        const expected = structuredClone(original);
        await store.insertIfAbsent(original);
        (original.phases as Record<string, unknown>).step = 'mutated after insert';

        const read = (await store.get(key)) as IdempotencyRecord;
        (read.phases as Record<string, unknown>).extra = 1;
        (read.response?.headers as Record<string, string>)['x-injected'] = 'yes';
        ((read.phases as Record<string, { n: number }>).step as { n: number }).n = 99;

        expect(await store.get(key)).toEqual(expected);
      });

      it('lists only in-flight records whose lease ended, oldest first, up to the limit', async () => {
        const now = T0 + 100_000;
        const expired = [300, 100, 200].map((ago) =>
          record(uniqueKey(`lease-${ago}`), { leaseUntil: now - ago }),
        );
        for (const r of expired) await store.insertIfAbsent(r);
        await store.insertIfAbsent(record(uniqueKey('lease-live'), { leaseUntil: now + 1_000 }));
        await store.insertIfAbsent(record(uniqueKey('lease-at-now'), { leaseUntil: now }));
        await store.insertIfAbsent(
          record(uniqueKey('lease-completed'), {
            state: 'completed',
            leaseUntil: now - 500,
            response: { status: 200, headers: {}, body: null },
          }),
        );

        const all = await store.expiredLeases(now, 10);
        expect(all.map((r) => r.key)).toEqual(
          [...expired].sort((a, b) => a.leaseUntil - b.leaseUntil).map((r) => r.key),
        );
        expect(all[0]).toEqual(expired[0]);
        const limited = await store.expiredLeases(now, 2);
        expect(limited.map((r) => r.leaseUntil)).toEqual([now - 300, now - 200]);
        expect(await store.expiredLeases(now, 0)).toEqual([]);
        expect(await store.expiredLeases(now - 1_000, 10)).toEqual([]);
      });

      it('purges only records whose retention ended, at most limit per call', async () => {
        const now = T0 + 200_000;
        const expired = [1, 2, 3].map((i) => record(uniqueKey(`purge-old-${i}`), { expiresAt: now - i }));
        const kept = [
          record(uniqueKey('purge-future'), { expiresAt: now + 1 }),
          record(uniqueKey('purge-at-now'), { expiresAt: now }),
          // An in-flight record is purged by retention alone; its lease is irrelevant here.
        ];
        for (const r of [...expired, ...kept]) await store.insertIfAbsent(r);

        expect(await store.purgeExpired(now, 2)).toBe(2);
        const left = await Promise.all(expired.map((r) => store.get(r.key)));
        expect(left.filter((r) => r !== undefined)).toHaveLength(1);
        expect(await store.purgeExpired(now, 10)).toBe(1);
        expect(await store.purgeExpired(now, 10)).toBe(0);
        expect(await store.purgeExpired(now, 0)).toBe(0);
        for (const r of expired) expect(await store.get(r.key)).toBeUndefined();
        for (const r of kept) expect(await store.get(r.key)).toEqual(r);
      });
    });

    describe('concurrency', () => {
      it('lets exactly one of 50 parallel inserts of one key win', async () => {
        const key = uniqueKey('race-insert');
        const candidates = Array.from({ length: 50 }, () => record(key));
        const results = await Promise.all(candidates.map((r) => store.insertIfAbsent(r)));
        expect(results.filter(Boolean)).toHaveLength(1);
        const winner = candidates[results.indexOf(true)];
        expect((await store.get(key))?.token).toBe(winner?.token);
      });

      it('lets exactly one of 50 parallel replaces with the same expected token win', async () => {
        const key = uniqueKey('race-replace');
        const held = record(key);
        await store.insertIfAbsent(held);
        const candidates = Array.from({ length: 50 }, () => record(key, { token: randomUUID() }));
        const results = await Promise.all(candidates.map((r) => store.replace(held.token, r)));
        expect(results.filter(Boolean)).toHaveLength(1);
        const winner = candidates[results.indexOf(true)];
        expect((await store.get(key))?.token).toBe(winner?.token);
      });

      it('lets exactly one of 50 parallel deletes and replaces with the same token win', async () => {
        const key = uniqueKey('race-mixed');
        const held = record(key);
        await store.insertIfAbsent(held);
        const results = await Promise.all(
          Array.from({ length: 50 }, (_, i) =>
            i % 2 === 0 ? store.delete(key, held.token) : store.replace(held.token, record(key)),
          ),
        );
        expect(results.filter(Boolean)).toHaveLength(1);
      });
    });

    describe('engine over the store', () => {
      let t = T0;
      const clock = { now: () => t };
      const response: StoredResponse = {
        status: 201,
        headers: { 'content-type': 'application/json' },
        body: '{"charged":true}',
      };
      function engine(): IdempotencyEngine {
        return idempotency({ store, clock, leaseMs: 1_000, retentionMs: 60_000 });
      }
      function request(key: string) {
        return { key, principal: 'user-1', method: 'POST', route: '/charges', payload: { amount: 1999 } };
      }

      beforeEach(() => {
        t = T0 + Math.floor(Math.random() * 1_000_000);
      });

      it('runs the handler once for 200 concurrent requests with one key; the rest get 409 or a replay', async () => {
        const idem = engine();
        const key = uniqueKey('engine-race');
        let runs = 0;
        const outcomes = await Promise.all(
          Array.from({ length: 200 }, async () => {
            try {
              const decision = await idem.begin(request(key));
              if (decision.kind === 'replay') return 'replay';
              if (decision.kind !== 'execute') return decision.kind;
              runs++;
              await new Promise((resolve) => setTimeout(resolve, 5));
              await decision.lease.complete(response);
              return 'execute';
            } catch (error) {
              if (error instanceof IdempotencyKeyInFlightError && error.status === 409) return 'in-flight';
              return `error: ${String(error)}`;
            }
          }),
        );
        expect(runs).toBe(1);
        expect(outcomes.filter((o) => o === 'execute')).toHaveLength(1);
        expect(outcomes.filter((o) => o !== 'execute' && o !== 'in-flight' && o !== 'replay')).toEqual([]);

        const after = await idem.begin(request(key));
        expect(after).toEqual({ kind: 'replay', response });
      });

      it('takes over an expired lease at its recovery point and fences the old holder out', async () => {
        const idem = engine();
        const key = uniqueKey('engine-takeover');
        const first = await idem.begin(request(key));
        if (first.kind !== 'execute') throw new Error(`expected execute, got ${first.kind}`);
        await first.lease.checkpoint('charged', { chargeId: 'ch_1' });

        t += 999;
        await expect(idem.begin(request(key))).rejects.toBeInstanceOf(IdempotencyKeyInFlightError);
        t += 2; // the renewed lease (1000 ms from the checkpoint) has now ended

        const second = await idem.begin(request(key));
        if (second.kind !== 'execute') throw new Error(`expected execute, got ${second.kind}`);
        expect(second.lease.resumed).toBe(true);
        expect(second.lease.recoveryPoint).toBe('charged');
        expect(second.lease.phases).toEqual({ charged: { chargeId: 'ch_1' } });

        await expect(first.lease.complete(response)).rejects.toBeInstanceOf(IdempotencyLeaseLostError);
        await expect(first.lease.checkpoint('late')).rejects.toBeInstanceOf(IdempotencyLeaseLostError);
        await expect(first.lease.release()).rejects.toBeInstanceOf(IdempotencyLeaseLostError);

        const resumedResponse = { ...response, body: '{"resumed":true}' };
        await second.lease.complete(resumedResponse);
        expect(await idem.begin(request(key))).toEqual({ kind: 'replay', response: resumedResponse });
      });

      it('refuses a reused key with another payload with a problem, and stores nothing new', async () => {
        const idem = engine();
        const key = uniqueKey('engine-mismatch');
        const first = await idem.begin(request(key));
        if (first.kind !== 'execute') throw new Error('expected execute');
        await first.lease.complete(response);
        const error = await idem.begin({ ...request(key), payload: { amount: 1 } }).catch((e: unknown) => e);
        expect(error).toBeInstanceOf(IdempotencyError);
        expect((error as IdempotencyError).status).toBe(422);
      });
    });
  });
}
