import fc from 'fast-check';
import { InvalidOptionError } from 'keel';
import { describe, expect, it } from 'vitest';
import {
  type BreakerThresholds,
  ConsecutiveWindow,
  CountWindow,
  createBreakerWindow,
  OUTCOME_FAILED,
  OUTCOME_SLOW,
  TimeWindow,
} from '../../src/policy/breaker-window.ts';

const OK = 0;
const FAIL = OUTCOME_FAILED;
const SLOW = OUTCOME_SLOW;

const thresholds = (over: Partial<BreakerThresholds> = {}): BreakerThresholds => ({
  failureRate: 0.5,
  slowCallRate: 1,
  minimumCalls: 1,
  ...over,
});

describe('consecutive window', () => {
  it('trips after size failures in a row and a success starts the run again', () => {
    const window = new ConsecutiveWindow(3);
    expect(window.record(FAIL)).toBe(false);
    expect(window.record(FAIL)).toBe(false);
    expect(window.record(OK)).toBe(false);
    expect(window.failures).toBe(0);
    expect(window.record(FAIL)).toBe(false);
    expect(window.record(FAIL)).toBe(false);
    expect(window.record(FAIL)).toBe(true);
    expect(window.failures).toBe(3);
  });

  it('trips after size slow calls in a row, and a fast failure ends the slow run', () => {
    const window = new ConsecutiveWindow(2);
    expect(window.record(SLOW)).toBe(false);
    expect(window.record(FAIL)).toBe(false);
    expect(window.slowCalls).toBe(0);
    expect(window.record(SLOW)).toBe(false);
    expect(window.record(SLOW)).toBe(true);
  });

  it('round-trips through toJSON and restore, capped at its size', () => {
    const window = new ConsecutiveWindow(5);
    window.record(FAIL);
    window.record(FAIL | SLOW);
    const copy = new ConsecutiveWindow(5);
    copy.restore(window.toJSON());
    expect([copy.failures, copy.slowCalls]).toEqual([2, 1]);
    const smaller = new ConsecutiveWindow(1);
    smaller.restore({ kind: 'consecutive', failures: 4, slowCalls: 0 });
    expect(smaller.failures).toBe(1);
  });
});

