/**
 * The behaviour every outbox store must have, run against each adapter on a real database: appends
 * commit and roll back with the business write, claims respect append order, per-aggregate order,
 * leases and retry times, and the relay's writes are fenced by the claim.
 */
import type { TransactionHandle } from 'keel/idempotency';
import type { OutboxStore } from 'keel/outbox';
import { InvalidOutboxEventError, OutboxPayloadError } from 'keel/outbox';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

export interface ManualClock {
  now(): number;
  set(ms: number): void;
  advance(ms: number): void;
}

export function manualClock(start = 1_750_000_000_000): ManualClock {
  let current = start;
  return {
    now: () => current,
    set: (ms) => {
      current = ms;
    },
    advance: (ms) => {
      current += ms;
    },
  };
}

/** A store over a fresh table, and the transaction helpers of its database. */
export interface OutboxHarness {
  readonly store: OutboxStore;
  readonly clock: ManualClock;
  /**
   * The store lets one relay claim at a time (SQLite's lease on the whole outbox): a second relay's
   * claims return nothing until the first one's lease runs out, so the tests claim again with the
   * first one. Otherwise the claims are per event and a second relay claims beside the first.
   */
  readonly oneRelayAtATime?: boolean;
  /** Runs `work` in a transaction together with one business row; commits unless it throws. */
  transaction<T>(
    work: (tx: TransactionHandle) => Promise<T>,
    businessId: string,
    rollback?: boolean,
  ): Promise<T>;
  businessRows(): Promise<number>;
  dispose(): Promise<void>;
}

const event = (aggregateId: string, type = 'thing.happened', payload: unknown = { n: 1 }) => ({
  type,
  aggregateType: 'thing',
  aggregateId,
  payload,
});

