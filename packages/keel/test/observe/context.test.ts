import { connect, headers as natsHeaders } from '@nats-io/transport-node';
import { describe, expect, it } from 'vitest';
import { currentDeadline, remainingMs, systemClock, withTimeBudget } from '../../src/index.ts';
import {
  bindEntity,
  contextFromHeaders,
  contextHeaders,
  currentContext,
  requestContext,
  runInContext,
} from '../../src/observe/index.ts';
import { describeWithService } from '../support/services.ts';

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

describe('runInContext', () => {
  it('has no context outside, and costs nothing to ask', () => {
    expect(currentContext()).toBeUndefined();
    expect(contextHeaders()).toEqual({});
    expect(bindEntity({ orderId: 'o-1' })).toBe(false);
  });

  it('keeps the context through awaits, timers, immediates and promise chains', async () => {
    const seen: (string | undefined)[] = [];
    await runInContext({ requestId: 'r-1', entities: { orderId: 'o-1' } }, async () => {
      await sleep(1);
      seen.push(currentContext()?.requestId);
      await new Promise<void>((resolve) =>
        setTimeout(() => {
          seen.push(currentContext()?.entities.orderId);
          resolve();
        }, 1),
      );
      await new Promise<void>((resolve) =>
        setImmediate(() => {
          seen.push(currentContext()?.requestId);
          resolve();
        }),
      );
      await Promise.resolve()
        .then(() => sleep(1))
        .then(() => seen.push(currentContext()?.entities.orderId));
      queueMicrotask(() => seen.push(currentContext()?.requestId));
      await sleep(1);
    });
    expect(seen).toEqual(['r-1', 'o-1', 'r-1', 'o-1', 'r-1']);
    expect(currentContext()).toBeUndefined();
  });

  it('keeps concurrent requests apart while they interleave', async () => {
    const handle = async (i: number): Promise<string> => {
      await sleep(i % 3);
      bindEntity({ orderId: `o-${i}` });
      await sleep((i * 7) % 4);
      const ctx = currentContext();
      return `${ctx?.requestId}/${ctx?.entities.orderId}`;
    };
    const results = await Promise.all(
      Array.from({ length: 50 }, (_, i) => runInContext({ requestId: `r-${i}` }, () => handle(i))),
    );
    expect(results).toEqual(Array.from({ length: 50 }, (_, i) => `r-${i}/o-${i}`));
  });

  it('inherits from the enclosing context and never writes back into it', async () => {
    await runInContext({ requestId: 'outer', entities: { orderId: 'o-1' } }, async () => {
      await runInContext({ entities: { paymentId: 'p-1' } }, async () => {
        bindEntity({ invoiceId: 'i-1' });
        await sleep(1);
        expect(currentContext()).toMatchObject({
          requestId: 'outer',
          entities: { orderId: 'o-1', paymentId: 'p-1', invoiceId: 'i-1' },
        });
      });
      expect(currentContext()?.entities).toEqual({ orderId: 'o-1' });
    });
  });

  it('binds entity ids for the rest of the scope, and snapshots are not live', async () => {
    await runInContext({ requestId: 'r' }, async () => {
      const before = currentContext();
      expect(bindEntity({ orderId: 'o-9' })).toBe(true);
      await sleep(1);
      expect(currentContext()?.entities).toEqual({ orderId: 'o-9' });
      expect(before?.entities).toEqual({});
    });
  });

  it('drops entity names that are not camelCase identifiers and bounds values and counts', () => {
    runInContext({}, () => {
      bindEntity({ 'order id': 'x', Order: 'y', __proto__x: 'z', orderId: 'a'.repeat(1000) });
      for (let i = 0; i < 100; i++) bindEntity({ [`e${i}Id`]: String(i) });
      const entities = currentContext()?.entities ?? {};
      expect(entities['order id']).toBeUndefined();
      expect(entities.Order).toBeUndefined();
      expect(entities.orderId).toHaveLength(256);
      expect(Object.keys(entities)).toHaveLength(32);
    });
  });

  it('exposes the deadline of policy/deadline.ts instead of keeping its own', async () => {
    expect(runInContext({}, () => currentContext()?.deadline)).toBe(Number.POSITIVE_INFINITY);
    const at = systemClock.now() + 5_000;
    await runInContext({ deadline: at }, async () => {
      await sleep(1);
      expect(currentContext()?.deadline).toBe(at);
      expect(currentDeadline()).toBe(at);
      expect(remainingMs()).toBeLessThanOrEqual(5_000);
    });
    // A budget set by the timeout machinery is visible through the context, and it only narrows.
    withTimeBudget(1_000, () =>
      runInContext({ requestId: 'r', deadline: systemClock.now() + 60_000 }, () => {
        expect(currentContext()?.deadline).toBe(currentDeadline());
        expect(currentContext()?.deadline).toBeLessThan(systemClock.now() + 1_001);
      }),
    );
  });
});

