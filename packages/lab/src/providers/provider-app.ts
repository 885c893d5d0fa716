/**
 * @module
 * One payment provider as an HTTP server: charges with Stripe-like `Idempotency-Key` handling, a
 * listing endpoint to reconcile against, and — only in lab mode — a fault-control API. The provider
 * plays a third party, so it knows nothing of Keel: its idempotency is its own and deliberately
 * simple (same key and parameters: the same charge; other parameters: 400; still in progress: 409).
 */
import { createHash, randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { type TypeBoxTypeProvider, TypeBoxValidatorCompiler } from '@fastify/type-provider-typebox';
import Fastify, {
  type FastifyBaseLogger,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
  type RawReplyDefaultExpression,
  type RawRequestDefaultExpression,
  type RawServerDefault,
} from 'fastify';
import { type Charge, ChargeLedger } from './charge-ledger.ts';
import {
  ChargeHeadersSchema,
  ChargeListQuerySchema,
  ChargeParamsSchema,
  type ChargeRequest,
  ChargeRequestSchema,
  DEFAULT_LIST_LIMIT,
} from './charge-schemas.ts';
import { type Admission, FaultInjector, type ProviderClock } from './fault-injector.ts';
import { FaultSettingsSchema, faultSettingsProblem } from './fault-settings.ts';
import { providerError } from './provider-error-body.ts';
import { answerProviderError } from './provider-error-handler.ts';
import { InvalidProviderOptionError } from './provider-errors.ts';
import { type ProviderStats, zeroCounters } from './provider-stats.ts';

export interface ProviderAppOptions {
  /** Short name, also part of every charge id (`ch_<name>_…`); `[a-z0-9-]`, 1–32 characters. */
  name: string;
  /** Path of the sqlite ledger, created if missing; `':memory:'` for a throwaway one. */
  ledgerPath: string;
  /** Serve the fault-control API (`/__faults`, `/__stats`); without it those answer 404. */
  lab: boolean;
  /** Seed of the fault randomness. @default 1 */
  seed?: number;
  /** Wall clock for outage windows and `created`. @default Date */
  clock?: ProviderClock;
  /** Fastify's logger (pino). @default false */
  logger?: boolean;
}

/** The Fastify instance a provider is, with TypeBox typing its routes. */
export type ProviderApp = FastifyInstance<
  RawServerDefault,
  RawRequestDefaultExpression,
  RawReplyDefaultExpression,
  FastifyBaseLogger,
  TypeBoxTypeProvider
>;

const NAME_PATTERN = /^[a-z0-9-]{1,32}$/;

/**
 * Builds a provider; call `listen()` on it, and `close()` to stop it and close its ledger.
 *
 * @example
 * const app = buildProviderApp({ name: 'a', ledgerPath: '/tmp/a.db', lab: true, seed: 7 });
 * await app.listen({ host: '127.0.0.1', port: 0 });
 */
export function buildProviderApp(options: ProviderAppOptions): ProviderApp {
  if (!NAME_PATTERN.test(options.name)) {
    throw new InvalidProviderOptionError(`name must match ${NAME_PATTERN}, got '${options.name}'`);
  }
  if (options.ledgerPath.length === 0) throw new InvalidProviderOptionError('ledgerPath must not be empty');
  const seed = options.seed ?? 1;
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffff_ffff) {
    throw new InvalidProviderOptionError(`seed must be an integer from 0 to 4294967295, got ${seed}`);
  }
  const clock = options.clock ?? Date;
  const ledger = new ChargeLedger(options.ledgerPath);
  const faults = new FaultInjector(seed, clock);
  const counters = zeroCounters();
  // In-progress keys live in memory: a key is only in flight while this process works on it.
  const keysInFlight = new Set<string>();
  const chargesInProgress = new Set<Promise<unknown>>();

  const app: ProviderApp = Fastify({
    logger: options.logger ?? false,
  }).withTypeProvider<TypeBoxTypeProvider>();
  app.setValidatorCompiler(TypeBoxValidatorCompiler);
  app.setErrorHandler(answerProviderError);
  app.setNotFoundHandler((request, reply) =>
    reply
      .code(404)
      .send(
        providerError(
          'invalid_request_error',
          'resource_missing',
          `Unrecognized request URL (${request.method}: ${request.url})`,
        ),
      ),
  );
  // Shutdown lets held requests go undone, then waits for charges mid-flight before the ledger closes.
  app.addHook('preClose', async () => faults.abandonHeld());
  app.addHook('onClose', async () => {
    await Promise.allSettled([...chargesInProgress]);
    ledger.close();
  });

  /** Applies the fault plan to a request; `false` means it has been answered (or dropped) already. */
  async function admit(request: FastifyRequest, reply: FastifyReply, isRead: boolean): Promise<boolean> {
    if (!faults.applies(isRead)) return true;
    const admission: Admission = await faults.admit(clientGone(reply));
    switch (admission.kind) {
      case 'proceed': {
        // Writes take their latency inside the work, after the key is reserved.
        if (isRead) await pause(faults.latencyMs());
        return true;
      }
      case 'abandoned':
        counters.abandoned++;
        drop(request, reply);
        return false;
      case 'outage':
        counters.outageRejections++;
        reply.header('retry-after', String(admission.retryAfterSeconds));
        await reply
          .code(503)
          .send(
            providerError('api_error', 'provider_outage', 'The provider is unavailable, try again later.'),
          );
        return false;
      case 'error': {
        counters.errorsInjected++;
        if (admission.retryAfterSeconds !== undefined) {
          reply.header('retry-after', String(admission.retryAfterSeconds));
        }
        const body =
          admission.status === 429
            ? providerError('rate_limit_error', 'rate_limited', 'Too many requests.')
            : providerError('api_error', 'provider_error', 'The provider failed to process the request.');
        await reply.code(admission.status).send(body);
        return false;
      }
    }
  }

  /** Sends a successful charge response, or commits to silence when the plan drops it. */
  function answerCharge(
    request: FastifyRequest,
    reply: FastifyReply,
    status: number,
    body: string,
    replayed: boolean,
  ) {
    if (faults.dropsResponse()) {
      counters.droppedResponses++;
      drop(request, reply);
      return reply;
    }
    if (replayed) reply.header('idempotent-replayed', 'true');
    return reply.code(status).header('content-type', 'application/json; charset=utf-8').send(body);
  }

  async function charge(params: ChargeRequest, key: string | undefined, fingerprint: string) {
    await pause(faults.latencyMs());
    const created: Charge = {
      id: `ch_${options.name}_${randomUUID().replaceAll('-', '')}`,
      object: 'charge',
      amount: params.amount,
      currency: params.currency,
      reference: params.reference,
      description: params.description ?? null,
      idempotency_key: key ?? null,
      status: 'succeeded',
      created: clock.now(),
    };
    const body = JSON.stringify(created);
    ledger.record(created, key === undefined ? undefined : { key, fingerprint, status: 201, body });
    counters.charges++;
    return body;
  }

  app.post(
    '/charges',
    {
      schema: { body: ChargeRequestSchema, headers: ChargeHeadersSchema },
      onRequest: async () => void counters.requests++,
    },
    async (request, reply) => {
      if (!(await admit(request, reply, false))) return reply;
      const key = request.headers['idempotency-key'];
      const fingerprint = fingerprintOf(request.body);
      if (key !== undefined) {
        const stored = ledger.findIdempotencyRecord(key);
        if (stored && stored.fingerprint !== fingerprint) {
          counters.keyReuses++;
          return reply
            .code(400)
            .send(
              providerError(
                'idempotency_error',
                'idempotency_key_reused',
                'Keys for idempotent requests can only be used with the same parameters they were first used with.',
              ),
            );
        }
        if (stored) {
          counters.replays++;
          return answerCharge(request, reply, stored.status, stored.body, true);
        }
        if (keysInFlight.has(key)) {
          counters.conflicts++;
          return reply
            .code(409)
            .send(
              providerError(
                'idempotency_error',
                'idempotency_key_in_use',
                'There is currently another in-progress request using this idempotency key.',
              ),
            );
        }
        keysInFlight.add(key);
      }
      const work = charge(request.body, key, fingerprint);
      chargesInProgress.add(work);
      try {
        // The work finishes even when the client has gone: the charge is real either way.
        const body = await work;
        return answerCharge(request, reply, 201, body, false);
      } finally {
        chargesInProgress.delete(work);
        if (key !== undefined) keysInFlight.delete(key);
      }
    },
  );

  app.get('/charges/:id', { schema: { params: ChargeParamsSchema } }, async (request, reply) => {
    if (!(await admit(request, reply, true))) return reply;
    const found = ledger.get(request.params.id);
    if (found) return found;
    return reply
      .code(404)
      .send(
        providerError(
          'invalid_request_error',
          'resource_missing',
          `No such charge: '${request.params.id}'`,
          'id',
        ),
      );
  });

  app.get('/charges', { schema: { querystring: ChargeListQuerySchema } }, async (request, reply) => {
    if (!(await admit(request, reply, true))) return reply;
    const query = request.query;
    const page = ledger.list({
      ...(query.reference === undefined ? {} : { reference: query.reference }),
      ...(query.idempotency_key === undefined ? {} : { idempotencyKey: query.idempotency_key }),
      ...(query.created_gte === undefined ? {} : { createdGte: query.created_gte }),
      ...(query.cursor === undefined ? {} : { afterSeq: Number(query.cursor) }),
      limit: query.limit ?? DEFAULT_LIST_LIMIT,
    });
    return {
      object: 'list',
      data: page.charges,
      has_more: page.nextSeq !== undefined,
      next_cursor: page.nextSeq === undefined ? null : String(page.nextSeq),
    };
  });

  app.get('/health', async () => ({ status: 'ok', name: options.name, lab: options.lab }));

  if (options.lab) {
    app.get('/__faults', async () => faults.settings);
    app.put('/__faults', { schema: { body: FaultSettingsSchema } }, async (request, reply) => {
      const problem = faultSettingsProblem(request.body);
      if (problem !== undefined) {
        return reply.code(400).send(providerError('invalid_request_error', 'parameter_invalid', problem));
      }
      faults.set(request.body);
      return faults.settings;
    });
    app.delete('/__faults', async () => {
      faults.clear();
      return faults.settings;
    });
    app.get(
      '/__stats',
      async (): Promise<ProviderStats> => ({
        ...counters,
        hanging: faults.held,
        ledgerCharges: ledger.count(),
      }),
    );
  }

  return app;
}

/** Same parameters, same fingerprint: what decides whether a reused key is a replay. */
function fingerprintOf(params: ChargeRequest): string {
  const canonical = JSON.stringify([
    params.amount,
    params.currency,
    params.reference,
    params.description ?? null,
  ]);
  return createHash('sha256').update(canonical).digest('hex');
}

/** Fires when the client closes the connection before it has been answered. */
function clientGone(reply: FastifyReply): AbortSignal {
  const gone = new AbortController();
  reply.raw.once('close', () => {
    if (!reply.raw.writableFinished) gone.abort();
  });
  return gone.signal;
}

/** Ends the exchange without an answer: the client sees the connection close. */
function drop(request: FastifyRequest, reply: FastifyReply): void {
  reply.hijack();
  request.raw.socket.destroy();
}

async function pause(ms: number): Promise<void> {
  if (ms > 0) await sleep(ms);
}