export function outboxStoreConformance(name: string, create: () => Promise<OutboxHarness>): void {
  describe(`${name} outbox store`, () => {
    let h: OutboxHarness;
    beforeEach(async () => {
      h = await create();
    });
    afterEach(async () => {
      await h.dispose();
    });

    /** The relay that claims after `r1`: `r1` itself where only one relay can claim at a time. */
    const nextRelay = () => (h.oneRelayAtATime ? 'r1' : 'r2');

    async function append(...events: ReturnType<typeof event>[]) {
      return h.transaction((tx) => h.store.append(tx, events), `b-${Math.random()}`);
    }

    it('commits appended events with the business row', async () => {
      const [stored] = await h.transaction(
        (tx) => h.store.append(tx, { ...event('a'), headers: { 'x-request-id': 'r1' } }),
        'b1',
      );
      expect(await h.businessRows()).toBe(1);
      const found = await h.store.find({});
      expect(found).toHaveLength(1);
      expect(found[0]).toMatchObject({
        id: stored?.id,
        type: 'thing.happened',
        aggregateType: 'thing',
        aggregateId: 'a',
        payload: { n: 1 },
        headers: { 'x-request-id': 'r1' },
        createdAt: h.clock.now(),
        publishedAt: null,
        attempts: 0,
        lastError: null,
      });
      expect(stored?.id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7/);
    });

    it('rolls appended events back with the business row', async () => {
      await expect(
        h.transaction(async (tx) => {
          await h.store.append(tx, event('a'));
          throw new Error('business rule failed');
        }, 'b1'),
      ).rejects.toThrow('business rule failed');
      expect(await h.businessRows()).toBe(0);
      expect(await h.store.find({})).toEqual([]);
    });

    it('writes nothing when one event of a batch is invalid', async () => {
      await expect(
        append(event('a'), event('b', 'thing.happened', { at: new Date() }), event('c')),
      ).rejects.toBeInstanceOf(OutboxPayloadError);
      await expect(append(event('a'), { ...event('b'), aggregateId: '' })).rejects.toBeInstanceOf(
        InvalidOutboxEventError,
      );
      expect(await h.store.find({})).toEqual([]);
    });

    it('keeps payloads exactly as appended', async () => {
      const payload = { z: 1, a: [1.5, 'é😀', null, { nested: true }], big: 2 ** 53 - 1, neg: -0.25 };
      await append(event('a', 'thing.happened', payload));
      const [claimed] = await h.store.claim('r1', 10, 1_000);
      expect(claimed?.payload).toEqual(payload);
      expect(JSON.stringify(claimed?.payload)).toBe(JSON.stringify(payload));
    });

    it('claims oldest first and never an event behind an unclaimable one of its aggregate', async () => {
      await append(event('a'), event('b'), event('a'), event('c'));
      const first = await h.store.claim('r1', 2, 1_000);
      expect(first.map((e) => e.aggregateId)).toEqual(['a', 'b']);
      // a#2 waits behind a#1 (claimed by r1, not yet published); c is free.
      const second = await h.store.claim(nextRelay(), 10, 1_000);
      expect(second.map((e) => e.aggregateId)).toEqual(['c']);
      expect(second[0]?.attempts).toBe(0);
    });

    it('claims a whole chain of one aggregate into one batch', async () => {
      await append(event('a'), event('a'), event('a'));
      const claimed = await h.store.claim('r1', 10, 1_000);
      expect(claimed.map((e) => e.aggregateId)).toEqual(['a', 'a', 'a']);
      expect(await h.store.claim('r2', 10, 1_000)).toEqual([]);
    });

    it('lets another relay take events over once the lease has run out', async () => {
      const [stored] = await append(event('a'));
      await h.store.claim('r1', 10, 1_000);
      h.clock.advance(999);
      expect(await h.store.claim('r2', 10, 1_000)).toEqual([]);
      h.clock.advance(1);
      const taken = await h.store.claim('r2', 10, 1_000);
      expect(taken.map((e) => e.id)).toEqual([stored?.id]);
      // The first relay's late mark is fenced off: the event is r2's now.
      await h.store.markPublished('r1', [stored?.id as string]);
      expect((await h.store.find({}))[0]?.publishedAt).toBeNull();
      await h.store.markPublished('r2', [stored?.id as string]);
      expect((await h.store.find({}))[0]?.publishedAt).toBe(h.clock.now());
    });

    it('marks a batch published in one call', async () => {
      await append(event('a'), event('b'), event('c'));
      const claimed = await h.store.claim('r1', 10, 1_000);
      await h.store.markPublished(
        'r1',
        claimed.map((e) => e.id),
      );
      expect(await h.store.find({ published: false })).toEqual([]);
      expect(await h.store.claim('r1', 10, 1_000)).toEqual([]);
      expect(await h.store.gauges()).toEqual({ unpublished: 0, oldestUnpublishedAgeMs: 0 });
    });

    it('counts a released attempt and holds the event and its successors until the retry time', async () => {
      const [a1, a2] = await append(event('a'), event('a'));
      await h.store.claim('r1', 10, 1_000);
      await h.store.release('r1', a1?.id as string, 'Error: broker down', h.clock.now() + 500);
      await h.store.unclaim('r1', [a2?.id as string]);
      expect(await h.store.claim(nextRelay(), 10, 1_000)).toEqual([]);
      h.clock.advance(500);
      const again = await h.store.claim(nextRelay(), 10, 1_000);
      expect(again.map((e) => [e.id, e.attempts])).toEqual([
        [a1?.id, 1],
        [a2?.id, 0],
      ]);
      const [stored] = await h.store.find({ ids: [a1?.id as string] });
      expect(stored).toMatchObject({ attempts: 1, lastError: 'Error: broker down' });
    });

    it('ignores release and unclaim by a relay that does not hold the claim', async () => {
      const [a1] = await append(event('a'));
      await h.store.claim('r1', 10, 1_000);
      await h.store.release('r2', a1?.id as string, 'nope', h.clock.now() + 10_000);
      await h.store.unclaim('r2', [a1?.id as string]);
      expect(await h.store.claim('r2', 10, 1_000)).toEqual([]);
      expect((await h.store.find({}))[0]?.attempts).toBe(0);
    });

    it('requeues published events under their ids, and only published ones', async () => {
      const [a1, b1] = await append(event('a'), event('b'));
      await h.store.claim('r1', 1, 1_000);
      await h.store.markPublished('r1', [a1?.id as string]);
      expect(await h.store.requeue([a1?.id as string, b1?.id as string, 'missing'])).toBe(1);
      const claimed = await h.store.claim('r1', 10, 1_000);
      expect(claimed.map((e) => e.id)).toEqual([a1?.id, b1?.id]);
    });

    it('finds by ids, type, aggregate, time and publication, oldest first', async () => {
      const [a1] = await append(event('a', 'x.created'));
      h.clock.advance(10);
      const [b1] = await append(event('b', 'x.updated'));
      h.clock.advance(10);
      const [a2] = await append(event('a', 'x.updated'));
      await h.store.claim('r1', 1, 1_000);
      await h.store.markPublished('r1', [a1?.id as string]);
      const ids = async (filter: Parameters<OutboxStore['find']>[0]) =>
        (await h.store.find(filter)).map((e) => e.id);
      expect(await ids({})).toEqual([a1?.id, b1?.id, a2?.id]);
      expect(await ids({ ids: [a2?.id as string, a1?.id as string] })).toEqual([a1?.id, a2?.id]);
      expect(await ids({ type: 'x.updated' })).toEqual([b1?.id, a2?.id]);
      expect(await ids({ aggregateType: 'thing', aggregateId: 'a' })).toEqual([a1?.id, a2?.id]);
      expect(await ids({ since: h.clock.now() - 10 })).toEqual([b1?.id, a2?.id]);
      expect(await ids({ until: h.clock.now() - 10 })).toEqual([a1?.id]);
      expect(await ids({ published: true })).toEqual([a1?.id]);
      expect(await ids({ published: false, limit: 1 })).toEqual([b1?.id]);
      await expect(h.store.find({ limit: 0 })).rejects.toThrow(/limit/);
    });

    it('prunes published events older than the cut-off, in bounded batches', async () => {
      const stored = await append(event('a'), event('b'), event('c'), event('d'));
      await h.store.claim('r1', 3, 1_000);
      await h.store.markPublished(
        'r1',
        stored.slice(0, 3).map((e) => e.id),
      );
      h.clock.advance(1_000);
      expect(await h.store.prunePublished(h.clock.now() - 2_000, 10)).toBe(0);
      expect(await h.store.prunePublished(h.clock.now(), 2)).toBe(2);
      expect(await h.store.prunePublished(h.clock.now(), 2)).toBe(1);
      expect((await h.store.find({})).map((e) => e.aggregateId)).toEqual(['d']);
    });

    it('reports the unpublished count and the oldest unpublished age', async () => {
      await append(event('a'));
      h.clock.advance(250);
      await append(event('b'));
      h.clock.advance(50);
      expect(await h.store.gauges()).toEqual({ unpublished: 2, oldestUnpublishedAgeMs: 300 });
    });

    it('resolves appended() when its signal aborts', async () => {
      const controller = new AbortController();
      const waiting = h.store.appended(controller.signal);
      controller.abort();
      await expect(waiting).resolves.toBeUndefined();
    });

    it('rejects bad claim arguments', async () => {
      await expect(h.store.claim('', 10, 1_000)).rejects.toThrow(/relayId/);
      await expect(h.store.claim('r1', 0, 1_000)).rejects.toThrow(/limit/);
      await expect(h.store.claim('r1', 10, 0)).rejects.toThrow(/leaseMs/);
    });
  });
}