describe('context across a broker hop', () => {
  it('writes the ids into headers and reads them back on the consumer side', async () => {
    const stored = runInContext(
      {
        requestId: 'r-1',
        correlationId: 'c-1',
        idempotencyKey: 'k-1',
        entities: { orderId: 'o-1', paymentID: 'p-1' },
        deadline: systemClock.now() + 100,
      },
      () => JSON.stringify({ headers: contextHeaders() }),
    );
    const { headers } = JSON.parse(stored) as { headers: Record<string, string> };
    expect(headers).toEqual({
      'x-request-id': 'r-1',
      'x-correlation-id': 'c-1',
      'idempotency-key': 'k-1',
      'keel-entity-order-id': 'o-1',
      'keel-entity-payment-i-d': 'p-1',
    });
    // The consumer runs later, outside the request; it must not inherit the request's deadline.
    const seen = await new Promise<ReturnType<typeof currentContext>>((resolve) =>
      setImmediate(() => runInContext(contextFromHeaders(headers), () => resolve(currentContext()))),
    );
    expect(seen).toEqual({
      requestId: 'r-1',
      correlationId: 'c-1',
      idempotencyKey: 'k-1',
      entities: { orderId: 'o-1', paymentID: 'p-1' },
      deadline: Number.POSITIVE_INFINITY,
    });
  });

  it('reads Fetch-style headers, arrays and mixed case, and ignores what it did not write', () => {
    const fetchHeaders = new Headers({ 'X-Request-Id': 'r-2', 'Keel-Entity-Order-Id': 'o-2', other: 'x' });
    expect(contextFromHeaders(fetchHeaders)).toEqual({ requestId: 'r-2', entities: { orderId: 'o-2' } });
    expect(
      contextFromHeaders({
        'x-request-id': ['r-3', 'r-4'],
        'keel-entity-': 'x',
        'keel-entity-9x': 'y',
        host: 'h',
      }),
    ).toEqual({ requestId: 'r-3' });
    expect(contextFromHeaders({ 'x-request-id': '' })).toEqual({});
  });

  it('gives an HTTP request without a request id a fresh one, correlated by itself', () => {
    const values = requestContext({});
    expect(values.requestId).toMatch(/^[0-9a-f-]{36}$/);
    expect(values.correlationId).toBe(values.requestId);
    expect(requestContext({ 'x-request-id': 'r', 'x-correlation-id': 'c' })).toMatchObject({
      requestId: 'r',
      correlationId: 'c',
    });
  });
});

describeWithService('NATS_URL', 'context through NATS', (url) => {
  it('survives a real publish and delivery', async () => {
    const nc = await connect({ servers: url });
    const subject = `keel.observe.context.${process.pid}.${Math.random().toString(36).slice(2)}`;
    try {
      const received = new Promise<ReturnType<typeof currentContext>>((resolve) => {
        const sub = nc.subscribe(subject, {
          callback: (_err, msg) => {
            const bag: Record<string, string> = {};
            for (const key of msg.headers?.keys() ?? []) bag[key] = msg.headers?.get(key) ?? '';
            runInContext(contextFromHeaders(bag), async () => {
              await sleep(1);
              resolve(currentContext());
            });
            sub.unsubscribe();
          },
        });
      });
      await nc.flush();
      await runInContext({ requestId: 'r-nats', entities: { orderId: 'o-nats' } }, async () => {
        bindEntity({ paymentId: 'p-nats' });
        const h = natsHeaders();
        for (const [key, value] of Object.entries(contextHeaders())) h.set(key, value);
        nc.publish(subject, 'payload', { headers: h });
        await nc.flush();
      });
      expect(await received).toMatchObject({
        requestId: 'r-nats',
        entities: { orderId: 'o-nats', paymentId: 'p-nats' },
      });
    } finally {
      await nc.close();
    }
  });
});
