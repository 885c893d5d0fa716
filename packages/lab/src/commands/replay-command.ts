/**
 * @module
 * `keel replay`: sends events again after an incident, always under their original ids, so the
 * consumers' inbox keeps every effect to one — a consumer that missed an event handles it, one that
 * had it skips it. The command works on the service's database alone, never on its broker: it marks
 * the selected outbox rows unpublished (Keel's `republish`), and the running service's relay
 * publishes them again through whatever transport it has — in-process inside the service, NATS or
 * RabbitMQ. Three ways to choose the events: a selection of the outbox (`--type`, `--aggregate`,
 * `--since`, `--until`), the `payment.completed` of every payment without an invoice
 * (`--missing-invoices`), or a consumer group's dead letters (`--dead-letters`), which the group
 * handles again through its inbox. `--dry-run` lists what would be sent and changes nothing.
 *
 * Exit codes: 0 the events were requeued (or nothing needed it: no payment lacks its invoice); 1 the
 * selection matched no event, some chosen events cannot be replayed (no outbox row), or the
 * database could not be used; 2 the command line was wrong.
 */
import { existsSync, statSync } from 'node:fs';
import { DatabaseSync } from 'node:sqlite';
import { parseArgs } from 'node:util';
import { KeelError } from 'keel';
import {
  type EventSelection,
  type InboxStore,
  type OutboxStore,
  type ReplayedEvent,
  republish,
} from 'keel/outbox';
import { postgresInbox, postgresOutbox } from 'keel/postgres';
import { sqliteInbox, sqliteOutbox } from 'keel/sqlite';
import pg from 'pg';
import { OUTBOX_TABLE } from '../service/event-outbox.ts';
import { INBOX_TABLE, INVOICE_GROUP } from '../service/invoice-consumer.ts';
import { PAYMENT_COMPLETED } from '../service/payment-events.ts';
import { type Command, CommandLineError } from './command.ts';

export const REPLAY_USAGE = `Usage: keel replay --db PATH|postgres://… <selection> [options]

Sends events again under their original ids: marks their outbox rows unpublished, and the running
service's relay publishes them anew; each consumer's inbox skips what it already handled.

Selection (at least one):
  --missing-invoices   the payment.completed of every payment without an invoice
  --type TYPE          events of this type, e.g. payment.completed
  --aggregate ID,…     events of these aggregates (a payment id, an invoice id)
  --since WHEN         appended at or after WHEN: an ISO time (2026-05-01T10:00Z) or an age (90s, 15m, 1h, 2d)
  --until WHEN         appended before WHEN
  --all                every event (with --dead-letters: every dead letter of the group)

Options:
  --db PATH|URL        the service's database: a sqlite file or postgres://… (required)
  --dead-letters       re-drive the group's dead letters (narrowed by the selection) instead
  --group NAME         the consumer group of --dead-letters (default ${INVOICE_GROUP})
  --limit N            at most N events, oldest first (default 1000, at most 10000)
  --dry-run            list what would be sent, change nothing
  --json               print the report as JSON

Exit codes: 0 done, or nothing to repair; 1 nothing matched, or some events cannot be replayed;
2 the command line was wrong.
`;

/** Where the events to replay come from. */
export type ReplaySource = 'outbox' | 'missing-invoices' | 'dead-letters';

/** A `keel replay` command line, checked. */
export interface ReplayOptions {
  readonly db: string;
  readonly source: ReplaySource;
  readonly group: string;
  readonly type?: string | undefined;
  readonly aggregates: readonly string[];
  /** Epoch ms. */
  readonly since?: number | undefined;
  readonly until?: number | undefined;
  readonly all: boolean;
  readonly limit: number;
  readonly dryRun: boolean;
  readonly json: boolean;
}

