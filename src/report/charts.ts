/**
 * The charts of a run report, as Vega-Lite specs compiled by `vega-lite` and rendered to SVG strings
 * by `vega` in Node (headless `renderer: 'none'`: no browser, no canvas, no network).
 *
 * Charts: loss (train and eval) vs step, expert load over time (heatmap), drop fraction vs step,
 * router entropy vs step (one line per MoE layer) and throughput (tokens/s) vs step. A dense run has
 * no MoE charts (their builders return `null`); a run with no steps gets a small "no data" note.
 */
import type { TopLevelSpec, Config } from 'vega-lite';
import type { RunLog, StepMetrics } from '../train/metrics.js';

/** A Vega-Lite spec, as accepted by `vega-lite`'s `compile`. */
export type ChartSpec = TopLevelSpec;

/** Width of a line chart's plotting area, in px. */
export const CHART_WIDTH = 640;
/** Height of a line chart's plotting area, in px. */
export const CHART_HEIGHT = 220;
/** The most step buckets (columns) the expert-load heatmap draws; longer runs are binned. */
export const MAX_HEATMAP_BUCKETS = 100;
/** Target number of cells of the expert-load heatmap (keeps the SVG small for many experts and layers). */
export const MAX_HEATMAP_CELLS = 8000;

const FONT = 'system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif';

/** Shared look of every chart: readable fonts, light grid, no frame. */
export const CHART_CONFIG: Config = {
  font: FONT,
  background: 'white',
  padding: 8,
  view: { stroke: null },
  title: { fontSize: 15, fontWeight: 600, anchor: 'start', color: '#1f2328', subtitleFontSize: 12, subtitleColor: '#57606a', offset: 10 },
  axis: {
    labelFontSize: 11,
    titleFontSize: 12,
    titleFontWeight: 500,
    titleColor: '#1f2328',
    labelColor: '#424a53',
    gridColor: '#eaeef2',
    domainColor: '#8c959f',
    tickColor: '#8c959f',
    labelOverlap: 'greedy',
  },
  legend: { labelFontSize: 11, titleFontSize: 12, titleFontWeight: 500, orient: 'right' },
  header: { labelFontSize: 12, labelFontWeight: 600, titleFontSize: 12 },
  line: { strokeWidth: 1.8 },
  point: { size: 28, filled: true },
  range: { category: { scheme: 'tableau10' } },
};

/** True when the run has at least one MoE layer in its recorded steps. */
export function runHasMoE(log: RunLog): boolean {
  return log.steps.some((s) => s.moe.length > 0);
}

/** The transformer-layer indices of the run's MoE layers, ascending. */
export function runMoELayers(log: RunLog): number[] {
  const set = new Set<number>();
  for (const s of log.steps) for (const m of s.moe) set.add(m.layer);
  return [...set].sort((a, b) => a - b);
}

/** The number of experts (longest tokensPerExpert seen) of the run's MoE layers, or 0 for a dense run. */
export function runExpertCount(log: RunLog): number {
  let e = log.routingSample?.numExperts ?? 0;
  for (const s of log.steps) for (const m of s.moe) e = Math.max(e, m.tokensPerExpert.length);
  return e;
}

function sortedSteps(log: RunLog): StepMetrics[] {
  return [...log.steps].sort((a, b) => a.step - b.step);
}

function finite(x: number | undefined | null): x is number {
  return typeof x === 'number' && Number.isFinite(x);
}

/** Centred moving average over a window of `2 * half + 1` points (shrunk at the ends): smooths without lag. */
function movingAverage(values: number[], half: number): number[] {
  const prefix = [0];
  for (const v of values) prefix.push(prefix[prefix.length - 1] + v);
  return values.map((_, i) => {
    const h = Math.min(half, i, values.length - 1 - i);
    return (prefix[i + h + 1] - prefix[i - h]) / (2 * h + 1);
  });
}

function smoothingHalfWindow(n: number): number {
  return Math.max(2, Math.round(n / 25));
}

/** Step-axis encoding shared by the line charts; integer ticks only. */
function stepX(domain: [number, number]): Record<string, unknown> {
  const [lo, hi] = domain;
  // One-step runs: widen the domain so the single point sits in the middle of a visible axis.
  const d = lo === hi ? [lo - 1, hi + 1] : [lo, hi];
  return {
    field: 'step',
    type: 'quantitative',
    title: 'step',
    scale: { domain: d, nice: false, zero: false },
    axis: { format: 'd', tickMinStep: 1 },
  };
}

