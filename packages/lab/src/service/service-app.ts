/**
 * @module
 * Wires the payments service: storage, events, providers, metrics, health and routes, in one of two
 * configurations of the same code. `guarded` adds what Keel gives — a request deadline, the pool
 * guard, required idempotency keys with recovery points, breakers, retry budgets and failover, an
 * outbox and inbox-deduplicated consumers, the completer sweep over abandoned charges, and invariants
 * and heartbeats that alert on what no response shows. `naive` leaves each of them out, as a first
 * version would. Nothing else differs.
 */
import { TypeBoxValidatorCompiler } from '@fastify/type-provider-typebox';
import Fastify, { type FastifyRequest } from 'fastify';
import { readDeadlineHeader, withTimeBudget } from 'keel';
import { fastifyContext, fastifyHealth, idempotencyPlugin } from 'keel/fastify';
import { type CompleterReport, idempotency } from 'keel/idempotency';
import {
  type AlertNotification,
  type AlertSink,
  healthChecks,
  type InvariantEvaluator,
  invariants,
  logMixin,
  logSink,
} from 'keel/observe';
import type { Transport } from 'keel/outbox';
import { postgresStore } from 'keel/postgres';
import { sqliteStore } from 'keel/sqlite';
import pino from 'pino';
import { type AbandonedChargeSweep, abandonedChargeSweep } from './abandoned-charges.ts';
import { accountRoutes } from './account-routes.ts';
import { alertListSink } from './alert-list-sink.ts';
import { tokenSigner } from './auth-tokens.ts';
import { requestUser } from './bearer-auth.ts';
import type { ChargeStrategy } from './charge-strategy.ts';
import { chargeTargets } from './charge-targets.ts';
import type { ServiceConfig } from './config.ts';
import type { Database } from './database.ts';
import { type EventOutbox, eventOutbox } from './event-outbox.ts';
import { openTransport } from './event-transport.ts';
import { guardedCharge } from './guarded-charge.ts';
import { type InvoiceConsumers, startInvoiceConsumers } from './invoice-consumer.ts';
import { labRoutes } from './lab-routes.ts';
import { labTransport } from './lab-transport.ts';
import { type MailStub, mailStub } from './mail-stub.ts';
import { naiveCharge } from './naive-charge.ts';
import { CHARGE_ROUTE, orderRoutes } from './order-routes.ts';
import { replayAlerts, replayDatabase } from './payment-alerts.ts';
import { paymentEventBacklog, paymentInvariants } from './payment-invariants.ts';
import { postgresDatabase } from './postgres-database.ts';
import { answerNotFound, answerProblem } from './problem-handler.ts';
import { providerClient } from './provider-client.ts';
import { providerReconciliation } from './provider-reconciliation.ts';
import { type ProviderRouting, providerRouting } from './provider-routing.ts';
import { reportAdmission, reportRoutes } from './report-routes.ts';
import { seedSales } from './sales-seed.ts';
import { migrateSchema } from './schema.ts';
import { type InvoiceConsumerJob, invoiceConsumerJob, salesReportJob } from './service-heartbeats.ts';
import { invariantBreachedGauge, type ServiceMetrics, serviceMetrics } from './service-metrics.ts';
import type { ServiceApp } from './service-types.ts';
import { sqliteDatabase } from './sqlite-database.ts';

export interface Service {
  readonly config: ServiceConfig;
  readonly app: ServiceApp;
  readonly db: Database;
  readonly transport: Transport;
  readonly outbox: EventOutbox;
  /** What the invoices asked the mail provider to send. */
  readonly mail: MailStub;
  readonly metrics: ServiceMetrics;
  /** The guarded provider pipeline (breakers by provider); `undefined` in naive mode. */
  readonly routing: ProviderRouting | undefined;
  /**
   * The invariants and heartbeats, evaluated every `invariantIntervalMs` once started; `undefined`
   * in naive mode, which has none. `evaluateOnce()` runs a round now.
   */
  readonly invariants: InvariantEvaluator | undefined;
  /** Every alert notification (firing and resolved) so far, oldest first; empty in naive mode. */
  readonly alerts: readonly AlertNotification[];
  /** Runs the completer sweep now (guarded mode); `undefined` in naive mode. */
  sweepAbandoned(): Promise<CompleterReport | undefined>;
  /** Stops the invoice consumers (and their heartbeat), as a crashed consumer would: the lab's silent failure. */
  stopInvoiceConsumers(): Promise<void>;
  /** Starts the invoice consumers again after {@link stopInvoiceConsumers}, as a restarted one would. */
  resumeInvoiceConsumers(): Promise<void>;
  /** Starts the relay, the consumers, the jobs, the completer and the invariants, and listens; resolves with the base URL. */
  start(): Promise<string>;
  /** Stops listening, lets requests in flight finish, stops jobs and events, closes the database. */
  stop(): Promise<void>;
}

