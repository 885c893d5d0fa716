/**
 * @module
 * The payments service's configuration: one object that says which of the two configurations runs
 * (`guarded`, with Keel's protections, or `naive`, what a team ships first), where its data and
 * events live, and which payment providers it talks to. Everything is checked once, at start-up,
 * with a message that names the setting at fault — a bad URL fails the process before it listens.
 */

import { MAX_CONCURRENT_CHARGES } from './guarded-charge.ts';

/** Which strategies the one codebase runs with. */
export type ServiceMode = 'guarded' | 'naive';

/** The two modes, for validation and command-line help. */
export const SERVICE_MODES: readonly ServiceMode[] = ['guarded', 'naive'];

/** Where the service keeps its rows. */
export type DatabaseConfig =
  | { readonly kind: 'sqlite'; readonly path: string; readonly poolSize: number }
  | { readonly kind: 'postgres'; readonly url: string; readonly poolSize: number };

/** Where events travel: inside the process by default, or a broker by URL. */
export type BrokerConfig =
  | { readonly kind: 'in-process' }
  | { readonly kind: 'nats'; readonly url: string }
  | { readonly kind: 'amqp'; readonly url: string };

/** A payment provider the service charges through. */
export interface ProviderConfig {
  /** Short name used in metrics and payment rows, e.g. `a`. */
  readonly name: string;
  readonly url: string;
}

export interface ServiceConfig {
  readonly mode: ServiceMode;
  readonly db: DatabaseConfig;
  readonly broker: BrokerConfig;
  /**
   * Names the service's events on a broker: NATS stream `<NAME>_EVENTS` on subjects
   * `<name>.events.*`, RabbitMQ exchange `<name>.events`. Instances sharing one broker use one name.
   */
  readonly eventChannel: string;
  /** Provider A, tried first. */
  readonly primary: ProviderConfig;
  /** Provider B, the failover target. */
  readonly secondary: ProviderConfig;
  /** Port to listen on; 0 picks a free one. */
  readonly port: number;
  readonly host: string;
  /** Seed of the report data, so two runs report the same figures. */
  readonly seed: number;
  /** Rows of the sales table seeded when it is empty. */
  readonly salesRows: number;
  /** Secret that signs login tokens. */
  readonly tokenSecret: string;
  /** Deadline of a request that does not bring its own (`Request-Timeout`), in ms. */
  readonly requestTimeoutMs: number;
  /** Budget of one provider attempt in guarded mode, in ms. */
  readonly providerTimeoutMs: number;
  /** scrypt cost (N). Tests lower it; production keeps the default. */
  readonly scryptCost: number;
  /** Largest request body accepted, in bytes. */
  readonly bodyLimitBytes: number;
  /** Let Fastify log requests (pino) to stdout. */
  readonly logger: boolean;
  /** Log firing and resolved alerts (pino, to stderr). Guarded mode only. */
  readonly logAlerts: boolean;
  /** Time between two rounds of the invariants (guarded mode), in ms. */
  readonly invariantIntervalMs: number;
  /** How long a payment may wait for its invoice (and its event for the consumer), in ms. */
  readonly invoiceGraceMs: number;
  /** How far back the providers' ledgers are reconciled with the payments, in ms. */
  readonly reconcileWindowMs: number;
  /** How long a charge owns its `Idempotency-Key` before the completer may take it over, in ms. */
  readonly chargeLeaseMs: number;
  /** Orders stuck in `charging` longer than the lease tolerated before the abandoned-payments alert. */
  readonly abandonedLimit: number;
  /** Time between two sweeps of the completer (guarded mode), in ms. */
  readonly completerIntervalMs: number;
  /** Charges one instance runs at once in guarded mode; the others wait their turn, then get a 503. */
  readonly maxConcurrentCharges: number;
  /** Time between two runs of the sales report job, in ms. */
  readonly reportIntervalMs: number;
  /** How often the invoice consumer checks in with its heartbeat, in ms. */
  readonly consumerHeartbeatMs: number;
  /**
   * Serve the lab's fault routes (`/lab/faults`, `/lab/alerts`) and put the event transport behind
   * the lab's fault switch. Off, those routes answer 404 and events pass untouched.
   */
  readonly lab: boolean;
}