function stepDomain(steps: StepMetrics[]): [number, number] {
  if (steps.length === 0) return [0, 1];
  return [steps[0].step, steps[steps.length - 1].step];
}

function showPoints(n: number): boolean {
  return n <= 40;
}

/** Vega-Lite spec of the loss curves: train loss per step (raw and smoothed) and eval loss (line + points). */
export function lossSpec(log: RunLog): ChartSpec | null {
  const steps = sortedSteps(log).filter((s) => finite(s.loss));
  const evals = [...log.evals].filter((e) => finite(e.loss)).sort((a, b) => a.step - b.step);
  if (steps.length === 0 && evals.length === 0) return null;
  const rows: Array<{ step: number; loss: number; series: string }> = [];
  const smooth = steps.length >= 20;
  for (const s of steps) rows.push({ step: s.step, loss: s.loss, series: smooth ? 'train (per step)' : 'train' });
  if (smooth) {
    const sm = movingAverage(steps.map((s) => s.loss), smoothingHalfWindow(steps.length));
    steps.forEach((s, i) => rows.push({ step: s.step, loss: sm[i], series: 'train (smoothed)' }));
  }
  for (const e of evals) rows.push({ step: e.step, loss: e.loss, series: 'eval' });
  const series = smooth ? ['train (per step)', 'train (smoothed)', 'eval'] : ['train', 'eval'];
  const colors = smooth ? ['#9ecae9', '#1f77b4', '#e45756'] : ['#1f77b4', '#e45756'];
  const lo = Math.min(...rows.map((r) => r.step));
  const hi = Math.max(...rows.map((r) => r.step));
  const color = { field: 'series', type: 'nominal', title: null, scale: { domain: series, range: colors } };
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: { text: 'Loss', subtitle: 'cross-entropy; eval points at each evaluation' },
    width: CHART_WIDTH,
    height: CHART_HEIGHT,
    data: { values: rows },
    encoding: {
      x: stepX([lo, hi]),
      y: { field: 'loss', type: 'quantitative', title: 'loss (nats)', scale: { zero: false } },
      color,
    },
    layer: [
      {
        transform: [{ filter: "datum.series !== 'eval'" }],
        mark: { type: 'line', point: showPoints(steps.length), interpolate: 'linear' },
        encoding: {
          strokeWidth: { condition: { test: "datum.series === 'train (per step)'", value: 1 }, value: 2 },
        },
      },
      {
        transform: [{ filter: "datum.series === 'eval'" }],
        mark: { type: 'line', point: { size: 45, filled: true }, strokeWidth: 2 },
      },
    ],
  } as ChartSpec;
}

/** One heatmap cell: the share of a layer's assignments that went to one expert during a bucket of steps. */
export interface ExpertLoadCell {
  /** First step of the bucket. */
  start: number;
  /** First step after the bucket (exclusive end). */
  end: number;
  layer: number;
  expert: number;
  /** Assignments to this expert / all assignments of the layer in the bucket (0 when none). */
  fraction: number;
}

/** Buckets for the heatmap: at most MAX_HEATMAP_BUCKETS, and about MAX_HEATMAP_CELLS cells in all (at least 20 columns). */
export function heatmapBuckets(log: RunLog): number {
  const rows = runMoELayers(log).length * runExpertCount(log);
  return Math.max(20, Math.min(MAX_HEATMAP_BUCKETS, Math.floor(MAX_HEATMAP_CELLS / Math.max(1, rows))));
}

