/**
 * @module
 * The shapes the provider accepts on its charge endpoints, as TypeBox schemas: Fastify validates
 * requests against them, and the handlers get their static types from them. Money is an integer in
 * minor units, as at every card processor, so no amount is ever a float.
 */
import { type Static, Type } from 'typebox';

/** Currencies the provider settles; anything else is refused with 400. */
export const SUPPORTED_CURRENCIES = ['usd', 'eur', 'gbp', 'chf', 'jpy'] as const;

/** The largest amount one charge may carry, in minor units. */
export const MAX_CHARGE_AMOUNT = 99_999_999;

/** Idempotency keys longer than this are refused, as at Stripe. */
export const MAX_IDEMPOTENCY_KEY_LENGTH = 255;

export const ChargeRequestSchema = Type.Object(
  {
    /** Positive integer, minor units (cents). */
    amount: Type.Integer({ minimum: 1, maximum: MAX_CHARGE_AMOUNT }),
    /** Lowercase ISO 4217 code, one of {@link SUPPORTED_CURRENCIES}. */
    currency: Type.Enum([...SUPPORTED_CURRENCIES]),
    /** The merchant's own order id, so charges can be found again by order. */
    reference: Type.String({ minLength: 1, maxLength: 255 }),
    description: Type.Optional(Type.String({ maxLength: 1_000 })),
  },
  { additionalProperties: false },
);

/** The body of `POST /charges`. */
export type ChargeRequest = Static<typeof ChargeRequestSchema>;

export const ChargeHeadersSchema = Type.Object({
  'idempotency-key': Type.Optional(Type.String({ minLength: 1, maxLength: MAX_IDEMPOTENCY_KEY_LENGTH })),
});

export const ChargeParamsSchema = Type.Object({ id: Type.String({ minLength: 1, maxLength: 255 }) });

export const ChargeListQuerySchema = Type.Object({
  reference: Type.Optional(Type.String({ minLength: 1, maxLength: 255 })),
  idempotency_key: Type.Optional(Type.String({ minLength: 1, maxLength: MAX_IDEMPOTENCY_KEY_LENGTH })),
  /** Only charges created at or after this epoch millisecond. */
  created_gte: Type.Optional(Type.Integer({ minimum: 0 })),
  /** Page size. @default 10 */
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 100 })),
  /** `next_cursor` of the previous page. */
  cursor: Type.Optional(Type.String({ pattern: '^[1-9][0-9]{0,15}$' })),
});

/** The query of `GET /charges`. */
export type ChargeListQuery = Static<typeof ChargeListQuerySchema>;

/** Page size of `GET /charges` when the query names none. */
export const DEFAULT_LIST_LIMIT = 10;
