/**
 * Health and metrics routes for Fastify: `/health/live`, `/health/ready` (503 with a problem body
 * naming what is not ready) and, given a registry, `/metrics`. Keel declares the one Fastify method
 * it calls and never imports Fastify.
 *
 * @module
 */
import { type Health, type HealthRouteOptions, healthPaths } from '../../observe/health.ts';
import type { FastifyReplyLike } from './idempotency-plugin.ts';

/**
 * The part of a Fastify instance the health routes use.
 *
 * @example
 * fastifyHealth(app satisfies FastifyRouteHost, health);
 */
export interface FastifyRouteHost {
  get(path: string, handler: (request: unknown, reply: FastifyReplyLike) => Promise<unknown>): unknown;
}

/**
 * Registers the health routes (and `/metrics` when `options.metrics` is given) on a Fastify instance.
 *
 * @example
 * const health = healthChecks({ critical: { provider: providerBreaker }, invariants: evaluator });
 * fastifyHealth(app, health, { metrics: promRegistry });
 */
export function fastifyHealth(app: FastifyRouteHost, health: Health, options: HealthRouteOptions = {}): void {
  const paths = healthPaths(options);
  app.get(paths.live, async (_request, reply) => {
    const answer = health.live();
    return reply
      .code(answer.status)
      .header('content-type', answer.contentType)
      .send(JSON.stringify(answer.body));
  });
  app.get(paths.ready, async (_request, reply) => {
    const answer = await health.ready();
    return reply
      .code(answer.status)
      .header('content-type', answer.contentType)
      .send(JSON.stringify(answer.body));
  });
  const { metrics } = options;
  if (metrics !== undefined) {
    app.get(paths.metrics, async (_request, reply) =>
      reply
        .code(200)
        .header('content-type', metrics.contentType)
        .send(await metrics.metrics()),
    );
  }
}