/** Expert load over time, binned into at most `maxBuckets` step buckets, per MoE layer and expert. */
export function expertLoadCells(log: RunLog, maxBuckets = heatmapBuckets(log)): ExpertLoadCell[] {
  const steps = sortedSteps(log).filter((s) => s.moe.length > 0);
  if (steps.length === 0) return [];
  const per = Math.max(1, Math.ceil(steps.length / Math.max(1, maxBuckets)));
  const cells: ExpertLoadCell[] = [];
  for (let b = 0; b * per < steps.length; b++) {
    const chunk = steps.slice(b * per, (b + 1) * per);
    const start = chunk[0].step;
    const next = steps[(b + 1) * per];
    const last = chunk[chunk.length - 1].step;
    const end = next ? next.step : last + Math.max(1, per === 1 ? 1 : Math.round((last - start + 1) / chunk.length));
    const sums = new Map<number, number[]>();
    for (const s of chunk) {
      for (const m of s.moe) {
        const acc = sums.get(m.layer) ?? [];
        m.tokensPerExpert.forEach((n, e) => {
          acc[e] = (acc[e] ?? 0) + (finite(n) ? n : 0);
        });
        sums.set(m.layer, acc);
      }
    }
    for (const [layer, acc] of [...sums].sort((x, y) => x[0] - y[0])) {
      let total = 0;
      for (let e = 0; e < acc.length; e++) total += acc[e] ?? 0;
      for (let e = 0; e < acc.length; e++) cells.push({ start, end, layer, expert: e, fraction: total > 0 ? (acc[e] ?? 0) / total : 0 });
    }
  }
  return cells;
}

/** Vega-Lite spec of the expert-load heatmap (x = step bucket, y = layer / expert, colour = share of the layer's assignments); null for a dense run. */
export function expertLoadSpec(log: RunLog): ChartSpec | null {
  const cells = expertLoadCells(log);
  if (cells.length === 0) return null;
  const layers = runMoELayers(log);
  const E = runExpertCount(log);
  const rows = layers.length * E;
  // Rows of 4..18 px, the whole map at most ~640 px tall.
  const rowPx = Math.max(4, Math.min(18, Math.floor(640 / Math.max(1, rows))));
  const every = E <= 16 ? 1 : E <= 32 ? 2 : E <= 64 ? 4 : Math.ceil(E / 16);
  const expertTicks: number[] = [];
  for (let e = 0; e < E; e += every) expertTicks.push(e);
  const values = cells.map((c) => ({ ...c, layerLabel: `layer ${c.layer}` }));
  const lo = Math.min(...cells.map((c) => c.start));
  const hi = Math.max(...cells.map((c) => c.end));
  const uniform = E > 0 ? 1 / E : 0;
  const top = Math.max(Math.min(1, 3 * uniform), ...cells.map((c) => c.fraction));
  // Diverging around the fair share: blue = under-used, white = uniform, red = over-used.
  const loadScale = { type: 'linear', domain: [0, uniform, top], range: ['#2166ac', '#f7f7f7', '#b2182b'], interpolate: 'lab' };
  const legendValues = [0, uniform, top];
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: {
      text: 'Expert load over time',
      subtitle: `share of each MoE layer's token assignments per expert: blue under, white at the uniform ${(uniform * 100).toFixed(1)}%, red over`,
    },
    data: { values },
    facet: {
      row: {
        field: 'layerLabel',
        type: 'ordinal',
        title: null,
        sort: layers.map((l) => `layer ${l}`),
        header: { labelAngle: 0, labelAlign: 'left', labelAnchor: 'start', labelOrient: 'top', labelPadding: 4 },
      },
    },
    spacing: 14,
    resolve: { scale: { color: 'shared' } },
    spec: {
      width: CHART_WIDTH,
      height: { step: rowPx },
      // The stroke (same colour as the fill) closes the hairline seams between adjacent cells.
      mark: { type: 'rect', aria: false, strokeWidth: 0.6, stroke: { expr: "scale('color', datum.fraction)" } },
      encoding: {
        x: {
          field: 'start',
          type: 'quantitative',
          title: 'step',
          scale: { domain: [lo, hi], nice: false, zero: false },
          axis: { format: 'd', tickMinStep: 1 },
        },
        x2: { field: 'end' },
        y: {
          field: 'expert',
          type: 'ordinal',
          title: 'expert',
          sort: 'ascending',
          axis: { values: expertTicks, labelFontSize: rowPx < 9 ? 9 : 10, ticks: false, domain: false },
          scale: { paddingInner: 0 },
        },
        color: {
          field: 'fraction',
          type: 'quantitative',
          title: 'share',
          scale: loadScale,
          legend: { type: 'gradient', format: '.0%', gradientLength: Math.min(240, Math.max(120, rows * rowPx * 0.7)), values: legendValues },
        },
      },
    },
  } as ChartSpec;
}

