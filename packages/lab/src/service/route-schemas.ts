/**
 * @module
 * The shapes every route accepts and answers, as TypeBox schemas: Fastify validates requests
 * against them before a handler runs (a failure becomes a 400 problem naming the field), and the
 * handlers get their static types from them. Money is an integer in minor units; a currency is any
 * three letters here, and the handler says which ones the service accepts, so an unsupported one
 * gets its own problem type rather than a generic validation error.
 */
import { type Static, Type } from 'typebox';

/** Currencies the providers settle. */
export const SUPPORTED_CURRENCIES = ['usd', 'eur', 'gbp', 'chf', 'jpy'] as const;

/** The largest amount one order may carry, in minor units (the providers' own limit). */
export const MAX_ORDER_AMOUNT = 99_999_999;

export const CredentialsSchema = Type.Object(
  {
    email: Type.String({ minLength: 3, maxLength: 254, pattern: '^[^@\\s]+@[^@\\s]+$' }),
    password: Type.String({ minLength: 8, maxLength: 256 }),
  },
  { additionalProperties: false },
);
export type Credentials = Static<typeof CredentialsSchema>;

export const NewOrderSchema = Type.Object(
  {
    amount: Type.Integer({ minimum: 1, maximum: MAX_ORDER_AMOUNT }),
    currency: Type.String({ pattern: '^[A-Za-z]{3}$' }),
    description: Type.Optional(Type.String({ maxLength: 500 })),
  },
  { additionalProperties: false },
);
export type NewOrder = Static<typeof NewOrderSchema>;

export const IdParamsSchema = Type.Object({ id: Type.String({ minLength: 1, maxLength: 64 }) });

const Day = Type.String({ pattern: '^\\d{4}-\\d{2}-\\d{2}$' });

export const SalesReportQuerySchema = Type.Object(
  {
    from: Type.Optional(Day),
    to: Type.Optional(Day),
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 500 })),
  },
  { additionalProperties: false },
);
