/**
 * @module
 * Errors the provider's own code throws (not HTTP answers): bad options, a process that would not
 * start, a control request the provider refused. Each carries a stable `code` to branch on.
 */

/** Base of the provider's errors. */
export class ProviderError extends Error {
  readonly code: string;

  constructor(code: string, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

/** An option out of range, named in the message. */
export class InvalidProviderOptionError extends ProviderError {
  constructor(message: string) {
    super('PROVIDER_INVALID_OPTION', message);
  }
}

/** The provider process exited or stayed silent before it was listening. */
export class ProviderStartError extends ProviderError {
  constructor(message: string, options?: ErrorOptions) {
    super('PROVIDER_START_FAILED', message, options);
  }
}

/** A request of the control client was answered with an error status. */
export class ProviderRequestError extends ProviderError {
  readonly status: number;
  readonly body: unknown;

  constructor(status: number, body: unknown, message: string) {
    super('PROVIDER_REQUEST_FAILED', message);
    this.status = status;
    this.body = body;
  }
}
