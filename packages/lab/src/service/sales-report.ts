/**
 * @module
 * The sales report: revenue, units and order counts per region, product and month over a date
 * range of the seeded sales table. Unindexed on purpose — a full scan, a grouping and a sort over
 * hundreds of thousands of rows — because the lab needs one query that really holds a connection.
 */
import type { SqlRunner } from './database.ts';

export interface SalesReportLine {
  readonly region: string;
  readonly product: string;
  readonly month: string;
  readonly sales: number;
  readonly units: number;
  readonly revenue: number;
}

interface SalesRow {
  region: string;
  product: string;
  month: string;
  sales: number | string;
  units: number | string;
  revenue: number | string;
}

/**
 * The top `limit` lines by revenue between `from` and `to` (inclusive `YYYY-MM-DD`).
 *
 * @example
 * const lines = await salesReport(db.reader('report'), { from: '2025-01-01', to: '2025-12-31', limit: 20 });
 */
export async function salesReport(
  runner: SqlRunner,
  range: { from: string; to: string; limit: number },
): Promise<SalesReportLine[]> {
  const rows = await runner.all<SalesRow>(
    `SELECT region, product, substr(day, 1, 7) AS month,
            count(*) AS sales, sum(quantity) AS units, sum(amount) AS revenue
       FROM sales
      WHERE day BETWEEN ? AND ?
      GROUP BY region, product, substr(day, 1, 7)
      ORDER BY revenue DESC, region, product, month
      LIMIT ?`,
    [range.from, range.to, range.limit],
  );
  return rows.map((row) => ({
    region: row.region,
    product: row.product,
    month: row.month,
    sales: Number(row.sales),
    units: Number(row.units),
    revenue: Number(row.revenue),
  }));
}
