import { type Delivery, inProcessTransport, type OutboxEvent } from 'keel/outbox';
import { describe, expect, it } from 'vitest';
import { runFixture } from './fixture-process.ts';

const event = (id: string): OutboxEvent => ({
  id,
  type: 't',
  aggregateType: 'a',
  aggregateId: id,
  payload: null,
  headers: {},
  createdAt: 0,
});

const until = (check: () => boolean) =>
  new Promise<void>((resolve) => {
    const poll = () => (check() ? resolve() : setTimeout(poll, 2));
    poll();
  });

describe('in-process transport', () => {
  it('keeps every event in order for a group far behind, past log compactions and maxRetained', async () => {
    const transport = inProcessTransport({ confirm: 'accepted', maxRetained: 3_000 });
    const fast: string[] = [];
    await transport.subscribe({ group: 'fast' }, async (d) => {
      fast.push(d.event.id);
      await d.ack();
    });
    // A group that stops taking events holds the log back while the fast one keeps trimming it.
    let release: () => void = () => {};
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    const slow: string[] = [];
    await transport.subscribe({ group: 'slow', prefetch: 1 }, async (d) => {
      await gate;
      slow.push(d.event.id);
      await d.ack();
    });
    for (let i = 0; i < 5_000; i++) {
      await transport.publish(event(`e${i}`));
      // A turn of the event loop per publish, so the fast group keeps up as a live consumer would.
      await new Promise((resolve) => setImmediate(resolve));
    }
    await until(() => fast.length === 5_000);
    release();
    await until(() => slow.length === 3_001);
    // The first delivery was in the slow handler already; the next ones are the newest 3,000.
    expect(slow[0]).toBe('e0');
    expect(slow.slice(1)).toEqual(Array.from({ length: 3_000 }, (_, i) => `e${i + 2_000}`));
    expect(fast).toEqual(Array.from({ length: 5_000 }, (_, i) => `e${i}`));
    expect(transport.stats().dropped).toBe(1_999);
    await transport.close();
  });

  it('gives every group every event, and each event to one member of a group', async () => {
    const transport = inProcessTransport();
    const seen: string[] = [];
    const member = (name: string) => async (d: Delivery) => {
      seen.push(`${name}:${d.event.id}`);
      await d.ack();
    };
    await transport.subscribe({ group: 'g1' }, member('g1a'));
    await transport.subscribe({ group: 'g1' }, member('g1b'));
    await transport.subscribe({ group: 'g2' }, member('g2'));
    for (let i = 0; i < 10; i++) await transport.publish(event(`e${i}`));
    await until(() => seen.length === 20);
    const g1 = seen.filter((s) => s.startsWith('g1'));
    expect(new Set(g1.map((s) => s.split(':')[1])).size).toBe(10);
    expect(g1.some((s) => s.startsWith('g1a'))).toBe(true);
    expect(g1.some((s) => s.startsWith('g1b'))).toBe(true);
    expect(seen.filter((s) => s.startsWith('g2:'))).toHaveLength(10);
    await transport.close();
  });

  it('delivers outside the publish call and redelivers a retry with a higher count', async () => {
    const transport = inProcessTransport({ confirm: 'accepted' });
    const counts: number[] = [];
    let inPublish = false;
    let deliveredInsidePublish = false;
    await transport.subscribe({ group: 'g' }, async (d) => {
      deliveredInsidePublish ||= inPublish;
      counts.push(d.deliveryCount);
      if (d.deliveryCount < 3) await d.retry(d.deliveryCount === 1 ? 5 : 0);
      else await d.ack();
    });
    inPublish = true;
    await transport.publish(event('e'));
    inPublish = false;
    await until(() => counts.length === 3);
    expect(deliveredInsidePublish).toBe(false);
    expect(counts).toEqual([1, 2, 3]);
    await transport.close();
  });

  it('keeps at most prefetch deliveries unsettled per member', async () => {
    const transport = inProcessTransport({ confirm: 'accepted' });
    const held: Delivery[] = [];
    await transport.subscribe({ group: 'g', prefetch: 2 }, async (d) => {
      held.push(d);
    });
    for (let i = 0; i < 5; i++) await transport.publish(event(`e${i}`));
    await until(() => held.length === 2);
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(held).toHaveLength(2);
    await held[0]?.ack();
    await until(() => held.length === 3);
    await transport.close();
  });

  it('delivers again what was not settled within ackWaitMs, oldest first, and only that', async () => {
    const transport = inProcessTransport({ confirm: 'accepted', ackWaitMs: 60 });
    const seen: Array<{ id: string; count: number; at: number }> = [];
    const started = performance.now();
    await transport.subscribe({ group: 'g', prefetch: 10 }, async (d) => {
      seen.push({ id: d.event.id, count: d.deliveryCount, at: performance.now() - started });
      // e1 and e3 are never settled the first time; e0 and e2 are acknowledged, e4 retried at once.
      if (d.deliveryCount > 1 || d.event.id === 'e0' || d.event.id === 'e2') await d.ack();
      else if (d.event.id === 'e4') await d.retry(0);
    });
    for (let i = 0; i < 5; i++) await transport.publish(event(`e${i}`));
    await until(() => seen.filter((s) => s.count === 2).length === 3);
    await new Promise((resolve) => setTimeout(resolve, 150));
    const again = seen.filter((s) => s.count === 2);
    expect(again.map((s) => s.id)).toEqual(['e4', 'e1', 'e3']);
    // Delivered again no sooner than ackWaitMs after the first delivery.
    for (const { id, at } of again.filter((s) => s.id !== 'e4')) {
      const first = seen.find((s) => s.id === id && s.count === 1)?.at ?? 0;
      expect(at - first).toBeGreaterThanOrEqual(59);
    }
    expect(seen.filter((s) => s.count > 2)).toEqual([]);
    expect(transport.stats().deliveries).toBe(8);
    await transport.close();
  });

  it('lets the process end once every delivery is settled, closed or not', async () => {
    // ackWaitMs is a minute: an acknowledgement timer left holding the process would show.
    for (const late of [0, 10]) {
      const started = performance.now();
      const { code, stderr } = await runFixture('in-process-unclosed.ts', ['200', String(late)]);
      expect(stderr).toContain('handled 200');
      expect(code).toBe(0);
      expect(performance.now() - started).toBeLessThan(20_000);
    }
  });

  it('fails publishes through the fault hook and counts them', async () => {
    const transport = inProcessTransport({
      confirm: 'accepted',
      beforePublish: () => Promise.reject(new Error('down')),
    });
    await expect(transport.publish(event('e'))).rejects.toThrow('down');
    transport.setBeforePublish(undefined);
    await transport.publish(event('e'));
    expect(transport.stats()).toMatchObject({ published: 1, failedPublishes: 1 });
    expect(() => inProcessTransport({ dropRate: 2 })).toThrow(/dropRate/);
  });
});
