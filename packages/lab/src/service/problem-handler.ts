/**
 * @module
 * The service's one error handler: whatever a route throws becomes an RFC 9457
 * `application/problem+json` answer. Errors that describe themselves (`isProblemSource`: the
 * domain's refusals, Keel's pool and idempotency errors) answer as they say; Fastify's validation
 * and body-parsing failures and Keel's policy errors (timeouts, local rejections) are mapped here;
 * anything else is a 500 that says nothing about the internals and is logged in full.
 */

import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { isKeelError, isRejection, TimeoutError } from 'keel';
import { isProblemSource, PROBLEM_CONTENT_TYPE, type ProblemDetails } from 'keel/idempotency';
import { paymentsProblemType } from './domain-errors.ts';

interface Answer {
  readonly problem: ProblemDetails;
  readonly headers?: Readonly<Record<string, string>> | undefined;
}

/** Fastify's content-type parser errors by code: what the client sent was not a usable body. */
const BODY_PROBLEMS: Readonly<Record<string, { name: string; title: string }>> = {
  FST_ERR_CTP_INVALID_JSON_BODY: { name: 'malformed-body', title: 'Malformed JSON body' },
  FST_ERR_CTP_EMPTY_JSON_BODY: { name: 'malformed-body', title: 'Empty JSON body' },
  FST_ERR_CTP_BODY_TOO_LARGE: { name: 'body-too-large', title: 'Request body too large' },
  FST_ERR_CTP_INVALID_MEDIA_TYPE: { name: 'unsupported-media-type', title: 'Unsupported media type' },
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: { name: 'malformed-body', title: 'Invalid Content-Length' },
};

function validationAnswer(error: FastifyError): Answer {
  const errors = (error.validation ?? []).map((issue) => ({
    location: error.validationContext ?? 'body',
    pointer: issue.instancePath === '' ? '/' : issue.instancePath,
    message: issue.message ?? issue.keyword,
  }));
  return {
    problem: {
      type: paymentsProblemType('validation-failed'),
      title: 'The request is not valid',
      status: 400,
      detail: error.message,
      errors,
    },
  };
}

function answerOf(error: unknown, instance: string): Answer | undefined {
  if (isProblemSource(error)) return { problem: error.toProblem(instance), headers: error.problemHeaders };
  const fastifyError = error as Partial<FastifyError> | null;
  if (fastifyError?.validation !== undefined) return validationAnswer(error as FastifyError);
  const body = typeof fastifyError?.code === 'string' ? BODY_PROBLEMS[fastifyError.code] : undefined;
  if (body !== undefined) {
    return {
      problem: {
        type: paymentsProblemType(body.name),
        title: body.title,
        status: fastifyError?.statusCode ?? 400,
        detail: fastifyError?.message ?? body.title,
      },
    };
  }
  if (error instanceof SyntaxError && fastifyError?.statusCode === 400) {
    return {
      problem: {
        type: paymentsProblemType('malformed-body'),
        title: 'Malformed JSON body',
        status: 400,
        detail: error.message,
      },
    };
  }
  if (isRejection(error)) {
    // A local refusal (open breaker, full bulkhead, deadline already spent): the work never started.
    return {
      problem: {
        type: paymentsProblemType('overloaded'),
        title: 'Service overloaded',
        status: 503,
        detail: error.message,
        code: error.code,
      },
      headers: { 'retry-after': '1' },
    };
  }
  if (error instanceof TimeoutError) {
    return {
      problem: {
        type: paymentsProblemType('deadline-exceeded'),
        title: 'Deadline exceeded',
        status: 504,
        detail: error.message,
      },
    };
  }
  const status = fastifyError?.statusCode;
  if (typeof status === 'number' && status >= 400 && status < 500) {
    return {
      problem: {
        type: paymentsProblemType('bad-request'),
        title: 'Bad request',
        status,
        detail: fastifyError?.message ?? '',
      },
    };
  }
  return undefined;
}

/**
 * Fastify error handler answering every error as problem+json.
 *
 * @example
 * app.setErrorHandler(answerProblem);
 */
export function answerProblem(error: unknown, request: FastifyRequest, reply: FastifyReply): FastifyReply {
  const instance = request.url.split('?')[0] ?? request.url;
  const answer = answerOf(error, instance) ?? {
    problem: {
      type: paymentsProblemType('internal-error'),
      title: 'Internal error',
      status: 500,
      detail: 'The service failed unexpectedly; the request id in x-request-id finds it in the logs.',
    },
  };
  if (answer.problem.status >= 500) {
    request.log.error({ err: error, code: isKeelError(error) ? error.code : undefined }, 'request failed');
  }
  const problem = answer.problem.instance === undefined ? { ...answer.problem, instance } : answer.problem;
  reply.code(answer.problem.status).header('content-type', PROBLEM_CONTENT_TYPE);
  for (const [name, value] of Object.entries(answer.headers ?? {})) reply.header(name, value);
  return reply.send(JSON.stringify(problem));
}

/**
 * Answers unknown routes as problem+json too.
 *
 * @example
 * app.setNotFoundHandler(answerNotFound);
 */
export function answerNotFound(request: FastifyRequest, reply: FastifyReply): FastifyReply {
  const instance = request.url.split('?')[0] ?? request.url;
  return reply
    .code(404)
    .header('content-type', PROBLEM_CONTENT_TYPE)
    .send(
      JSON.stringify({
        type: paymentsProblemType('route-not-found'),
        title: 'Not found',
        status: 404,
        detail: `No route ${request.method} ${instance}.`,
        instance,
      }),
    );
}
