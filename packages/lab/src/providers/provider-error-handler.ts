/**
 * @module
 * Turns what Fastify throws (schema validation failures, unparsable bodies, unexpected errors) into
 * the provider's Stripe-like error body, naming the parameter at fault so a client can tell a
 * missing field from a bad one.
 */
import type { FastifyError, FastifyReply, FastifyRequest, FastifySchemaValidationError } from 'fastify';
import { type ProviderErrorBody, providerError } from './provider-error-body.ts';

/**
 * Fastify error handler of the provider.
 *
 * @example
 * app.setErrorHandler(answerProviderError);
 */
export function answerProviderError(error: FastifyError, _request: FastifyRequest, reply: FastifyReply) {
  if (error.validation) {
    return reply.code(400).send(validationErrorBody(error.validation, error.validationContext ?? 'request'));
  }
  const status = error.statusCode ?? 500;
  if (status >= 400 && status < 500) {
    return reply.code(status).send(providerError('invalid_request_error', 'request_invalid', error.message));
  }
  reply.log.error({ err: error }, 'provider request failed');
  return reply
    .code(500)
    .send(providerError('api_error', 'internal_error', 'The provider failed unexpectedly.'));
}

function validationErrorBody(errors: FastifySchemaValidationError[], part: string): ProviderErrorBody {
  const missing = errors.find((error) => error.keyword === 'required');
  if (missing) {
    const names = (missing.params as { requiredProperties?: unknown }).requiredProperties;
    const param = Array.isArray(names) ? String(names[0]) : undefined;
    return providerError(
      'invalid_request_error',
      'parameter_missing',
      `Missing required ${part} param: ${param}.`,
      param,
    );
  }
  const unknown = errors.find((error) => error.keyword === 'additionalProperties');
  if (unknown) {
    const names = (unknown.params as { additionalProperties?: unknown }).additionalProperties;
    const param = Array.isArray(names) ? String(names[0]) : undefined;
    return providerError(
      'invalid_request_error',
      'parameter_unknown',
      `Received unknown ${part} param: ${param}.`,
      param,
    );
  }
  const first = errors[0];
  const path = first?.instancePath ?? '';
  const param = path.replace(/^\//, '').replaceAll('/', '.') || undefined;
  const allowed = (first?.params as { allowedValues?: unknown } | undefined)?.allowedValues;
  const reason =
    first?.keyword === 'enum' && Array.isArray(allowed)
      ? `must be one of ${allowed.join(', ')}`
      : (first?.message ?? 'is invalid');
  const subject = param === undefined ? `The ${part}` : `Invalid ${part} param ${param}:`;
  return providerError('invalid_request_error', 'parameter_invalid', `${subject} ${reason}.`, param);
}
