import { describe, expect, it } from 'vitest';
import {
  type AttemptResult,
  type ChargeSender,
  doubleSubmit,
  type LogicalCharge,
  retryWithBackoff,
  timeoutThenRetryImmediately,
} from '../../src/lab/clients.ts';

/** A sender that answers from a script and remembers every request. */
function scriptedSender(instances: number, answers: (sent: number) => AttemptResult) {
  const sent: Array<{ key: string; instance: number }> = [];
  const sender: ChargeSender = {
    instances,
    async send(charge, instance) {
      sent.push({ key: charge.idempotencyKey, instance: instance % instances });
      await new Promise((resolve) => setImmediate(resolve));
      return answers(sent.length);
    },
  };
  return { sender, sent };
}

const charge: LogicalCharge = {
  orderId: 'ord_1',
  idempotencyKey: 'key-1',
  authorization: 'Bearer t',
  instance: 0,
};
const unknown: AttemptResult = { kind: 'unknown', retryable: true };
const created: AttemptResult = { kind: 'ok', status: 201, retryable: false };

describe('client behaviours', () => {
  it('retries at once after a timeout, on the next instance, with the same key', async () => {
    const { sender, sent } = scriptedSender(2, (n) => (n < 3 ? unknown : created));
    const outcome = await timeoutThenRetryImmediately({ attempts: 4 })(charge, sender);
    expect(outcome).toEqual({ kind: 'ok', attempts: 3, status: 201 });
    expect(sent).toEqual([
      { key: 'key-1', instance: 0 },
      { key: 'key-1', instance: 1 },
      { key: 'key-1', instance: 0 },
    ]);
  });

  it('stops at a final refusal and gives up as unknown after its last attempt', async () => {
    const refused = scriptedSender(1, () => ({ kind: 'fail', status: 409, retryable: false }));
    expect(
      await retryWithBackoff({ attempts: 5, baseMs: 1, random: () => 0 })(charge, refused.sender),
    ).toEqual({
      kind: 'fail',
      attempts: 1,
      status: 409,
    });
    const silent = scriptedSender(1, () => unknown);
    expect(
      await retryWithBackoff({ attempts: 3, baseMs: 1, random: () => 0.5 })(charge, silent.sender),
    ).toEqual({
      kind: 'unknown',
      attempts: 3,
    });
  });

  it('double-submits two or three copies at once across instances, acknowledged when one is', async () => {
    let inFlight = 0;
    let mostInFlight = 0;
    const sent: number[] = [];
    const sender: ChargeSender = {
      instances: 3,
      async send(_charge, instance) {
        sent.push(instance % 3);
        const first = sent.length === 1;
        inFlight++;
        mostInFlight = Math.max(mostInFlight, inFlight);
        await new Promise((resolve) => setTimeout(resolve, 5));
        inFlight--;
        return first ? created : { kind: 'fail', status: 409, retryable: false };
      },
    };
    const outcome = await doubleSubmit({
      minCopies: 3,
      maxCopies: 3,
      each: retryWithBackoff({ attempts: 1 }),
    })(charge, sender);
    expect(outcome).toEqual({ kind: 'ok', attempts: 3, status: 201 });
    expect(mostInFlight).toBe(3);
    expect([...sent].sort()).toEqual([0, 1, 2]);
  });

  it('refuses nonsense options', () => {
    expect(() => retryWithBackoff({ attempts: 0 })).toThrow(/attempts/);
    expect(() => retryWithBackoff({ baseMs: 100, maxMs: 10 })).toThrow(/maxMs/);
    expect(() => doubleSubmit({ minCopies: 3, maxCopies: 2 })).toThrow(/maxCopies/);
  });
});
