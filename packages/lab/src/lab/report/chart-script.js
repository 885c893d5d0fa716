/*
 * Draws the report's charts in the browser: reads the chart specs from the page's
 * `<script type="application/json" id="lab-data">` block and draws each with uPlot (inlined before
 * this script) in the element of its id, with the run's fault windows shaded under the lines and
 * its alerts and marks as labelled vertical lines over them. Labels are drawn as canvas text, never
 * as markup. When every chart is drawn, `data-charts-drawn` on <html> says how many.
 */
(() => {
  const FAULT_FILL = 'rgba(220, 38, 38, 0.09)';
  const FAULT_TEXT = '#9f1239';
  const MARK_COLOR = '#374151';
  const ALERT_COLORS = { firing: '#dc2626', resolved: '#16a34a' };
  const AXIS_COLOR = '#4b5563';
  const GRID_COLOR = 'rgba(0, 0, 0, 0.07)';
  const HEIGHT = 220;

  const data = JSON.parse(document.getElementById('lab-data').textContent);

  const font = (size) => `${Math.round(size * uPlot.pxRatio)}px system-ui, -apple-system, sans-serif`;

  /** Rows of marker labels above a plot: they never cover its lines. */
  const LABEL_ROWS = 3;
  const ROW_HEIGHT = 14;

  /** Rows of fault labels along a plot's bottom edge; windows that start together stack them. */
  const FAULT_LABEL_ROWS = 3;
  const FAULT_ROW_HEIGHT = 12;

  function shadeFaults(spec) {
    const faults = [...spec.faults].sort((a, b) => a.fromS - b.fromS);
    return (u) => {
      const ctx = u.ctx;
      const px = uPlot.pxRatio;
      const { left: plotLeft, top, width: plotWidth, height } = u.bbox;
      const rowsEnd = Array(FAULT_LABEL_ROWS).fill(-Infinity);
      ctx.save();
      ctx.font = font(10);
      faults.forEach((fault, index) => {
        const from = u.valToPos(fault.fromS, 'x', true);
        const to = u.valToPos(fault.toS, 'x', true);
        ctx.fillStyle = FAULT_FILL;
        ctx.fillRect(from, top, Math.max(1, to - from), height);
        // The label starts inside its window, or ends at the plot's right edge; it takes the
        // lowest row where it covers no other window's label (or, when none is free, rows in turn).
        const width = ctx.measureText(fault.label).width;
        const start = Math.max(plotLeft, Math.min(from + 4 * px, plotLeft + plotWidth - width - 2 * px));
        let row = rowsEnd.findIndex((end) => end + 6 * px <= start);
        if (row < 0) row = index % FAULT_LABEL_ROWS;
        rowsEnd[row] = start + width;
        ctx.fillStyle = FAULT_TEXT;
        ctx.fillText(fault.label, start, top + height - (5 + row * FAULT_ROW_HEIGHT) * px);
      });
      ctx.restore();
    };
  }

  function markerLines(spec) {
    return [
      ...spec.marks.map((mark) => ({ atS: mark.atS, text: mark.label, color: MARK_COLOR })),
      ...spec.alerts.map((alert) => ({
        atS: alert.atS,
        text: alert.label,
        color: ALERT_COLORS[alert.status],
      })),
    ].sort((a, b) => a.atS - b.atS);
  }

  function drawMarkers(spec) {
    const lines = markerLines(spec);
    return (u) => {
      const ctx = u.ctx;
      const px = uPlot.pxRatio;
      const { left: plotLeft, top, width: plotWidth, height } = u.bbox;
      const rowsEnd = Array(LABEL_ROWS).fill(-Infinity);
      ctx.save();
      ctx.font = font(11);
      lines.forEach((line, index) => {
        const x = Math.round(u.valToPos(line.atS, 'x', true));
        ctx.strokeStyle = line.color;
        ctx.lineWidth = 1.5 * px;
        ctx.setLineDash([4 * px, 3 * px]);
        ctx.beginPath();
        ctx.moveTo(x, top - LABEL_ROWS * ROW_HEIGHT * px);
        ctx.lineTo(x, top + height);
        ctx.stroke();
        ctx.setLineDash([]);
        // The label starts at its line, or ends there near the right edge; it takes the first row
        // where it covers no other label (or, when none is free, rows in turn).
        const width = ctx.measureText(line.text).width;
        const start = Math.max(plotLeft, Math.min(x + 3 * px, plotLeft + plotWidth - width));
        let row = rowsEnd.findIndex((end) => end + 6 * px <= start);
        if (row < 0) row = index % LABEL_ROWS;
        rowsEnd[row] = start + width;
        ctx.fillStyle = line.color;
        ctx.fillText(line.text, start, top - (LABEL_ROWS - row - 0.75) * ROW_HEIGHT * px);
      });
      ctx.restore();
    };
  }

  function yScale(spec) {
    if (spec.yNames) return { range: [-0.4, spec.yNames.length - 0.6] };
    if (spec.logY) {
      return {
        distr: 3,
        log: 10,
        range: (_u, min) => uPlot.rangeLog(Math.max(0.1, Math.min(min ?? 1, 1)), spec.yMax * 1.2, 10, true),
      };
    }
    return { range: [0, spec.yMax * 1.1] };
  }

  function formatValue(spec) {
    if (spec.yNames) return (_u, value) => (value == null ? '–' : spec.yNames[value]);
    if (spec.logY) return (_u, value) => (value == null ? '–' : `${value.toFixed(1)} ms`);
    return (_u, value) => (value == null ? '–' : value.toFixed(1));
  }

  function options(spec, width) {
    const yAxis = { label: spec.yLabel, stroke: AXIS_COLOR, grid: { stroke: GRID_COLOR }, size: 60 };
    if (spec.logY) {
      // Decades only: uPlot's default log ticks draw a line at every 1–9 of each decade.
      yAxis.splits = (_u, _axis, min, max) => {
        const splits = [];
        for (let at = 10 ** Math.ceil(Math.log10(min)); at <= max; at *= 10) splits.push(at);
        return splits;
      };
    }
    if (spec.yNames) {
      yAxis.splits = () => spec.yNames.map((_name, index) => index);
      yAxis.values = (_u, splits) => splits.map((split) => spec.yNames[split] ?? '');
      yAxis.size = 80;
    }
    return {
      width,
      height: HEIGHT,
      // Room above the plot for the labels of marks and alerts.
      padding: [markerLines(spec).length > 0 ? LABEL_ROWS * ROW_HEIGHT + 4 : 10, 18, null, null],
      cursor: { sync: { key: spec.syncKey } },
      legend: { live: false },
      scales: { x: { time: false, range: [0, spec.xMax] }, y: yScale(spec) },
      axes: [{ label: 's since the load started', stroke: AXIS_COLOR, grid: { stroke: GRID_COLOR } }, yAxis],
      series: [
        { label: 's' },
        ...spec.series.map((series) => ({
          label: series.label,
          stroke: series.color,
          width: 2,
          value: formatValue(spec),
          ...(spec.stepped && { paths: uPlot.paths.stepped({ align: 1 }), points: { show: false } }),
        })),
      ],
      hooks: { drawClear: [shadeFaults(spec)], draw: [drawMarkers(spec)] },
    };
  }

  const charts = [];
  for (const spec of data.charts) {
    const element = document.getElementById(spec.id);
    if (!element) continue;
    const columns = [spec.x, ...spec.series.map((series) => series.values)];
    charts.push({ element, plot: new uPlot(options(spec, element.clientWidth), columns, element) });
  }

  let resizing;
  window.addEventListener('resize', () => {
    clearTimeout(resizing);
    resizing = setTimeout(() => {
      for (const chart of charts) chart.plot.setSize({ width: chart.element.clientWidth, height: HEIGHT });
    }, 100);
  });
  document.documentElement.dataset.chartsDrawn = String(charts.length);
})();
