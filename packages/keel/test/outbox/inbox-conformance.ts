/**
 * The conformance suite every inbox store passes: dedup, a handler's write committing and rolling
 * back with the inbox row, racing deliveries of one id, attempts, dead letters and pruning. Register
 * it from a store's test file with a factory that hands out a fresh store (its own tables) per test,
 * plus a way to write an "effect" through the store's transaction handle and count it afterwards.
 */
import { randomUUID } from 'node:crypto';
import { InvalidOptionError } from 'keel';
import { describeFailure, type InboxStore, type OutboxEvent } from 'keel/outbox';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

export interface InboxUnderTest<Tx> {
  inbox: InboxStore<Tx>;
  /** Writes one effect row for `key` through the transaction handle the inbox gave the handler. */
  writeEffect(tx: Tx, key: string): Promise<void>;
  /** Committed effect rows for `key`, read outside any transaction. */
  countEffects(key: string): Promise<number>;
  close(): Promise<void>;
}

/** A wall clock the test moves by hand. */
export class ManualClock {
  time: number;
  constructor(time: number) {
    this.time = time;
  }
  now(): number {
    return this.time;
  }
}

const T0 = 1_700_000_000_000;

export function eventFixture(overrides: Partial<OutboxEvent> = {}): OutboxEvent {
  return {
    id: randomUUID(),
    type: 'payment.completed',
    aggregateType: 'payment',
    aggregateId: `p-${randomUUID().slice(0, 8)}`,
    payload: { amount: 1250, currency: 'EUR', lines: [{ sku: 'a', qty: 2 }], note: 'ünïcode ✓' },
    headers: { correlationId: 'c-1', 'idempotency-key': 'k-1' },
    createdAt: T0,
    ...overrides,
  };
}

function gate(): { promise: Promise<void>; open: () => void } {
  let open = () => {};
  const promise = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { promise, open };
}

