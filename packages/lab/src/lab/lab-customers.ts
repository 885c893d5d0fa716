/**
 * @module
 * The customers and orders a scenario charges, made through the service's own API before the load
 * starts (sign-up, login, create order), so every order the checker later counts was created the
 * way a user would create it. Setting up is not load: it runs closed-loop, a few requests at a time.
 */
import { checkInteger } from 'keel';
import { seededRandom } from '../seeded-random.ts';

/** An order ready to be charged, with its owner's credentials. */
export interface CustomerOrder {
  readonly orderId: string;
  /** `Bearer …` of the order's owner. */
  readonly authorization: string;
  readonly amount: number;
}

export interface CustomerOrdersOptions {
  /** Base URL of a service instance. */
  url: string;
  /** Users to spread the orders over. @default 4 */
  customers?: number;
  orders: number;
  /** Seed of the amounts. @default 1 */
  seed?: number;
  /** Requests in flight while setting up. @default 8 */
  concurrency?: number;
  /** Makes e-mail addresses unique when several runs share a database. */
  runId: string;
}

async function call(url: string, path: string, body: unknown, authorization?: string): Promise<unknown> {
  const response = await fetch(`${url}${path}`, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      ...(authorization !== undefined && { authorization }),
    },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(30_000),
  });
  const payload: unknown = await response.json();
  if (!response.ok) throw new Error(`POST ${path} answered ${response.status}: ${JSON.stringify(payload)}`);
  return payload;
}

/**
 * @example
 * const orders = await createCustomerOrders({ url: instances.urls[0], orders: 300, runId: 'partial-1' });
 */
export async function createCustomerOrders(options: CustomerOrdersOptions): Promise<CustomerOrder[]> {
  const customers = checkInteger('customers', options.customers ?? 4);
  const count = checkInteger('orders', options.orders, 0);
  const concurrency = checkInteger('concurrency', options.concurrency ?? 8);
  const random = seededRandom(options.seed ?? 1);
  const password = 'lab customer password';
  const authorizations: string[] = [];
  for (let i = 0; i < customers; i++) {
    const email = `lab-${options.runId}-${i}@example.com`;
    await call(options.url, '/signup', { email, password });
    const { token } = (await call(options.url, '/login', { email, password })) as { token: string };
    authorizations.push(`Bearer ${token}`);
  }
  const amounts = Array.from({ length: count }, () => 100 + Math.floor(random() * 99_900));
  const orders: CustomerOrder[] = new Array(count);
  let next = 0;
  const worker = async () => {
    while (next < count) {
      const index = next++;
      const authorization = authorizations[index % customers] as string;
      const amount = amounts[index] as number;
      const order = (await call(options.url, '/orders', { amount, currency: 'eur' }, authorization)) as {
        id: string;
      };
      orders[index] = { orderId: order.id, authorization, amount };
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, Math.max(1, count)) }, worker));
  return orders;
}
