import {
  AllTargetsFailedError,
  BrokenCircuitError,
  BulkheadRejectedError,
  circuitBreaker,
  DeadlineExceededError,
  IsolatedCircuitError,
  LimitExceededError,
  RateLimitedError,
  ThrottledError,
  TimeoutError,
} from 'keel';
import { isProblemSource } from 'keel/idempotency';
import { describe, expect, it } from 'vitest';

describe('policy errors as HTTP problems', () => {
  it.each([
    [new TimeoutError(250), 504, 'dependency-timeout', undefined],
    [new DeadlineExceededError(3), 504, 'deadline-exceeded', undefined],
    [new BrokenCircuitError(4_200, 0), 503, 'dependency-unavailable', '5'],
    [new IsolatedCircuitError(), 503, 'dependency-unavailable', undefined],
    [new BulkheadRejectedError(10, 0, 'full'), 503, 'overloaded', '1'],
    [new LimitExceededError(8, 8), 503, 'overloaded', '1'],
    [new RateLimitedError(1_500), 429, 'rate-limited', '2'],
    [new ThrottledError(0.5), 503, 'dependency-unavailable', '1'],
    [new AllTargetsFailedError([new Error('a'), new Error('b')]), 503, 'dependency-unavailable', undefined],
  ])('%s answers %i %s', (error, status, name, retryAfter) => {
    expect(isProblemSource(error)).toBe(true);
    const problem = error.toProblem('/orders/1/charge');
    expect(problem).toMatchObject({
      type: `urn:keel:problem:${name}`,
      status,
      detail: error.message,
      instance: '/orders/1/charge',
    });
    expect(error.problemHeaders?.['retry-after']).toBe(retryAfter);
  });

  it("gives an open breaker's rejection a Retry-After of the time left open", async () => {
    const breaker = circuitBreaker({ window: { kind: 'consecutive', size: 1 }, openMs: 3_000 });
    await expect(breaker.execute(() => Promise.reject(new Error('down')))).rejects.toThrow('down');
    const rejection = await breaker.execute(async () => 'never').catch((error: unknown) => error);
    expect(rejection).toBeInstanceOf(BrokenCircuitError);
    expect((rejection as BrokenCircuitError).problemHeaders).toEqual({ 'retry-after': '3' });
  });
});
