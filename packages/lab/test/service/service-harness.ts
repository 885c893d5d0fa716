/**
 * Starts the payments service the way the lab does — real provider processes, a real SQLite file —
 * and speaks to it over `inject()`, as a client would.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { expect } from 'vitest';
import { type RunningProvider, startProvider } from '../../src/providers/provider-launcher.ts';
import { type ServiceConfigInput, serviceConfig } from '../../src/service/config.ts';
import { buildService, type Service } from '../../src/service/service-app.ts';

export interface Providers {
  readonly a: RunningProvider;
  readonly b: RunningProvider;
  stop(): Promise<void>;
}

export function scratchDirectory(prefix: string): {
  readonly path: string;
  file(name: string): string;
  remove(): void;
} {
  const path = mkdtempSync(join(tmpdir(), `${prefix}-`));
  return {
    path,
    file: (name) => join(path, name),
    remove: () => rmSync(path, { recursive: true, force: true }),
  };
}

export async function startProviders(directory: string): Promise<Providers> {
  const [a, b] = await Promise.all([
    startProvider({ name: 'a', ledgerPath: join(directory, 'provider-a.db'), seed: 3 }),
    startProvider({ name: 'b', ledgerPath: join(directory, 'provider-b.db'), seed: 4 }),
  ]);
  return { a, b, stop: async () => void (await Promise.allSettled([a.stop(), b.stop()])) };
}

let databases = 0;

/** A service on a fresh SQLite file, started (relay and consumers running) on a free port. */
export async function startService(
  directory: string,
  providers: Providers,
  overrides: ServiceConfigInput = {},
): Promise<Service> {
  const service = await buildService(
    serviceConfig({
      db: join(directory, `service-${++databases}.db`),
      providerA: providers.a.url,
      providerB: providers.b.url,
      port: 0,
      rows: 200,
      scryptCost: 1_024,
      dbPoolSize: 4,
      providerTimeoutMs: 1_000,
      ...overrides,
    }),
  );
  await service.start();
  return service;
}

export async function signIn(
  service: Service,
  email = `u${Math.random().toString(36).slice(2)}@example.com`,
) {
  const password = 'correct horse battery';
  const signup = await service.app.inject({ method: 'POST', url: '/signup', payload: { email, password } });
  if (signup.statusCode !== 201) throw new Error(`signup answered ${signup.statusCode}: ${signup.body}`);
  const login = await service.app.inject({ method: 'POST', url: '/login', payload: { email, password } });
  if (login.statusCode !== 200) throw new Error(`login answered ${login.statusCode}: ${login.body}`);
  const { token, userId } = login.json() as { token: string; userId: string };
  return { email, userId, token, authorization: `Bearer ${token}` };
}

export async function createOrder(
  service: Service,
  authorization: string,
  body: Record<string, unknown> = { amount: 2_500, currency: 'eur' },
): Promise<{ id: string; status: string; amount: number }> {
  const response = await service.app.inject({
    method: 'POST',
    url: '/orders',
    headers: { authorization },
    payload: body,
  });
  if (response.statusCode !== 201)
    throw new Error(`create order answered ${response.statusCode}: ${response.body}`);
  return response.json();
}

export function charge(service: Service, authorization: string, orderId: string, key?: string) {
  return service.app.inject({
    method: 'POST',
    url: `/orders/${orderId}/charge`,
    headers: key === undefined ? { authorization } : { authorization, 'idempotency-key': key },
  });
}

export async function eventually<T>(
  read: () => Promise<T> | T,
  until: (value: T) => boolean,
  timeoutMs = 5_000,
): Promise<T> {
  const started = Date.now();
  for (;;) {
    const value = await read();
    if (until(value)) return value;
    if (Date.now() - started > timeoutMs) return value;
    await sleep(20);
  }
}

export function uniqueKey(label: string): string {
  return `${label}-${Date.now()}-${Math.random().toString(36).slice(2)}`;
}

/**
 * Charges a new order twice with one key and follows it to the end: one payment, the replay marked
 * `Idempotent-Replayed`, one invoice for that payment and one mail. Returns the user and the order.
 */
export async function chargeThroughToInvoice(service: Service, amount: number, currency: string) {
  const user = await signIn(service);
  const order = await createOrder(service, user.authorization, { amount, currency });
  const key = uniqueKey('flow');
  const paid = await charge(service, user.authorization, order.id, key);
  expect(paid.statusCode).toBe(201);
  const payment = paid.json() as { id: string };
  expect((await charge(service, user.authorization, order.id, key)).headers['idempotent-replayed']).toBe(
    'true',
  );
  const invoices = await eventually(
    async () =>
      (
        await service.app.inject({
          url: `/orders/${order.id}/invoices`,
          headers: { authorization: user.authorization },
        })
      ).json() as { data: { paymentId: string }[] },
    (body) => body.data.length > 0,
    10_000,
  );
  expect(invoices.data).toEqual([expect.objectContaining({ paymentId: payment.id })]);
  const mailed = await eventually(
    () => service.mail.sent().filter((m) => m.to === user.email),
    (sent) => sent.length > 0,
    10_000,
  );
  expect(mailed).toHaveLength(1);
  return { user, order };
}
