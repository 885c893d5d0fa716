/**
 * @module
 * **silent** — nothing a client sees goes wrong. After a clean phase (charges flow, every payment is
 * invoiced), the invoice consumer stops and a share of the `payment.completed` publishes is lost on
 * the way to the broker, while every charge still answers 2xx; then the consumer comes back, and
 * the lost events stay lost. Guarded, the invariants see payments age past their invoice grace and
 * alert within two evaluation intervals, naming the payments, the impact and the command to run;
 * the lab runs that command exactly as printed (`keel replay …`, a child process) and the ground
 * truth — the invoices table, not the service's view — reaches zero payments without an invoice,
 * with no invoice written twice. Naive has no invariants: no signal, and the mismatches remain.
 */
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { seededRandom } from '../../seeded-random.ts';
import type { ServiceMode } from '../../service/config.ts';
import type { LabAlert } from '../../service/lab-routes.ts';
import { PAYMENT_COMPLETED } from '../../service/payment-events.ts';
import { commandInAlert, runKeelCommand } from '../alert-command.ts';
import {
  type ChargeLoadFigures,
  type ChargeLoadPlan,
  chargeChart,
  paidEnough,
  runChargeLoad,
} from '../charge-load.ts';
import { retryWithBackoff } from '../clients.ts';
import { paced } from '../machine-pace.ts';
import type {
  AlertMark,
  BarCheck,
  FaultWindow,
  HeadlineFigure,
  RunMark,
  Scenario,
  ScenarioSettings,
} from '../scenario.ts';
import { labAlerts, setLabFaults } from '../service-lab-api.ts';

/** Share of `payment.completed` publishes lost during the fault (the issue: a small share). */
export const SILENT_DROP_SHARE = 0.05;
/** Time between two rounds of the guarded service's invariants, in ms. */
export const SILENT_INVARIANT_INTERVAL_MS = 500;
/** How long a payment may wait for its invoice before it counts as missing, in ms. */
export const SILENT_INVOICE_GRACE_MS = 1_500;
/** The bar: the alert within this many evaluation intervals of the breach becoming visible. */
export const SILENT_MAX_ALERT_INTERVALS = 2;

/**
 * The run's phases, in order: clean; the consumer stopped and publishes dropped; the consumer back
 * while publishes are still dropped (a broker that holds publishes while no one consumes — the
 * in-process one confirms only settled events — sends its backlog then); and no fault.
 */
interface Phases {
  readonly ratePerSecond: number;
  readonly cleanMs: number;
  readonly stoppedMs: number;
  readonly dropTailMs: number;
  readonly afterMs: number;
}

const QUICK: Phases = {
  ratePerSecond: 40,
  cleanMs: 2_000,
  stoppedMs: 1_500,
  dropTailMs: 1_000,
  afterMs: 500,
};
const FULL: Phases = {
  ratePerSecond: 50,
  cleanMs: 5_000,
  stoppedMs: 5_000,
  dropTailMs: 3_000,
  afterMs: 3_000,
};

function nominalPhases(settings: ScenarioSettings): Phases {
  return settings.quick ? QUICK : FULL;
}

/** The phases at the run's pace: the rate slowed and every phase stretched by as much. */
function phasesOf(settings: ScenarioSettings): Phases {
  const phases = nominalPhases(settings);
  const { rate, span } = paced(settings);
  return {
    ratePerSecond: rate(phases.ratePerSecond),
    cleanMs: span(phases.cleanMs),
    stoppedMs: span(phases.stoppedMs),
    dropTailMs: span(phases.dropTailMs),
    afterMs: span(phases.afterMs),
  };
}

/** Charges of a run: one per order, over the clean phase, the fault and after it (at any pace). */
export function silentCharges(settings: ScenarioSettings): number {
  const { ratePerSecond, cleanMs, stoppedMs, dropTailMs, afterMs } = nominalPhases(settings);
  return Math.round((ratePerSecond * (cleanMs + stoppedMs + dropTailMs + afterMs)) / 1_000);
}

