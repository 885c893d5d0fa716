/**
 * @module
 * The faults a provider can be told to show, as the JSON body of `PUT /__faults`. One schema serves
 * the provider (request validation) and the launcher's typed client, so both speak the same shape.
 * Rules a schema cannot state (a p99 below its p50, a window that ends before it starts) are checked
 * by {@link faultSettingsProblem}.
 */
import { type Static, Type } from 'typebox';

const PercentileLatency = Type.Object(
  {
    /** Median added latency, in milliseconds. */
    p50Ms: Type.Number({ minimum: 0, maximum: 600_000 }),
    /** 99th percentile; equal to `p50Ms` gives a fixed delay. */
    p99Ms: Type.Number({ minimum: 0, maximum: 600_000 }),
  },
  { additionalProperties: false },
);

const LognormalLatency = Type.Object(
  {
    distribution: Type.Literal('lognormal'),
    medianMs: Type.Number({ minimum: 0, maximum: 600_000 }),
    /** Standard deviation of the underlying normal; 0 gives a fixed delay. */
    sigma: Type.Number({ minimum: 0, maximum: 4 }),
  },
  { additionalProperties: false },
);

const OutageWindow = Type.Object(
  {
    /** Start, epoch milliseconds on the provider's clock (inclusive). */
    fromMs: Type.Integer({ minimum: 0 }),
    /** End, epoch milliseconds on the provider's clock (exclusive). */
    untilMs: Type.Integer({ minimum: 0 }),
  },
  { additionalProperties: false },
);

const Outage = Type.Union([
  Type.Object({ untilMs: Type.Integer({ minimum: 0 }) }, { additionalProperties: false }),
  Type.Object({ windows: Type.Array(OutageWindow, { maxItems: 100 }) }, { additionalProperties: false }),
]);

/** Statuses the provider can inject; 429 and 503 carry `Retry-After`. */
export const INJECTABLE_STATUSES = [500, 502, 503, 429] as const;

export const FaultSettingsSchema = Type.Object(
  {
    /** Added processing time for each faulted request. */
    latency: Type.Optional(Type.Union([PercentileLatency, LognormalLatency])),
    /** Share of faulted requests answered with an injected error, before any work is done. */
    errorRate: Type.Optional(Type.Number({ minimum: 0, maximum: 1 })),
    /** Statuses drawn uniformly for injected errors. @default [500, 503, 429] */
    errorStatuses: Type.Optional(
      Type.Array(Type.Enum([...INJECTABLE_STATUSES]), {
        minItems: 1,
        maxItems: 16,
      }),
    ),
    /** `Retry-After` sent with injected 429 and 503. @default 1 */
    retryAfterSeconds: Type.Optional(Type.Integer({ minimum: 0, maximum: 3_600 })),
    /** Hold every faulted request unanswered until the hang is lifted or the client gives up. */
    hang: Type.Optional(Type.Boolean()),
    /** Share of charges committed and then answered by destroying the socket. */
    dropResponseRate: Type.Optional(Type.Number({ minimum: 0, maximum: 1 })),
    /** Down (503 with `Retry-After` until the window ends) until a time, or during windows. */
    outage: Type.Optional(Outage),
    /** Apply outage, errors, hang and latency to the read endpoints too. @default false */
    applyToReads: Type.Optional(Type.Boolean()),
    /** Reseed the provider's random source, so a run can be repeated. */
    seed: Type.Optional(Type.Integer({ minimum: 0, maximum: 4_294_967_295 })),
  },
  { additionalProperties: false },
);

/**
 * A fault plan for one provider. `PUT /__faults` replaces the whole plan; an empty object is none.
 *
 * @example
 * const flaky: FaultSettings = { errorRate: 0.2, errorStatuses: [503, 429], retryAfterSeconds: 2 };
 */
export type FaultSettings = Static<typeof FaultSettingsSchema>;

/** Why the settings cannot be applied, or `undefined` when they can. */
export function faultSettingsProblem(settings: FaultSettings): string | undefined {
  const latency = settings.latency;
  if (latency && 'p50Ms' in latency) {
    if (latency.p99Ms < latency.p50Ms) return 'latency.p99Ms must be at least latency.p50Ms';
    if (latency.p50Ms === 0 && latency.p99Ms > 0) return 'latency.p50Ms must be above 0 when p99Ms is';
  }
  const outage = settings.outage;
  if (outage && 'windows' in outage) {
    const reversed = outage.windows.findIndex((window) => window.untilMs < window.fromMs);
    if (reversed >= 0) return `outage.windows[${reversed}].untilMs must not be before its fromMs`;
  }
  return undefined;
}