describe('count window', () => {
  it('judges only the last size calls, evicting the oldest', () => {
    const window = new CountWindow(4, thresholds({ failureRate: 0.75, minimumCalls: 4 }));
    window.record(FAIL);
    window.record(FAIL);
    window.record(OK);
    expect(window.record(OK)).toBe(false);
    expect([window.calls, window.failures]).toEqual([4, 2]);
    // Evicts the first failure: 1 of 4 failed.
    expect(window.record(OK)).toBe(false);
    expect([window.calls, window.failures]).toEqual([4, 1]);
    window.record(FAIL);
    expect(window.record(FAIL)).toBe(false);
    expect(window.record(FAIL)).toBe(true);
    expect(window.failures).toBe(3);
  });

  it('does not judge before minimumCalls, and caps minimumCalls at its size', () => {
    const strict = new CountWindow(10, thresholds({ minimumCalls: 3 }));
    expect(strict.record(FAIL)).toBe(false);
    expect(strict.record(FAIL)).toBe(false);
    expect(strict.record(FAIL)).toBe(true);
    const capped = new CountWindow(2, thresholds({ minimumCalls: 100 }));
    capped.record(FAIL);
    expect(capped.record(FAIL)).toBe(true);
  });

  it('trips exactly at a threshold that floating-point multiplication would miss', () => {
    const window = new CountWindow(10, thresholds({ failureRate: 0.3, minimumCalls: 10 }));
    for (let i = 0; i < 7; i++) window.record(OK);
    window.record(FAIL);
    window.record(FAIL);
    expect(window.record(FAIL)).toBe(true);
  });

  it('never trips on a rate of zero, even with a threshold of zero', () => {
    const window = new CountWindow(3, thresholds({ failureRate: 0, slowCallRate: 0, minimumCalls: 1 }));
    expect(window.record(OK)).toBe(false);
    expect(window.record(OK)).toBe(false);
    expect(window.record(FAIL)).toBe(true);
  });

  it('trips on the slow-call rate independently of failures', () => {
    const window = new CountWindow(4, thresholds({ failureRate: 1, slowCallRate: 0.5, minimumCalls: 4 }));
    window.record(OK);
    window.record(SLOW);
    window.record(OK);
    expect(window.record(SLOW)).toBe(true);
    expect(window.failures).toBe(0);
  });

  it('round-trips through toJSON oldest first, and a smaller window keeps the newest outcomes', () => {
    const window = new CountWindow(3, thresholds({ failureRate: 1 }));
    for (const o of [FAIL, OK, SLOW, FAIL | SLOW]) window.record(o);
    const saved = window.toJSON();
    expect(saved).toEqual({ kind: 'count', outcomes: [OK, SLOW, FAIL | SLOW] });
    const smaller = new CountWindow(2, thresholds({ failureRate: 1 }));
    smaller.restore(saved);
    expect(smaller.toJSON()).toEqual({ kind: 'count', outcomes: [SLOW, FAIL | SLOW] });
    expect([smaller.calls, smaller.failures, smaller.slowCalls]).toEqual([2, 1, 2]);
  });

  it('refuses a saved window of another kind', () => {
    const window = new CountWindow(3, thresholds());
    expect(() => window.restore({ kind: 'consecutive', failures: 1, slowCalls: 0 })).toThrow(
      /initialState.*'consecutive' window.*'count' window/,
    );
  });

  it('keeps the same totals as a naive list of the last size outcomes', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 12 }),
        fc.array(fc.integer({ min: 0, max: 3 }), { maxLength: 60 }),
        (size, outcomes) => {
          const window = new CountWindow(size, thresholds({ failureRate: 1, slowCallRate: 1 }));
          for (const o of outcomes) window.record(o);
          const last = outcomes.slice(-size);
          expect(window.calls).toBe(last.length);
          expect(window.failures).toBe(last.filter((o) => o & FAIL).length);
          expect(window.slowCalls).toBe(last.filter((o) => o & SLOW).length);
          expect(window.toJSON()).toEqual({ kind: 'count', outcomes: last });
        },
      ),
    );
  });
});