/** The alert the lab acted on. */
export interface SilentAlert {
  readonly name: string;
  readonly ids: readonly string[];
  readonly total: number;
  readonly impact: string;
  readonly next: string;
}

export interface SilentFigures extends ChargeLoadFigures {
  readonly invariantIntervalMs: number;
  readonly invoiceGraceMs: number;
  /** `payment.completed` publishes the service's fault switch lost. */
  readonly droppedPublishes: number;
  /** Firing notifications sent before the fault began. */
  readonly cleanPhaseAlerts: number;
  /** Every notification the service sent, on the load's time axis. */
  readonly alerts: readonly AlertMark[];
  /** The first firing alert that printed a `keel` command; `null` when none came. */
  readonly actedOn: SilentAlert | null;
  /**
   * From the breach becoming visible (the first payment left uninvoiced past its grace, by the
   * database) to that alert reaching its sink, in ms, and in evaluation intervals.
   */
  readonly alertLatencyMs: number | null;
  readonly alertLatencyIntervals: number | null;
  /** The command as the alert printed it, and how it ended. */
  readonly repairCommand: string | null;
  readonly repairExitCode: number | null;
  /** Events the command requeued (from its report). */
  readonly replayedEvents: number;
  /** Payments without an invoice (ground truth) when the command ran. */
  readonly uninvoicedBeforeRepair: number | null;
  /** From the command's start until no payment lacked its invoice, in ms; `null` when it never got there. */
  readonly repairMs: number | null;
}

/** What the ground truth says about invoices: the payments without one, and the first one late. */
interface InvoiceTruth {
  readonly uninvoiced: number;
  /** `created_at` of the first payment not invoiced within the grace (epoch ms), if any. */
  readonly firstLateAt: number | null;
}

function invoiceTruthSql(graceMs: number): string {
  return `SELECT
  (SELECT count(*) FROM payments p WHERE NOT EXISTS (SELECT 1 FROM invoices i WHERE i.payment_id = p.id)) AS uninvoiced,
  (SELECT min(p.created_at) FROM payments p
    WHERE NOT EXISTS (SELECT 1 FROM invoices i WHERE i.payment_id = p.id AND i.created_at <= p.created_at + ${graceMs})
  ) AS first_late_at`;
}

async function readInvoiceTruth(db: string, graceMs: number): Promise<InvoiceTruth> {
  const sql = invoiceTruthSql(graceMs);
  let row: { uninvoiced: number | string; first_late_at: number | string | null } | undefined;
  if (/^postgres(ql)?:\/\//.test(db)) {
    const client = new pg.Client({ connectionString: db });
    await client.connect();
    try {
      row = (await client.query(sql)).rows[0];
    } finally {
      await client.end();
    }
  } else {
    const handle = new DatabaseSync(db, { readOnly: true, timeout: 5_000 });
    try {
      row = handle.prepare(sql).get() as typeof row;
    } finally {
      handle.close();
    }
  }
  return {
    uninvoiced: Number(row?.uninvoiced ?? 0),
    firstLateAt: row?.first_late_at == null ? null : Number(row.first_late_at),
  };
}

/** What one run saw besides the load, filled in as the disruption plays. */
class Observation {
  wallStart = 0;
  faultOnAt = 0;
  faultWindows: FaultWindow[] = [];
  droppedPublishes = 0;
  alerts: LabAlert[] = [];
  actedOn: LabAlert | undefined;
  repairCommand: string | null = null;
  repairExitCode: number | null = null;
  replayedEvents = 0;
  uninvoicedBeforeRepair: number | null = null;
  repairMs: number | null = null;
  truth: InvoiceTruth = { uninvoiced: 0, firstLateAt: null };

