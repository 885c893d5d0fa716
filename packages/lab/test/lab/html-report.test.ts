import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runCharts } from '../../src/lab/report/chart-data.ts';
import { escapeHtml, inlineSafe, scriptJson } from '../../src/lab/report/escape-html.ts';
import { renderHtmlReport } from '../../src/lab/report/html-report.ts';
import type { LabResults } from '../../src/lab/run-lab.ts';
import type { ModeResult, RunTimeline, ScenarioResult } from '../../src/lab/scenario.ts';
import type { BucketSummary } from '../../src/lab/time-buckets.ts';
import { describeInChromium, expectReportInBrowser } from './report-in-browser.ts';

const HOSTILE = '<script>alert(1)</script>';

/** Buckets of one request class: a latency bump and a goodput dip between `bumpFrom` and `bumpTo`. */
function buckets(count: number, bumpFrom: number, bumpTo: number, scale = 1): BucketSummary[] {
  return Array.from({ length: count }, (_, index) => {
    const bumped = index >= bumpFrom && index < bumpTo;
    const p50 = (bumped ? 400 : 12) * scale;
    return {
      fromMs: index * 500,
      count: 40,
      ok: bumped ? 10 : 38,
      fail: bumped ? 20 : 2,
      unknown: bumped ? 10 : 0,
      p50Ms: p50,
      p95Ms: p50 * 3,
      p99Ms: p50 * 5,
      maxMs: p50 * 6,
      goodputPerSecond: bumped ? 20 : 76,
    };
  });
}

function run(mode: 'naive' | 'guarded', pass: boolean, chart: RunTimeline): ModeResult<object> {
  return {
    mode,
    pass,
    checks: [
      { rule: mode === 'naive' ? 'logins slow while reports run' : 'login p99 < 250 ms', met: pass },
      { rule: 'every payment invoiced', met: true },
    ],
    headline: [
      { label: 'login p99 ms', value: mode === 'naive' ? 2000 : 60 },
      { label: 'alerts', value: chart.alerts.length },
    ],
    chart,
  };
}

const fullTimeline: RunTimeline = {
  bucketMs: 500,
  series: { login: buckets(20, 6, 12), report: buckets(20, 6, 14, 4) },
  faults: [{ label: 'provider A slow', fromMs: 3_000, toMs: 7_000 }],
  breakers: [
    { atMs: 3_400, breaker: 'provider-a', state: 'open' },
    { atMs: 5_400, breaker: 'provider-a', state: 'half-open' },
    { atMs: 5_600, breaker: 'provider-a', state: 'open' },
    { atMs: 7_600, breaker: 'provider-a', state: 'closed' },
    { atMs: 4_000, breaker: 'provider-b', state: 'isolated' },
    { atMs: 8_000, breaker: 'provider-b', state: 'closed' },
  ],
  alerts: [
    { atMs: 4_200, alert: 'LoginLatencyHigh', status: 'firing', summary: `login p99 2 s; ${HOSTILE}` },
    { atMs: 8_600, alert: 'LoginLatencyHigh', status: 'resolved', summary: 'login p99 back under 250 ms' },
  ],
  marks: [
    { atMs: 2_500, label: 'SIGKILL instance 1' },
    { atMs: 6_000, label: 'restart instance 1' },
  ],
};

const sparseTimeline: RunTimeline = {
  bucketMs: 500,
  series: { login: buckets(20, 6, 12, 5), report: [] },
  faults: [{ label: 'provider A slow', fromMs: 3_000, toMs: 7_000 }],
  breakers: [],
  alerts: [],
  marks: [{ atMs: 2_500, label: 'SIGKILL instance 1' }],
};

const emptyTimeline: RunTimeline = {
  bucketMs: 500,
  series: {},
  faults: [],
  breakers: [],
  alerts: [],
  marks: [],
};

function scenario(name: string, naive: RunTimeline, guarded: RunTimeline, notes: string[]): ScenarioResult {
  return {
    name,
    quick: true,
    seed: 7,
    pace: 0.75,
    naive: run('naive', true, naive),
    guarded: run('guarded', name !== 'silent', guarded),
    verdict: name !== 'silent' ? 'pass' : 'fail',
    notes,
    durationMs: 12_345,
  };
}

