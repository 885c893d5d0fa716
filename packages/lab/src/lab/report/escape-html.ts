/**
 * @module
 * Everything the report shows comes from a run's results — notes, rules, alert summaries with
 * entity ids — and none of it is trusted as markup. Text goes through {@link escapeHtml}; the data
 * the charts read goes through {@link scriptJson}, which keeps a `</script>` inside a string from
 * ending the block it sits in; inlined code goes through {@link inlineSafe}.
 */
import { ReportAssetError } from './report-errors.ts';

const ENTITIES: Readonly<Record<string, string>> = Object.freeze({
  '&': '&amp;',
  '<': '&lt;',
  '>': '&gt;',
  '"': '&quot;',
  "'": '&#39;',
});

/**
 * Text made safe for an element's content or a quoted attribute value.
 *
 * @example
 * escapeHtml('<script>alert(1)</script>'); // '&lt;script&gt;alert(1)&lt;/script&gt;'
 */
export function escapeHtml(text: string | number): string {
  return String(text).replace(/[&<>"']/g, (character) => ENTITIES[character] ?? character);
}

/**
 * `value` as JSON that can sit inside `<script type="application/json">`: `<`, `>`, `&` and the
 * two line separators JavaScript once treated as newlines are written as `\u` escapes, which
 * `JSON.parse` reads back unchanged.
 *
 * @example
 * scriptJson({ note: '</script>' }); // '{"note":"\\u003c/script\\u003e"}'
 */
export function scriptJson(value: unknown): string {
  return JSON.stringify(value).replace(
    /[<>&\u2028\u2029]/g,
    (character) => `\\u${character.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
}

/**
 * Code or a style sheet checked fit to inline in a `<script>` or `<style>` element: one that
 * contains the element's closing tag would end it early, so it is refused rather than altered.
 *
 * @example
 * `<style>${inlineSafe('style', css, 'uPlot.min.css')}</style>`;
 */
export function inlineSafe(element: 'script' | 'style', text: string, source: string): string {
  if (text.toLowerCase().includes(`</${element}`)) {
    throw new ReportAssetError(`${source} contains '</${element}' and cannot be inlined`);
  }
  return text;
}