  figures(): Omit<SilentFigures, keyof ChargeLoadFigures | 'invariantIntervalMs' | 'invoiceGraceMs'> {
    const firing = this.alerts.filter((alert) => alert.status === 'firing');
    const visibleAt =
      this.truth.firstLateAt === null ? null : this.truth.firstLateAt + SILENT_INVOICE_GRACE_MS;
    const latencyMs =
      this.actedOn === undefined || visibleAt === null ? null : this.actedOn.sentAtMs - visibleAt;
    return {
      droppedPublishes: this.droppedPublishes,
      cleanPhaseAlerts: firing.filter((alert) => alert.sentAtMs < this.faultOnAt).length,
      alerts: this.alerts.map((alert) => ({
        atMs: alert.sentAtMs - this.wallStart,
        alert: alert.name,
        status: alert.status,
        summary: `${alert.what}: ${alert.ids.join(', ')}${alert.total > alert.ids.length ? ` (${alert.ids.length} of ${alert.total})` : ''}`,
      })),
      actedOn:
        this.actedOn === undefined
          ? null
          : {
              name: this.actedOn.name,
              ids: this.actedOn.ids,
              total: this.actedOn.total,
              impact: this.actedOn.impact,
              next: this.actedOn.next,
            },
      alertLatencyMs: latencyMs,
      alertLatencyIntervals:
        latencyMs === null ? null : Math.round((latencyMs / SILENT_INVARIANT_INTERVAL_MS) * 100) / 100,
      repairCommand: this.repairCommand,
      repairExitCode: this.repairExitCode,
      replayedEvents: this.replayedEvents,
      uninvoicedBeforeRepair: this.uninvoicedBeforeRepair,
      repairMs: this.repairMs,
    };
  }
}

/** The first firing alert whose next step prints a `keel` command. */
function actionable(alerts: readonly LabAlert[]): LabAlert | undefined {
  return alerts.find((alert) => alert.status === 'firing' && commandInAlert(alert.next) !== undefined);
}

async function waitFor<T>(
  read: () => Promise<T>,
  done: (value: T) => boolean,
  timeoutMs: number,
): Promise<T> {
  const started = performance.now();
  for (;;) {
    const value = await read();
    if (done(value) || performance.now() - started > timeoutMs) return value;
    await sleep(200);
  }
}

/**
 * The plan of one run; `seen` collects what the disruption observed.
 *
 * @example
 * const seen = new Observation();
 * const figures = await runChargeLoad('guarded', settings, silentPlan(settings, 'guarded', db, seen));
 */