/** What a caller may give; everything not given takes its default. */
export interface ServiceConfigInput {
  mode?: string;
  /** A sqlite file path or a `postgres://` URL. */
  db?: string;
  dbPoolSize?: number;
  /** `in-process`, `nats://…` or `amqp://…`. */
  broker?: string;
  eventChannel?: string;
  providerA?: string;
  providerB?: string;
  port?: number;
  host?: string;
  seed?: number;
  rows?: number;
  tokenSecret?: string;
  requestTimeoutMs?: number;
  providerTimeoutMs?: number;
  scryptCost?: number;
  bodyLimitBytes?: number;
  logger?: boolean;
  logAlerts?: boolean;
  invariantIntervalMs?: number;
  invoiceGraceMs?: number;
  reconcileWindowMs?: number;
  chargeLeaseMs?: number;
  abandonedLimit?: number;
  completerIntervalMs?: number;
  maxConcurrentCharges?: number;
  reportIntervalMs?: number;
  consumerHeartbeatMs?: number;
  lab?: boolean;
}

/** A setting was missing or out of range; `setting` names it. */
export class InvalidServiceConfigError extends Error {
  readonly setting: string;
  constructor(setting: string, message: string) {
    super(`${setting}: ${message}`);
    this.name = 'InvalidServiceConfigError';
    this.setting = setting;
  }
}

const DEFAULTS = Object.freeze({
  mode: 'guarded' as ServiceMode,
  db: 'payments.db',
  dbPoolSize: 6,
  broker: 'in-process',
  eventChannel: 'payments',
  port: 3000,
  host: '127.0.0.1',
  seed: 1,
  rows: 300_000,
  tokenSecret: 'keel-lab-token-secret',
  requestTimeoutMs: 10_000,
  providerTimeoutMs: 2_000,
  scryptCost: 16_384,
  bodyLimitBytes: 16_384,
  logger: false,
  logAlerts: true,
  invariantIntervalMs: 30_000,
  invoiceGraceMs: 300_000,
  reconcileWindowMs: 3_600_000,
  chargeLeaseMs: 30_000,
  abandonedLimit: 10,
  completerIntervalMs: 15_000,
  maxConcurrentCharges: MAX_CONCURRENT_CHARGES,
  reportIntervalMs: 3_600_000,
  consumerHeartbeatMs: 60_000,
  lab: false,
});

const DAY_MS = 86_400_000;

function integer(setting: string, value: number, min: number, max: number): number {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new InvalidServiceConfigError(setting, `must be an integer from ${min} to ${max}, got ${value}`);
  }
  return value;
}

function httpUrl(setting: string, value: string | undefined): string {
  if (value === undefined || value === '') throw new InvalidServiceConfigError(setting, 'is required');
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new InvalidServiceConfigError(setting, `must be an http(s) URL, got ${JSON.stringify(value)}`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new InvalidServiceConfigError(setting, `must be an http(s) URL, got ${JSON.stringify(value)}`);
  }
  return value.replace(/\/+$/, '');
}

function database(value: string, poolSize: number): DatabaseConfig {
  if (value === '') throw new InvalidServiceConfigError('db', 'must be a file path or a postgres:// URL');
  if (/^postgres(ql)?:\/\//.test(value)) return { kind: 'postgres', url: value, poolSize };
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(value)) {
    throw new InvalidServiceConfigError(
      'db',
      `must be a sqlite file path or a postgres:// URL, got ${value}`,
    );
  }
  if (value === ':memory:') {
    throw new InvalidServiceConfigError('db', 'must be a file: the worker threads each open it');
  }
  return { kind: 'sqlite', path: value, poolSize };
}

