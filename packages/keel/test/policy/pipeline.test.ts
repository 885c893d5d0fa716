import {
  BasePolicy,
  CALL,
  Context,
  EventSource,
  FakeClock,
  InvalidOptionError,
  type Next,
  type Operation,
  pipeline,
  policyRegistry,
  TimerWheel,
  timeout,
} from 'keel';
import { describe, expect, expectTypeOf, it } from 'vitest';

/** Records when it is entered and left, to show the order a pipeline runs its layers in. */
class Tracer extends BasePolicy {
  readonly label: string;
  readonly log: string[];
  constructor(label: string, log: string[]) {
    super(new EventSource('pipeline', label), undefined);
    this.label = label;
    this.log = log;
  }
  async run<T>(fn: Operation<T>, context: Context, next: Next): Promise<T> {
    this.log.push(`${this.label}>`);
    try {
      return await next.run(fn, context);
    } finally {
      this.log.push(`<${this.label}`);
    }
  }
}

describe('pipeline', () => {
  it('runs the first policy outermost and the last innermost', async () => {
    const log: string[] = [];
    const guarded = pipeline(new Tracer('a', log), new Tracer('b', log), new Tracer('c', log));
    await guarded.execute(() => {
      log.push('fn');
    });
    expect(log).toEqual(['a>', 'b>', 'c>', 'fn', '<c', '<b', '<a']);
  });

  it('flattens a nested pipeline into the same order', async () => {
    const log: string[] = [];
    const inner = pipeline(new Tracer('b', log), new Tracer('c', log));
    const outer = pipeline(new Tracer('a', log), inner);
    expect(outer.policies).toHaveLength(3);
    await outer.execute(() => log.push('fn'));
    expect(log).toEqual(['a>', 'b>', 'c>', 'fn', '<c', '<b', '<a']);
  });

  it('runs as one layer of another policy chain', async () => {
    const log: string[] = [];
    const inner = pipeline(new Tracer('b', log));
    const outer = new Tracer('a', log);
    const rest: Next = {
      run<T>(fn: Operation<T>, context: Context): Promise<T> {
        return inner.run(fn, context, CALL);
      },
    };
    await outer.run(() => log.push('fn'), contextFor(), rest);
    expect(log).toEqual(['a>', 'b>', 'fn', '<b', '<a']);
  });

  it('passes the narrowest deadline to the function and propagates the caller signal', async () => {
    const clock = new FakeClock();
    const timers = new TimerWheel({ clock, resolutionMs: 1 });
    const controller = new AbortController();
    const guarded = pipeline(timeout({ ms: 500, timers }), timeout({ ms: 100, timers }));
    let aborted = false;
    const done = guarded.execute(
      ({ signal, deadline }) =>
        new Promise<number>((resolve) => {
          signal.addEventListener('abort', () => {
            aborted = true;
            resolve(deadline);
          });
          controller.abort();
        }),
      { signal: controller.signal },
    );
    await expect(done).resolves.toBe(100);
    expect(aborted).toBe(true);
  });

  it('delivers the events of every layer to one listener', async () => {
    const clock = new FakeClock();
    const timers = new TimerWheel({ clock, resolutionMs: 1 });
    const guarded = pipeline(
      timeout({ ms: 500, timers, name: 'outer' }),
      timeout({ ms: 100, timers, name: 'inner' }),
    );
    const names: string[] = [];
    const subscription = guarded.onEvent((e) => names.push(`${e.name}:${e.type}`));
    await guarded.execute(() => 1);
    subscription.dispose();
    await guarded.execute(() => 1);
    expect(names).toEqual(['inner:success', 'outer:success']);
  });

  it('refuses an empty pipeline and things that are not policies', () => {
    expect(() => pipeline()).toThrow(InvalidOptionError);
    expect(() => pipeline({} as never)).toThrow(/every element must be a Keel policy/);
  });
});

describe('policyRegistry', () => {
  it('builds one instance per key on first use and reuses it', () => {
    let built = 0;
    const registry = policyRegistry((name: string) => {
      built++;
      return timeout({ ms: 100, name });
    });
    const a = registry.get('provider-a');
    expect(registry.get('provider-a')).toBe(a);
    expect(registry.get('provider-b')).not.toBe(a);
    expect(built).toBe(2);
    expect([...registry.entries()].map(([k]) => k)).toEqual(['provider-a', 'provider-b']);
    expect(registry.delete('provider-a')).toBe(true);
    expect(registry.get('provider-a')).not.toBe(a);
  });

  it('refuses a build that is not a function', () => {
    expect(() => policyRegistry(42 as never)).toThrow(/build: must be a function/);
  });
});

function contextFor(): Context {
  return Context.from(undefined, new TimerWheel());
}

describe('pipeline types', () => {
  it('adds a fallback value type to the result and nothing else', async () => {
    const plain = pipeline(timeout({ ms: 100 }), timeout({ ms: 50 }));
    const n: number = await plain.execute(() => 1);
    expectTypeOf(plain.execute(() => 1)).resolves.toEqualTypeOf<number>();
    expect(n).toBe(1);
  });
});
