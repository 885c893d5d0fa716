/**
 * Liveness and readiness that mean something. Live says the process can answer at all, so an
 * orchestrator restarts it only when restarting helps. Ready says it should get traffic: not while a
 * breaker on a critical dependency is open, nor while a critical invariant is failing — and the 503
 * is a problem body naming exactly what is not ready. The framework helpers in `keel/fastify`,
 * `keel/express` and `keel/hono` serve these two and `/metrics`.
 *
 * @module
 */
import { InvalidOptionError } from '../errors/keel-error.ts';
import { PROBLEM_CONTENT_TYPE, type ProblemDetails, problemType } from '../http/problem.ts';

/** The part of a circuit breaker readiness reads (a `CircuitBreakerPolicy` fits). */
export interface BreakerStateSource {
  readonly state: string;
}

/** The part of an invariant evaluator readiness reads (an `InvariantEvaluator` fits). */
export interface FiringInvariantsSource {
  firing(): readonly { readonly name: string; readonly severity: string }[];
}

/** Options of {@link healthChecks}. */
export interface HealthChecksOptions {
  /** Breakers on critical dependencies by name; ready fails while any is `open` or `isolated`. */
  readonly critical?: Readonly<Record<string, BreakerStateSource>>;
  /** Ready fails while any invariant of severity `critical` is firing. */
  readonly invariants?: FiringInvariantsSource;
  /** Extra readiness checks by name (warm caches, migrations done); `false` or a throw is not ready. */
  readonly checks?: Readonly<Record<string, () => boolean | Promise<boolean>>>;
}

/** A health answer for any HTTP framework. */
export interface HealthResponse {
  readonly status: 200 | 503;
  readonly contentType: string;
  readonly body: HealthBody | ProblemDetails;
}

/** The body of a passing health check. */
export interface HealthBody {
  readonly status: 'ok';
  readonly checks: readonly HealthCheckResult[];
}

/** One readiness input and its verdict. */
export interface HealthCheckResult {
  readonly name: string;
  readonly kind: 'breaker' | 'invariant' | 'check';
  readonly ready: boolean;
  readonly detail: string;
}

/** See {@link healthChecks}. */
export interface Health {
  /** 200 whenever the process can answer. */
  live(): HealthResponse;
  /** 200 when ready for traffic; 503 with a problem body naming what is not. */
  ready(): Promise<HealthResponse>;
}

const NOT_READY_BREAKER_STATES = new Set(['open', 'isolated']);

/**
 * Liveness and readiness from breakers on critical dependencies and critical invariants.
 *
 * @example
 * const health = healthChecks({ critical: { 'payment-provider': providerBreaker, postgres: dbBreaker }, invariants: evaluator });
 * fastifyHealth(app, health, { metrics: registry });
 */
export function healthChecks(options: HealthChecksOptions = {}): Health {
  const breakers = Object.entries(options.critical ?? {});
  for (const [name, breaker] of breakers) {
    if (typeof breaker?.state !== 'string')
      throw new InvalidOptionError(`critical.${name}`, 'must expose a state');
  }
  const checks = Object.entries(options.checks ?? {});
  for (const [name, check] of checks) {
    if (typeof check !== 'function') throw new InvalidOptionError(`checks.${name}`, 'must be a function');
  }
  const { invariants } = options;
  return {
    live: () => ({ status: 200, contentType: 'application/json', body: { status: 'ok', checks: [] } }),
    async ready() {
      const results: HealthCheckResult[] = breakers.map(([name, breaker]) => {
        const state = breaker.state;
        return {
          name,
          kind: 'breaker',
          ready: !NOT_READY_BREAKER_STATES.has(state),
          detail: `breaker ${state}`,
        };
      });
      for (const firing of invariants?.firing() ?? []) {
        if (firing.severity !== 'critical') continue;
        results.push({
          name: firing.name,
          kind: 'invariant',
          ready: false,
          detail: 'critical invariant failing',
        });
      }
      for (const [name, check] of checks) {
        let ready: boolean;
        let detail: string;
        try {
          ready = (await check()) === true;
          detail = ready ? 'ok' : 'not ready';
        } catch (err) {
          ready = false;
          detail = `threw: ${err instanceof Error ? err.message : String(err)}`;
        }
        results.push({ name, kind: 'check', ready, detail });
      }
      const failing = results.filter((r) => !r.ready);
      if (failing.length === 0) {
        return { status: 200, contentType: 'application/json', body: { status: 'ok', checks: results } };
      }
      const problem: ProblemDetails = {
        type: problemType('not-ready'),
        title: 'Service not ready',
        status: 503,
        detail: failing.map((r) => `${r.kind} ${r.name}: ${r.detail}`).join('; '),
        checks: results,
      };
      return { status: 503, contentType: PROBLEM_CONTENT_TYPE, body: problem };
    },
  };
}

/** A metrics registry the health helpers serve at `/metrics` (a prom-client `Registry` fits). */
export interface MetricsEndpointSource {
  readonly contentType: string;
  metrics(): string | Promise<string>;
}

/** Options of the framework health helpers. */
export interface HealthRouteOptions {
  /** Serves `/metrics` from this registry when given. */
  readonly metrics?: MetricsEndpointSource;
  /** @default { live: '/health/live', ready: '/health/ready', metrics: '/metrics' } */
  readonly paths?: { readonly live?: string; readonly ready?: string; readonly metrics?: string };
}

/** The resolved paths of the health routes. */
export function healthPaths(options: HealthRouteOptions = {}): {
  live: string;
  ready: string;
  metrics: string;
} {
  return {
    live: options.paths?.live ?? '/health/live',
    ready: options.paths?.ready ?? '/health/ready',
    metrics: options.paths?.metrics ?? '/metrics',
  };
}