function broker(value: string): BrokerConfig {
  if (value === 'in-process') return { kind: 'in-process' };
  if (value.startsWith('nats://')) return { kind: 'nats', url: value };
  if (value.startsWith('amqp://') || value.startsWith('amqps://')) return { kind: 'amqp', url: value };
  throw new InvalidServiceConfigError('broker', `must be in-process, nats://… or amqp://…, got ${value}`);
}

function channel(value: string): string {
  if (!/^[a-z][a-z0-9_]{0,40}$/.test(value)) {
    throw new InvalidServiceConfigError(
      'eventChannel',
      `must be 1 to 41 lowercase letters, digits or _, got ${value}`,
    );
  }
  return value;
}

/**
 * Checks `input`, fills in the defaults and freezes the result.
 *
 * @example
 * const config = serviceConfig({ mode: 'naive', providerA: a.url, providerB: b.url, rows: 1_000 });
 */
export function serviceConfig(input: ServiceConfigInput): ServiceConfig {
  const mode = input.mode ?? DEFAULTS.mode;
  if (!(SERVICE_MODES as readonly string[]).includes(mode)) {
    throw new InvalidServiceConfigError('mode', `must be guarded or naive, got ${JSON.stringify(mode)}`);
  }
  const poolSize = integer('dbPoolSize', input.dbPoolSize ?? DEFAULTS.dbPoolSize, 1, 64);
  const tokenSecret = input.tokenSecret ?? DEFAULTS.tokenSecret;
  if (tokenSecret.length < 8)
    throw new InvalidServiceConfigError('tokenSecret', 'must be at least 8 characters');
  const scryptCost = integer('scryptCost', input.scryptCost ?? DEFAULTS.scryptCost, 2, 1_048_576);
  if ((scryptCost & (scryptCost - 1)) !== 0) {
    throw new InvalidServiceConfigError('scryptCost', `must be a power of two, got ${scryptCost}`);
  }
  return Object.freeze({
    mode: mode as ServiceMode,
    db: database(input.db ?? DEFAULTS.db, poolSize),
    broker: broker(input.broker ?? DEFAULTS.broker),
    eventChannel: channel(input.eventChannel ?? DEFAULTS.eventChannel),
    primary: { name: 'a', url: httpUrl('providerA', input.providerA) },
    secondary: { name: 'b', url: httpUrl('providerB', input.providerB) },
    port: integer('port', input.port ?? DEFAULTS.port, 0, 65_535),
    host: input.host ?? DEFAULTS.host,
    seed: integer('seed', input.seed ?? DEFAULTS.seed, 0, 4_294_967_295),
    salesRows: integer('rows', input.rows ?? DEFAULTS.rows, 0, 10_000_000),
    tokenSecret,
    requestTimeoutMs: integer(
      'requestTimeoutMs',
      input.requestTimeoutMs ?? DEFAULTS.requestTimeoutMs,
      1,
      600_000,
    ),
    providerTimeoutMs: integer(
      'providerTimeoutMs',
      input.providerTimeoutMs ?? DEFAULTS.providerTimeoutMs,
      1,
      600_000,
    ),
    scryptCost,
    bodyLimitBytes: integer(
      'bodyLimitBytes',
      input.bodyLimitBytes ?? DEFAULTS.bodyLimitBytes,
      256,
      10_485_760,
    ),
    logger: input.logger ?? DEFAULTS.logger,
    logAlerts: input.logAlerts ?? DEFAULTS.logAlerts,
    invariantIntervalMs: integer(
      'invariantIntervalMs',
      input.invariantIntervalMs ?? DEFAULTS.invariantIntervalMs,
      10,
      DAY_MS,
    ),
    invoiceGraceMs: integer('invoiceGraceMs', input.invoiceGraceMs ?? DEFAULTS.invoiceGraceMs, 0, DAY_MS),
    reconcileWindowMs: integer(
      'reconcileWindowMs',
      input.reconcileWindowMs ?? DEFAULTS.reconcileWindowMs,
      1_000,
      30 * DAY_MS,
    ),
    chargeLeaseMs: integer('chargeLeaseMs', input.chargeLeaseMs ?? DEFAULTS.chargeLeaseMs, 10, DAY_MS),
    abandonedLimit: integer('abandonedLimit', input.abandonedLimit ?? DEFAULTS.abandonedLimit, 0, 1_000_000),
    completerIntervalMs: integer(
      'completerIntervalMs',
      input.completerIntervalMs ?? DEFAULTS.completerIntervalMs,
      10,
      DAY_MS,
    ),
    maxConcurrentCharges: integer(
      'maxConcurrentCharges',
      input.maxConcurrentCharges ?? DEFAULTS.maxConcurrentCharges,
      1,
      10_000,
    ),
    reportIntervalMs: integer(
      'reportIntervalMs',
      input.reportIntervalMs ?? DEFAULTS.reportIntervalMs,
      10,
      DAY_MS,
    ),
    consumerHeartbeatMs: integer(
      'consumerHeartbeatMs',
      input.consumerHeartbeatMs ?? DEFAULTS.consumerHeartbeatMs,
      10,
      DAY_MS,
    ),
    lab: input.lab ?? DEFAULTS.lab,
  });
}

