/**
 * @module
 * How a figure during a fault compares with the same figure without it — login p99 during the fault
 * over its no-fault p99, charge goodput during over before — as one ratio the bars read. A ratio
 * against a baseline of zero says nothing, so it is not a number: a bar that compares it fails.
 */
import { InvalidOptionError } from 'keel';

function checkFigure(name: string, value: number): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) {
    throw new InvalidOptionError(name, `must be a finite number ≥ 0, got ${String(value)}`);
  }
  return value;
}

/**
 * `during / before`, to two decimals; `NaN` when `before` is 0 (no baseline to compare with).
 * Throws `InvalidOptionError` for a negative or non-finite figure.
 *
 * @example
 * phaseRatio(48, 20); // 2.4 — login p99 2.4× its no-fault value
 * phaseRatio(0.95, 1); // 0.95 — 95 % of the no-fault goodput
 * phaseRatio(5, 0); // NaN
 */
export function phaseRatio(during: number, before: number): number {
  checkFigure('during', during);
  if (checkFigure('before', before) === 0) return Number.NaN;
  return Math.round((during / before) * 100) / 100;
}