/** What a replay did, or in a dry run would do. */
export interface ReplayReport {
  readonly dryRun: boolean;
  readonly source: ReplaySource;
  /** Events the selection found. */
  readonly matched: number;
  /** Published events marked for the relay to publish again, same ids (dry run: would be). */
  readonly requeued: readonly ReplayedEvent[];
  /** Not published yet: the relay publishes them anyway. */
  readonly pending: readonly ReplayedEvent[];
  /** `--missing-invoices`: payments without an invoice, before the replay. */
  readonly paymentsWithoutInvoice?: number | undefined;
  /**
   * Ids that cannot be replayed from the outbox: payments with no `payment.completed` row, dead
   * letters whose event is not in this outbox (pruned, or written without it).
   */
  readonly notReplayable: readonly string[];
  /**
   * `--missing-invoices`: payments whose event the invoices group already handled and that still
   * have no invoice (it was lost after): sending the event again would be skipped.
   */
  readonly consumedWithoutInvoice: readonly string[];
}

/** The service's database could not be opened or is not one. */
export class ReplayDatabaseError extends KeelError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('KEEL_LAB_REPLAY_DATABASE', message, options);
  }
}

const AGE = /^(\d+)(s|m|h|d)$/;
const AGE_MS: Readonly<Record<string, number>> = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 };
const ISO_TIME = /^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$/;
const MAX_LIMIT = 10_000;
/** Ids per `republish` call, so one statement never binds too many values. */
const CHUNK = 500;
/** Events listed one per line in the text report; the rest are counted. */
const LISTED = 20;

function parseWhen(flag: string, value: string, now: number): number {
  const age = AGE.exec(value);
  if (age !== null) return now - Number(age[1]) * (AGE_MS[age[2] as string] as number);
  const time = ISO_TIME.test(value) ? Date.parse(value) : Number.NaN;
  if (Number.isNaN(time)) {
    throw new CommandLineError(
      `${flag} must be an ISO time (2026-05-01T10:00Z) or an age (90s, 15m, 1h, 2d), got ${JSON.stringify(value)}`,
    );
  }
  return time;
}

/**
 * Reads a `keel replay` command line; a line it cannot act on throws a {@link CommandLineError}.
 *
 * @example
 * parseReplayArgs(['--db', 'payments.db', '--missing-invoices', '--dry-run']);
 * // { db: 'payments.db', source: 'missing-invoices', dryRun: true, … }
 */