/** Every kind of chart and overlay, a run with none, and hostile text in a note and an alert summary. */
const fixture: LabResults = {
  startedAt: '2026-01-02T03:04:05.000Z',
  quick: true,
  seed: 7,
  db: 'sqlite',
  broker: 'in-process',
  pacing: 'auto',
  results: [
    scenario('cascade', sparseTimeline, fullTimeline, [`quick: fewer logins; ${HOSTILE}`]),
    scenario('silent', emptyTimeline, sparseTimeline, []),
  ],
  errors: [{ name: 'partial', error: `ProviderStartError: provider did not listen; ${HOSTILE}` }],
  pass: false,
  durationMs: 24_690,
};

describe('the HTML report, as text', () => {
  it('escapes hostile text from the results wherever it is shown or embedded', () => {
    const html = renderHtmlReport(fixture);
    expect(html).not.toContain(HOSTILE);
    expect(html).toContain('&lt;script&gt;alert(1)&lt;/script&gt;');
    // The alert summary is listed under the charts, escaped, not only drawn.
    expect(html).toContain('login p99 2 s; &lt;script&gt;alert(1)&lt;/script&gt;');
    // A scenario that could not be played is named with its error.
    expect(html).toContain('<strong>partial</strong> could not be played: ProviderStartError');
  });

  it('escapes markup, quotes and ampersands in text', () => {
    expect(escapeHtml(`a<b>&"c'`)).toBe('a&lt;b&gt;&amp;&quot;c&#39;');
    expect(escapeHtml(42)).toBe('42');
  });

  it('embeds JSON that cannot end its script block and parses back unchanged', () => {
    const value = { note: `</script><!-- ${HOSTILE} & \u2028` };
    const embedded = scriptJson(value);
    expect(embedded).not.toMatch(/[<>&\u2028]/);
    expect(JSON.parse(embedded)).toEqual(value);
  });

  it('refuses to inline code that would close its element', () => {
    expect(() => inlineSafe('script', 'var a = "</SCRIPT>";', 'bad.js')).toThrow(
      expect.objectContaining({ code: 'KEEL_LAB_REPORT_ASSET' }),
    );
    expect(inlineSafe('style', 'body { color: red }', 'good.css')).toBe('body { color: red }');
  });

  it('draws no chart for a run without requests or breaker changes', () => {
    expect(runCharts({ chart: emptyTimeline }, 'x')).toEqual([]);
    expect(runCharts({ chart: fullTimeline }, 'x').map((chart) => chart.kind)).toEqual([
      'latency',
      'latency',
      'goodput',
      'breakers',
    ]);
  });

  it('asks for nothing outside the file: uPlot and the data are inlined', () => {
    const html = renderHtmlReport(fixture);
    expect(html).not.toMatch(/<(script|link|img)[^>]+(src|href)=/i);
    expect(html).not.toMatch(/(src|href)\s*=\s*["']?(https?:)?\/\//i);
    expect(html).not.toMatch(/@import|url\(\s*["']?(https?:)?\/\//i);
    expect(html).toContain("default-src 'none'");
    expect(html).toContain('uPlot');
  });
});

describeInChromium('the HTML report in headless Chromium', () => {
  const directory = mkdtempSync(join(tmpdir(), 'lab-html-report-'));
  afterAll(() => rmSync(directory, { recursive: true, force: true }));

  it('loads offline, draws every chart with its series, shows the hostile text as text, and no error', async () => {
    const file = join(directory, 'index.html');
    writeFileSync(file, renderHtmlReport(fixture));
    await expectReportInBrowser({
      file,
      lab: fixture,
      screenshot: join(directory, 'screenshot.png'),
      async inspect(page) {
        // The hostile strings show as text, and ran nowhere (a dialog or an error would say so).
        expect(await page.locator('.notes').first().textContent()).toContain(HOSTILE);
        expect(await page.locator('.events').first().textContent()).not.toContain(HOSTILE);
        expect(await page.locator('.run.guarded .events').first().textContent()).toContain(HOSTILE);
        expect(await page.locator('.verdict.fail').count()).toBeGreaterThan(0);
        expect(await page.locator('.checks .missed').count()).toBeGreaterThan(0);
      },
    });
  }, 60_000);
});
