import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { FakeClock } from 'keel';
import {
  AlertDeliveryError,
  alertmanagerSink,
  dataCheck,
  defineAlert,
  invariants,
  logSink,
  webhookSink,
} from 'keel/observe';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

interface Received {
  path: string;
  contentType: string | undefined;
  authorization: string | undefined;
  body: unknown;
}

const alert = defineAlert({
  what: 'Payments without an invoice',
  where: 'table payments; logs: event="invoice.failed"',
  impact: 'Customers do not get the invoice they are owed',
  next: 'keel replay --type payment.completed --since 2h',
  severity: 'critical',
  group: 'invoicing',
});

const received: Received[] = [];
let status = 200;
let server: Server;
let base: string;

async function readBody(req: IncomingMessage): Promise<string> {
  let text = '';
  for await (const chunk of req) text += String(chunk);
  return text;
}

beforeAll(async () => {
  server = createServer(async (req, res) => {
    const text = await readBody(req);
    received.push({
      path: req.url ?? '',
      contentType: req.headers['content-type'],
      authorization: req.headers.authorization,
      body: JSON.parse(text),
    });
    res.statusCode = status;
    res.end(status === 200 ? 'ok' : 'receiver is down');
  });
  server.listen(0, '127.0.0.1');
  await new Promise<void>((resolve) => server.once('listening', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

function scenario() {
  let missing = ['pay-17', 'pay-18'];
  const check = dataCheck({
    name: 'payments_have_invoices',
    sql: 'SELECT p.id FROM payments p LEFT JOIN invoices i ON i.payment_id = p.id WHERE i.id IS NULL',
    query: () => ({ ids: missing, total: missing.length, oldestAgeMs: 900_000 }),
    alert,
  });
  const wall = { now: () => Date.UTC(2026, 0, 2, 3, 4, 5) };
  const heal = () => {
    missing = [];
  };
  return { check, wall, heal };
}

describe('alert sinks', () => {
  it('posts the JSON webhook payload with the four parts, ids and query, then the resolve', async () => {
    received.length = 0;
    const { check, wall, heal } = scenario();
    const sink = webhookSink({ url: `${base}/hooks/keel`, headers: { authorization: 'Bearer t0k' } });
    const evaluator = invariants({ checks: [check], clock: new FakeClock(), wallClock: wall, sinks: [sink] });
    await evaluator.evaluateOnce();
    heal();
    await evaluator.evaluateOnce();
    expect(received.map((r) => [r.path, r.contentType, r.authorization])).toEqual([
      ['/hooks/keel', 'application/json', 'Bearer t0k'],
      ['/hooks/keel', 'application/json', 'Bearer t0k'],
    ]);
    expect(received[0]?.body).toMatchObject({
      status: 'firing',
      name: 'payments_have_invoices',
      severity: 'critical',
      group: 'invoicing',
      what: alert.what,
      where: alert.where,
      impact: alert.impact,
      next: 'keel replay --type payment.completed --since 2h',
      ids: ['pay-17', 'pay-18'],
      total: 2,
      oldestAgeMs: 900_000,
      query: 'SELECT p.id FROM payments p LEFT JOIN invoices i ON i.payment_id = p.id WHERE i.id IS NULL',
      startsAt: '2026-01-02T03:04:05.000Z',
      endsAt: null,
    });
    expect(received[1]?.body).toMatchObject({ status: 'resolved', endsAt: '2026-01-02T03:04:05.000Z' });
  });

  it('posts the Alertmanager v2 shape to /api/v2/alerts', async () => {
    received.length = 0;
    const { check, wall, heal } = scenario();
    const sink = alertmanagerSink({
      url: `${base}/am/`,
      generatorURL: 'https://shop.example.com/health/ready',
    });
    const evaluator = invariants({
      checks: [check],
      clock: new FakeClock(),
      wallClock: wall,
      sinks: [sink],
      renotifyMs: 600_000,
      intervalMs: 30_000,
    });
    await evaluator.evaluateOnce();
    heal();
    await evaluator.evaluateOnce();
    expect(received.map((r) => r.path)).toEqual(['/am/api/v2/alerts', '/am/api/v2/alerts']);
    expect(received[0]?.body).toEqual([
      {
        labels: { alertname: 'payments_have_invoices', severity: 'critical', group: 'invoicing' },
        annotations: {
          summary: alert.what,
          where: alert.where,
          impact: alert.impact,
          next: alert.next,
          detail: '2 offending rows, oldest 15m old',
          total: '2',
          ids: 'pay-17, pay-18',
          query: 'SELECT p.id FROM payments p LEFT JOIN invoices i ON i.payment_id = p.id WHERE i.id IS NULL',
        },
        startsAt: '2026-01-02T03:04:05.000Z',
        endsAt: '2026-01-02T03:15:05.000Z',
        generatorURL: 'https://shop.example.com/health/ready',
      },
    ]);
    expect(received[1]?.body).toMatchObject([{ endsAt: '2026-01-02T03:04:05.000Z' }]);
  });

  it('reports a non-2xx answer as a delivery error', async () => {
    status = 503;
    try {
      const { check, wall } = scenario();
      const errors: unknown[] = [];
      const evaluator = invariants({
        checks: [check],
        clock: new FakeClock(),
        wallClock: wall,
        sinks: [webhookSink({ url: `${base}/down` })],
        onSinkError: (err) => errors.push(err),
      });
      await evaluator.evaluateOnce();
      expect(errors).toHaveLength(1);
      expect(errors[0]).toBeInstanceOf(AlertDeliveryError);
      expect(errors[0]).toMatchObject({ status: 503, code: 'KEEL_ALERT_DELIVERY_FAILED' });
    } finally {
      status = 200;
    }
  });

  it('logs firing critical alerts as errors and resolves as info', async () => {
    const lines: [string, Record<string, unknown>, string][] = [];
    const logger = {
      error: (o: object, m: string) => void lines.push(['error', o as Record<string, unknown>, m]),
      warn: (o: object, m: string) => void lines.push(['warn', o as Record<string, unknown>, m]),
      info: (o: object, m: string) => void lines.push(['info', o as Record<string, unknown>, m]),
    };
    const { check, heal } = scenario();
    const evaluator = invariants({ checks: [check], clock: new FakeClock(), sinks: [logSink(logger)] });
    await evaluator.evaluateOnce();
    heal();
    await evaluator.evaluateOnce();
    expect(lines.map(([level]) => level)).toEqual(['error', 'info']);
    expect(lines[0]?.[1]).toMatchObject({
      alert: 'payments_have_invoices',
      ids: ['pay-17', 'pay-18'],
      total: 2,
    });
    expect(lines[0]?.[2]).toContain('next: keel replay --type payment.completed --since 2h');
  });

  it('refuses an invalid url', () => {
    expect(() => webhookSink({ url: 'not a url' })).toThrow();
  });
});