export function parseReplayArgs(argv: readonly string[], now = Date.now()): ReplayOptions {
  const { values, positionals } = parseArgs({
    args: [...argv],
    options: {
      db: { type: 'string' },
      type: { type: 'string' },
      aggregate: { type: 'string' },
      since: { type: 'string' },
      until: { type: 'string' },
      all: { type: 'boolean', default: false },
      'missing-invoices': { type: 'boolean', default: false },
      'dead-letters': { type: 'boolean', default: false },
      group: { type: 'string', default: INVOICE_GROUP },
      limit: { type: 'string', default: '1000' },
      'dry-run': { type: 'boolean', default: false },
      json: { type: 'boolean', default: false },
    },
    allowPositionals: true,
    strict: true,
  });
  if (positionals.length > 0) throw new CommandLineError(`unexpected argument ${positionals[0]}`);
  if (values.db === undefined || values.db === '') throw new CommandLineError('--db is required');
  const missingInvoices = values['missing-invoices'];
  const deadLetters = values['dead-letters'];
  if (missingInvoices && deadLetters) {
    throw new CommandLineError('--missing-invoices and --dead-letters choose events differently: give one');
  }
  if (missingInvoices && values.type !== undefined && values.type !== PAYMENT_COMPLETED) {
    throw new CommandLineError(`--missing-invoices replays ${PAYMENT_COMPLETED}, not ${values.type}`);
  }
  if (values.type === '') throw new CommandLineError('--type must name an event type');
  const aggregates = values.aggregate === undefined ? [] : values.aggregate.split(',').map((id) => id.trim());
  if (values.aggregate !== undefined && aggregates.some((id) => id === '')) {
    throw new CommandLineError(`--aggregate must be a list of ids, got ${JSON.stringify(values.aggregate)}`);
  }
  const since = values.since === undefined ? undefined : parseWhen('--since', values.since, now);
  const until = values.until === undefined ? undefined : parseWhen('--until', values.until, now);
  if (since !== undefined && until !== undefined && until <= since) {
    throw new CommandLineError('--until must come after --since');
  }
  const limit = Number(values.limit);
  if (!Number.isInteger(limit) || limit < 1 || limit > MAX_LIMIT) {
    throw new CommandLineError(`--limit must be an integer from 1 to ${MAX_LIMIT}, got ${values.limit}`);
  }
  const narrowed =
    missingInvoices ||
    values.type !== undefined ||
    aggregates.length > 0 ||
    since !== undefined ||
    until !== undefined;
  if (!narrowed && !values.all) {
    throw new CommandLineError(
      'no selection: give --missing-invoices, --type, --aggregate, --since or --until (or --all for every event)',
    );
  }
  if (values.db.includes('://') && !/^postgres(ql)?:\/\//.test(values.db)) {
    throw new CommandLineError(`--db must be a sqlite file or a postgres:// URL, got ${values.db}`);
  }
  if (!values.db.includes('://') && !(existsSync(values.db) && statSync(values.db).isFile())) {
    throw new CommandLineError(`--db ${values.db}: no such sqlite file`);
  }
  return {
    db: values.db,
    source: missingInvoices ? 'missing-invoices' : deadLetters ? 'dead-letters' : 'outbox',
    group: values.group,
    type: missingInvoices ? PAYMENT_COMPLETED : values.type,
    aggregates,
    since,
    until,
    all: values.all,
    limit,
    dryRun: values['dry-run'],
    json: values.json,
  };
}

/** The service's database as the replay needs it. */
interface ReplayDatabase {
  readonly outbox: OutboxStore;
  /**
   * Opened on first use, and only when its table exists (a naive service has none): opening it
   * anew would create tables, and a dry run changes nothing.
   */
  inbox(): InboxStore | undefined;
  /** Ids of payments without an invoice, oldest first, and how many there are. */
  paymentsWithoutInvoice(limit: number): Promise<{ ids: string[]; total: number }>;
  /** Whether the payment has its invoice now. */
  hasInvoice(paymentId: string): Promise<boolean>;
  close(): Promise<void>;
}

const REQUIRED_TABLES = ['payments', 'invoices', OUTBOX_TABLE];

const MISSING_SQL = `SELECT p.id, count(*) OVER () AS total FROM payments p
 WHERE NOT EXISTS (SELECT 1 FROM invoices i WHERE i.payment_id = p.id)
 ORDER BY p.created_at LIMIT `;

const HAS_INVOICE_SQL = 'SELECT 1 AS found FROM invoices WHERE payment_id = ';

function notAServiceDatabase(db: string, missing: readonly string[]): ReplayDatabaseError {
  return new ReplayDatabaseError(
    `${redact(db)} is not the payments service's database (no table ${missing.join(', ')})`,
  );
}

function redact(db: string): string {
  return db.replace(/\/\/([^:@/]*):[^@/]*@/, '//$1:…@');
}

