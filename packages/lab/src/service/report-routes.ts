/**
 * @module
 * The sales report: a heavy query on the `report` route class, which in guarded mode may hold only
 * its share of the pool and no statement longer than the request's deadline. A share of the pool
 * bounds connections, not CPU: one report at a time still keeps a core busy for as long as reports
 * keep coming, and on the embedded database that core is the one the request path runs on. So the
 * guarded service also admits reports at a budgeted rate, and refuses a spike beyond it at once.
 */
import { type Policy, rateLimiter, type Telemetry } from 'keel';
import type { TokenSigner } from './auth-tokens.ts';
import { bearerAuth } from './bearer-auth.ts';
import type { Database } from './database.ts';
import { SalesReportQuerySchema } from './route-schemas.ts';
import { salesReport } from './sales-report.ts';
import type { ServiceApp } from './service-types.ts';

export interface ReportRoutesOptions {
  readonly db: Database;
  readonly tokens: TokenSigner;
  /** Admits each report before it asks for a connection; none lets every report queue. */
  readonly admission?: Policy | undefined;
}

/**
 * Reports a guarded service starts per second. The 300 000-row report takes half a second to a
 * second of a core on a shared two-core machine: one every two seconds leaves the request path the
 * rest, and when reports already come faster than that, a spike adds no report work, only refusals.
 */
export const REPORTS_PER_SECOND = 0.5;

/**
 * The guarded admission of reports: {@link REPORTS_PER_SECOND}, a burst of one, no wait — a report
 * over budget is refused with 503 and `Retry-After` before it costs anything.
 *
 * @example
 * reportRoutes(app, { db, tokens, admission: reportAdmission(metrics.keel.policy) });
 */
export function reportAdmission(telemetry?: Telemetry): Policy {
  return rateLimiter({
    name: 'reports',
    ratePerSecond: REPORTS_PER_SECOND,
    burst: 1,
    ...(telemetry !== undefined && { telemetry }),
  });
}

/** @example reportRoutes(app, { db, tokens }); */
export function reportRoutes(app: ServiceApp, options: ReportRoutesOptions): void {
  const { db, admission } = options;
  app.get(
    '/reports/sales',
    { onRequest: bearerAuth(options.tokens), schema: { querystring: SalesReportQuerySchema } },
    async (request) => {
      const range = {
        from: request.query.from ?? '2024-01-01',
        to: request.query.to ?? '2025-12-31',
        limit: request.query.limit ?? 20,
      };
      const report = () => salesReport(db.reader('report'), range);
      return { ...range, lines: await (admission === undefined ? report() : admission.execute(report)) };
    },
  );
}
