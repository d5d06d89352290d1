/** Run reports: charts (Vega-Lite → SVG in Node), a self-contained HTML page, and writing both to disk. */
export {
  CHART_WIDTH,
  CHART_HEIGHT,
  CHART_CONFIG,
  MAX_HEATMAP_BUCKETS,
  MAX_HEATMAP_CELLS,
  runHasMoE,
  runMoELayers,
  runExpertCount,
  heatmapBuckets,
  expertLoadCells,
  lossSpec,
  expertLoadSpec,
  dropFractionSpec,
  routerEntropySpec,
  throughputSpec,
  renderSpecToSvg,
  noteSvg,
  lossChartSvg,
  expertLoadChartSvg,
  dropFractionChartSvg,
  routerEntropyChartSvg,
  throughputChartSvg,
  renderCharts,
  type ChartSpec,
  type ExpertLoadCell,
  type ReportCharts,
} from './charts.js';
export { escapeHtml, expertPalette, inlineSvg, flattenConfig, reportHtmlFromCharts, renderReportHtml } from './html.js';
export { writeReport, REPORT_SVG_FILES, REPORT_HTML_FILE, type WrittenReport } from './write.js';
export { exampleRunLog, EXAMPLE_SAMPLE_TOKENS, type ExampleRunLogOptions } from './example.js';
