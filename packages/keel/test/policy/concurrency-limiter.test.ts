import fc from 'fast-check';
import {
  AbortedError,
  aimdLimit,
  BrokenCircuitError,
  BulkheadRejectedError,
  type ConcurrencyLimiterOptions,
  concurrencyLimiter,
  defaultSampleClassifier,
  FakeClock,
  gradientLimit,
  HttpStatusError,
  InvalidOptionError,
  isRejection,
  type LimitAlgorithm,
  LimitExceededError,
  type LimitSample,
  type PolicyEvent,
  pipeline,
  TimeoutError,
  TimerWheel,
  timeout,
  vegasLimit,
} from 'keel';
import { describe, expect, it } from 'vitest';

/** A fixed limit that records every sample it is given. */
class RecordingLimit implements LimitAlgorithm {
  readonly minLimit = 1;
  readonly maxLimit = 1_000;
  readonly samples: LimitSample[] = [];
  limit: number;
  constructor(limit: number) {
    this.limit = limit;
  }
  onSample(sample: LimitSample): number {
    this.samples.push({ ...sample });
    return this.limit;
  }
}

function setup<P extends string = 'default'>(options: Omit<ConcurrencyLimiterOptions<P>, 'timers'> = {}) {
  const clock = new FakeClock();
  const timers = new TimerWheel({ clock, resolutionMs: 1 });
  const limiter = concurrencyLimiter<P>({ ...options, timers });
  const events: PolicyEvent[] = [];
  limiter.onEvent((e) => events.push(e));
  return { clock, timers, limiter, events };
}

/** A function the test finishes by hand. */
function gate<T = string>() {
  let open!: (value: T) => void;
  let fail!: (error: unknown) => void;
  const promise = new Promise<T>((resolve, reject) => {
    open = resolve;
    fail = reject;
  });
  return { fn: () => promise, open, fail, promise };
}

function settle<T>(promise: Promise<T>): Promise<{ value?: T; error?: unknown }> {
  return promise.then(
    (value) => ({ value }),
    (error: unknown) => ({ error }),
  );
}

const tick = () => new FakeClock().advanceAsync(0);

/** The error a call was refused with, or `'running'` when it was admitted and has not ended. */
function refusal(promise: Promise<unknown>): Promise<unknown> {
  return Promise.race([
    promise.then(
      () => 'resolved',
      (error: unknown) => error,
    ),
    tick().then(() => 'running'),
  ]);
}

