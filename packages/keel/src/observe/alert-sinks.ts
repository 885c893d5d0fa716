/**
 * Where alert notifications go: a logger, a JSON webhook (chat, an incident tool) or an
 * Alertmanager-compatible endpoint, which then owns grouping, silences and routing. A sink only
 * delivers; deciding when to fire, re-notify and resolve is the evaluator's job.
 *
 * @module
 */
import { KeelError } from '../errors/keel-error.ts';
import { checkFunction } from '../policy/options.ts';
import { type AlertNotification, formatAlert } from './alert.ts';

/**
 * Receives alert notifications.
 *
 * @example
 * const consoleSink: AlertSink = { name: 'console', send: async (n) => console.log(formatAlert(n)) };
 */
export interface AlertSink {
  /** Names the sink in delivery errors. */
  readonly name: string;
  send(notification: AlertNotification): Promise<void>;
}

/** Thrown by a webhook sink when the receiver answers with a non-2xx status. */
export class AlertDeliveryError extends KeelError {
  readonly status: number;
  constructor(sink: string, status: number, body: string) {
    super('KEEL_ALERT_DELIVERY_FAILED', `Alert sink ${sink} got HTTP ${status}: ${body.slice(0, 200)}`);
    this.status = status;
  }
}

/** The logger methods {@link logSink} calls (pino, console and most loggers fit). */
export interface AlertLogger {
  error(object: object, message: string): void;
  warn(object: object, message: string): void;
  info(object: object, message: string): void;
}

/**
 * Logs each notification: `error` for firing critical alerts, `warn` for other firing ones, `info`
 * for resolves. The object carries every part; the message is the human text.
 *
 * @example
 * const sinks = [logSink(pino())];
 */
export function logSink(logger: AlertLogger): AlertSink {
  return {
    name: 'log',
    async send(notification) {
      const { alert, evidence } = notification;
      const fields = {
        alert: notification.name,
        status: notification.status,
        severity: alert.severity,
        group: alert.group,
        ids: evidence.ids,
        total: evidence.total,
        query: evidence.query,
        next: alert.next,
      };
      const text = formatAlert(notification);
      if (notification.status === 'resolved') logger.info(fields, text);
      else if (alert.severity === 'critical') logger.error(fields, text);
      else logger.warn(fields, text);
    },
  };
}

/** The `fetch` the webhook sinks call; the global one by default. */
export type FetchLike = (
  url: string,
  init: { method: string; headers: Record<string, string>; body: string; signal?: AbortSignal },
) => Promise<{ readonly ok: boolean; readonly status: number; text(): Promise<string> }>;

/** Options of {@link webhookSink} and {@link alertmanagerSink}. */
export interface WebhookSinkOptions {
  readonly url: string;
  /** Extra headers, such as `authorization`. */
  readonly headers?: Readonly<Record<string, string>>;
  /** @default globalThis.fetch */
  readonly fetch?: FetchLike;
  /** @default 10_000 */
  readonly timeoutMs?: number;
}

/** The JSON body {@link webhookSink} posts. */
export interface WebhookPayload {
  readonly status: 'firing' | 'resolved';
  readonly name: string;
  readonly severity: string;
  readonly group: string;
  readonly what: string;
  readonly where: string;
  readonly impact: string;
  readonly next: string;
  readonly ids: readonly string[];
  readonly total: number;
  readonly oldestAgeMs: number | null;
  readonly query: string | null;
  readonly detail: string;
  readonly startsAt: string;
  readonly endsAt: string | null;
  readonly sequence: number;
  readonly text: string;
}

function poster(options: WebhookSinkOptions, sink: string): (body: unknown) => Promise<void> {
  const url = new URL(options.url).toString();
  const send = checkFunction('fetch', options.fetch ?? (globalThis.fetch as unknown as FetchLike));
  const timeoutMs = options.timeoutMs ?? 10_000;
  return async (body) => {
    const response = await send(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...options.headers },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(timeoutMs),
    });
    const text = await response.text();
    if (!response.ok) throw new AlertDeliveryError(sink, response.status, text);
  };
}

