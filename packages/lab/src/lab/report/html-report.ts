/**
 * @module
 * The lab's HTML report: one self-contained file beside `results.json` that shows, per scenario,
 * the verdict, the bars, the headline figures naive vs guarded, and charts of what happened over
 * time — latency percentiles and goodput with the faults shaded, breaker states, alerts and the
 * lab's own actions. uPlot draws the charts; its script and style sheet are read from the installed
 * package when the report is rendered and inlined, so the file works offline and the repository
 * holds none of its code.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import type { LabResults } from '../run-lab.ts';
import { type ChartSpec, runCharts, shareRanges } from './chart-data.ts';
import { escapeHtml } from './escape-html.ts';
import { page } from './page-template.ts';
import { ReportAssetError } from './report-errors.ts';
import { scenarioSection } from './scenario-section.ts';

const require = createRequire(import.meta.url);

function readAsset(source: string, resolve: () => string): string {
  try {
    return readFileSync(resolve(), 'utf8');
  } catch (error) {
    throw new ReportAssetError(`cannot read ${source}`, { cause: error });
  }
}

/** The assets every report inlines, read at each render: a report is rendered once per run. */
function reportAssets() {
  return {
    uplotJs: readAsset('uPlot.iife.min.js', () => require.resolve('uplot/dist/uPlot.iife.min.js')),
    uplotCss: readAsset('uPlot.min.css', () => require.resolve('uplot/dist/uPlot.min.css')),
    chartScript: readAsset('chart-script.js', () =>
      fileURLToPath(new URL('./chart-script.js', import.meta.url)),
    ),
    styles: readAsset('report-styles.css', () =>
      fileURLToPath(new URL('./report-styles.css', import.meta.url)),
    ),
  };
}

function pageHeader(lab: LabResults): string {
  const contents = lab.results
    .map(
      (result) =>
        `<li><a href="#scenario-${escapeHtml(result.name)}">${escapeHtml(result.name)} <span class="badge ${result.verdict === 'pass' ? 'pass' : 'fail'}">${result.verdict === 'pass' ? 'PASS' : 'FAIL'}</span></a></li>`,
    )
    .join('');
  const errors = lab.errors
    .map(
      (failed) =>
        `<p class="scenario-error"><span class="badge fail">ERROR</span> <strong>${escapeHtml(failed.name)}</strong> could not be played: ${escapeHtml(failed.error)}</p>`,
    )
    .join('\n');
  const settings = [
    lab.quick ? 'quick run' : 'full run',
    `seed ${lab.seed}`,
    lab.db,
    lab.broker,
    `started ${lab.startedAt}`,
    `${(lab.durationMs / 1_000).toFixed(1)} s`,
  ];
  return `<header class="page-head">
  <h1>Keel failure lab</h1>
  <span class="verdict ${lab.pass ? 'pass' : 'fail'}">${lab.pass ? 'every scenario passed' : 'some scenarios failed'}</span>
  <span class="quiet">${settings.map((setting) => escapeHtml(setting)).join(' · ')}</span>
</header>
<p class="quiet">Each scenario runs twice with the same seed, load and faults: naive, where the failure must show, then guarded, where the guarantee must hold.</p>
${contents === '' ? '<p>No scenarios ran.</p>' : `<ul class="contents">${contents}</ul>`}
${errors}
<div class="key"><span class="fault-key">fault window</span><span class="mark-key">lab action (kill, restart, repair)</span><span class="firing-key">alert firing</span><span class="resolved-key">alert resolved</span><span>time in s from the start of the load</span></div>`;
}

/**
 * The report of a lab run as one self-contained HTML document.
 *
 * @example
 * writeFileSync(join(directory, 'index.html'), renderHtmlReport(lab));
 */
export function renderHtmlReport(lab: LabResults): string {
  const { uplotJs, uplotCss, chartScript, styles } = reportAssets();
  const charts: ChartSpec[] = [];
  const sections = lab.results.map((result, index) => {
    const [naive = [], guarded = []] = shareRanges([
      runCharts(result.naive, `chart-${index}-naive`),
      runCharts(result.guarded, `chart-${index}-guarded`),
    ]);
    charts.push(...naive, ...guarded);
    return scenarioSection(result, [naive, guarded]);
  });
  return page({
    title: `Keel lab — ${lab.pass ? 'pass' : 'fail'} — ${lab.startedAt}`,
    header: pageHeader(lab),
    body: sections.join('\n'),
    data: { charts },
    styles: [
      { source: 'uPlot.min.css', css: uplotCss },
      { source: 'report-styles.css', css: styles },
    ],
    scripts: [
      { source: 'uPlot.iife.min.js', js: uplotJs },
      { source: 'chart-script.js', js: chartScript },
    ],
  });
}
