/**
 * @module
 * Opens a lab report in headless Chromium (Debian's `chromium`, driven by playwright-core) and holds
 * it to what a reader needs: it loads from the file alone, shows no console or page error and opens
 * no dialog, draws every chart the results call for with ink of each of its series' colours, and can
 * be photographed. Both the report of a synthetic fixture and the report of a real `keel lab --quick`
 * run are checked this way, so the two tests judge the page by the same rules.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { chromium, type Page } from 'playwright-core';
import { describe, expect, it } from 'vitest';
import type { LabResults } from '../../src/lab/run-lab.ts';
import type { RunTimeline } from '../../src/lab/scenario.ts';

/** Where Debian's `chromium` package puts the browser. */
export const CHROMIUM = '/usr/bin/chromium';

/** The little of a browser page the pixel check reads (the project's types have no DOM). */
interface PageWindow {
  document: {
    getElementById(id: string): { textContent: string | null } | null;
    querySelector(selector: string): {
      width: number;
      height: number;
      getContext(
        kind: '2d',
      ): { getImageData(x: number, y: number, w: number, h: number): { data: Uint8ClampedArray } } | null;
    } | null;
  };
}

/** How many pixels of a series' colour a chart must hold for its line to count as drawn. */
const MIN_SERIES_PIXELS = 20;

/** A chart's series as the report embeds it. */
interface ChartSeries {
  readonly label: string;
  readonly color: string;
  readonly values: readonly (number | null)[];
}

/** How far apart two values must be, in a chart's own terms, for one line not to hide the other. */
const APART_LOG_DECADES = 0.05;
const APART_SHARE_OF_Y = 0.05;

/**
 * Whether a series has a value somewhere that no series drawn after it covers: one that lies on a
 * later line at every point (a p95 equal to the p99 when every request timed out) leaves no ink of
 * its own, and is not asked for any.
 */
function showsAbove(
  values: readonly (number | null)[],
  later: readonly { readonly values: readonly (number | null)[] }[],
  chart: { readonly logY: boolean; readonly yMax: number },
): boolean {
  const apart = (a: number, b: number) =>
    chart.logY
      ? Math.abs(Math.log10(Math.max(a, 1e-9)) - Math.log10(Math.max(b, 1e-9))) > APART_LOG_DECADES
      : Math.abs(a - b) > APART_SHARE_OF_Y * Math.max(chart.yMax, 1e-9);
  return values.some(
    (value, at) =>
      value !== null &&
      later.every((series) => {
        const over = series.values[at];
        return over === null || over === undefined || apart(value, over);
      }),
  );
}

/**
 * The charts a run must show, counted independently of the report's own code: a latency chart per
 * request class that saw requests, one goodput chart when any did, and a breaker chart when a
 * breaker changed state.
 *
 * @example
 * expectedCharts({ bucketMs: 500, series: {}, faults: [], breakers: [], alerts: [], marks: [] }); // 0
 */
export function expectedCharts(timeline: RunTimeline): number {
  const classes = Object.values(timeline.series).filter((one) => one.some((bucket) => bucket.count > 0));
  if (classes.length === 0) return timeline.breakers.length > 0 ? 1 : 0;
  return classes.length + 1 + (timeline.breakers.length > 0 ? 1 : 0);
}

/**
 * Declares `title` as a describe block that needs Chromium. Without `/usr/bin/chromium` it holds a
 * single test that skips and says why — or fails, under `KEEL_REQUIRE_SERVICES=1`, where CI must
 * not pass without the browser check.
 *
 * @example
 * describeInChromium('the HTML report in headless Chromium', () => {
 *   it('draws every chart', async () => expectReportInBrowser({ file, lab, screenshot }));
 * });
 */
export function describeInChromium(title: string, body: () => void): void {
  if (existsSync(CHROMIUM)) {
    describe(title, body);
    return;
  }
  describe(title, () => {
    it(`needs Chromium at ${CHROMIUM} (Debian package chromium)`, (context) => {
      if (process.env.KEEL_REQUIRE_SERVICES === '1') {
        throw new Error(
          `${CHROMIUM} is missing, and KEEL_REQUIRE_SERVICES=1 requires it (apt-get install -y chromium)`,
        );
      }
      context.skip(`${CHROMIUM} is missing`);
    });
  });
}

export interface ReportInBrowserOptions {
  /** The report's `index.html`. */
  readonly file: string;
  /** The results the report was rendered from: they say how many charts it must draw. */
  readonly lab: LabResults;
  /** Where the full-page screenshot goes (a PNG). */
  readonly screenshot: string;
  /** More checks of the loaded page, run after the charts are checked and before the screenshot. */
  readonly inspect?: (page: Page) => Promise<void>;
}