function silentPlan(
  settings: ScenarioSettings,
  mode: ServiceMode,
  db: string,
  seen: Observation,
): ChargeLoadPlan {
  const phases = phasesOf(settings);
  const say = (line: string) => settings.progress?.(`silent/${mode}: ${line}`);
  return {
    name: 'silent',
    instances: 1,
    orders: silentCharges(settings),
    ratePerSecond: phases.ratePerSecond,
    client: retryWithBackoff({
      attempts: 3,
      baseMs: 100,
      maxMs: 500,
      random: seededRandom(settings.seed + 5),
    }),
    clientTimeoutMs: 5_000,
    faults: {},
    serviceFlags: [
      '--lab',
      '--invariant-interval',
      String(SILENT_INVARIANT_INTERVAL_MS),
      '--invoice-grace',
      String(SILENT_INVOICE_GRACE_MS),
      '--db-pool',
      /^postgres/.test(db) ? '8' : '2',
    ],
    disrupt: async (instances) => {
      const url = instances.urls[0] as string;
      const started = performance.now();
      seen.wallStart = Date.now();
      const at = () => Math.round(performance.now() - started);
      const marks: RunMark[] = [];
      await sleep(phases.cleanMs);
      seen.faultOnAt = Date.now();
      await setLabFaults(url, {
        consumer: 'stopped',
        dropShare: SILENT_DROP_SHARE,
        types: [PAYMENT_COMPLETED],
        seed: settings.seed,
      });
      const faultFrom = at();
      marks.push({
        atMs: faultFrom,
        label: `invoice consumer stopped; ${SILENT_DROP_SHARE * 100} % of ${PAYMENT_COMPLETED} publishes dropped`,
      });
      say('fault on');
      await sleep(phases.stoppedMs);
      await setLabFaults(url, {
        consumer: 'running',
        dropShare: SILENT_DROP_SHARE,
        types: [PAYMENT_COMPLETED],
      });
      const consumerBack = at();
      marks.push({ atMs: consumerBack, label: 'invoice consumer back' });
      await sleep(phases.dropTailMs);
      const lifted = await setLabFaults(url, {});
      const faultTo = at();
      seen.droppedPublishes = lifted.dropped;
      seen.faultWindows = [
        { label: 'invoice consumer stopped', fromMs: faultFrom, toMs: consumerBack },
        { label: `${PAYMENT_COMPLETED} publishes dropped`, fromMs: faultFrom, toMs: faultTo },
      ];
      marks.push({ atMs: faultTo, label: `no fault (${lifted.dropped} publishes were dropped)` });
      say(`fault off: ${lifted.dropped} publishes dropped`);
      if (mode === 'naive') {
        // Naive has no invariants to wait for: what it sent, it sent.
        seen.alerts = await labAlerts(url);
        seen.truth = await readInvoiceTruth(db, SILENT_INVOICE_GRACE_MS);
        return marks;
      }

      // The breach shows a grace after the first lost invoice; give the alert generous room, then judge its latency.
      const deadline = SILENT_INVOICE_GRACE_MS + 6 * SILENT_INVARIANT_INTERVAL_MS;
      seen.actedOn = actionable(
        await waitFor(
          () => labAlerts(url),
          (alerts) => actionable(alerts) !== undefined,
          deadline,
        ),
      );
      if (seen.actedOn === undefined) {
        say('no actionable alert came');
      } else {
        const words = commandInAlert(seen.actedOn.next) as string[];
        seen.repairCommand = words.join(' ');
        marks.push({ atMs: seen.actedOn.sentAtMs - seen.wallStart, label: `alert ${seen.actedOn.name}` });
        seen.uninvoicedBeforeRepair = (await readInvoiceTruth(db, SILENT_INVOICE_GRACE_MS)).uninvoiced;
        const repairStarted = performance.now();
        const run = await runKeelCommand(words.slice(1));
        seen.repairExitCode = run.exitCode;
        seen.replayedEvents = Number(/requeued (\d+) published events/.exec(run.stdout)?.[1] ?? 0);
        marks.push({ atMs: at(), label: `ran ${seen.repairCommand} (exit ${run.exitCode})` });
        say(`ran ${seen.repairCommand}: exit ${run.exitCode}, ${seen.replayedEvents} events requeued`);
        if (run.exitCode !== 0) say(run.stderr.trim() || run.stdout.trim());
        const repaired = await waitFor(
          () => readInvoiceTruth(db, SILENT_INVOICE_GRACE_MS),
          (truth) => truth.uninvoiced === 0,
          15_000,
        );
        if (repaired.uninvoiced === 0) {
          seen.repairMs = Math.round(performance.now() - repairStarted);
          marks.push({ atMs: at(), label: 'every payment invoiced' });
        }
      }
      // Let the alert resolve, for the timeline.
      await waitFor(
        () => labAlerts(url),
        (alerts) => alerts.some((alert) => alert.status === 'resolved'),
        3 * SILENT_INVARIANT_INTERVAL_MS,
      );
      seen.alerts = await labAlerts(url);
      seen.truth = await readInvoiceTruth(db, SILENT_INVOICE_GRACE_MS);
      return marks.sort((x, y) => x.atMs - y.atMs);
    },
    settleMs: 5_000,
  };
}

/** A fresh database for the run: a sqlite file in the run's directory, or a new Postgres database. */
async function runDatabase(
  settings: ScenarioSettings,
  mode: ServiceMode,
): Promise<{ db: string; drop(): Promise<void> }> {
  const name = `silent_${mode}_${settings.seed}_${process.pid}_${Date.now().toString(36)}`;
  if (settings.db === undefined) {
    return { db: join(settings.workDirectory, `${name}.db`), drop: async () => undefined };
  }
  // The invariants watch the whole database: an earlier run's leftovers would alert in the clean phase.
  const admin = new pg.Client({ connectionString: settings.db });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  const url = new URL(settings.db);
  url.pathname = `/${name}`;
  return {
    db: url.toString(),
    async drop() {
      const cleanup = new pg.Client({ connectionString: settings.db });
      await cleanup.connect();
      try {
        await cleanup.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      } finally {
        await cleanup.end();
      }
    },
  };
}

