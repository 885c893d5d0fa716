/**
 * Fault injection for tests and the failure lab.
 *
 * @module
 */
export * from './crash-point.ts';