describe('time window', () => {
  it('drops outcomes a bucket at a time once they are older than the window', () => {
    const window = new TimeWindow(3_000, 1_000, thresholds({ failureRate: 1, minimumCalls: 100 }));
    window.record(FAIL, 0);
    window.record(FAIL, 999);
    window.record(OK, 1_000);
    window.record(OK, 2_500);
    window.advance(2_999);
    expect([window.calls, window.failures]).toEqual([4, 2]);
    window.advance(3_000);
    expect([window.calls, window.failures]).toEqual([2, 0]);
    window.advance(3_999);
    expect(window.calls).toBe(2);
    window.advance(4_000);
    expect(window.calls).toBe(1);
    window.advance(50_000);
    expect(window.calls).toBe(0);
  });

  it('empties the buckets a long silence skipped over and reuses them', () => {
    const window = new TimeWindow(2_000, 500, thresholds({ failureRate: 0.6, minimumCalls: 2 }));
    window.record(FAIL, 100);
    expect(window.record(OK, 1_900)).toBe(false);
    // Ten seconds later the old failure is gone; a single failure is below minimumCalls.
    expect(window.record(FAIL, 11_900)).toBe(false);
    expect([window.calls, window.failures]).toEqual([1, 1]);
    expect(window.record(FAIL, 12_000)).toBe(true);
  });

  it('judges the rates on every record once minimumCalls have ended inside the window', () => {
    const window = new TimeWindow(10_000, 1_000, thresholds({ failureRate: 0.5, minimumCalls: 4 }));
    expect(window.record(FAIL, 0)).toBe(false);
    expect(window.record(FAIL, 1_000)).toBe(false);
    expect(window.record(OK, 2_000)).toBe(false);
    expect(window.record(OK, 3_000)).toBe(true);
  });

  it('saves buckets by age and restores them on another clock, re-bucketing a changed width', () => {
    const window = new TimeWindow(4_000, 1_000, thresholds({ failureRate: 1 }));
    window.record(FAIL, 10_100);
    window.record(OK, 11_200);
    window.record(SLOW, 13_700);
    const saved = window.toJSON(13_900);
    expect(saved).toEqual({
      kind: 'time',
      bucketMs: 1_000,
      buckets: [
        { bucketsAgo: 3, calls: 1, failures: 1, slowCalls: 0 },
        { bucketsAgo: 2, calls: 1, failures: 0, slowCalls: 0 },
        { bucketsAgo: 0, calls: 1, failures: 0, slowCalls: 1 },
      ],
    });
    const copy = new TimeWindow(4_000, 1_000, thresholds({ failureRate: 1 }));
    copy.restore(saved, 500_250);
    expect([copy.calls, copy.failures, copy.slowCalls]).toEqual([3, 1, 1]);
    copy.advance(501_000);
    expect([copy.calls, copy.failures]).toEqual([2, 0]);
    const wider = new TimeWindow(4_000, 2_000, thresholds({ failureRate: 1 }));
    wider.restore(saved, 0);
    expect(wider.toJSON(0)).toEqual({
      kind: 'time',
      bucketMs: 2_000,
      buckets: [
        { bucketsAgo: 1, calls: 2, failures: 1, slowCalls: 0 },
        { bucketsAgo: 0, calls: 1, failures: 0, slowCalls: 1 },
      ],
    });
  });

  it('keeps the same totals as a naive list of outcomes whose bucket is still in the window', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 8 }),
        fc.integer({ min: 1, max: 400 }),
        fc.array(fc.tuple(fc.integer({ min: 0, max: 700 }), fc.integer({ min: 0, max: 3 })), {
          maxLength: 50,
        }),
        (buckets, bucketMs, steps) => {
          const window = new TimeWindow(buckets * bucketMs, bucketMs, thresholds({ failureRate: 1 }));
          const seen: [number, number][] = [];
          let now = 0;
          for (const [dt, outcome] of steps) {
            now += dt;
            window.record(outcome, now);
            seen.push([now, outcome]);
          }
          const newest = Math.floor(now / bucketMs);
          const live = seen.filter(([t]) => Math.floor(t / bucketMs) > newest - buckets);
          window.advance(now);
          expect(window.calls).toBe(live.length);
          expect(window.failures).toBe(live.filter(([, o]) => o & FAIL).length);
          expect(window.slowCalls).toBe(live.filter(([, o]) => o & SLOW).length);
        },
      ),
    );
  });
});

describe('createBreakerWindow', () => {
  it('builds each kind', () => {
    expect(createBreakerWindow({ kind: 'consecutive', size: 3 }, thresholds())).toBeInstanceOf(
      ConsecutiveWindow,
    );
    expect(createBreakerWindow({ kind: 'count', size: 3 }, thresholds())).toBeInstanceOf(CountWindow);
    const time = createBreakerWindow({ kind: 'time', seconds: 5 }, thresholds());
    expect(time).toBeInstanceOf(TimeWindow);
    expect((time as TimeWindow).bucketMs).toBe(1_000);
  });

  it.each([
    [{ kind: 'count', size: 0 }, 'window.size'],
    [{ kind: 'consecutive', size: 1.5 }, 'window.size'],
    [{ kind: 'time', seconds: 0.5 }, 'window.seconds'],
    [{ kind: 'time', seconds: 2, bucketMs: 0 }, 'window.bucketMs'],
    [{ kind: 'time', seconds: 2, bucketMs: 3_000 }, 'window.bucketMs'],
    [{ kind: 'time', seconds: 1_000_000, bucketMs: 1 }, 'window.bucketMs'],
    [{ kind: 'sliding', size: 3 }, 'window.kind'],
    [null, 'window'],
  ])('rejects %j naming %s', (options, option) => {
    const build = () => createBreakerWindow(options as never, thresholds());
    expect(build).toThrow(InvalidOptionError);
    expect(build).toThrow(new RegExp(`^${option.replace('.', '\\.')}: `));
  });
});
