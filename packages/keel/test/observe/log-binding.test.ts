import { Writable } from 'node:stream';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { BrokenCircuitError } from '../../src/index.ts';
import { bindEntity, failureLog, logMixin, runInContext } from '../../src/observe/index.ts';

/** A real pino logger writing JSON lines into memory. */
function capturedLogger(): { logger: pino.Logger; lines: () => Record<string, unknown>[] } {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      chunks.push(chunk.toString());
      done();
    },
  });
  const logger = pino({ mixin: logMixin(), base: null, timestamp: false }, stream);
  const lines = () =>
    chunks
      .join('')
      .split('\n')
      .filter((line) => line !== '')
      .map((line) => JSON.parse(line) as Record<string, unknown>);
  return { logger, lines };
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

describe('logMixin', () => {
  it('stamps every line logged inside a context with its ids, flat', async () => {
    const { logger, lines } = capturedLogger();
    await runInContext(
      { requestId: 'r-1', idempotencyKey: 'k-1', entities: { orderId: 'o-1' } },
      async () => {
        logger.info('charging');
        await sleep(1);
        bindEntity({ paymentId: 'p-1' });
        logger.child({ component: 'provider' }).warn({ attempt: 2 }, 'retrying');
      },
    );
    logger.info('idle');
    expect(lines()).toEqual([
      { level: 30, requestId: 'r-1', idempotencyKey: 'k-1', orderId: 'o-1', msg: 'charging' },
      {
        level: 40,
        requestId: 'r-1',
        idempotencyKey: 'k-1',
        orderId: 'o-1',
        paymentId: 'p-1',
        component: 'provider',
        attempt: 2,
        msg: 'retrying',
      },
      { level: 30, msg: 'idle' },
    ]);
  });

  it('keeps the lines of concurrent requests apart', async () => {
    const { logger, lines } = capturedLogger();
    await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        runInContext({ requestId: `r-${i}`, entities: { orderId: `o-${i}` } }, async () => {
          await sleep(i % 4);
          logger.info(`line ${i}`);
        }),
      ),
    );
    const logged = lines();
    expect(logged).toHaveLength(20);
    for (const line of logged) {
      const i = String(line.msg).slice(5);
      expect(line).toMatchObject({ requestId: `r-${i}`, orderId: `o-${i}` });
    }
  });

  it('lets a context field win over an entity that tries to shadow it', () => {
    const { logger, lines } = capturedLogger();
    runInContext({ requestId: 'real', entities: { requestId: 'fake' } }, () => logger.info('x'));
    expect(lines()[0]?.requestId).toBe('real');
  });
});

describe('failureLog', () => {
  it('names the entity, the reason and the next step, with the error serialized by pino', () => {
    const { logger, lines } = capturedLogger();
    const error = new BrokenCircuitError(5_000, 12_000);
    runInContext({ requestId: 'r-7' }, () =>
      logger.error(
        failureLog({
          entity: { orderId: 'o-7', paymentId: 'p-7' },
          reason: 'provider-a is unavailable (breaker open)',
          next: 'order left pending; the client may retry with the same key',
          error,
        }),
        'charge failed',
      ),
    );
    const [line] = lines();
    expect(line).toMatchObject({
      level: 50,
      requestId: 'r-7',
      event: 'failure',
      entity: 'orderId=o-7 paymentId=p-7',
      orderId: 'o-7',
      paymentId: 'p-7',
      reason: 'provider-a is unavailable (breaker open)',
      next: 'order left pending; the client may retry with the same key',
      errorCode: 'KEEL_BREAKER_OPEN',
      msg: 'charge failed',
    });
    expect(line?.err).toMatchObject({ type: 'BrokenCircuitError', message: error.message });
  });

  it('leaves out the error fields when there is no error', () => {
    const record = failureLog({
      entity: { invoiceId: 'i-1' },
      reason: 'template missing',
      next: 'fix and replay',
    });
    expect(record).toEqual({
      invoiceId: 'i-1',
      event: 'failure',
      entity: 'invoiceId=i-1',
      reason: 'template missing',
      next: 'fix and replay',
    });
  });
});