/** Registers the conformance suite for one store. */
export function runInboxConformance<Tx>(
  name: string,
  makeInbox: (clock: ManualClock) => Promise<InboxUnderTest<Tx>>,
): void {
  describe(`${name} inbox conformance`, () => {
    let subject: InboxUnderTest<Tx> | undefined;
    let inbox: InboxStore<Tx>;
    let clock: ManualClock;
    const group = 'invoices';

    beforeEach(async () => {
      subject = undefined;
      clock = new ManualClock(T0);
      subject = await makeInbox(clock);
      inbox = subject.inbox;
    });
    afterEach(async () => {
      await subject?.close();
    });

    const effectOnce = (key: string) => (tx: Tx) => (subject as InboxUnderTest<Tx>).writeEffect(tx, key);

    it('runs the work once and reports the second delivery of an id as a duplicate', async () => {
      const event = eventFixture();
      let runs = 0;
      const work = async (tx: Tx) => {
        runs++;
        await effectOnce(event.id)(tx);
        return 'done';
      };
      expect(await inbox.process(group, event.id, work)).toEqual({ duplicate: false, value: 'done' });
      expect(await inbox.process(group, event.id, work)).toEqual({ duplicate: true });
      expect(runs).toBe(1);
      expect(await subject?.countEffects(event.id)).toBe(1);
      expect(await inbox.isProcessed(group, event.id)).toBe(true);
    });

    it('keeps groups apart: the same id is processed once in each group', async () => {
      const event = eventFixture();
      expect((await inbox.process('invoices', event.id, effectOnce(event.id))).duplicate).toBe(false);
      expect((await inbox.process('emails', event.id, effectOnce(event.id))).duplicate).toBe(false);
      expect(await subject?.countEffects(event.id)).toBe(2);
    });

    it("rolls back the handler's write and the inbox row together when the work throws", async () => {
      const event = eventFixture();
      const boom = new Error('invoice service down');
      await expect(
        inbox.process(group, event.id, async (tx) => {
          await effectOnce(event.id)(tx);
          throw boom;
        }),
      ).rejects.toBe(boom);
      expect(await subject?.countEffects(event.id)).toBe(0);
      expect(await inbox.isProcessed(group, event.id)).toBe(false);

      // Nothing half-written: the next delivery runs the work as if for the first time.
      expect((await inbox.process(group, event.id, effectOnce(event.id))).duplicate).toBe(false);
      expect(await subject?.countEffects(event.id)).toBe(1);
    });

    it('gives racing deliveries of one id exactly one effect, and none of them an error', async () => {
      const event = eventFixture();
      const results = await Promise.all(
        Array.from({ length: 12 }, () =>
          inbox.process(group, event.id, async (tx) => {
            await effectOnce(event.id)(tx);
            await new Promise((resolve) => setTimeout(resolve, 5));
          }),
        ),
      );
      expect(results.filter((result) => !result.duplicate)).toHaveLength(1);
      expect(await subject?.countEffects(event.id)).toBe(1);
    });

    it('lets a waiting delivery run once the one ahead of it rolled back', async () => {
      const event = eventFixture();
      const started = gate();
      const release = gate();
      const first = inbox.process(group, event.id, async (tx) => {
        await effectOnce(event.id)(tx);
        started.open();
        await release.promise;
        throw new Error('first attempt fails');
      });
      await started.promise;
      const second = inbox.process(group, event.id, effectOnce(event.id));
      release.open();
      await expect(first).rejects.toThrow('first attempt fails');
      expect(await second).toEqual({ duplicate: false, value: undefined });
      expect(await subject?.countEffects(event.id)).toBe(1);
    });

    it('counts failed attempts with the first and last failure times and the last error', async () => {
      const event = eventFixture();
      expect(await inbox.failedAttempts(group, event.id)).toBeUndefined();
      const first = await inbox.recordFailure(group, event.id, describeFailure(new Error('one')), T0 + 1);
      expect(first).toMatchObject({ attempts: 1, firstFailedAt: T0 + 1, lastFailedAt: T0 + 1 });
      const second = await inbox.recordFailure(
        group,
        event.id,
        describeFailure(new TypeError('two')),
        T0 + 9,
      );
      expect(second).toMatchObject({ attempts: 2, firstFailedAt: T0 + 1, lastFailedAt: T0 + 9 });
      expect(second.lastError.message).toBe('TypeError: two');
      expect(second.lastError.stack).toContain('TypeError: two');
      expect(await inbox.failedAttempts(group, event.id)).toEqual(second);
      expect(await inbox.failedAttempts('other-group', event.id)).toBeUndefined();
    });

    it('parks an event with all its fields, its attempts, times and last error', async () => {
      const event = eventFixture();
      await inbox.recordFailure(group, event.id, describeFailure(new Error('first')), T0 + 10);
      await inbox.recordFailure(group, event.id, describeFailure(new RangeError('bad amount')), T0 + 20);
      expect(await inbox.deadLetter(group, event)).toBe('dead-lettered');

      const [letter] = await inbox.deadLetters(group, { ids: [event.id] });
      expect(letter).toEqual({
        group,
        event,
        attempts: 2,
        firstFailedAt: T0 + 10,
        lastFailedAt: T0 + 20,
        lastError: { message: 'RangeError: bad amount', stack: expect.stringContaining('bad amount') },
      });
      // The attempts moved into the dead letter.
      expect(await inbox.failedAttempts(group, event.id)).toBeUndefined();
      expect(await inbox.countDeadLetters(group)).toBe(1);
      expect(await inbox.isProcessed(group, event.id)).toBe(false);
    });

    it('adds later failures to an existing dead letter, keeping its first failure time', async () => {
      const event = eventFixture();
      await inbox.recordFailure(group, event.id, describeFailure(new Error('a')), T0 + 1);
      await inbox.deadLetter(group, event);
      await inbox.recordFailure(group, event.id, describeFailure(new Error('still broken')), T0 + 50);
      expect(await inbox.deadLetter(group, event)).toBe('dead-lettered');
      const [letter] = await inbox.deadLetters(group, { all: true });
      expect(letter).toMatchObject({ attempts: 2, firstFailedAt: T0 + 1, lastFailedAt: T0 + 50 });
      expect(letter?.lastError?.message).toBe('Error: still broken');
      expect(await inbox.countDeadLetters(group)).toBe(1);
    });

    it('does not park an event that was processed meanwhile, and clears its attempts', async () => {
      const event = eventFixture();
      await inbox.recordFailure(group, event.id, describeFailure(new Error('a')), T0 + 1);
      await inbox.process(group, event.id, effectOnce(event.id));
      await inbox.recordFailure(group, event.id, describeFailure(new Error('late')), T0 + 2);
      expect(await inbox.deadLetter(group, event)).toBe('duplicate');
      expect(await inbox.countDeadLetters(group)).toBe(0);
      expect(await inbox.failedAttempts(group, event.id)).toBeUndefined();
    });

    it('clears the attempts and the dead letter of an event in the transaction that processes it', async () => {
      const event = eventFixture();
      await inbox.recordFailure(group, event.id, describeFailure(new Error('a')), T0 + 1);
      await inbox.deadLetter(group, event);
      await inbox.recordFailure(group, event.id, describeFailure(new Error('b')), T0 + 2);
      await inbox.process(group, event.id, effectOnce(event.id));
      expect(await inbox.countDeadLetters(group)).toBe(0);
      expect(await inbox.failedAttempts(group, event.id)).toBeUndefined();
    });

    it('lists dead letters by type, ids, aggregate and time range, oldest first, within the group', async () => {
      const a = eventFixture({ createdAt: T0 + 3, type: 'payment.completed', aggregateId: 'p-1' });
      const b = eventFixture({ createdAt: T0 + 1, type: 'payment.refunded', aggregateId: 'p-1' });
      const c = eventFixture({ createdAt: T0 + 2, type: 'payment.completed', aggregateId: 'p-2' });
      const other = eventFixture({ createdAt: T0 });
      for (const event of [a, b, c]) {
        await inbox.recordFailure(group, event.id, describeFailure(new Error('x')), T0 + 100);
        await inbox.deadLetter(group, event);
      }
      await inbox.recordFailure('emails', other.id, describeFailure(new Error('x')), T0 + 100);
      await inbox.deadLetter('emails', other);

      const ids = async (filter: Parameters<InboxStore['deadLetters']>[1]) =>
        (await inbox.deadLetters(group, filter)).map((letter) => letter.event.id);
      expect(await ids({ all: true })).toEqual([b.id, c.id, a.id]);
      expect(await ids({ type: 'payment.completed' })).toEqual([c.id, a.id]);
      expect(await ids({ ids: [a.id, other.id] })).toEqual([a.id]);
      expect(await ids({ aggregateType: 'payment', aggregateId: 'p-1' })).toEqual([b.id, a.id]);
      expect(await ids({ since: T0 + 2, until: T0 + 3 })).toEqual([c.id]);
      expect(await ids({ all: true, limit: 2 })).toEqual([b.id, c.id]);
      expect(await ids({ ids: [] })).toEqual([]);
      expect(await inbox.countDeadLetters(group)).toBe(3);
      expect(await inbox.countDeadLetters()).toBe(4);

      expect(await inbox.removeDeadLetters(group, [a.id, b.id, other.id])).toBe(2);
      expect(await ids({ all: true })).toEqual([c.id]);
      expect(await inbox.countDeadLetters('emails')).toBe(1);
      expect(await inbox.removeDeadLetters(group, [])).toBe(0);
    });

    it('refuses a dead-letter filter that selects nothing in particular, or holds bad values', async () => {
      await expect(inbox.deadLetters(group, {})).rejects.toThrow(InvalidOptionError);
      await expect(inbox.deadLetters(group, { all: false })).rejects.toThrow(/^filter: /);
      await expect(inbox.deadLetters(group, { all: true, limit: 0 })).rejects.toThrow(/^limit: /);
      await expect(inbox.deadLetters(group, { ids: [''] })).rejects.toThrow(/^ids: /);
      await expect(inbox.deadLetters(group, { since: Number.NaN })).rejects.toThrow(/^since: /);
      await expect(inbox.deadLetters(group, { type: '' })).rejects.toThrow(/^type: /);
    });

    it('prunes inbox rows and stale attempts older than the cut-off, in batches', async () => {
      const old = [eventFixture(), eventFixture(), eventFixture()];
      for (const event of old) await inbox.process(group, event.id, effectOnce(event.id));
      const stale = eventFixture();
      await inbox.recordFailure(group, stale.id, describeFailure(new Error('x')), T0);
      clock.time = T0 + 10_000;
      const recent = eventFixture();
      await inbox.process(group, recent.id, effectOnce(recent.id));

      expect(await inbox.prune(T0 + 5_000, 2)).toBe(3); // two inbox rows and the stale attempt
      expect(await inbox.prune(T0 + 5_000, 2)).toBe(1);
      expect(await inbox.prune(T0 + 5_000, 2)).toBe(0);
      expect(await inbox.prune(T0 + 5_000, 0)).toBe(0);
      await expect(inbox.prune(T0, -1)).rejects.toThrow(/^limit: /);
      expect(await inbox.isProcessed(group, recent.id)).toBe(true);
      for (const event of old) expect(await inbox.isProcessed(group, event.id)).toBe(false);
      expect(await inbox.failedAttempts(group, stale.id)).toBeUndefined();
    });
  });
}
