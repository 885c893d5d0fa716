/**
 * @module
 * The provider's error responses, shaped like Stripe's (`{ error: { type, code, message, param } }`)
 * because the provider plays a third party: clients branch on `type` and `code`, never on the text.
 */

/** The families of error, as a client would branch on them. */
export type ProviderErrorType =
  | 'invalid_request_error'
  | 'idempotency_error'
  | 'rate_limit_error'
  | 'api_error';

export interface ProviderErrorBody {
  error: {
    type: ProviderErrorType;
    /** Stable within a type, e.g. `parameter_invalid`, `idempotency_key_in_use`, `provider_outage`. */
    code: string;
    message: string;
    /** The request field at fault, for validation errors. */
    param?: string;
  };
}

/**
 * @example
 * reply.code(409).send(providerError('idempotency_error', 'idempotency_key_in_use', 'Another request …'));
 */
export function providerError(
  type: ProviderErrorType,
  code: string,
  message: string,
  param?: string,
): ProviderErrorBody {
  return { error: param === undefined ? { type, code, message } : { type, code, message, param } };
}