describe('concurrencyLimiter', () => {
  it('admits calls up to the limit and refuses the next at once with LimitExceededError', async () => {
    const { limiter, events } = setup({ limit: new RecordingLimit(2) });
    const a = gate();
    const b = gate();
    const first = limiter.execute(a.fn);
    void limiter.execute(b.fn);
    expect(limiter.inflight).toBe(2);
    const refused = await settle(limiter.execute(async () => 'never'));
    expect(refused.error).toBeInstanceOf(LimitExceededError);
    expect(isRejection(refused.error)).toBe(true);
    expect((refused.error as LimitExceededError).limit).toBe(2);
    expect((refused.error as LimitExceededError).inflight).toBe(2);
    expect(events.map((e) => e.type)).toEqual(['rejection']);
    a.open('a');
    await expect(first).resolves.toBe('a');
    expect(limiter.inflight).toBe(1);
    b.open('b');
  });

  it('feeds each completed call to the algorithm with its latency on the clock and its inflight count', async () => {
    const algorithm = new RecordingLimit(10);
    const { clock, limiter } = setup({ limit: algorithm });
    const slow = gate();
    const first = limiter.execute(slow.fn);
    await clock.advanceAsync(5);
    const second = limiter.execute(async () => 'fast');
    await second;
    await clock.advanceAsync(20);
    slow.open('slow');
    await first;
    expect(algorithm.samples).toEqual([
      { startTime: 5, rtt: 0, inflight: 2, didDrop: false },
      { startTime: 0, rtt: 25, inflight: 1, didDrop: false },
    ]);
  });

  it('raises the limit with AIMD while calls succeed under load and reports each change', async () => {
    const { limiter, events } = setup({ limit: aimdLimit({ initialLimit: 2, maxLimit: 10 }) });
    const a = gate();
    const b = gate();
    const both = Promise.all([limiter.execute(a.fn), limiter.execute(b.fn)]);
    a.open('a');
    b.open('b');
    await both;
    expect(limiter.limit).toBe(4);
    expect(events.filter((e) => e.type === 'limit-change')).toEqual([
      { policy: 'limiter', name: 'limiter', type: 'limit-change', limit: 3, inflight: 2 },
      { policy: 'limiter', name: 'limiter', type: 'limit-change', limit: 4, inflight: 1 },
    ]);
  });

  it('lowers the limit on drops: timeouts, 429 and 503 responses', async () => {
    const { limiter } = setup({ limit: aimdLimit({ initialLimit: 100, maxLimit: 100, backoffRatio: 0.5 }) });
    await settle(limiter.execute(() => Promise.reject(new HttpStatusError(503))));
    expect(limiter.limit).toBe(50);
    await settle(limiter.execute(() => Promise.reject(new HttpStatusError(429))));
    expect(limiter.limit).toBe(25);
    await settle(limiter.execute(() => Promise.reject(new TimeoutError(10))));
    expect(limiter.limit).toBe(12);
  });

  it('does not feed client errors or cancelled callers to the algorithm', async () => {
    const algorithm = new RecordingLimit(10);
    const { limiter } = setup({ limit: algorithm });
    await settle(limiter.execute(() => Promise.reject(new HttpStatusError(404))));
    await settle(limiter.execute(() => Promise.reject(new TypeError('bad input'))));
    const controller = new AbortController();
    await settle(
      limiter.execute(
        () => {
          controller.abort();
          return Promise.reject(new TimeoutError(1));
        },
        { signal: controller.signal },
      ),
    );
    expect(algorithm.samples).toEqual([]);
    expect(limiter.inflight).toBe(0);
  });

  it('refuses a caller that already gave up without counting it', async () => {
    const { limiter } = setup({ limit: new RecordingLimit(1) });
    const outcome = await settle(limiter.execute(async () => 'x', { signal: AbortSignal.abort() }));
    expect(outcome.error).toBeInstanceOf(AbortedError);
    expect(limiter.inflight).toBe(0);
  });

  it('classifies failures with a custom classifier', async () => {
    const algorithm = new RecordingLimit(10);
    const { limiter } = setup({
      limit: algorithm,
      classify: (err) => (err instanceof RangeError ? 'dropped' : 'success'),
    });
    await settle(limiter.execute(() => Promise.reject(new RangeError('pool exhausted'))));
    await settle(limiter.execute(() => Promise.reject(new Error('slow but answered'))));
    expect(algorithm.samples.map((s) => s.didDrop)).toEqual([true, false]);
  });

  it('classifies by default: overload and timeouts drop, server errors count, the rest is ignored', () => {
    expect(defaultSampleClassifier(new TimeoutError(5))).toBe('dropped');
    expect(defaultSampleClassifier(new HttpStatusError(503))).toBe('dropped');
    expect(defaultSampleClassifier(new HttpStatusError(429))).toBe('dropped');
    expect(defaultSampleClassifier(new BulkheadRejectedError(1, 0, 'full'))).toBe('dropped');
    expect(defaultSampleClassifier(new HttpStatusError(500))).toBe('success');
    expect(defaultSampleClassifier(new HttpStatusError(400))).toBe('ignore');
    expect(defaultSampleClassifier(new BrokenCircuitError(10, 10))).toBe('ignore');
    expect(defaultSampleClassifier(new Error('unknown'))).toBe('ignore');
  });

  it('keeps the place of a timed-out call until its abandoned work really ends', async () => {
    const clock = new FakeClock();
    const timers = new TimerWheel({ clock, resolutionMs: 1 });
    const limiter = concurrencyLimiter({ limit: new RecordingLimit(1), timers });
    const guarded = pipeline(limiter, timeout({ ms: 50, timers }));
    const slow = gate();
    const first = settle(guarded.execute(slow.fn));
    await clock.advanceAsync(50);
    expect((await first).error).toBeInstanceOf(TimeoutError);
    expect(limiter.inflight).toBe(1);
    expect((await settle(guarded.execute(async () => 'next'))).error).toBeInstanceOf(LimitExceededError);
    slow.open('finally');
    await tick();
    expect(limiter.inflight).toBe(0);
    await expect(guarded.execute(async () => 'next')).resolves.toBe('next');
  });

  it('records a timed-out call as a drop when the timeout fires, not when the work ends', async () => {
    const clock = new FakeClock();
    const timers = new TimerWheel({ clock, resolutionMs: 1 });
    const algorithm = new RecordingLimit(5);
    const limiter = concurrencyLimiter({ limit: algorithm, timers });
    const slow = gate();
    const outcome = settle(pipeline(limiter, timeout({ ms: 30, timers })).execute(slow.fn));
    await clock.advanceAsync(30);
    await outcome;
    expect(algorithm.samples).toEqual([{ startTime: 0, rtt: 30, inflight: 1, didDrop: true }]);
    slow.open('late');
  });

  describe('partitions', () => {
    const partitions = { login: { share: 0.3 }, report: { share: 0.2 }, default: { share: 0.3 } };

    it('keeps each partition its guaranteed share when another floods the limiter', async () => {
      const { limiter } = setup({ limit: new RecordingLimit(10), partitions });
      const reports = limiter.for({ partition: 'report' });
      const never = new Promise<never>(() => {});
      const outcomes = await Promise.all(
        Array.from({ length: 20 }, () =>
          Promise.race([settle(reports.execute(() => never)), tick().then(() => ({ admitted: true }))]),
        ),
      );
      // report's own 2 plus the 2 no partition reserves; login's 3 and default's 3 stay free.
      expect(outcomes.filter((o) => 'admitted' in o)).toHaveLength(4);
      expect(limiter.inflightOf('report')).toBe(4);
      const logins = limiter.for({ partition: 'login' });
      for (let i = 0; i < 3; i++) void logins.execute(() => never);
      expect(limiter.inflightOf('login')).toBe(3);
      for (let i = 0; i < 3; i++) void limiter.execute(() => never);
      expect(limiter.inflightOf('default')).toBe(3);
      expect(limiter.inflight).toBe(10);
      const refused = await settle(logins.execute(async () => 'x'));
      expect((refused.error as Error).message).toMatch(/partition login/);
    });

    it('lets a partition borrow the unreserved part of the limit', async () => {
      const { limiter } = setup({
        limit: new RecordingLimit(10),
        partitions: { login: { share: 0.5 }, default: { share: 0.1 } },
      });
      const never = new Promise<never>(() => {});
      const outcomes = Array.from({ length: 9 }, () => settle(limiter.execute(() => never)));
      // default's own place plus the 4 no partition reserves; login's 5 stay free.
      expect(limiter.inflightOf('default')).toBe(5);
      expect(limiter.guaranteeOf('login')).toBe(5);
      const refused = await Promise.race([Promise.all(outcomes.slice(5)), tick().then(() => [])]);
      expect(refused.map((o) => o.error)).toEqual(Array(4).fill(expect.any(LimitExceededError)));
    });

    it('gives each partition at least one place, whatever the limit', () => {
      const { limiter } = setup({ limit: new RecordingLimit(2), partitions });
      expect(limiter.guaranteeOf('report')).toBe(1);
      expect(limiter.guaranteeOf('login')).toBe(1);
    });

    it('recomputes the guarantees when the limit changes', async () => {
      const { limiter } = setup({
        limit: aimdLimit({ initialLimit: 10, maxLimit: 100, backoffRatio: 0.5 }),
        partitions,
      });
      expect(limiter.guaranteeOf('login')).toBe(3);
      await settle(limiter.execute(() => Promise.reject(new HttpStatusError(503))));
      expect(limiter.limit).toBe(5);
      expect(limiter.guaranteeOf('login')).toBe(1);
    });

    it('returns the same lane for the same partition and criticality', () => {
      const { limiter } = setup({ limit: new RecordingLimit(10), partitions });
      expect(limiter.for({ partition: 'login' })).toBe(
        limiter.for({ partition: 'login', criticality: 'critical' }),
      );
      expect(limiter.for({ partition: 'login' })).not.toBe(limiter.for({ partition: 'report' }));
      expect(limiter.for().partition).toBe('default');
    });
  });

  it('refuses sheddable work before degradable and degradable before critical', async () => {
    const { limiter } = setup({ limit: new RecordingLimit(10) });
    const never = () => new Promise<never>(() => {});
    const sheddable = limiter.for({ criticality: 'sheddable' });
    const degradable = limiter.for({ criticality: 'degradable' });
    for (let i = 0; i < 8; i++) void sheddable.execute(never);
    expect(limiter.inflight).toBe(8);
    expect(await refusal(sheddable.execute(never))).toBeInstanceOf(LimitExceededError);
    expect(await refusal(degradable.execute(never))).toBe('running');
    expect(await refusal(degradable.execute(never))).toBeInstanceOf(LimitExceededError);
    expect(await refusal(limiter.execute(never))).toBe('running');
    expect(limiter.inflight).toBe(10);
    expect(await refusal(limiter.execute(never))).toBeInstanceOf(LimitExceededError);
  });

  it('stands in a pipeline as a lane', async () => {
    const { limiter } = setup({
      limit: new RecordingLimit(1),
      partitions: { a: { share: 0.5 }, default: { share: 0.5 } },
    });
    const guarded = pipeline(limiter.for({ partition: 'a' }));
    const a = gate();
    const first = guarded.execute(a.fn);
    expect(limiter.inflightOf('a')).toBe(1);
    a.open('done');
    await expect(first).resolves.toBe('done');
  });

  it('never lets the global inflight exceed the limit nor borrowers take reserved places, under random schedules', async () => {
    const call = fc.record({
      arriveAt: fc.integer({ min: 0, max: 300 }),
      durationMs: fc.integer({ min: 1, max: 120 }),
      outcome: fc.constantFrom('ok', 'ok', 'ok', 'timeout', '503', '400'),
      partition: fc.constantFrom('login', 'report', 'default'),
      criticality: fc.constantFrom('critical', 'degradable', 'sheddable'),
    });
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom('fixed', 'aimd', 'gradient', 'vegas'),
        fc.integer({ min: 1, max: 12 }),
        fc.array(call, { minLength: 1, maxLength: 40 }),
        async (kind, initialLimit, calls) => {
          const clock = new FakeClock();
          const timers = new TimerWheel({ clock, resolutionMs: 1 });
          const bounds = { initialLimit, minLimit: 1, maxLimit: 16 };
          const limit =
            kind === 'fixed'
              ? new RecordingLimit(initialLimit)
              : kind === 'aimd'
                ? aimdLimit({ ...bounds, timeoutMs: 100 })
                : kind === 'gradient'
                  ? gradientLimit(bounds)
                  : vegasLimit({ ...bounds, random: () => 0.5 });
          const limiter = concurrencyLimiter({
            limit,
            timers,
            partitions: { login: { share: 0.3 }, report: { share: 0.2 }, default: { share: 0.3 } },
          });
          const names = limiter.partitionNames;
          const guaranteesFit = names.reduce((sum, p) => sum + limiter.guaranteeOf(p), 0) <= limiter.limit;
          const violations: string[] = [];
          let admitted = 0;
          const outcomes: Promise<unknown>[] = [];
          for (const c of calls) {
            clock.setTimer(() => {
              const borrowing = limiter.inflightOf(c.partition) >= limiter.guaranteeOf(c.partition);
              let started = false;
              const lane = limiter.for({ partition: c.partition, criticality: c.criticality });
              const result = pipeline(lane, timeout({ ms: 60, timers })).execute(() => {
                started = true;
                admitted++;
                if (limiter.inflight > limiter.limit) {
                  violations.push(`admitted with inflight ${limiter.inflight} > limit ${limiter.limit}`);
                }
                if (c.criticality === 'sheddable' && limiter.inflight - 1 >= limiter.limit * 0.8) {
                  violations.push(`sheddable admitted at ${limiter.inflight - 1} of ${limiter.limit}`);
                }
                if (borrowing) {
                  let reservedFree = 0;
                  for (const p of names)
                    reservedFree += Math.max(0, limiter.guaranteeOf(p) - limiter.inflightOf(p));
                  if (limiter.inflight + reservedFree > limiter.limit) {
                    violations.push(`${c.partition} borrowed a place reserved for another partition`);
                  }
                }
                return new Promise<string>((resolve, reject) => {
                  clock.setTimer(
                    () => {
                      if (c.outcome === '503') reject(new HttpStatusError(503));
                      else if (c.outcome === '400') reject(new HttpStatusError(400));
                      else resolve('ok');
                    },
                    c.outcome === 'timeout' ? 90 : c.durationMs,
                  );
                });
              });
              // With a fixed limit that fits every guarantee, critical work within its share always runs.
              if (
                kind === 'fixed' &&
                guaranteesFit &&
                !started &&
                !borrowing &&
                c.criticality === 'critical'
              ) {
                violations.push(`${c.partition} refused within its share`);
              }
              outcomes.push(result.catch(() => undefined));
            }, c.arriveAt);
          }
          await clock.advanceAsync(1_000);
          await Promise.all(outcomes);
          expect(violations).toEqual([]);
          expect(admitted).toBeGreaterThan(0);
          expect(limiter.inflight).toBe(0);
          for (const p of names) expect(limiter.inflightOf(p)).toBe(0);
        },
      ),
      { numRuns: 200 },
    );
  });

  it('rejects bad configuration with an error naming the option', () => {
    const cases: [() => unknown, RegExp][] = [
      [
        () => concurrencyLimiter({ partitions: { a: { share: 0.7 }, default: { share: 0.5 } } }),
        /^partitions: shares must sum to at most 1, got 1.2/,
      ],
      [
        () => concurrencyLimiter({ partitions: { a: { share: 1.5 }, default: { share: 0 } } }),
        /^partitions\.a\.share: must be a fraction in \[0, 1\], got 1.5/,
      ],
      [
        () => concurrencyLimiter({ partitions: { a: { share: -0.1 }, default: { share: 0.5 } } }),
        /^partitions\.a\.share:/,
      ],
      [
        () => concurrencyLimiter({ partitions: { a: { share: 0.5 } } }),
        /^defaultPartition: must name one of/,
      ],
      [() => concurrencyLimiter({ sheddableFraction: 0 }), /^sheddableFraction:/],
      [
        () => concurrencyLimiter({ sheddableFraction: 0.95, degradableFraction: 0.9 }),
        /^sheddableFraction: must be ≤ degradableFraction/,
      ],
      [() => concurrencyLimiter({ limit: {} as LimitAlgorithm }), /^limit:/],
      [() => concurrencyLimiter({ limit: aimdLimit({ backoffRatio: 1.2 }) }), /^backoffRatio:/],
      [() => concurrencyLimiter({ limit: aimdLimit({ minLimit: 5, maxLimit: 2 }) }), /^minLimit:/],
      [
        () =>
          setup({ partitions: { a: { share: 1 } }, defaultPartition: 'a' }).limiter.for({
            partition: 'b' as 'a',
          }),
        /^partition:/,
      ],
    ];
    for (const [build, message] of cases) {
      expect(build).toThrow(InvalidOptionError);
      expect(build).toThrow(message);
    }
  });
});
