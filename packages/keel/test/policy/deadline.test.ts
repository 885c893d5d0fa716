import {
  DEADLINE_HEADER,
  deadlineHeaderValue,
  FakeClock,
  readDeadlineHeader,
  remainingMs,
  runWithDeadline,
  withTimeBudget,
} from 'keel';
import { describe, expect, it } from 'vitest';

describe('deadline propagation', () => {
  it('has no deadline outside any context', () => {
    expect(remainingMs()).toBe(Number.POSITIVE_INFINITY);
    expect(deadlineHeaderValue()).toBeUndefined();
  });

  it('carries the remaining budget across awaits', async () => {
    const clock = new FakeClock(1_000);
    const seen = await withTimeBudget(
      500,
      async () => {
        await Promise.resolve();
        clock.advance(120);
        return remainingMs(clock);
      },
      clock,
    );
    expect(seen).toBe(380);
  });

  it('never lets an inner budget outlive the outer one', () => {
    const clock = new FakeClock();
    const inner = withTimeBudget(100, () => withTimeBudget(10_000, () => remainingMs(clock), clock), clock);
    expect(inner).toBe(100);
    expect(runWithDeadline(50, () => runWithDeadline(20, () => remainingMs(clock)))).toBe(20);
  });

  it('writes the remaining budget as a header a downstream service reads back', () => {
    const clock = new FakeClock();
    const header = withTimeBudget(1_234.9, () => deadlineHeaderValue(clock), clock);
    expect(header).toBe('1234');
    expect(readDeadlineHeader({ [DEADLINE_HEADER]: header })).toBe(1_234);
    expect(readDeadlineHeader(new Headers({ 'Request-Timeout': '250' }))).toBe(250);
  });

  it('reads gRPC-style timeouts', () => {
    expect(readDeadlineHeader({ 'grpc-timeout': '2S' })).toBe(2_000);
    expect(readDeadlineHeader({ 'grpc-timeout': '150m' })).toBe(150);
    expect(readDeadlineHeader({ 'grpc-timeout': '1M' })).toBe(60_000);
  });

  it('ignores malformed headers instead of treating them as an expired deadline', () => {
    expect(readDeadlineHeader({ [DEADLINE_HEADER]: '-5' })).toBeUndefined();
    expect(readDeadlineHeader({ [DEADLINE_HEADER]: 'soon' })).toBeUndefined();
    expect(readDeadlineHeader({ [DEADLINE_HEADER]: '1e9' })).toBeUndefined();
    expect(readDeadlineHeader({ 'grpc-timeout': '10x' })).toBeUndefined();
    expect(readDeadlineHeader({})).toBeUndefined();
  });

  it('writes a header of 0 once the deadline has passed', () => {
    const clock = new FakeClock();
    const header = withTimeBudget(
      10,
      () => {
        clock.advance(25);
        return deadlineHeaderValue(clock);
      },
      clock,
    );
    expect(header).toBe('0');
  });
});
