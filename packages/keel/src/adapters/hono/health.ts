/**
 * Health and metrics routes for Hono: `/health/live`, `/health/ready` (503 with a problem body
 * naming what is not ready) and, given a registry, `/metrics`. Handlers return web `Response`s, so
 * Keel never imports Hono.
 *
 * @module
 */
import { type Health, type HealthRouteOptions, healthPaths } from '../../observe/health.ts';

/**
 * The part of a Hono app the health routes use.
 *
 * @example
 * honoHealth(app satisfies HonoRouteHost, health);
 */
export interface HonoRouteHost {
  get(path: string, handler: (c: never) => Promise<Response>): unknown;
}

/**
 * Registers the health routes (and `/metrics` when `options.metrics` is given) on a Hono app.
 *
 * @example
 * honoHealth(app, healthChecks({ critical: { provider: providerBreaker }, invariants: evaluator }), { metrics: promRegistry });
 */
export function honoHealth(app: HonoRouteHost, health: Health, options: HealthRouteOptions = {}): void {
  const paths = healthPaths(options);
  const respond = (status: number, contentType: string, body: string) =>
    new Response(body, { status, headers: { 'content-type': contentType } });
  app.get(paths.live, async () => {
    const live = health.live();
    return respond(live.status, live.contentType, JSON.stringify(live.body));
  });
  app.get(paths.ready, async () => {
    const ready = await health.ready();
    return respond(ready.status, ready.contentType, JSON.stringify(ready.body));
  });
  const { metrics } = options;
  if (metrics !== undefined) {
    app.get(paths.metrics, async () => respond(200, metrics.contentType, await metrics.metrics()));
  }
}
