/**
 * @module
 * What the payments domain refuses, each as an error that knows its RFC 9457 problem: a stable
 * `type` URI clients and tests match on, a status, and a detail for a human. The service's error
 * handler answers any of them as `application/problem+json` without knowing them one by one.
 */
import { HttpProblem } from 'keel/idempotency';

/** The `type` URI of a payments problem named `name`. */
export function paymentsProblemType(name: string): string {
  return `urn:payments:problem:${name}`;
}

function problem(name: string, title: string, status: number, detail: string) {
  return { type: paymentsProblemType(name), title, status, detail };
}

export class OrderNotFoundError extends HttpProblem {
  constructor(orderId: string) {
    super(problem('order-not-found', 'Order not found', 404, `There is no order ${orderId} for this user.`));
    this.name = 'OrderNotFoundError';
  }
}

export class PaymentNotFoundError extends HttpProblem {
  constructor(paymentId: string) {
    super(
      problem(
        'payment-not-found',
        'Payment not found',
        404,
        `There is no payment ${paymentId} for this user.`,
      ),
    );
    this.name = 'PaymentNotFoundError';
  }
}

export class OrderAlreadyPaidError extends HttpProblem {
  constructor(orderId: string) {
    super(
      problem('order-already-paid', 'Order already paid', 409, `Order ${orderId} has been paid already.`),
    );
    this.name = 'OrderAlreadyPaidError';
  }
}

/** Another charge of the order (under another Idempotency-Key) is under way. */
export class ChargeInProgressError extends HttpProblem {
  constructor(orderId: string) {
    super(
      problem(
        'charge-in-progress',
        'Charge in progress',
        409,
        `Order ${orderId} is being charged by another request.`,
      ),
      { 'retry-after': '1' },
    );
    this.name = 'ChargeInProgressError';
  }
}

export class UnsupportedCurrencyError extends HttpProblem {
  constructor(currency: string, supported: readonly string[]) {
    super(
      problem(
        'unsupported-currency',
        'Unsupported currency',
        400,
        `Currency ${JSON.stringify(currency)} is not accepted; use one of ${supported.join(', ')}.`,
      ),
    );
    this.name = 'UnsupportedCurrencyError';
  }
}

export class EmailTakenError extends HttpProblem {
  constructor() {
    super(problem('email-taken', 'Email already registered', 409, 'An account with this email exists.'));
    this.name = 'EmailTakenError';
  }
}

export class InvalidCredentialsError extends HttpProblem {
  constructor() {
    super(problem('invalid-credentials', 'Invalid credentials', 401, 'The email or the password is wrong.'));
    this.name = 'InvalidCredentialsError';
  }
}

/** A missing, malformed, forged or expired bearer token. */
export class UnauthorizedError extends HttpProblem {
  constructor(detail: string) {
    super(problem('unauthorized', 'Unauthorized', 401, detail), { 'www-authenticate': 'Bearer' });
    this.name = 'UnauthorizedError';
  }
}

/** The provider refused the charge itself (a 4xx): trying again or elsewhere would not help. */
export class PaymentDeclinedError extends HttpProblem {
  constructor(provider: string, detail: string) {
    super({ ...problem('payment-declined', 'Payment declined', 402, detail), provider });
    this.name = 'PaymentDeclinedError';
  }
}

/** No provider could take the charge now; the client may retry with the same Idempotency-Key. */
export class ProvidersUnavailableError extends HttpProblem {
  constructor(detail: string, options?: { cause?: unknown }) {
    super(problem('providers-unavailable', 'Payment providers unavailable', 503, detail), {
      'retry-after': '1',
    });
    this.name = 'ProvidersUnavailableError';
    if (options?.cause !== undefined) this.cause = options.cause;
  }
}
