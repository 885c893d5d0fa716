/**
 * @module
 * The lab's client of a service instance's lab routes (`--lab`): set the event faults and the
 * invoice consumer's state with `POST /lab/faults`, read what the faults did, and list the alerts
 * the service sent with `GET /lab/alerts`.
 */
import type { LabAlert, LabFaults } from '../service/lab-routes.ts';

/** The fault plan now in force, and what the faults did so far. */
export interface LabFaultState {
  readonly consumer: 'running' | 'stopped';
  readonly dropShare: number;
  readonly redeliverShare: number;
  readonly types: readonly string[];
  /** Publishes confirmed and never sent. */
  readonly dropped: number;
  /** Deliveries handed to the consumer a second time. */
  readonly redelivered: number;
}

async function labRequest<T>(url: string, path: string, body?: unknown): Promise<T> {
  const response = await fetch(new URL(path, url), {
    method: body === undefined ? 'GET' : 'POST',
    ...(body !== undefined && {
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    }),
    signal: AbortSignal.timeout(10_000),
  });
  if (!response.ok) throw new Error(`${path} answered ${response.status}: ${await response.text()}`);
  return (await response.json()) as T;
}

/**
 * Replaces the instance's fault plan (what `faults` leaves out goes back to its default).
 *
 * @example
 * await setLabFaults(url, { redeliverShare: 0.2, types: ['payment.completed'] });
 * await setLabFaults(url, {}); // every fault lifted, the consumer running
 */
export function setLabFaults(url: string, faults: LabFaults): Promise<LabFaultState> {
  return labRequest(url, '/lab/faults', faults);
}

/**
 * @example
 * const { redelivered } = await labFaultState(url);
 */
export function labFaultState(url: string): Promise<LabFaultState> {
  return labRequest(url, '/lab/faults');
}

/**
 * Every alert notification the instance sent, oldest first.
 *
 * @example
 * const firing = (await labAlerts(url)).filter((alert) => alert.status === 'firing');
 */
export async function labAlerts(url: string): Promise<LabAlert[]> {
  return (await labRequest<{ alerts: LabAlert[] }>(url, '/lab/alerts')).alerts;
}
