import { InvalidOptionError } from 'keel';
import { checkEventSelection, describeFailure } from 'keel/outbox';
import { describe, expect, it } from 'vitest';

describe('describeFailure', () => {
  it('keeps the name, message and stack of an error', () => {
    const summary = describeFailure(new TypeError('amount is missing'));
    expect(summary.message).toBe('TypeError: amount is missing');
    expect(summary.stack?.split('\n')[0]).toBe('TypeError: amount is missing');
  });

  it('describes thrown values that are not errors, without a stack', () => {
    expect(describeFailure('plain string')).toEqual({ message: 'plain string', stack: null });
    expect(describeFailure({ status: 503 })).toEqual({ message: '{"status":503}', stack: null });
    expect(describeFailure(undefined)).toEqual({ message: 'undefined', stack: null });
    const circular: Record<string, unknown> = {};
    circular.self = circular;
    expect(describeFailure(circular)).toEqual({ message: '[object Object]', stack: null });
  });

  it('bounds the message and the stack so one runaway error cannot bloat the table', () => {
    const error = new Error('x'.repeat(50_000));
    const summary = describeFailure(error);
    expect(summary.message).toHaveLength(2_000);
    expect(summary.stack?.length).toBe(8_000);
  });
});

describe('checkEventSelection', () => {
  it('accepts each criterion alone, or all: true, and fills in the default limit', () => {
    expect(checkEventSelection({ all: true })).toEqual({
      ids: null,
      type: null,
      aggregateType: null,
      aggregateId: null,
      since: null,
      until: null,
      limit: 1_000,
    });
    expect(checkEventSelection({ since: 0 }).since).toBe(0);
    expect(checkEventSelection({ ids: ['a'], limit: 10_000 }).ids).toEqual(['a']);
  });

  it('refuses an empty selection and bad values, naming the field', () => {
    expect(() => checkEventSelection({})).toThrow(InvalidOptionError);
    expect(() => checkEventSelection(null as never)).toThrow(/^filter: /);
    expect(() => checkEventSelection({ all: 'yes' as never })).toThrow(/^all: /);
    expect(() => checkEventSelection({ ids: 'a' as never })).toThrow(/^ids: /);
    expect(() => checkEventSelection({ aggregateId: 7 as never })).toThrow(/^aggregateId: /);
    expect(() => checkEventSelection({ until: -1 })).toThrow(/^until: /);
    expect(() => checkEventSelection({ all: true, limit: 10_001 })).toThrow(/^limit: /);
  });
});
