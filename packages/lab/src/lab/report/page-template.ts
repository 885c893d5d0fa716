/**
 * @module
 * The report's page: one HTML document that carries everything it needs — the style sheets, uPlot,
 * the chart script and the data — so it opens from a file, offline, and asks the network for
 * nothing. A Content-Security-Policy says so to the browser too: no fetches, no outside scripts,
 * styles, fonts or images.
 */
import { escapeHtml, inlineSafe, scriptJson } from './escape-html.ts';

/** What the page is made of; every part but `title` and `data` is trusted markup or code. */
export interface PageParts {
  readonly title: string;
  /** The head of the page: the title line and the run's settings, as HTML. */
  readonly header: string;
  /** The scenarios' sections, as HTML. */
  readonly body: string;
  /** What the chart script reads, embedded as JSON. */
  readonly data: unknown;
  readonly styles: readonly { readonly source: string; readonly css: string }[];
  readonly scripts: readonly { readonly source: string; readonly js: string }[];
}

/** No network at all: inline scripts and styles only, images only from the page itself. */
const CONTENT_SECURITY_POLICY =
  "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; connect-src 'none'";

/**
 * The whole document.
 *
 * @example
 * const html = page({ title: 'Keel lab', header, body, data: { charts }, styles, scripts });
 */
export function page(parts: PageParts): string {
  const styles = parts.styles.map(
    (style) => `<style>${inlineSafe('style', style.css, style.source)}</style>`,
  );
  const scripts = parts.scripts.map(
    (script) => `<script>${inlineSafe('script', script.js, script.source)}</script>`,
  );
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="${CONTENT_SECURITY_POLICY}">
<title>${escapeHtml(parts.title)}</title>
${styles.join('\n')}
</head>
<body>
<main>
${parts.header}
${parts.body}
</main>
<script type="application/json" id="lab-data">${scriptJson(parts.data)}</script>
${scripts.join('\n')}
</body>
</html>
`;
}
