import { isKeelError } from 'keel';
import { alertFromConfig, defineAlert, InvalidAlertError } from 'keel/observe';
import { describe, expect, it } from 'vitest';

const parts = {
  what: 'Payments without an invoice',
  where: 'table payments; logs: event="invoice.failed"',
  impact: 'Customers do not receive the invoice they are legally owed',
  next: 'keel replay --type payment.completed --since 2h',
  severity: 'warning',
  group: 'invoicing',
} as const;

describe('defineAlert()', () => {
  it('returns the four parts, severity and group, frozen', () => {
    const alert = defineAlert(parts);
    expect(alert).toEqual(parts);
    expect(Object.isFrozen(alert)).toBe(true);
  });

  it('does not type-check without a part or with an empty literal part', () => {
    const { next: _next, ...withoutNext } = parts;
    // @ts-expect-error: `next` (what to do) is required
    expect(() => defineAlert(withoutNext)).toThrow(InvalidAlertError);
    // @ts-expect-error: an empty `what` is not an alert
    expect(() => defineAlert({ ...parts, what: '' })).toThrow(/what/);
    // @ts-expect-error: an unknown severity
    expect(() => defineAlert({ ...parts, severity: 'page-everyone' })).toThrow(/severity/);
  });

  it('refuses untyped configuration that lacks parts, naming each', () => {
    const config: unknown = JSON.parse(
      '{"what":"Orders stuck","where":"  ","severity":"critical","group":"orders"}',
    );
    try {
      alertFromConfig(config);
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(InvalidAlertError);
      expect(isKeelError(err) && err.code).toBe('KEEL_INVALID_ALERT');
      expect((err as InvalidAlertError).parts).toEqual(['where', 'impact', 'next']);
    }
    expect(() => alertFromConfig(null)).toThrow(InvalidAlertError);
    expect(() => alertFromConfig({ ...parts, impact: 42 })).toThrow(/impact/);
    expect(alertFromConfig(JSON.parse(JSON.stringify(parts)))).toEqual(parts);
  });
});
