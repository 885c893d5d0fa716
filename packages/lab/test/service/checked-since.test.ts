import { InvalidOptionError } from 'keel';
import { describe, expect, it } from 'vitest';
import { CHECKED_MARGIN_MS, CheckedSince } from '../../src/service/checked-since.ts';

const clean = { ids: [], total: 0 };

describe('CheckedSince, how far back an invariant still looks', () => {
  it('looks at everything first, then from the last clean round less the margin', () => {
    const since = new CheckedSince();
    expect(since.since).toBe(0);
    since.advance(10_000_000, clean);
    expect(since.since).toBe(10_000_000 - CHECKED_MARGIN_MS);
  });

  it('stays at the oldest offender, less the margin, until it is repaired', () => {
    const since = new CheckedSince(1_000);
    since.advance(10_000_000, { ids: ['o1'], total: 1, oldestAgeMs: 5_000 });
    expect(since.since).toBe(10_000_000 - 5_000 - 1_000);
    since.advance(10_030_000, { ids: ['o1'], total: 1, oldestAgeMs: 35_000 });
    expect(since.since).toBe(10_000_000 - 5_000 - 1_000);
    since.advance(10_060_000, clean);
    expect(since.since).toBe(10_060_000 - 1_000);
  });

  it('does not move when offenders come without their age, and never moves back', () => {
    const since = new CheckedSince(1_000);
    since.advance(10_000_000, { ids: ['o1'], total: 1 });
    expect(since.since).toBe(0);
    since.advance(10_000_000, clean);
    since.advance(9_000_000, clean);
    expect(since.since).toBe(10_000_000 - 1_000);
  });

  it('leaves the rows a grace period kept out of the round to the next one', () => {
    const since = new CheckedSince(1_000);
    since.advance(10_000_000, clean, 300_000);
    expect(since.since).toBe(10_000_000 - 300_000 - 1_000);
  });

  it('refuses a margin that is not a whole number of ms', () => {
    expect(() => new CheckedSince(-1)).toThrow(InvalidOptionError);
    expect(() => new CheckedSince(1.5)).toThrow(InvalidOptionError);
  });
});
