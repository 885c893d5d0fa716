/**
 * @module
 * The one way rendering the HTML report can fail on its own: an asset it inlines (uPlot's script or
 * style sheet, the chart script) is missing or cannot be inlined safely. A stable code lets the
 * command tell it apart from a failed run.
 */
import { KeelError } from 'keel';

/**
 * An asset of the report could not be read or inlined.
 *
 * @example
 * throw new ReportAssetError("uPlot.min.css contains '</style' and cannot be inlined");
 */
export class ReportAssetError extends KeelError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('KEEL_LAB_REPORT_ASSET', message, options);
  }
}