function perLayerSpec(
  log: RunLog,
  field: 'dropFraction' | 'routerEntropy',
  title: string,
  subtitle: string,
  yTitle: string,
  yFormat: string,
  extra?: { rule: number; label: string },
): ChartSpec | null {
  if (!runHasMoE(log)) return null;
  const steps = sortedSteps(log);
  const values: Array<{ step: number; value: number; layer: string }> = [];
  for (const s of steps) for (const m of s.moe) if (finite(m[field])) values.push({ step: s.step, value: m[field], layer: `layer ${m.layer}` });
  if (values.length === 0) return null;
  const layerNames = runMoELayers(log).map((l) => `layer ${l}`);
  const maxValue = Math.max(...values.map((v) => v.value));
  // All-zero drop fractions: keep a 0..1% axis so the line sits on the floor, not mid-air.
  const yScale = field === 'dropFraction' ? { domain: [0, Math.max(maxValue, 0.01)], nice: true } : { zero: false, nice: true };
  if (field === 'dropFraction' && maxValue === 0) subtitle += ' (none dropped in this run)';
  const dom = stepDomain(steps);
  const layersSpec: unknown[] = [
    {
      mark: { type: 'line', point: showPoints(steps.length) },
      encoding: {
        x: stepX(dom),
        y: {
          field: 'value',
          type: 'quantitative',
          title: yTitle,
          axis: { format: yFormat },
          scale: yScale,
        },
        color: { field: 'layer', type: 'nominal', title: 'MoE layer', sort: layerNames },
      },
    },
  ];
  if (extra) {
    layersSpec.push({
      data: { values: [{ y: extra.rule, label: extra.label }] },
      layer: [
        { mark: { type: 'rule', strokeDash: [4, 4], color: '#8c959f' }, encoding: { y: { field: 'y', type: 'quantitative' } } },
        {
          mark: { type: 'text', align: 'right', baseline: 'bottom', dy: -3, x: CHART_WIDTH - 4, color: '#57606a', fontSize: 11 },
          encoding: { y: { field: 'y', type: 'quantitative' }, text: { field: 'label' } },
        },
      ],
    });
  }
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: { text: title, subtitle },
    width: CHART_WIDTH,
    height: CHART_HEIGHT,
    data: { values },
    layer: layersSpec,
  } as ChartSpec;
}

/** Vega-Lite spec of the drop fraction (tokens dropped by capacity) vs step, one line per MoE layer; null for a dense run. */
export function dropFractionSpec(log: RunLog): ChartSpec | null {
  return perLayerSpec(log, 'dropFraction', 'Drop fraction', 'share of token assignments dropped by expert capacity', 'dropped', '.1~%');
}

/** Vega-Lite spec of the router entropy vs step, one line per MoE layer, with ln(E) (uniform routing) as a reference; null for a dense run. */
export function routerEntropySpec(log: RunLog): ChartSpec | null {
  const E = runExpertCount(log);
  const extra = E > 1 ? { rule: Math.log(E), label: `uniform over ${E} experts = ln ${E}` } : undefined;
  return perLayerSpec(log, 'routerEntropy', 'Router entropy', "mean entropy of the router's distribution per token (nats)", 'entropy (nats)', '.2f', extra);
}

/** Vega-Lite spec of the throughput (tokens/s, forward + backward + optimizer) vs step, with a moving average. */
export function throughputSpec(log: RunLog): ChartSpec | null {
  const steps = sortedSteps(log).filter((s) => finite(s.tokensPerSecond));
  if (steps.length === 0) return null;
  const smooth = steps.length >= 20;
  const values: Array<{ step: number; value: number; series: string }> = steps.map((s) => ({
    step: s.step,
    value: s.tokensPerSecond,
    series: smooth ? 'per step' : 'tokens/s',
  }));
  if (smooth) {
    const sm = movingAverage(steps.map((s) => s.tokensPerSecond), smoothingHalfWindow(steps.length));
    steps.forEach((s, i) => values.push({ step: s.step, value: sm[i], series: 'smoothed' }));
  }
  const domain = smooth ? ['per step', 'smoothed'] : ['tokens/s'];
  const range = smooth ? ['#b7d7a8', '#2e7d32'] : ['#2e7d32'];
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: { text: 'Throughput', subtitle: 'tokens per second (forward + backward + optimizer)' },
    width: CHART_WIDTH,
    height: CHART_HEIGHT,
    data: { values },
    mark: { type: 'line', point: showPoints(steps.length) },
    encoding: {
      x: stepX(stepDomain(steps)),
      y: { field: 'value', type: 'quantitative', title: 'tokens / s', axis: { format: ',.0f' }, scale: { zero: true } },
      color: { field: 'series', type: 'nominal', title: null, scale: { domain, range }, legend: smooth ? {} : null },
      strokeWidth: { condition: { test: "datum.series === 'per step'", value: 1 }, value: 2 },
    },
  } as ChartSpec;
}

