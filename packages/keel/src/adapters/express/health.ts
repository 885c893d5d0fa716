/**
 * Health and metrics routes for Express: `/health/live`, `/health/ready` (503 with a problem body
 * naming what is not ready) and, given a registry, `/metrics`. Keel declares the few Express shapes
 * it touches and never imports Express.
 *
 * @module
 */
import { type Health, type HealthRouteOptions, healthPaths } from '../../observe/health.ts';

/**
 * The part of an Express response the health routes call.
 *
 * @example
 * const res: ExpressHealthResponse = expressResponse; // a real express.Response fits
 */
export interface ExpressHealthResponse {
  status(code: number): unknown;
  setHeader(name: string, value: string): unknown;
  send(body: string): unknown;
}

/**
 * The part of an Express app or router the health routes use.
 *
 * @example
 * expressHealth(app satisfies ExpressRouteHost, health);
 */
export interface ExpressRouteHost {
  get(
    path: string,
    handler: (req: unknown, res: ExpressHealthResponse, next: (err?: unknown) => void) => void,
  ): unknown;
}

/**
 * Registers the health routes (and `/metrics` when `options.metrics` is given) on an Express app or router.
 *
 * @example
 * expressHealth(app, healthChecks({ critical: { provider: providerBreaker }, invariants: evaluator }), { metrics: promRegistry });
 */
export function expressHealth(app: ExpressRouteHost, health: Health, options: HealthRouteOptions = {}): void {
  const paths = healthPaths(options);
  const answer = (res: ExpressHealthResponse, status: number, contentType: string, body: string) => {
    res.status(status);
    res.setHeader('content-type', contentType);
    res.send(body);
  };
  app.get(paths.live, (_req, res) => {
    const live = health.live();
    answer(res, live.status, live.contentType, JSON.stringify(live.body));
  });
  app.get(paths.ready, (_req, res, next) => {
    health
      .ready()
      .then((ready) => answer(res, ready.status, ready.contentType, JSON.stringify(ready.body)), next);
  });
  const { metrics } = options;
  if (metrics !== undefined) {
    app.get(paths.metrics, (_req, res, next) => {
      Promise.resolve(metrics.metrics()).then((text) => answer(res, 200, metrics.contentType, text), next);
    });
  }
}