/**
 * Posts each notification as one JSON object ({@link WebhookPayload}).
 *
 * @example
 * const sinks = [webhookSink({ url: 'https://hooks.example.com/keel', headers: { authorization: `Bearer ${token}` } })];
 */
export function webhookSink(options: WebhookSinkOptions): AlertSink {
  const post = poster(options, 'webhook');
  return {
    name: 'webhook',
    send(notification) {
      const { alert, evidence } = notification;
      const payload: WebhookPayload = {
        status: notification.status,
        name: notification.name,
        severity: alert.severity,
        group: alert.group,
        what: alert.what,
        where: alert.where,
        impact: alert.impact,
        next: alert.next,
        ids: evidence.ids,
        total: evidence.total,
        oldestAgeMs: evidence.oldestAgeMs ?? null,
        query: evidence.query ?? null,
        detail: evidence.detail,
        startsAt: new Date(notification.startsAt).toISOString(),
        endsAt: notification.endsAt === undefined ? null : new Date(notification.endsAt).toISOString(),
        sequence: notification.sequence,
        text: formatAlert(notification),
      };
      return post(payload);
    },
  };
}

/** One alert in Alertmanager's `POST /api/v2/alerts` body. */
export interface AlertmanagerAlert {
  readonly labels: Readonly<Record<string, string>>;
  readonly annotations: Readonly<Record<string, string>>;
  readonly startsAt: string;
  readonly endsAt?: string;
  readonly generatorURL?: string;
}

/**
 * The Alertmanager v2 body for one notification: labels `alertname`, `severity`, `group`, `kind`;
 * annotations `summary` (what broke), `where`, `impact`, `next`, `ids`, `total`, `query`, `detail`.
 *
 * @example
 * await fetch(`${am}/api/v2/alerts`, { method: 'POST', body: JSON.stringify(alertmanagerPayload(n)) });
 */
export function alertmanagerPayload(
  notification: AlertNotification,
  generatorURL?: string,
): AlertmanagerAlert[] {
  const { alert, evidence } = notification;
  const annotations: Record<string, string> = {
    summary: alert.what,
    where: alert.where,
    impact: alert.impact,
    next: alert.next,
    detail: evidence.detail,
    total: String(evidence.total),
  };
  if (evidence.ids.length > 0) annotations.ids = evidence.ids.join(', ');
  if (evidence.query !== undefined) annotations.query = evidence.query;
  const endsAt = notification.status === 'resolved' ? notification.endsAt : notification.expiresAt;
  return [
    {
      labels: { alertname: notification.name, severity: alert.severity, group: alert.group },
      annotations,
      startsAt: new Date(notification.startsAt).toISOString(),
      ...(endsAt === undefined ? {} : { endsAt: new Date(endsAt).toISOString() }),
      ...(generatorURL === undefined ? {} : { generatorURL }),
    },
  ];
}

/**
 * Posts to an Alertmanager (`url` is its base, e.g. `http://alertmanager:9093`; the sink posts to
 * `/api/v2/alerts`) or any receiver of that shape. Firing alerts carry `endsAt` = the time they
 * go stale unless re-sent, so a crashed evaluator's alerts resolve by themselves.
 *
 * @example
 * const sinks = [alertmanagerSink({ url: 'http://alertmanager:9093', generatorURL: 'https://shop.example.com/health/ready' })];
 */
export function alertmanagerSink(
  options: WebhookSinkOptions & { readonly generatorURL?: string },
): AlertSink {
  const base = new URL(options.url);
  const url = new URL(`${base.pathname.replace(/\/$/, '')}/api/v2/alerts`, base).toString();
  const post = poster({ ...options, url }, 'alertmanager');
  return {
    name: 'alertmanager',
    send: (notification) => post(alertmanagerPayload(notification, options.generatorURL)),
  };
}
