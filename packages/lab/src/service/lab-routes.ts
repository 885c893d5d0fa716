/**
 * @module
 * The routes the failure lab drives a service instance through, served only with `--lab` (without
 * it they answer 404, as the providers' fault API does): `POST /lab/faults` stops or starts the
 * invoice consumer and sets the silent event faults — a share of publishes dropped, a share of
 * deliveries redelivered — and `GET /lab/alerts` lists every alert notification the service sent,
 * with the wall-clock time it went out, so the lab can time the alert against the breach it reads
 * from the database.
 */
import { formatAlert } from 'keel/observe';
import { type Static, Type } from 'typebox';
import type { AlertListSink } from './alert-list-sink.ts';
import type { LabTransport } from './lab-transport.ts';
import type { ServiceApp } from './service-types.ts';

export const LabFaultsSchema = Type.Object(
  {
    /** `stopped` stops the invoice consumers (and their heartbeat), as a crash would. @default 'running' */
    consumer: Type.Optional(Type.Union([Type.Literal('running'), Type.Literal('stopped')])),
    /** Share of publishes confirmed and never sent. @default 0 */
    dropShare: Type.Optional(Type.Number({ minimum: 0, maximum: 1 })),
    /** Share of deliveries handed to the consumer twice. @default 0 */
    redeliverShare: Type.Optional(Type.Number({ minimum: 0, maximum: 1 })),
    /** Event types the shares apply to. @default every type */
    types: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: 100 }), { maxItems: 20 })),
    /** Restarts the fault draws, so a run can be repeated. */
    seed: Type.Optional(Type.Integer({ minimum: 0, maximum: 4_294_967_295 })),
  },
  { additionalProperties: false },
);

/**
 * The lab's fault plan for the service. `POST /lab/faults` replaces the whole plan: what a body
 * leaves out goes back to its default, so `{}` lifts every fault and starts the consumer.
 */
export type LabFaults = Static<typeof LabFaultsSchema>;

/** The invoice consumers, as the lab switches them. */
export interface ConsumerSwitch {
  running(): boolean;
  stop(): Promise<void>;
  start(): Promise<void>;
}

export interface LabRoutesOptions {
  readonly transport: LabTransport;
  readonly consumers: ConsumerSwitch;
  readonly alerts: AlertListSink;
}

/** An alert notification as `GET /lab/alerts` lists it. */
export interface LabAlert {
  /** When the service sent it, ISO 8601 and epoch ms. */
  readonly sentAt: string;
  readonly sentAtMs: number;
  readonly status: 'firing' | 'resolved';
  readonly name: string;
  readonly severity: string;
  readonly what: string;
  readonly where: string;
  readonly impact: string;
  readonly next: string;
  /** A sample of the offending entity ids, and how many there are. */
  readonly ids: readonly string[];
  readonly total: number;
  readonly detail: string;
  /** When the evaluator first saw the breach, epoch ms. */
  readonly startsAt: number;
  /** The notification as a person reads it. */
  readonly text: string;
}

function faultState(options: LabRoutesOptions) {
  const { dropShare, redeliverShare, types } = options.transport.faults;
  return {
    consumer: options.consumers.running() ? 'running' : 'stopped',
    dropShare,
    redeliverShare,
    types,
    ...options.transport.counts(),
  };
}

/**
 * Registers `GET|POST /lab/faults` and `GET /lab/alerts`; call it only in lab mode.
 *
 * @example
 * if (config.lab) labRoutes(app, { transport, consumers, alerts: alertList });
 */
export function labRoutes(app: ServiceApp, options: LabRoutesOptions): void {
  app.get('/lab/faults', async () => faultState(options));

  app.post('/lab/faults', { schema: { body: LabFaultsSchema } }, async (request) => {
    const body = request.body ?? {};
    options.transport.setFaults(
      { dropShare: body.dropShare ?? 0, redeliverShare: body.redeliverShare ?? 0, types: body.types ?? [] },
      body.seed,
    );
    if (body.consumer === 'stopped') await options.consumers.stop();
    else await options.consumers.start();
    return faultState(options);
  });

  app.get('/lab/alerts', async () => ({
    alerts: options.alerts.sent.map(
      ({ sentAt, notification }): LabAlert => ({
        sentAt: new Date(sentAt).toISOString(),
        sentAtMs: sentAt,
        status: notification.status,
        name: notification.name,
        severity: notification.alert.severity,
        what: notification.alert.what,
        where: notification.alert.where,
        impact: notification.alert.impact,
        next: notification.alert.next,
        ids: notification.evidence.ids,
        total: notification.evidence.total,
        detail: notification.evidence.detail,
        startsAt: notification.startsAt,
        text: formatAlert(notification),
      }),
    ),
  }));
}
