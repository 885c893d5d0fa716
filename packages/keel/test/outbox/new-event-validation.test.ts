import {
  InvalidOutboxEventError,
  isUuidV7,
  OutboxPayloadError,
  prepareOutboxEvents,
  serialisePayload,
  uuidV7Generator,
  uuidV7Time,
} from 'keel/outbox';
import { describe, expect, it } from 'vitest';

const base = { type: 't', aggregateType: 'a', aggregateId: '1' };

describe('new outbox events', () => {
  it.each([
    ['a function', { f: () => 1 }, 'payload.f'],
    ['a symbol', { s: Symbol('x') }, 'payload.s'],
    ['a bigint', { b: 1n }, 'payload.b'],
    ['undefined', { u: undefined }, 'payload.u'],
    ['NaN', [1, Number.NaN], 'payload[1]'],
    ['Infinity', { x: Number.POSITIVE_INFINITY }, 'payload.x'],
    ['a Date', { at: new Date(0) }, 'payload.at'],
    ['a Map', { m: new Map() }, 'payload.m'],
    ['a sparse array', new Array(3).fill(1, 0, 1), 'payload[1]'],
    ['a lone surrogate', { s: '\ud800' }, 'payload.s'],
    ['U+0000', { 'a b': '\u0000' }, 'payload["a b"]'],
    ['a top-level undefined', undefined, 'payload'],
  ])('rejects a payload with %s, naming where', (_name, payload, path) => {
    try {
      prepareOutboxEvents({ ...base, payload }, 0);
      expect.unreachable();
    } catch (error) {
      expect(error).toBeInstanceOf(OutboxPayloadError);
      expect((error as OutboxPayloadError).code).toBe('KEEL_OUTBOX_PAYLOAD');
      expect((error as OutboxPayloadError).path).toBe(path);
    }
  });

  it('names the path inside an array of events, and in keys and deep values', () => {
    const cases: Array<[unknown, string, RegExp]> = [
      [
        { deep: { list: [1, { '\ud800x': 1 }] } },
        'events[1].payload.deep.list[1]["\\ud800x"]',
        /key is not well-formed/,
      ],
      [{ deep: [[[{ at: new Date(0) }]]] }, 'events[1].payload.deep[0][0][0].at', /Date/],
      [{ s: 'fine', t: 'a\u0000b' }, 'events[1].payload.t', /U\+0000/],
    ];
    for (const [payload, path, reason] of cases) {
      try {
        prepareOutboxEvents(
          [
            { ...base, payload: 1 },
            { ...base, payload },
          ],
          0,
        );
        expect.unreachable();
      } catch (error) {
        expect(error).toBeInstanceOf(OutboxPayloadError);
        expect((error as OutboxPayloadError).path).toBe(path);
        expect(String(error)).toMatch(reason);
      }
    }
  });

  it('rejects nesting past 64 levels, cyclic or not', () => {
    let deep: unknown = 1;
    for (let i = 0; i < 65; i++) deep = [deep];
    expect(() => serialisePayload(deep)).toThrow(/deeper than 64/);
    let fine: unknown = 1;
    for (let i = 0; i < 63; i++) fine = { v: fine };
    expect(serialisePayload(fine)).toBe(JSON.stringify(fine));
  });

  it('rejects cycles but accepts shared references', () => {
    const shared = { x: 1 };
    expect(serialisePayload({ a: shared, b: shared })).toBe('{"a":{"x":1},"b":{"x":1}}');
    const cycle: Record<string, unknown> = {};
    cycle.self = cycle;
    expect(() => serialisePayload(cycle)).toThrow(OutboxPayloadError);
  });

  it('rejects bad envelopes with InvalidOutboxEventError', () => {
    const bad = [
      { ...base, type: '', payload: null },
      { ...base, aggregateId: 'x'.repeat(256), payload: null },
      { ...base, aggregateType: 7, payload: null },
      { ...base, headers: { n: 1 }, payload: null },
      { ...base, id: '', payload: null },
      // Headers come as a plain object: spread, a string, an array or a Map would turn into
      // something else (characters by index, or nothing at all).
      { ...base, headers: 'ab', payload: null },
      { ...base, headers: ['a'], payload: null },
      { ...base, headers: new Map([['a', 'b']]), payload: null },
      { ...base, headers: { [Symbol('s')]: 'x' }, payload: null },
      { ...base, headers: { 'x-\u0000': 'v' }, payload: null },
      { ...base, headers: { '': 'v' }, payload: null },
    ];
    for (const event of bad) {
      expect(() => prepareOutboxEvents(event as never, 0)).toThrow(InvalidOutboxEventError);
    }
    expect(() =>
      prepareOutboxEvents(
        [
          { ...base, id: 'x', payload: 1 },
          { ...base, id: 'x', payload: 2 },
        ],
        0,
      ),
    ).toThrow(/twice/);
  });

  it('fills in ids and times and keeps given ids', () => {
    const [made, given] = prepareOutboxEvents(
      [
        { ...base, payload: 1 },
        { ...base, id: 'known', payload: 2 },
      ],
      42,
    );
    expect(isUuidV7(made?.event.id)).toBe(true);
    expect(made?.event.createdAt).toBe(42);
    expect(given?.event.id).toBe('known');
    expect(made?.payloadJson).toBe('1');
  });

  it('makes strictly increasing UUIDv7 ids within one millisecond and when the clock steps back', () => {
    let now = 1_700_000_000_000;
    const next = uuidV7Generator({ clock: { now: () => now } });
    const ids: string[] = [];
    for (let i = 0; i < 2_000; i++) ids.push(next());
    now -= 5_000;
    for (let i = 0; i < 10; i++) ids.push(next());
    expect([...ids].sort()).toEqual(ids);
    expect(new Set(ids).size).toBe(ids.length);
    expect(ids.every(isUuidV7)).toBe(true);
    expect(uuidV7Time(ids[0] as string)).toBe(1_700_000_000_000);
  });
});