const NUMERIC_FLAGS: Readonly<Record<string, keyof ServiceConfigInput>> = {
  '--port': 'port',
  '--seed': 'seed',
  '--rows': 'rows',
  '--db-pool': 'dbPoolSize',
  '--request-timeout': 'requestTimeoutMs',
  '--provider-timeout': 'providerTimeoutMs',
  '--scrypt-cost': 'scryptCost',
  '--invariant-interval': 'invariantIntervalMs',
  '--invoice-grace': 'invoiceGraceMs',
  '--charge-lease': 'chargeLeaseMs',
  '--completer-interval': 'completerIntervalMs',
  '--max-charges': 'maxConcurrentCharges',
  '--report-interval': 'reportIntervalMs',
};

const STRING_FLAGS: Readonly<Record<string, keyof ServiceConfigInput>> = {
  '--mode': 'mode',
  '--db': 'db',
  '--broker': 'broker',
  '--event-channel': 'eventChannel',
  '--provider-a': 'providerA',
  '--provider-b': 'providerB',
  '--host': 'host',
};

/** Flags that take no value: each turns a setting on. */
const BOOLEAN_FLAGS: Readonly<Record<string, keyof ServiceConfigInput>> = {
  '--log': 'logger',
  '--lab': 'lab',
};

/**
 * Reads `--mode naive --db x.db --provider-a http://… --rows 1000 --lab …` into a config.
 *
 * @example
 * const config = configFromArgs(process.argv.slice(2));
 */
export function configFromArgs(args: readonly string[]): ServiceConfig {
  const input: Record<string, string | number | boolean> = {};
  for (let i = 0; i < args.length; i++) {
    const flag = args[i] as string;
    const switched = BOOLEAN_FLAGS[flag];
    if (switched !== undefined) {
      input[switched] = true;
      continue;
    }
    const value = args[i + 1];
    const numeric = NUMERIC_FLAGS[flag];
    const text = STRING_FLAGS[flag];
    if (numeric === undefined && text === undefined)
      throw new InvalidServiceConfigError(flag, 'unknown flag');
    if (value === undefined) throw new InvalidServiceConfigError(flag, 'needs a value');
    if (numeric !== undefined) {
      const parsed = Number(value);
      if (value.trim() === '' || Number.isNaN(parsed)) {
        throw new InvalidServiceConfigError(flag, `must be a number, got ${JSON.stringify(value)}`);
      }
      input[numeric] = parsed;
    } else if (text !== undefined) {
      input[text] = value;
    }
    i++;
  }
  return serviceConfig(input as ServiceConfigInput);
}
