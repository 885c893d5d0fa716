/**
 * @module
 * How far back an invariant still has to look. The payments invariants hold row by row and, once a
 * row satisfies one, it keeps satisfying it: a paid order keeps its payment, an invoiced payment its
 * invoice, a consumed event its inbox entry. So after a round that found nothing before some time,
 * the next round needs to look only at rows from then on, and each round costs what was written
 * since, not the whole history: an evaluation over every paid order took 2 s on Postgres after a
 * 100,000-charge run, and each instance repeated it every round. The first round looks at
 * everything, so a fresh process (and `keel check`) still checks the whole table.
 *
 * A row is stamped when its transaction runs and seen when it commits: the mark trails the rounds by
 * a margin longer than any of the service's transactions, so a row that commits late, with a time
 * the mark has passed, is still looked at.
 */
import { checkInteger } from 'keel';
import type { DataFinding } from 'keel/observe';

/**
 * Longer than any transaction of the service (its statement timeout is 15 s), and than the clock
 * difference between the instance, which keeps the mark, and the database, which stamps the rows.
 */
export const CHECKED_MARGIN_MS = 60_000;

/**
 * The time from which one invariant must still look at rows, advanced after each round.
 *
 * @example
 * const since = new CheckedSince();
 * const startedAt = Date.now();
 * const finding = await query(since.since);
 * since.advance(startedAt, finding);
 */
export class CheckedSince {
  readonly marginMs: number;
  #since = 0;

  constructor(marginMs: number = CHECKED_MARGIN_MS) {
    this.marginMs = checkInteger('marginMs', marginMs, 0);
  }

  /** Epoch ms: rows stamped before it satisfied the invariant when last looked at. 0 at first. */
  get since(): number {
    return this.#since;
  }

  /**
   * Moves the mark after a round that started at `startedAt` (epoch ms) and looked at rows stamped
   * up to `startedAt - unseenMs` (a grace period the query leaves out): to the oldest offending row,
   * or to the end of what the round saw, less the margin. It never moves back, and stays put when
   * offenders were found without their age.
   */
  advance(startedAt: number, finding: DataFinding, unseenMs = 0): void {
    let clean = startedAt - unseenMs;
    if (finding.total > 0) {
      if (finding.oldestAgeMs === undefined) return;
      clean = Math.min(clean, startedAt - finding.oldestAgeMs);
    }
    this.#since = Math.max(this.#since, clean - this.marginMs);
  }
}