/**
 * Opens `file` in headless Chromium with every request but the file itself refused, waits for the
 * report to mark its charts drawn, and asserts that each chart is there and inked, that nothing
 * was logged as an error or warning, thrown, or shown as a dialog, and that the page was
 * photographed to `screenshot`.
 *
 * @example
 * await expectReportInBrowser({ file: join(dir, 'index.html'), lab, screenshot: join(dir, 'page.png') });
 */
export async function expectReportInBrowser(options: ReportInBrowserOptions): Promise<void> {
  const { file, lab, screenshot } = options;
  const href = pathToFileURL(file).href;
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    const requests: string[] = [];
    const problems: string[] = [];
    const dialogs: string[] = [];
    await page.route('**/*', (route) => {
      requests.push(route.request().url());
      return route.request().url() === href ? route.continue() : route.abort();
    });
    page.on('console', (message) => {
      if (message.type() === 'error' || message.type() === 'warning') problems.push(message.text());
    });
    page.on('pageerror', (error) => void problems.push(error.message));
    page.on('dialog', (dialog) => {
      dialogs.push(dialog.message());
      return dialog.dismiss();
    });
    await page.goto(href);
    await page.waitForSelector('html[data-charts-drawn]', { timeout: 10_000 }).catch((error: unknown) => {
      // A script that threw never marks the page drawn: say what it threw.
      expect(problems).toEqual([]);
      throw error;
    });

    const expected = lab.results.reduce(
      (sum, result) => sum + expectedCharts(result.naive.chart) + expectedCharts(result.guarded.chart),
      0,
    );
    expect(await page.getAttribute('html', 'data-charts-drawn')).toBe(String(expected));
    expect(await page.locator('.plot canvas').count()).toBe(expected);

    // Each chart's canvas holds pixels of each of its series' colours: the lines were drawn.
    const inked = await page.evaluate(() => {
      const { document } = globalThis as unknown as PageWindow;
      const data = JSON.parse(document.getElementById('lab-data')?.textContent ?? '{}') as {
        charts: { id: string; series: ChartSeries[]; yMax: number; logY: boolean }[];
      };
      const rgb = (hex: string) => [1, 3, 5].map((at) => Number.parseInt(hex.slice(at, at + 2), 16));
      return data.charts.map((chart) => {
        const canvas = document.querySelector(`#${chart.id} canvas`);
        const context = canvas?.getContext('2d');
        if (!canvas || !context) return { id: chart.id, yMax: chart.yMax, logY: chart.logY, counts: [] };
        const pixels = context.getImageData(0, 0, canvas.width, canvas.height).data;
        const counts = chart.series.map((series) => {
          const [r = 0, g = 0, b = 0] = rgb(series.color);
          let near = 0;
          for (let at = 0; at < pixels.length; at += 4) {
            const distance =
              Math.abs((pixels[at] ?? 0) - r) +
              Math.abs((pixels[at + 1] ?? 0) - g) +
              Math.abs((pixels[at + 2] ?? 0) - b);
            if ((pixels[at + 3] ?? 0) > 200 && distance < 40) near++;
          }
          return { series: series.label, near, values: series.values };
        });
        return { id: chart.id, yMax: chart.yMax, logY: chart.logY, counts };
      });
    });
    expect(inked).toHaveLength(expected);
    for (const chart of inked) {
      expect(chart.counts.length, chart.id).toBeGreaterThan(0);
      expect(
        chart.counts.some((series) => series.near > MIN_SERIES_PIXELS),
        `${chart.id} shows no series`,
      ).toBe(true);
      // A series that shows above the ones drawn after it left ink of its own; where it shows only
      // a little (a p95 a hair over the p99 here and there), that ink is a few pixels, so any counts.
      chart.counts.forEach((series, index) => {
        if (!showsAbove(series.values, chart.counts.slice(index + 1), chart)) return;
        expect(series.near, `${chart.id} ${series.series}`).toBeGreaterThan(0);
      });
    }

    await options.inspect?.(page);

    expect(dialogs).toEqual([]);
    expect(problems).toEqual([]);
    expect(requests).toEqual([href]);

    await page.screenshot({ path: screenshot, fullPage: true });
    expect(statSync(screenshot).size).toBeGreaterThan(10_000);
    expect(readFileSync(screenshot).subarray(1, 4).toString()).toBe('PNG');
  } finally {
    await browser.close();
  }
}