function openSqlite(path: string): ReplayDatabase {
  const db = new DatabaseSync(path, { timeout: 10_000 });
  let hasInbox = false;
  try {
    const found = new Set(
      (db.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").all() as { name: string }[]).map(
        (row) => row.name,
      ),
    );
    const missing = REQUIRED_TABLES.filter((table) => !found.has(table));
    if (missing.length > 0) throw notAServiceDatabase(path, missing);
    hasInbox = found.has(INBOX_TABLE);
  } catch (error) {
    db.close();
    throw error;
  }
  let inbox: InboxStore | undefined;
  return {
    outbox: sqliteOutbox({ db, table: OUTBOX_TABLE }),
    inbox: () => {
      if (hasInbox) inbox ??= sqliteInbox({ db, table: INBOX_TABLE }) as InboxStore;
      return inbox;
    },
    async paymentsWithoutInvoice(limit) {
      const rows = db.prepare(`${MISSING_SQL}?`).all(limit) as { id: string; total: number }[];
      return { ids: rows.map((row) => row.id), total: Number(rows[0]?.total ?? 0) };
    },
    hasInvoice: async (paymentId) => db.prepare(`${HAS_INVOICE_SQL}? LIMIT 1`).get(paymentId) !== undefined,
    close: async () => db.close(),
  };
}

async function openPostgres(url: string): Promise<ReplayDatabase> {
  const pool = new pg.Pool({ connectionString: url, max: 2 });
  let hasInbox = false;
  try {
    const { rows } = await pool.query<{ name: string; found: string | null }>(
      'SELECT name, to_regclass(name)::text AS found FROM unnest($1::text[]) AS name',
      [[...REQUIRED_TABLES, INBOX_TABLE]],
    );
    const missing = rows
      .filter((row) => row.found === null && row.name !== INBOX_TABLE)
      .map((row) => row.name);
    if (missing.length > 0) throw notAServiceDatabase(url, missing);
    hasInbox = rows.some((row) => row.name === INBOX_TABLE && row.found !== null);
  } catch (error) {
    await pool.end();
    if (error instanceof ReplayDatabaseError) throw error;
    throw new ReplayDatabaseError(`cannot use ${redact(url)}: ${(error as Error).message}`, { cause: error });
  }
  let inbox: InboxStore | undefined;
  return {
    outbox: postgresOutbox({ pool, table: OUTBOX_TABLE }),
    inbox: () => {
      if (hasInbox) inbox ??= postgresInbox({ pool, table: INBOX_TABLE }) as InboxStore;
      return inbox;
    },
    async paymentsWithoutInvoice(limit) {
      const { rows } = await pool.query<{ id: string; total: string }>(`${MISSING_SQL}$1`, [limit]);
      return { ids: rows.map((row) => row.id), total: Number(rows[0]?.total ?? 0) };
    },
    hasInvoice: async (paymentId) =>
      (await pool.query(`${HAS_INVOICE_SQL}$1 LIMIT 1`, [paymentId])).rows.length > 0,
    close: () => pool.end(),
  };
}

