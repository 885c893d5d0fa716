/**
 * @module
 * Orders, their charge, their payment and their invoices. The charge route is the same in both
 * modes; the {@link ChargeStrategy} behind it decides how a charge is made.
 */
import { bindEntity } from 'keel/observe';
import type { TokenSigner } from './auth-tokens.ts';
import { bearerAuth, requestUser } from './bearer-auth.ts';
import type { ChargeStrategy } from './charge-strategy.ts';
import type { Database } from './database.ts';
import { UnsupportedCurrencyError } from './domain-errors.ts';
import { findOrder, findPayment, insertOrder, listInvoices } from './payment-records.ts';
import { IdParamsSchema, NewOrderSchema, SUPPORTED_CURRENCIES } from './route-schemas.ts';
import type { DomainMetrics } from './service-metrics.ts';
import type { ServiceApp } from './service-types.ts';

export interface OrderRoutesOptions {
  readonly db: Database;
  readonly tokens: TokenSigner;
  readonly charges: ChargeStrategy;
  readonly metrics: DomainMetrics;
}

/** The path the charge route is registered under (the idempotency plugin applies to it). */
export const CHARGE_ROUTE = '/orders/:id/charge';

/** @example orderRoutes(app, { db, tokens, charges: guardedCharge(…), metrics }); */
export function orderRoutes(app: ServiceApp, options: OrderRoutesOptions): void {
  const { db, charges, metrics } = options;
  const onRequest = bearerAuth(options.tokens);

  app.post('/orders', { onRequest, schema: { body: NewOrderSchema } }, async (request, reply) => {
    const userId = requestUser(request);
    const currency = request.body.currency.toLowerCase();
    if (!(SUPPORTED_CURRENCIES as readonly string[]).includes(currency)) {
      throw new UnsupportedCurrencyError(request.body.currency, SUPPORTED_CURRENCIES);
    }
    const order = await db.transaction('api', (tx) =>
      insertOrder(tx, {
        userId,
        amount: request.body.amount,
        currency,
        description: request.body.description ?? null,
      }),
    );
    bindEntity({ orderId: order.id });
    metrics.ordersCreated.inc({});
    return reply.code(201).header('location', `/orders/${order.id}`).send(order);
  });

  app.post(CHARGE_ROUTE, { onRequest, schema: { params: IdParamsSchema } }, async (request, reply) => {
    const response = await charges.charge({
      request,
      userId: requestUser(request),
      orderId: request.params.id,
    });
    reply.code(response.status);
    for (const [name, value] of Object.entries(response.headers)) reply.header(name, value);
    return reply.send(response.body);
  });

  app.get('/orders/:id', { onRequest, schema: { params: IdParamsSchema } }, async (request) =>
    findOrder(db.reader('api'), requestUser(request), request.params.id),
  );

  app.get('/payments/:id', { onRequest, schema: { params: IdParamsSchema } }, async (request) =>
    findPayment(db.reader('api'), requestUser(request), request.params.id),
  );

  app.get('/orders/:id/invoices', { onRequest, schema: { params: IdParamsSchema } }, async (request) => ({
    data: await listInvoices(db.reader('api'), requestUser(request), request.params.id),
  }));
}
