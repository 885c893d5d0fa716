import {
  DeadlineExceededError,
  FakeClock,
  InvalidOptionError,
  isRejection,
  type PolicyEvent,
  runWithDeadline,
  TimerWheel,
} from 'keel';
import { PoolAcquireTimeoutError } from 'keel/postgres';
import { describe, expect, it } from 'vitest';
import { type PoolClasses, poolShares } from '../../src/policy/pool-shares.ts';

function setup<C extends string>(size: number, classes: PoolClasses<C>, acquireTimeoutMs = 100) {
  const clock = new FakeClock();
  const timers = new TimerWheel({ clock, resolutionMs: 1 });
  const shares = poolShares({ size, classes, acquireTimeoutMs, timers, name: 'db' });
  const events: PolicyEvent[] = [];
  shares.onEvent((e) => events.push(e));
  return { clock, shares, events };
}

function settle(promise: Promise<void>): { outcome: 'pending' | 'taken' | unknown } {
  const state: { outcome: 'pending' | 'taken' | unknown } = { outcome: 'pending' };
  promise.then(
    () => {
      state.outcome = 'taken';
    },
    (error: unknown) => {
      state.outcome = error;
    },
  );
  return state;
}

const CLASSES = { login: { reserved: 2 }, api: { reserved: 1 }, report: { max: 2 } } as const;

describe('poolShares', () => {
  it('never lets another class take the connections a class has reserved', async () => {
    const { shares } = setup(6, CLASSES);
    // 6 connections, 3 reserved: report may use at most 2 (its max), api may borrow the 3 free ones.
    await shares.acquire('report');
    await shares.acquire('report');
    await shares.acquire('api');
    await shares.acquire('api');
    const thirdApi = settle(shares.acquire('api'));
    await Promise.resolve();
    // 4 in use, login's 2 reserved connections are the only ones left: api must wait.
    expect(thirdApi.outcome).toBe('pending');
    await shares.acquire('login');
    await shares.acquire('login');
    expect(shares.stats()).toMatchObject({
      size: 6,
      inUse: 6,
      waiting: 1,
      classes: {
        login: { inUse: 2, waiting: 0, reserved: 2, max: 6 },
        api: { inUse: 2, waiting: 1, reserved: 1 },
        report: { inUse: 2, waiting: 0, max: 2 },
      },
    });
  });

  it('caps a class at its max even when connections are free', async () => {
    const { shares, clock } = setup(6, CLASSES);
    await shares.acquire('report');
    await shares.acquire('report');
    const third = settle(shares.acquire('report'));
    await clock.advanceAsync(100);
    expect(third.outcome).toBeInstanceOf(PoolAcquireTimeoutError);
    expect(isRejection(third.outcome)).toBe(true);
    expect(third.outcome).toMatchObject({
      code: 'KEEL_POOL_ACQUIRE_TIMEOUT',
      routeClass: 'report',
      status: 503,
      retryAfterSeconds: 1,
    });
    expect((third.outcome as PoolAcquireTimeoutError).problemHeaders).toEqual({ 'retry-after': '1' });
    expect(shares.stats().classes.report).toMatchObject({ inUse: 2, waiting: 0 });
  });

  it('hands a freed connection to the first waiter its class allows, skipping blocked classes', async () => {
    const { shares } = setup(3, { login: { reserved: 1 }, report: { max: 2 } });
    await shares.acquire('report');
    await shares.acquire('report');
    await shares.acquire('login');
    const report = settle(shares.acquire('report'));
    const login = settle(shares.acquire('login'));
    await Promise.resolve();
    expect([report.outcome, login.outcome]).toEqual(['pending', 'pending']);
    shares.release('login');
    await Promise.resolve();
    // The report arrived first but is at its max; the login behind it takes the connection.
    expect([report.outcome, login.outcome]).toEqual(['pending', 'taken']);
    shares.release('report');
    await Promise.resolve();
    expect(report.outcome).toBe('taken');
  });

  it('waits no longer than the request deadline and reports the rejection', async () => {
    const { shares, clock, events } = setup(1, { api: {} }, 1_000);
    await shares.acquire('api');
    const waiting = settle(runWithDeadline(clock.now() + 30, () => shares.acquire('api')));
    await clock.advanceAsync(30);
    expect(waiting.outcome).toBeInstanceOf(DeadlineExceededError);
    expect(events).toMatchObject([{ policy: 'bulkhead', name: 'db', type: 'rejection' }]);
    const expired = settle(runWithDeadline(clock.now() - 1, () => shares.acquire('api')));
    await Promise.resolve();
    expect(expired.outcome).toBeInstanceOf(DeadlineExceededError);
  });

  it('keeps a connection counted until abandoned work ends', async () => {
    const { shares } = setup(1, { api: {} });
    await shares.acquire('api');
    let finish!: () => void;
    shares.releaseAfter(
      'api',
      new Promise<void>((resolve) => {
        finish = resolve;
      }),
    );
    await Promise.resolve();
    expect(shares.stats().inUse).toBe(1);
    finish();
    await new Promise((resolve) => setImmediate(resolve));
    expect(shares.stats().inUse).toBe(0);
  });

  it('refuses shares that cannot work, naming the option', () => {
    const bad: [number, unknown, RegExp][] = [
      [0, { a: {} }, /^size: /],
      [4, {}, /^classes: /],
      [4, { a: null }, /^classes\.a: /],
      [4, { a: { reserved: -1 } }, /^classes\.a\.reserved: /],
      [4, { a: { reserved: 1.5 } }, /^classes\.a\.reserved: /],
      [4, { a: { max: 0 } }, /^classes\.a\.max: /],
      [4, { a: { max: 5 } }, /^classes\.a\.max: /],
      [4, { a: { reserved: 3, max: 2 } }, /^classes\.a\.reserved: /],
      [4, { a: { reserved: 3 }, b: { reserved: 2 } }, /^classes: .*at most the pool size/],
      [4, { a: { reserved: 4 }, b: {} }, /^classes\.b: /],
    ];
    for (const [size, classes, message] of bad) {
      expect(() => poolShares({ size, classes: classes as PoolClasses<string> }), String(message)).toThrow(
        InvalidOptionError,
      );
      expect(() => poolShares({ size, classes: classes as PoolClasses<string> })).toThrow(message);
    }
    expect(() => poolShares({ size: 2, classes: { a: {} }, acquireTimeoutMs: -1 })).toThrow(
      /^acquireTimeoutMs: /,
    );
    expect(() => poolShares({ size: 2, classes: { a: {} }, acquireTimeoutMs: Infinity })).toThrow(
      /^acquireTimeoutMs: /,
    );
    const shares = poolShares({ size: 2, classes: { a: {} } });
    expect(() => shares.acquire('b' as 'a')).toThrow(/^routeClass: /);
    expect(() => shares.release('a')).toThrow(/holds no connection/);
  });
});