function openDatabase(db: string): Promise<ReplayDatabase> {
  if (/^postgres(ql)?:\/\//.test(db)) return openPostgres(db);
  try {
    return Promise.resolve(openSqlite(db));
  } catch (error) {
    if (error instanceof ReplayDatabaseError) return Promise.reject(error);
    return Promise.reject(
      new ReplayDatabaseError(`cannot use ${db}: ${(error as Error).message}`, { cause: error }),
    );
  }
}

/** The selection's criteria besides the aggregate, as Keel takes them. */
function baseSelection(options: ReplayOptions): EventSelection {
  return {
    ...(options.all && { all: true }),
    ...(options.type !== undefined && { type: options.type }),
    ...(options.since !== undefined && { since: options.since }),
    ...(options.until !== undefined && { until: options.until }),
    limit: options.limit,
  };
}

/** One selection per aggregate (Keel selects one aggregate at a time), or the base alone. */
function selections(options: ReplayOptions): EventSelection[] {
  const base = baseSelection(options);
  if (options.aggregates.length === 0) return [base];
  return options.aggregates.map((aggregateId) => ({ ...base, aggregateId }));
}

/** Event ids chosen by the source, before they are republished. */
interface Chosen {
  readonly ids: readonly string[];
  readonly notReplayable: readonly string[];
  readonly paymentsWithoutInvoice?: number;
  /** `--missing-invoices`: payments whose event the invoices group consumed, yet without an invoice. */
  readonly consumedWithoutInvoice?: readonly string[];
}

async function chooseMissingInvoices(db: ReplayDatabase, options: ReplayOptions): Promise<Chosen> {
  const missing = await db.paymentsWithoutInvoice(options.limit);
  const wanted =
    options.aggregates.length === 0
      ? missing.ids
      : missing.ids.filter((id) => options.aggregates.includes(id));
  const ids: string[] = [];
  const notReplayable: string[] = [];
  const consumed: string[] = [];
  const inbox = db.inbox();
  for (const paymentId of wanted) {
    const events = await db.outbox.find({
      type: PAYMENT_COMPLETED,
      aggregateType: 'payment',
      aggregateId: paymentId,
      ...(options.since !== undefined && { since: options.since }),
      ...(options.until !== undefined && { until: options.until }),
      limit: 10,
    });
    if (events.length === 0) notReplayable.push(paymentId);
    for (const event of events) {
      if ((await inbox?.isProcessed(INVOICE_GROUP, event.id)) !== true) {
        ids.push(event.id);
        continue;
      }
      // Handled already. The consumer writes the invoice with its inbox row, so either it handled
      // the event since the list was read (the invoice is there now: nothing to repair), or the
      // invoice is gone since: sending the event again would only be skipped.
      if (!(await db.hasInvoice(paymentId))) consumed.push(paymentId);
    }
  }
  return { ids, notReplayable, paymentsWithoutInvoice: missing.total, consumedWithoutInvoice: consumed };
}

async function chooseDeadLetters(db: ReplayDatabase, options: ReplayOptions): Promise<Chosen> {
  const inbox = db.inbox();
  const ids = new Set<string>();
  for (const selection of selections(options)) {
    for (const letter of (await inbox?.deadLetters(options.group, selection)) ?? []) ids.add(letter.event.id);
  }
  const found = new Set<string>();
  for (let start = 0; start < ids.size; start += CHUNK) {
    const chunk = [...ids].slice(start, start + CHUNK);
    for (const event of await db.outbox.find({ ids: chunk, limit: chunk.length })) found.add(event.id);
  }
  return { ids: [...found], notReplayable: [...ids].filter((id) => !found.has(id)) };
}

/**
 * Runs a replay against the database `options.db` names.
 *
 * @example
 * const report = await replayEvents(parseReplayArgs(['--db', 'payments.db', '--missing-invoices']));
 * report.requeued.length; // events the relay will publish again, under their original ids
 */
export async function replayEvents(options: ReplayOptions): Promise<ReplayReport> {
  const db = await openDatabase(options.db);
  try {
    const requeued: ReplayedEvent[] = [];
    const pending: ReplayedEvent[] = [];
    let matched = 0;
    const add = (report: Awaited<ReturnType<typeof republish>>) => {
      matched += report.matched;
      requeued.push(...report.requeued);
      pending.push(...report.pending);
    };
    if (options.source === 'outbox') {
      for (const selection of selections(options)) {
        add(await republish(db.outbox, { ...selection, dryRun: options.dryRun }));
      }
      return {
        dryRun: options.dryRun,
        source: options.source,
        matched,
        requeued,
        pending,
        notReplayable: [],
        consumedWithoutInvoice: [],
      };
    }
    const chosen =
      options.source === 'missing-invoices'
        ? await chooseMissingInvoices(db, options)
        : await chooseDeadLetters(db, options);
    for (let start = 0; start < chosen.ids.length; start += CHUNK) {
      const ids = chosen.ids.slice(start, start + CHUNK);
      add(await republish(db.outbox, { ids, limit: ids.length, dryRun: options.dryRun }));
    }
    return {
      dryRun: options.dryRun,
      source: options.source,
      matched,
      requeued,
      pending,
      notReplayable: chosen.notReplayable,
      consumedWithoutInvoice: chosen.consumedWithoutInvoice ?? [],
      ...(chosen.paymentsWithoutInvoice !== undefined && {
        paymentsWithoutInvoice: chosen.paymentsWithoutInvoice,
      }),
    };
  } finally {
    await db.close();
  }
}

/**
 * 0 when the events were requeued or nothing needed it, 1 when nothing matched or some events
 * cannot be replayed.
 *
 * @example
 * process.exitCode = replayExitCode(report);
 */
export function replayExitCode(report: ReplayReport): number {
  if (report.notReplayable.length > 0 || report.consumedWithoutInvoice.length > 0) return 1;
  if (report.source === 'missing-invoices' && report.paymentsWithoutInvoice === 0) return 0;
  return report.matched > 0 ? 0 : 1;
}

function eventLine(event: ReplayedEvent): string {
  const at = new Date(event.createdAt).toISOString();
  return `  ${event.id}  ${event.type}  ${event.aggregateType}/${event.aggregateId}  ${at}`;
}

/**
 * The report as a person reads it.
 *
 * @example
 * process.stdout.write(formatReplayReport(report));
 */
export function formatReplayReport(report: ReplayReport): string {
  const lines = [report.dryRun ? 'keel replay: dry run, nothing changed' : 'keel replay'];
  if (report.source === 'missing-invoices') {
    lines.push(`${report.paymentsWithoutInvoice ?? 0} payments without an invoice`);
  }
  const from = report.source === 'dead-letters' ? 'dead letters found in the outbox' : 'events';
  lines.push(`${report.matched} ${from} matched`);
  if (report.requeued.length > 0) {
    lines.push(
      `${report.dryRun ? 'would requeue' : 'requeued'} ${report.requeued.length} published events under their original ids:`,
      ...report.requeued.slice(0, LISTED).map(eventLine),
    );
    if (report.requeued.length > LISTED) lines.push(`  … and ${report.requeued.length - LISTED} more`);
  }
  if (report.pending.length > 0) {
    lines.push(`${report.pending.length} not published yet: the relay publishes them anyway`);
  }
  if (report.notReplayable.length > 0) {
    const what =
      report.source === 'missing-invoices'
        ? 'payments have no payment.completed in the outbox (pruned, or paid without the outbox): keel backfill invoices writes theirs'
        : 'dead letters have no row in this outbox (pruned, or from another service): re-drive them from their consumer';
    lines.push(
      `${report.notReplayable.length} ${what}:`,
      ...report.notReplayable.slice(0, LISTED).map((id) => `  ${id}`),
    );
  }
  if (report.consumedWithoutInvoice.length > 0) {
    lines.push(
      `${report.consumedWithoutInvoice.length} payments had their event handled and lost the invoice since; a replay would be skipped, keel backfill invoices writes theirs:`,
      ...report.consumedWithoutInvoice.slice(0, LISTED).map((id) => `  ${id}`),
    );
  }
  if (
    report.matched === 0 &&
    report.notReplayable.length === 0 &&
    report.consumedWithoutInvoice.length === 0
  ) {
    lines.push(
      report.source === 'missing-invoices' && report.paymentsWithoutInvoice === 0
        ? 'nothing to repair'
        : 'nothing matched the selection',
    );
  }
  return `${lines.join('\n')}\n`;
}

export const replayCommand: Command = {
  name: 'replay',
  summary: 'send events again under their original ids (missing invoices, dead letters, a time range)',
  usage: REPLAY_USAGE,
  async run(argv) {
    const options = parseReplayArgs(argv);
    let report: ReplayReport;
    try {
      report = await replayEvents(options);
    } catch (error) {
      if (!(error instanceof KeelError)) throw error;
      process.stderr.write(`keel replay: ${error.message}\n`);
      return 1;
    }
    process.stdout.write(options.json ? `${JSON.stringify(report)}\n` : formatReplayReport(report));
    return replayExitCode(report);
  },
};
