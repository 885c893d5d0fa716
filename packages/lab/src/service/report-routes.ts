/**
 * @module
 * The sales report: a heavy query on the `report` route class, which in guarded mode may hold only
 * its share of the pool and no statement longer than the request's deadline.
 */
import type { TokenSigner } from './auth-tokens.ts';
import { bearerAuth } from './bearer-auth.ts';
import type { Database } from './database.ts';
import { SalesReportQuerySchema } from './route-schemas.ts';
import { salesReport } from './sales-report.ts';
import type { ServiceApp } from './service-types.ts';

/** @example reportRoutes(app, { db, tokens }); */
export function reportRoutes(
  app: ServiceApp,
  options: { readonly db: Database; readonly tokens: TokenSigner },
): void {
  const { db } = options;
  app.get(
    '/reports/sales',
    { onRequest: bearerAuth(options.tokens), schema: { querystring: SalesReportQuerySchema } },
    async (request) => {
      const range = {
        from: request.query.from ?? '2024-01-01',
        to: request.query.to ?? '2025-12-31',
        limit: request.query.limit ?? 20,
      };
      return { ...range, lines: await salesReport(db.reader('report'), range) };
    },
  );
}
