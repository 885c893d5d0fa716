import fc from 'fast-check';
import { FakeClock, TimerEntry, TimerWheel } from 'keel';
import { describe, expect, it } from 'vitest';

class Probe extends TimerEntry {
  expiredAt: number | undefined;
  readonly clock: FakeClock;
  constructor(clock: FakeClock) {
    super();
    this.clock = clock;
  }
  expire(): void {
    this.expiredAt = this.clock.now();
  }
}

describe('TimerWheel', () => {
  it('expires an entry at its deadline rounded up to the resolution, never early', () => {
    const clock = new FakeClock();
    const wheel = new TimerWheel({ clock, resolutionMs: 10 });
    const probe = new Probe(clock);
    wheel.schedule(probe, 25);
    clock.advance(29);
    expect(probe.expiredAt).toBeUndefined();
    clock.advance(1);
    expect(probe.expiredAt).toBe(30);
    expect(wheel.size).toBe(0);
  });

  it('serves every deadline with one armed timer', () => {
    const clock = new FakeClock();
    const wheel = new TimerWheel({ clock, resolutionMs: 1 });
    for (let i = 1; i <= 100; i++) wheel.schedule(new Probe(clock), i * 7);
    expect(clock.pendingTimers).toBe(1);
    expect(wheel.size).toBe(100);
  });

  it('forgets a cancelled entry and keeps the others', () => {
    const clock = new FakeClock();
    const wheel = new TimerWheel({ clock, resolutionMs: 1 });
    const [a, b, c] = [new Probe(clock), new Probe(clock), new Probe(clock)];
    wheel.schedule(a, 10);
    wheel.schedule(b, 10);
    wheel.schedule(c, 10);
    wheel.cancel(a);
    wheel.cancel(a);
    clock.advance(10);
    expect([a.expiredAt, b.expiredAt, c.expiredAt]).toEqual([undefined, 10, 10]);
  });

  it('shares one signal among deadlines of the same bucket and aborts it when the bucket passes', () => {
    const clock = new FakeClock();
    const wheel = new TimerWheel({ clock, resolutionMs: 5 });
    const first = wheel.signalAt(11);
    expect(wheel.signalAt(14)).toBe(first);
    expect(wheel.signalAt(16)).not.toBe(first);
    clock.advance(14);
    expect(first.aborted).toBe(false);
    clock.advance(1);
    expect(first.aborted).toBe(true);
    expect((first.reason as Error).name).toBe('TimeoutError');
  });

  it('re-arms for an earlier deadline added after a later one', () => {
    const clock = new FakeClock();
    const wheel = new TimerWheel({ clock, resolutionMs: 1 });
    const late = new Probe(clock);
    const early = new Probe(clock);
    wheel.schedule(late, 100);
    wheel.schedule(early, 10);
    clock.advance(10);
    expect(early.expiredAt).toBe(10);
    expect(late.expiredAt).toBeUndefined();
    clock.advance(90);
    expect(late.expiredAt).toBe(100);
  });

  it('expires every entry at or after its deadline, in deadline order, for any schedule', () => {
    fc.assert(
      fc.property(
        fc.array(fc.record({ at: fc.integer({ min: 0, max: 500 }), cancel: fc.boolean() }), {
          maxLength: 60,
        }),
        fc.integer({ min: 1, max: 20 }),
        (plan, resolutionMs) => {
          const clock = new FakeClock();
          const wheel = new TimerWheel({ clock, resolutionMs });
          const probes = plan.map(({ at }) => {
            const p = new Probe(clock);
            wheel.schedule(p, at);
            return p;
          });
          plan.forEach(({ cancel }, i) => {
            if (cancel) wheel.cancel(probes[i] as Probe);
          });
          clock.advance(600);
          plan.forEach(({ at, cancel }, i) => {
            const fired = (probes[i] as Probe).expiredAt;
            if (cancel) expect(fired).toBeUndefined();
            else {
              expect(fired).toBeGreaterThanOrEqual(at);
              expect(fired).toBeLessThan(at + resolutionMs);
            }
          });
          expect(wheel.size).toBe(0);
        },
      ),
    );
  });

  it('refuses a resolution that is not a positive number', () => {
    expect(() => new TimerWheel({ resolutionMs: 0 })).toThrow(/resolutionMs/);
  });
});
