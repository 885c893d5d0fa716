/**
 * @module
 * One scenario of the report as HTML: its verdict, the headline figures of the naive and guarded
 * runs side by side, each run's bar with every rule met or not, the notes, then per run its charts
 * (empty elements the chart script draws in) and its events — faults, marks, alerts with their
 * summaries, breaker changes — as a list that reads without the charts. Every text taken from the
 * results is escaped.
 */
import type { ModeResult, RunTimeline, ScenarioResult } from '../scenario.ts';
import type { ChartSpec } from './chart-data.ts';
import { escapeHtml } from './escape-html.ts';

type Run = ModeResult<object>;

/** What each mode's bar asks of its run. */
const BAR_MEANING: Readonly<Record<string, string>> = Object.freeze({
  naive: 'the failure must show',
  guarded: 'the guarantee must hold',
});

const seconds = (ms: number) => `${(ms / 1_000).toFixed(1)} s`;

function headlineTable(naive: Run, guarded: Run): string {
  const labels = [...new Set([...naive.headline, ...guarded.headline].map((figure) => figure.label))];
  const shown = (run: Run, label: string) => {
    const figure = run.headline.find((one) => one.label === label);
    return figure === undefined || figure.value === null ? '–' : escapeHtml(figure.value);
  };
  const rows = labels.map(
    (label) =>
      `<tr><th scope="row">${escapeHtml(label)}</th><td>${shown(naive, label)}</td><td>${shown(guarded, label)}</td></tr>`,
  );
  return `<table class="headline"><thead><tr><th></th><th>naive</th><th>guarded</th></tr></thead><tbody>${rows.join('')}</tbody></table>`;
}

function barList(run: Run): string {
  const checks = run.checks.map(
    (check) =>
      `<li class="${check.met ? 'met' : 'missed'}"><span class="mark" aria-label="${check.met ? 'met' : 'missed'}">${check.met ? '✓' : '✗'}</span> ${escapeHtml(check.rule)}</li>`,
  );
  const meaning = BAR_MEANING[run.mode] ?? '';
  return `<div class="bar ${run.pass ? 'pass' : 'fail'}">
  <h4>${escapeHtml(run.mode)} bar <span class="quiet">— ${escapeHtml(meaning)}</span> <span class="badge ${run.pass ? 'pass' : 'fail'}">${run.pass ? 'met' : 'missed'}</span></h4>
  <ul class="checks">${checks.join('') || '<li class="missed">no rules</li>'}</ul>
</div>`;
}

interface EventRow {
  readonly atMs: number;
  readonly kind: string;
  readonly html: string;
}

function eventRows(chart: RunTimeline): EventRow[] {
  const rows: EventRow[] = [
    ...chart.faults.map((fault) => ({
      atMs: fault.fromMs,
      kind: 'fault',
      html: `${escapeHtml(fault.label)} <span class="quiet">until ${seconds(fault.toMs)}</span>`,
    })),
    ...chart.marks.map((mark) => ({ atMs: mark.atMs, kind: 'mark', html: escapeHtml(mark.label) })),
    ...chart.alerts.map((alert) => ({
      atMs: alert.atMs,
      kind: `alert ${alert.status === 'firing' ? 'firing' : 'resolved'}`,
      html: `<strong>${escapeHtml(alert.alert)}</strong> ${escapeHtml(alert.status)}: ${escapeHtml(alert.summary)}`,
    })),
    ...chart.breakers.map((sample) => ({
      atMs: sample.atMs,
      kind: 'breaker',
      html: `${escapeHtml(sample.breaker)} → ${escapeHtml(sample.state)}`,
    })),
  ];
  return rows.sort((x, y) => x.atMs - y.atMs);
}

function eventList(chart: RunTimeline): string {
  const rows = eventRows(chart).map(
    (row) =>
      `<tr class="${row.kind.replace(' ', '-')}"><td class="at">${seconds(row.atMs)}</td><td class="kind">${row.kind}</td><td>${row.html}</td></tr>`,
  );
  if (rows.length === 0)
    return '<p class="quiet events-empty">No faults, marks, alerts or breaker changes.</p>';
  return `<div class="events"><table><thead><tr><th>at</th><th>what</th><th></th></tr></thead><tbody>${rows.join('')}</tbody></table></div>`;
}

function chartFigure(chart: ChartSpec): string {
  return `<figure class="chart ${chart.kind}"><figcaption>${escapeHtml(chart.title)}</figcaption><div class="plot" id="${escapeHtml(chart.id)}"></div></figure>`;
}

function runColumn(run: Run, charts: readonly ChartSpec[]): string {
  const drawn = charts.map(chartFigure).join('');
  const noBreakers = run.chart.breakers.length === 0 ? '<p class="quiet">No breaker state changes.</p>' : '';
  const noRequests = charts.length === 0 ? '<p class="quiet">No requests recorded.</p>' : '';
  return `<div class="run ${escapeHtml(run.mode)}">
  <h3>${escapeHtml(run.mode)} run <span class="badge ${run.pass ? 'pass' : 'fail'}">bar ${run.pass ? 'met' : 'missed'}</span></h3>
  ${noRequests}${drawn}${noBreakers}
  <h4>Events</h4>
  ${eventList(run.chart)}
</div>`;
}

/**
 * One scenario's section of the report; `charts` are the naive and the guarded run's charts.
 *
 * @example
 * scenarioSection(result, 0, [naiveCharts, guardedCharts]); // '<section class="scenario" id="scenario-partial">…'
 */
export function scenarioSection(
  result: ScenarioResult<object>,
  charts: readonly [readonly ChartSpec[], readonly ChartSpec[]],
): string {
  const notes = result.notes.map((note) => `<li>${escapeHtml(note)}</li>`).join('');
  const verdict = result.verdict === 'pass' ? 'pass' : 'fail';
  return `<section class="scenario" id="scenario-${escapeHtml(result.name)}">
<header class="scenario-head">
  <h2>${escapeHtml(result.name)}</h2>
  <span class="verdict ${verdict}">${verdict === 'pass' ? 'PASS' : 'FAIL'}</span>
  <span class="quiet">${result.quick ? 'quick' : 'full'} run · seed ${escapeHtml(result.seed)} · ${seconds(result.durationMs)}</span>
</header>
<div class="summary">
  ${headlineTable(result.naive, result.guarded)}
  <div class="bars">${barList(result.naive)}${barList(result.guarded)}</div>
</div>
${notes === '' ? '' : `<ul class="notes">${notes}</ul>`}
<div class="runs">${runColumn(result.naive, charts[0])}${runColumn(result.guarded, charts[1])}</div>
</section>`;
}