async function runSilent(mode: ServiceMode, settings: ScenarioSettings): Promise<SilentFigures> {
  const { db, drop } = await runDatabase(settings, mode);
  try {
    const seen = new Observation();
    const figures = await runChargeLoad(mode, { ...settings, db }, silentPlan(settings, mode, db, seen));
    return {
      ...figures,
      faultWindows: seen.faultWindows,
      invariantIntervalMs: SILENT_INVARIANT_INTERVAL_MS,
      invoiceGraceMs: SILENT_INVOICE_GRACE_MS,
      ...seen.figures(),
    };
  } finally {
    await drop();
  }
}

/** Every charge answered 2xx: the fault is invisible to clients. */
function allAnswered(figures: SilentFigures): BarCheck {
  return {
    rule: `every charge answered 2xx (${figures.clientOutcomes.ok} of ${figures.charges})`,
    met: figures.clientOutcomes.ok === figures.charges,
    capacity: true,
  };
}

function faultPlayed(figures: SilentFigures): BarCheck {
  return { rule: 'the fault dropped publishes', met: figures.droppedPublishes > 0 };
}

/**
 * @example
 * const result = await runScenario(silentScenario, { quick: true, seed: 7, workDirectory });
 */
export const silentScenario: Scenario<SilentFigures> = {
  name: 'silent',
  summary: `clean phase, then the invoice consumer stops and ${SILENT_DROP_SHARE * 100} % of payment.completed publishes are dropped while every charge answers 2xx; the consumer comes back`,
  run: runSilent,
  guardedBar: (figures) => {
    const alert = figures.actedOn;
    return [
      allAnswered(figures),
      faultPlayed(figures),
      { rule: 'no alert in the clean phase', met: figures.cleanPhaseAlerts === 0 },
      {
        rule: 'an alert naming the payments, the impact and a keel command',
        met: alert !== null && alert.ids.length > 0 && alert.impact !== '' && figures.repairCommand !== null,
      },
      {
        rule: `the alert within ${SILENT_MAX_ALERT_INTERVALS} evaluation intervals of the breach (${figures.alertLatencyIntervals ?? '–'})`,
        met:
          figures.alertLatencyIntervals !== null &&
          figures.alertLatencyIntervals <= SILENT_MAX_ALERT_INTERVALS,
      },
      { rule: 'the alert’s command ran and exited 0', met: figures.repairExitCode === 0 },
      { rule: '0 payments without an invoice at the end', met: figures.paymentsWithoutInvoice === 0 },
      { rule: 'no invoice written twice', met: figures.duplicateInvoices === 0 },
      paidEnough(figures),
    ];
  },
  naiveBar: (figures) => [
    allAnswered(figures),
    faultPlayed(figures),
    { rule: 'no alert at all', met: figures.alerts.length === 0 },
    { rule: 'payments without an invoice at the end > 0', met: figures.paymentsWithoutInvoice > 0 },
  ],
  headline: (figures): HeadlineFigure[] => [
    { label: 'payments', value: figures.payments },
    { label: 'uninvoiced', value: figures.paymentsWithoutInvoice },
    { label: 'alert latency (intervals)', value: figures.alertLatencyIntervals ?? '–' },
    { label: 'clean-phase alerts', value: figures.cleanPhaseAlerts },
    { label: 'replayed events', value: figures.replayedEvents },
    { label: 'uninvoiced before repair', value: figures.uninvoicedBeforeRepair ?? '–' },
  ],
  chart: (figures) => ({ ...chargeChart(figures), alerts: figures.alerts }),
  notes: (settings) => {
    const phases = nominalPhases(settings);
    return settings.quick
      ? [
          `quick: ${silentCharges(settings)} charges per mode at ${phases.ratePerSecond}/s (clean ${phases.cleanMs / 1_000} s, consumer stopped ${phases.stoppedMs / 1_000} s, drops ${(phases.stoppedMs + phases.dropTailMs) / 1_000} s) instead of ${silentCharges({ ...settings, quick: false })}`,
        ]
      : [];
  },
};
