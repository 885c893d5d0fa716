import { DatabaseSync } from 'node:sqlite';
import {
  type InProcessTransportOptions,
  inProcessTransport,
  type OutboxEvent,
  type OutboxStore,
  type OutboxTelemetryEvent,
  outboxRelay,
} from 'keel/outbox';
import { sqliteOutbox } from 'keel/sqlite';
import { describe, expect, it } from 'vitest';
import { overriding } from '../support/overriding.ts';
import { waitFor } from './broker-test-kit.ts';

function setup(transportOptions: InProcessTransportOptions = {}) {
  const db = new DatabaseSync(':memory:');
  const outbox = sqliteOutbox({ db });
  const transport = inProcessTransport(transportOptions);
  const received: OutboxEvent[] = [];
  const arrived = (count: number) =>
    new Promise<void>((resolve) => {
      const check = () => (received.length >= count ? resolve() : setTimeout(check, 5));
      check();
    });
  const append = async (aggregateId: string, n: number) => {
    db.exec('BEGIN');
    await outbox.append(db, { type: 'step', aggregateType: 'order', aggregateId, payload: { n } });
    db.exec('COMMIT');
  };
  return { db, outbox, transport, received, arrived, append };
}

describe('outbox relay over sqlite and the in-process transport', () => {
  it('claims and publishes the next batch while the mark of the one before is under way, and stop() waits for the last mark', async () => {
    const { outbox, transport, received, arrived, append } = setup();
    await transport.subscribe({ group: 'g', prefetch: 1_000 }, async (delivery) => {
      received.push(delivery.event);
      await delivery.ack();
    });
    for (let n = 0; n < 30; n++) await append(`agg-${n}`, n);
    let release = () => {};
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    let marks = 0;
    let marking = false;
    let claimsDuringMark = 0;
    const store = overriding(outbox, {
      claim: (relayId, limit, leaseMs) => {
        if (marking) claimsDuringMark++;
        return outbox.claim(relayId, limit, leaseMs);
      },
      markPublished: async (relayId, ids) => {
        marks++;
        marking = true;
        // The first mark waits for the test; the others take a while, as a remote store's do.
        await (marks === 1 ? gate : new Promise((resolve) => setTimeout(resolve, 30)));
        await outbox.markPublished(relayId, ids);
        marking = false;
      },
    });
    const relay = outboxRelay({ store, transport, batchSize: 10 });
    relay.start();
    // All three batches go out while the first mark waits: each batch waits only for the mark
    // before its own, and publishes first.
    await waitFor(() => received.length === 30, 'every batch published beside the first mark');
    expect(claimsDuringMark).toBeGreaterThan(0);
    expect(await outbox.gauges()).toMatchObject({ unpublished: 30 });
    release();
    await arrived(30);
    await relay.stop();
    // Every mark landed before stop() returned.
    expect(await relay.gauges()).toEqual({ unpublished: 0, oldestUnpublishedAgeMs: 0 });
    expect(received).toHaveLength(30);
  });

  it('claims again once a mark lands, for the later events of its aggregates it held back, without waiting for the poll', async () => {
    const { outbox, transport, received, arrived, append } = setup();
    await transport.subscribe({ group: 'g' }, async (delivery) => {
      received.push(delivery.event);
      await delivery.ack();
    });
    for (let n = 0; n < 3; n++) await append('a', n);
    const store = overriding(outbox, {
      // No wake-up from appends: only the relay's own loop can find the held-back events.
      appended: (signal) =>
        new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve(), { once: true })),
      markPublished: async (relayId, ids) => {
        await new Promise((resolve) => setTimeout(resolve, 20));
        await outbox.markPublished(relayId, ids);
      },
    });
    const relay = outboxRelay({ store, transport, batchSize: 1, pollIntervalMs: 60_000 });
    relay.start();
    await arrived(3);
    await relay.stop();
    expect(received.map((event) => (event.payload as { n: number }).n)).toEqual([0, 1, 2]);
  });

  it('publishes each aggregate in append order while aggregates run concurrently', async () => {
    const { outbox, transport, received, arrived, append } = setup();
    await transport.subscribe({ group: 'g' }, async (delivery) => {
      received.push(delivery.event);
      await delivery.ack();
    });
    // Slow, uneven publishes: an aggregate's later event would overtake its earlier one if allowed.
    transport.setBeforePublish(() => new Promise((resolve) => setTimeout(resolve, Math.random() * 4)));
    for (let n = 0; n < 20; n++) for (const id of ['a', 'b', 'c']) await append(id, n);
    const relay = outboxRelay({ store: outbox, transport, batchSize: 7 });
    relay.start();
    await arrived(60);
    await relay.stop();
    for (const id of ['a', 'b', 'c']) {
      const sequence = received
        .filter((e) => e.aggregateId === id)
        .map((e) => (e.payload as { n: number }).n);
      expect(sequence).toEqual(Array.from({ length: 20 }, (_, n) => n));
    }
    expect(await relay.gauges()).toEqual({ unpublished: 0, oldestUnpublishedAgeMs: 0 });
  });

  it('claims the next batch beside the one in flight and still keeps each aggregate in order', async () => {
    const { outbox, transport, received, arrived, append } = setup();
    await transport.subscribe({ group: 'g', prefetch: 1_000 }, async (delivery) => {
      received.push(delivery.event);
      await delivery.ack();
    });
    let publishing = 0;
    transport.setBeforePublish(async () => {
      publishing++;
      await new Promise((resolve) => setTimeout(resolve, Math.random() * 3));
      publishing--;
    });
    const aggregates = Array.from({ length: 12 }, (_, i) => `agg-${i}`);
    for (let n = 0; n < 10; n++) for (const id of aggregates) await append(id, n);
    // The real store, with a record of how many publishes were under way at each claim.
    const publishesAtClaim: number[] = [];
    const store: OutboxStore = {
      append: (tx, events) => outbox.append(tx, events),
      claim: (relayId, limit, leaseMs) => {
        publishesAtClaim.push(publishing);
        return outbox.claim(relayId, limit, leaseMs);
      },
      markPublished: (relayId, ids) => outbox.markPublished(relayId, ids),
      release: (relayId, id, error, retryAt) => outbox.release(relayId, id, error, retryAt),
      unclaim: (relayId, ids) => outbox.unclaim(relayId, ids),
      find: (filter) => outbox.find(filter),
      requeue: (ids) => outbox.requeue(ids),
      prunePublished: (before, limit) => outbox.prunePublished(before, limit),
      gauges: () => outbox.gauges(),
      appended: (signal) => outbox.appended(signal),
    };
    const relay = outboxRelay({ store, transport, batchSize: 10, concurrency: 4 });
    relay.start();
    await arrived(120);
    await relay.stop();
    expect(publishesAtClaim.some((count) => count > 0)).toBe(true);
    for (const id of aggregates) {
      const sequence = received
        .filter((e) => e.aggregateId === id)
        .map((e) => (e.payload as { n: number }).n);
      expect(sequence).toEqual(Array.from({ length: 10 }, (_, n) => n));
    }
    expect(received).toHaveLength(120);
  });

  it('stops an aggregate at its first failure and retries it before its successors', async () => {
    const { outbox, transport, received, append } = setup();
    await transport.subscribe({ group: 'g' }, async (d) => {
      received.push(d.event);
      await d.ack();
    });
    await append('a', 0);
    await append('a', 1);
    await append('b', 0);
    let failNext = true;
    transport.setBeforePublish((event) => {
      if (event.aggregateId === 'a' && failNext) {
        failNext = false;
        throw new Error('nack');
      }
    });
    const telemetry: OutboxTelemetryEvent[] = [];
    const relay = outboxRelay({
      store: outbox,
      transport,
      backoff: () => 0,
      telemetry: { emit: (event) => telemetry.push(event) },
    });
    expect(await relay.runOnce()).toEqual({ claimed: 3, published: 1, failed: 1, deferred: 1 });
    expect(await relay.runOnce()).toEqual({ claimed: 2, published: 2, failed: 0, deferred: 0 });
    const stored = await outbox.find({ aggregateId: 'a' });
    expect(stored.map((e) => e.attempts)).toEqual([1, 0]);
    expect(telemetry.filter((e) => e.type === 'publish-failed')).toMatchObject([
      { aggregateId: 'a', attempt: 1, transport: 'in-process' },
    ]);
    expect(telemetry.filter((e) => e.type === 'published')).toHaveLength(3);
  });

  it('lets events wait while the broker is down and delivers each once when it returns', async () => {
    const { outbox, transport, received, arrived, append } = setup();
    await transport.subscribe({ group: 'g' }, async (d) => {
      received.push(d.event);
      await d.ack();
    });
    let down = true;
    let refused = 0;
    transport.setBeforePublish(() => {
      if (down) {
        refused++;
        throw new Error('broker unavailable');
      }
    });
    const relay = outboxRelay({
      store: outbox,
      transport,
      pollIntervalMs: 20,
      backoff: (attempt) => Math.min(200, 10 * 2 ** attempt),
    });
    relay.start();
    for (let n = 0; n < 30; n++) await append(`agg-${n % 4}`, n);
    await new Promise((resolve) => setTimeout(resolve, 300));
    const refusedWhileDown = refused;
    expect(received).toEqual([]);
    expect((await relay.gauges()).unpublished).toBe(30);
    // Back-off, not a tight loop: a handful of tries per aggregate chain in 300 ms.
    expect(refusedWhileDown).toBeLessThan(60);
    down = false;
    await arrived(30);
    await relay.stop();
    const ids = received.map((e) => e.id);
    expect(new Set(ids).size).toBe(30);
    expect(ids).toHaveLength(30);
    expect((await relay.gauges()).unpublished).toBe(0);
  });

  it('wakes on a same-process commit instead of waiting for the poll', async () => {
    const { outbox, transport, received, arrived, append } = setup();
    await transport.subscribe({ group: 'g' }, async (d) => {
      received.push(d.event);
      await d.ack();
    });
    // A poll interval far beyond the test timeout: only the wake-up can deliver in time.
    const relay = outboxRelay({ store: outbox, transport, pollIntervalMs: 600_000 });
    relay.start();
    await new Promise((resolve) => setTimeout(resolve, 20));
    await append('a', 1);
    await arrived(1);
    await append('a', 2);
    await arrived(2);
    await relay.stop();
    expect(relay.running).toBe(false);
  });

  it.each([
    [
      'throws synchronously',
      () => {
        throw new Error('wake-up broken');
      },
    ],
    ['returns no promise', () => undefined as unknown as Promise<void>],
  ])('keeps relaying by polling when the store append wake-up %s, and reports it', async (_, appended) => {
    const { outbox, transport, received, arrived, append } = setup();
    await transport.subscribe({ group: 'g' }, async (d) => {
      received.push(d.event);
      await d.ack();
    });
    const store: OutboxStore = {
      append: (tx, events) => outbox.append(tx, events),
      claim: (relayId, limit, leaseMs) => outbox.claim(relayId, limit, leaseMs),
      markPublished: (relayId, ids) => outbox.markPublished(relayId, ids),
      release: (relayId, id, error, retryAt) => outbox.release(relayId, id, error, retryAt),
      unclaim: (relayId, ids) => outbox.unclaim(relayId, ids),
      find: (filter) => outbox.find(filter),
      requeue: (ids) => outbox.requeue(ids),
      prunePublished: (before, limit) => outbox.prunePublished(before, limit),
      gauges: () => outbox.gauges(),
      appended,
    };
    const errors: unknown[] = [];
    const relay = outboxRelay({
      store,
      transport,
      pollIntervalMs: 10,
      onError: (error) => errors.push(error),
    });
    relay.start();
    await append('a', 1);
    await arrived(1);
    await append('a', 2);
    await arrived(2);
    expect(relay.running).toBe(true);
    expect(relay.stats().wakeErrors).toBeGreaterThan(0);
    expect(relay.stats().storeErrors).toBe(0);
    expect(errors.length).toBe(relay.stats().wakeErrors);
    expect(String(errors[0])).toMatch(/wake-up broken|not a promise/);
    await relay.stop();
    expect(relay.running).toBe(false);
  });

  it('gives the event loop a turn between batches while it drains a backlog', async () => {
    // SQLite and the in-process transport answer within the process: every await of a batch is a
    // microtask, and a backlog drained without a turn between batches would hold up the service's
    // requests and timers, and the transport's own deliveries, until the last batch. A transport
    // that confirms on acceptance never makes the relay wait for a delivery.
    const { db, outbox, transport, received, arrived } = setup({ confirm: 'accepted' });
    await transport.subscribe({ group: 'g', prefetch: 10_000 }, async (delivery) => {
      received.push(delivery.event);
      await delivery.ack();
    });
    db.exec('BEGIN');
    await outbox.append(
      db,
      Array.from({ length: 1_000 }, (_, n) => ({
        type: 'step',
        aggregateType: 'order',
        aggregateId: `o-${n}`,
        payload: { n },
      })),
    );
    db.exec('COMMIT');
    let published = 0;
    const relay = outboxRelay({
      store: outbox,
      transport,
      batchSize: 100,
      telemetry: {
        emit: (event) => {
          if (event.type === 'published') published++;
        },
      },
    });
    const publishedWhenTimerFired = new Promise<number>((resolve) => setTimeout(() => resolve(published), 0));
    const receivedWhenTimerFired = publishedWhenTimerFired.then(() => received.length);
    relay.start();
    // A timer due at once fires within the first batches, not after the tenth; deliveries start
    // before the backlog is through.
    expect(await publishedWhenTimerFired).toBeLessThanOrEqual(200);
    expect(await receivedWhenTimerFired).toBeLessThan(1_000);
    await arrived(1_000);
    await relay.stop();
    expect(received.map((event) => (event.payload as { n: number }).n).sort((a, b) => a - b)).toEqual(
      Array.from({ length: 1_000 }, (_, n) => n),
    );
  });

  it('prunes published events past retention', async () => {
    const { outbox, transport, append } = setup();
    await transport.subscribe({ group: 'g' }, (delivery) => delivery.ack());
    await append('a', 1);
    let now = Date.now();
    const relay = outboxRelay({
      store: outbox,
      transport,
      publishedRetentionMs: 1_000,
      clock: { now: () => now },
    });
    await relay.runOnce();
    expect(await relay.prune()).toBe(0);
    now += 2_000;
    expect(await relay.prune()).toBe(1);
    expect(await outbox.find({})).toEqual([]);
  });

  it('stops all the same when giving up the lease fails, and reports the failure', async () => {
    const { outbox, transport } = setup();
    const errors: unknown[] = [];
    const failing = overriding(outbox, {
      relinquish: async () => Promise.reject(new Error('disk I/O error')),
    });
    const relay = outboxRelay({ store: failing, transport, onError: (error) => errors.push(error) });
    relay.start();
    await relay.runOnce();
    await relay.stop();
    expect(relay.running).toBe(false);
    expect(relay.stats().storeErrors).toBe(1);
    expect(errors).toEqual([new Error('disk I/O error')]);
  });

  it('validates its options at construction', () => {
    const { outbox, transport } = setup();
    expect(() => outboxRelay({ store: outbox, transport, batchSize: 0 })).toThrow(/batchSize/);
    expect(() => outboxRelay({ store: outbox, transport, leaseMs: 1.5 })).toThrow(/leaseMs/);
    expect(() => outboxRelay({ store: outbox, transport, pollIntervalMs: -1 })).toThrow(/pollIntervalMs/);
    expect(() => outboxRelay({ store: outbox, transport, relayId: '' })).toThrow(/relayId/);
    expect(() => outboxRelay({ store: {} as typeof outbox, transport })).toThrow(/store/);
    expect(() => outboxRelay({ store: outbox, transport: {} as typeof transport })).toThrow(/transport/);
  });
});