type VegaModules = [typeof import('vega'), typeof import('vega-lite')];
let vegaModules: Promise<VegaModules> | null = null;

/** vega and vega-lite, loaded on first use: importing Switchyard stays fast for code that draws no charts. */
function loadVega(): Promise<VegaModules> {
  vegaModules ??= Promise.all([import('vega'), import('vega-lite')]);
  return vegaModules;
}

/** Render a Vega-Lite spec to a standalone SVG string in Node (no browser, no canvas, no network). */
export async function renderSpecToSvg(spec: ChartSpec): Promise<string> {
  const [vega, { compile }] = await loadVega();
  const compiled = compile(spec, { config: CHART_CONFIG }).spec;
  // No loader needed: every chart's data is inline. A loader that refuses everything makes that a guarantee.
  const loader = vega.loader();
  const refuse = (): Promise<never> => Promise.reject(new Error('report charts never load external resources'));
  loader.load = refuse;
  loader.sanitize = refuse;
  const view = new vega.View(vega.parse(compiled), { renderer: 'none', loader });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

function escapeXml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] ?? c);
}

/** A small SVG that shows a titled note in place of a chart (e.g. no data yet). */
export function noteSvg(title: string, message: string, width = CHART_WIDTH + 90, height = 90): string {
  return (
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}">` +
    `<rect width="${width}" height="${height}" fill="white"/>` +
    `<rect x="8.5" y="8.5" width="${width - 17}" height="${height - 17}" rx="6" fill="#f6f8fa" stroke="#d0d7de"/>` +
    `<text x="24" y="38" font-family='${FONT}' font-size="15" font-weight="600" fill="#1f2328">${escapeXml(title)}</text>` +
    `<text x="24" y="62" font-family='${FONT}' font-size="12" fill="#57606a">${escapeXml(message)}</text>` +
    `</svg>`
  );
}

async function renderOr(spec: ChartSpec | null, title: string, message: string): Promise<string> {
  return spec ? renderSpecToSvg(spec) : noteSvg(title, message);
}

/** SVG of the loss curves (train per step, eval per evaluation) vs step. */
export async function lossChartSvg(log: RunLog): Promise<string> {
  return renderOr(lossSpec(log), 'Loss', 'No steps or evaluations recorded yet.');
}

/** SVG of the expert-load heatmap, or null for a dense run (no MoE layers). */
export async function expertLoadChartSvg(log: RunLog): Promise<string | null> {
  const spec = expertLoadSpec(log);
  return spec ? renderSpecToSvg(spec) : null;
}

/** SVG of the drop fraction per MoE layer vs step, or null for a dense run. */
export async function dropFractionChartSvg(log: RunLog): Promise<string | null> {
  const spec = dropFractionSpec(log);
  return spec ? renderSpecToSvg(spec) : null;
}

/** SVG of the router entropy per MoE layer vs step, or null for a dense run. */
export async function routerEntropyChartSvg(log: RunLog): Promise<string | null> {
  const spec = routerEntropySpec(log);
  return spec ? renderSpecToSvg(spec) : null;
}

/** SVG of the throughput (tokens/s) vs step. */
export async function throughputChartSvg(log: RunLog): Promise<string> {
  return renderOr(throughputSpec(log), 'Throughput', 'No steps recorded yet.');
}

/** Every chart of a report as SVG strings; the MoE charts are null for a dense run. */
export interface ReportCharts {
  loss: string;
  expertLoad: string | null;
  dropFraction: string | null;
  routerEntropy: string | null;
  throughput: string;
}

/** Render every chart of a run's report. */
export async function renderCharts(log: RunLog): Promise<ReportCharts> {
  const [loss, expertLoad, dropFraction, routerEntropy, throughput] = await Promise.all([
    lossChartSvg(log),
    expertLoadChartSvg(log),
    dropFractionChartSvg(log),
    routerEntropyChartSvg(log),
    throughputChartSvg(log),
  ]);
  return { loss, expertLoad, dropFraction, routerEntropy, throughput };
}
