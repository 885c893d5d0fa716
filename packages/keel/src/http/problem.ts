/**
 * RFC 9457 problem details: the one shape every Keel HTTP error takes, with a stable `type` URI
 * that clients and tests can match on.
 *
 * @module
 */
import { KeelError } from '../errors/keel-error.ts';

/** Media type of a problem body. */
export const PROBLEM_CONTENT_TYPE = 'application/problem+json';

/** An RFC 9457 problem details object. Extension members are allowed beside the standard ones. */
export interface ProblemDetails {
  /** A stable URI naming the problem type, e.g. `urn:keel:problem:idempotency-key-missing`. */
  readonly type: string;
  /** A short summary that does not change between occurrences. */
  readonly title: string;
  /** The HTTP status code. */
  readonly status: number;
  /** What went wrong this time, for a human. */
  readonly detail?: string;
  /** The request path or another URI for this occurrence. */
  readonly instance?: string;
  readonly [extension: string]: unknown;
}

/** The `type` URI of a Keel problem named `name`. */
export function problemType(name: string): string {
  return `urn:keel:problem:${name}`;
}

/** An error that knows the HTTP response it should become. */
export interface ProblemSource {
  toProblem(instance?: string): ProblemDetails;
  /** Extra response headers, such as `Retry-After`. */
  readonly problemHeaders?: Readonly<Record<string, string>> | undefined;
}

/** True when `err` can describe itself as a problem body. */
export function isProblemSource(err: unknown): err is ProblemSource {
  return typeof err === 'object' && err !== null && typeof (err as ProblemSource).toProblem === 'function';
}

/**
 * A ready-made problem error for application code: throw it and the HTTP adapters answer with it.
 *
 * @example
 * throw new HttpProblem({ type: problemType('order-not-found'), title: 'Order not found', status: 404 });
 */
export class HttpProblem extends KeelError implements ProblemSource {
  readonly problem: ProblemDetails;
  readonly problemHeaders: Readonly<Record<string, string>> | undefined;
  constructor(problem: ProblemDetails, headers?: Readonly<Record<string, string>>) {
    super('KEEL_HTTP_PROBLEM', problem.detail ?? problem.title);
    this.problem = problem;
    this.problemHeaders = headers;
  }
  toProblem(instance?: string): ProblemDetails {
    return instance === undefined || this.problem.instance !== undefined
      ? this.problem
      : { ...this.problem, instance };
  }
}