/** The alert log: pino on stderr, so alerts never mix with what a command prints on stdout. */
function alertLogSinks(config: ServiceConfig): AlertSink[] {
  if (!config.logAlerts) return [];
  return [logSink(pino({ name: 'payments-alerts' }, pino.destination({ dest: 2, sync: true })))];
}

function openDatabase(config: ServiceConfig, metrics: ServiceMetrics): Database {
  const telemetry = config.mode === 'guarded' ? { telemetry: metrics.keel.policy } : {};
  return config.db.kind === 'sqlite'
    ? sqliteDatabase({ path: config.db.path, mode: config.mode, poolSize: config.db.poolSize, ...telemetry })
    : postgresDatabase({ url: config.db.url, mode: config.mode, poolSize: config.db.poolSize, ...telemetry });
}

/**
 * Migrates and seeds the database, connects the transport and builds the app; `start()` listens.
 *
 * @example
 * const service = await buildService(serviceConfig({ providerA: a.url, providerB: b.url, rows: 500 }));
 * const url = await service.start();
 * await service.stop();
 */
export async function buildService(config: ServiceConfig): Promise<Service> {
  const metrics = serviceMetrics();
  const db = openDatabase(config, metrics);
  let opened: Awaited<ReturnType<typeof openTransport>> | undefined;
  try {
    await migrateSchema(db.driver);
    await seedSales(db.driver, { rows: config.salesRows, seed: config.seed });
    opened = await openTransport(config.broker, config.eventChannel);
  } catch (error) {
    await db.close();
    throw error;
  }
  // Lab mode puts the silent event faults (dropped publishes, redeliveries) between the service and its broker.
  const faultSwitch = config.lab ? labTransport(opened.transport, { seed: config.seed }) : undefined;
  const transport = faultSwitch ?? opened.transport;
  const closeTransport = opened.close;
  const guarded = config.mode === 'guarded';
  const tokens = tokenSigner(config.tokenSecret);
  const mail = mailStub();
  const outbox = await eventOutbox({ db, transport, telemetry: metrics.keel.outbox });
  const providers = [
    providerClient(config.primary.name, config.primary.url),
    providerClient(config.secondary.name, config.secondary.url),
  ];

  const app: ServiceApp = Fastify({
    bodyLimit: config.bodyLimitBytes,
    logger: config.logger ? { mixin: logMixin() } : false,
  }).withTypeProvider();
  app.setValidatorCompiler(TypeBoxValidatorCompiler);
  app.setErrorHandler(answerProblem);
  app.setNotFoundHandler(answerNotFound);

  const startContext = fastifyContext();
  app.addHook('onRequest', (request, reply, done) =>
    startContext(request, reply, () => {
      if (!guarded) return done();
      // The request's budget, from its Request-Timeout header or the default, bounds everything below.
      withTimeBudget(readDeadlineHeader(request.headers) ?? config.requestTimeoutMs, done);
    }),
  );

  let routing: ProviderRouting | undefined;
  let engine: ReturnType<typeof idempotency> | undefined;
  let completer: AbandonedChargeSweep | undefined;
  let charges: ChargeStrategy;
  if (guarded) {
    const driver = db.driver;
    const store =
      driver.dialect === 'sqlite' ? sqliteStore({ db: driver.db }) : postgresStore({ pool: driver.pool });
    if (driver.dialect === 'postgres') await (store as ReturnType<typeof postgresStore>).ensureSchema();
    engine = idempotency({
      store,
      leaseMs: config.chargeLeaseMs,
      // A retry that finds its key held (by an instance that was killed, say) waits for the result.
      inFlightWaitMs: Math.floor((config.requestTimeoutMs * 2) / 3),
      telemetry: metrics.keel.idempotency,
      name: 'charges',
    });
    await app.register(idempotencyPlugin, {
      engine,
      principal: (request) => requestUser(request as FastifyRequest),
      // Keys are scoped to the order being charged, not only to the route pattern.
      route: (request) => request.url.split('?')[0] ?? request.url,
      routes: (route, method) => method === 'POST' && route === CHARGE_ROUTE,
    });
    routing = providerRouting({
      providers,
      targets: chargeTargets(db),
      attemptTimeoutMs: config.providerTimeoutMs,
      deadlineMs: config.requestTimeoutMs,
      telemetry: metrics.keel.policy,
    });
    charges = guardedCharge({
      db,
      routing,
      outbox,
      metrics: metrics.domain,
      maxConcurrentCharges: config.maxConcurrentCharges,
    });
    completer = abandonedChargeSweep({
      engine,
      db,
      routing,
      outbox,
      metrics: metrics.domain,
      intervalMs: config.completerIntervalMs,
    });
  } else {
    charges = naiveCharge({ db, providers, transport, metrics: metrics.domain });
  }

  accountRoutes(app, { db, tokens, scryptCost: config.scryptCost });
  orderRoutes(app, { db, tokens, charges, metrics: metrics.domain });
  reportRoutes(app, { db, tokens, admission: guarded ? reportAdmission(metrics.keel.policy) : undefined });

  const reportJob = salesReportJob({ reports: db.reader('report'), everyMs: config.reportIntervalMs });
  const alertList = alertListSink();
  let consumerJob: InvoiceConsumerJob | undefined;
  let evaluator: InvariantEvaluator | undefined;
  if (guarded) {
    const replayDb = replayDatabase(config.db);
    consumerJob = invoiceConsumerJob({
      everyMs: config.consumerHeartbeatMs,
      backlog: paymentEventBacklog(db.driver),
      alert: replayAlerts(replayDb).invoiceConsumerHeartbeat,
    });
    evaluator = invariants({
      checks: [
        ...paymentInvariants({
          driver: db.driver,
          invoiceGraceMs: config.invoiceGraceMs,
          chargeLeaseMs: config.chargeLeaseMs,
          abandonedLimit: config.abandonedLimit,
          replayDb,
        }),
        providerReconciliation({
          providers,
          payments: db.reader('api'),
          windowMs: config.reconcileWindowMs,
          // A charge in flight owns its key for the lease; after that the completer finishes it.
          graceMs: config.chargeLeaseMs + config.completerIntervalMs,
          requestTimeoutMs: config.providerTimeoutMs,
        }),
        consumerJob.heartbeat,
        reportJob.heartbeat,
      ],
      intervalMs: config.invariantIntervalMs,
      sinks: [...alertLogSinks(config), alertList],
      breachedGauge: invariantBreachedGauge(metrics),
    });
  }
  const health = healthChecks({
    checks: {
      database: async () => (await db.reader('api').get('SELECT 1 AS ok')) !== undefined,
    },
    // Ready fails while a critical invariant (a paid order without payment, a stopped consumer) fires.
    ...(evaluator !== undefined && { invariants: evaluator }),
  });
  fastifyHealth(app, health, { metrics: metrics.registry });

  let consumers: InvoiceConsumers | undefined;
  let consumersRunning = false;
  let consumerSwitch: Promise<void> = Promise.resolve();
  // One change at a time: a stop waits for a start in progress, and the other way round.
  const switchConsumers = (run: boolean): Promise<void> => {
    const next = consumerSwitch.then(async () => {
      if (run === consumersRunning) return;
      if (run) {
        consumers = await startInvoiceConsumers({
          mode: config.mode,
          db,
          transport,
          outbox,
          mail,
          metrics: metrics.domain,
          telemetry: metrics.keel.outbox,
          onInvoice: consumerJob?.invoiceWritten,
        });
        consumerJob?.start();
      } else {
        await consumerJob?.stop();
        await consumers?.stop();
        consumers = undefined;
      }
      consumersRunning = run;
    });
    consumerSwitch = next.catch(() => undefined);
    return next;
  };
  const stopInvoiceConsumers = () => switchConsumers(false);
  if (faultSwitch !== undefined) {
    labRoutes(app, {
      transport: faultSwitch,
      consumers: {
        running: () => consumersRunning,
        stop: stopInvoiceConsumers,
        start: () => switchConsumers(true),
      },
      alerts: alertList,
    });
  }
  let stopping: Promise<void> | undefined;
  return {
    config,
    app,
    db,
    transport,
    outbox,
    mail,
    metrics,
    routing,
    invariants: evaluator,
    alerts: alertList.notifications,
    sweepAbandoned: async () => completer?.sweep(),
    stopInvoiceConsumers,
    resumeInvoiceConsumers: () => switchConsumers(true),
    async start() {
      await switchConsumers(true);
      if (guarded) outbox.start();
      reportJob.start();
      completer?.start();
      evaluator?.start();
      return app.listen({ host: config.host, port: config.port });
    },
    stop() {
      stopping ??= (async () => {
        await app.close();
        await evaluator?.stop();
        await completer?.stop();
        await reportJob.stop();
        await outbox.stop();
        await stopInvoiceConsumers();
        await closeTransport();
        await db.close();
      })();
      return stopping;
    },
  };
}
