/**
 * Plain HTTP calls against a provider process, as any client of it would make them: the tests
 * drive providers over real sockets only.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Charge } from '../../src/providers/charge-ledger.ts';

export interface ChargeBody {
  amount: number;
  currency: string;
  reference: string;
  description?: string;
}

export interface ChargeList {
  object: 'list';
  data: Charge[];
  has_more: boolean;
  next_cursor: string | null;
}

export function chargeBody(overrides: Partial<ChargeBody> = {}): ChargeBody {
  return {
    amount: 2_500,
    currency: 'eur',
    reference: `order-${Math.random().toString(36).slice(2)}`,
    ...overrides,
  };
}

export function postCharge(
  baseUrl: string,
  body: unknown,
  options: { key?: string; signal?: AbortSignal; rawBody?: string } = {},
): Promise<Response> {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (options.key !== undefined) headers['idempotency-key'] = options.key;
  return fetch(`${baseUrl}/charges`, {
    method: 'POST',
    headers,
    body: options.rawBody ?? JSON.stringify(body),
    ...(options.signal ? { signal: options.signal } : {}),
  });
}

export async function listCharges(
  baseUrl: string,
  query: Record<string, string | number>,
): Promise<ChargeList> {
  const search = new URLSearchParams(
    Object.entries(query).map(([name, value]): [string, string] => [name, String(value)]),
  );
  const response = await fetch(`${baseUrl}/charges?${search}`);
  if (response.status !== 200)
    throw new Error(`listing answered ${response.status}: ${await response.text()}`);
  return (await response.json()) as ChargeList;
}

/** Polls until `check` holds; fails after `timeoutMs` rather than hanging the test. */
export async function eventually(check: () => Promise<boolean>, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await sleep(20);
  }
}

/** A fresh directory for ledgers, and its removal. */
export function ledgerDirectory(): { path(name: string): string; remove(): void } {
  const dir = mkdtempSync(join(tmpdir(), 'keel-provider-'));
  return {
    path: (name) => join(dir, `${name}.db`),
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}

export function uniqueKey(label: string): string {
  return `${label}-${process.pid}-${Math.random().toString(36).slice(2)}`;
}
