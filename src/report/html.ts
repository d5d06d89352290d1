/**
 * The run report as ONE self-contained HTML page: inline CSS and inline SVG charts (no external
 * URLs, no script needed to show anything), a run-config table, final metrics, the sample text and
 * the routing of that text (tokens coloured by top-1 expert, per MoE layer, selectable without
 * JavaScript; a tiny inline script adds hover details). Every piece of run text is escaped.
 */
import { createHash } from 'node:crypto';
import type { RunLog, StepMetrics } from '../train/metrics.js';
import { runExpertCount, runMoELayers, renderCharts, type ReportCharts } from './charts.js';

/** Escape text for HTML element content and quoted attribute values. */
export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] ?? c);
}

/** ColorBrewer Set3: light, distinct colours on which dark text stays readable. */
const SET3 = ['#8dd3c7', '#ffffb3', '#bebada', '#fb8072', '#80b1d3', '#fdb462', '#b3de69', '#fccde5', '#d9d9d9', '#bc80bd', '#ccebc5', '#ffed6f'];

/**
 * Background colours for `n` experts (dark text stays readable on each): ColorBrewer Set3 up to 12,
 * beyond that hues spread by the golden angle with three alternating lightness/saturation levels,
 * so neighbouring ids differ clearly (up to 64 experts and more).
 */
export function expertPalette(n: number): string[] {
  if (n <= SET3.length) return SET3.slice(0, Math.max(0, n));
  const levels: Array<[number, number]> = [
    [72, 78],
    [62, 66],
    [80, 88],
  ];
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    const hue = (i * 137.508) % 360;
    const [sat, light] = levels[i % 3];
    out.push(hslToHex(hue, sat, light));
  }
  return out;
}

function hslToHex(h: number, s: number, l: number): string {
  const S = s / 100;
  const L = l / 100;
  const a = S * Math.min(L, 1 - L);
  const f = (n: number): string => {
    const k = (n + h / 30) % 12;
    const c = L - a * Math.max(-1, Math.min(k - 3, 9 - k, 1));
    return Math.round(c * 255)
      .toString(16)
      .padStart(2, '0');
  };
  return `#${f(0)}${f(8)}${f(4)}`;
}

/**
 * Prepare a standalone SVG for inlining: drop the XML namespace declarations (implicit in HTML) and
 * prefix its ids (and `url(#…)` / `href="#…"` references) so several charts can share one page.
 */
export function inlineSvg(svg: string, idPrefix: string): string {
  return svg
    .replace(/^<\?xml[^>]*>\s*/, '')
    .replace(/\s+xmlns(:xlink)?="[^"]*"/g, '')
    .replace(/\bid="([^"]+)"/g, (_, id: string) => `id="${idPrefix}${id}"`)
    .replace(/url\(#([^)]+)\)/g, (_, id: string) => `url(#${idPrefix}${id})`)
    .replace(/\b(xlink:)?href="#([^"]+)"/g, (_, x: string | undefined, id: string) => `${x ?? ''}href="#${idPrefix}${id}"`)
    .replace(/^<svg\b/, `<svg role="img" class="chart-svg"`);
}

function fmt(x: number | undefined | null, digits = 3): string {
  if (typeof x !== 'number' || !Number.isFinite(x)) return '–';
  if (x !== 0 && (Math.abs(x) >= 1e5 || Math.abs(x) < 1e-3)) return x.toExponential(2);
  if (x === 0) return '0';
  return x.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

function pct(x: number | undefined | null, digits = 1): string {
  if (typeof x !== 'number' || !Number.isFinite(x)) return '–';
  return `${(x * 100).toFixed(digits)}%`;
}

function duration(seconds: number | undefined): string {
  if (typeof seconds !== 'number' || !Number.isFinite(seconds)) return '–';
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const m = Math.floor(seconds / 60);
  const s = Math.round(seconds - 60 * m);
  if (m < 60) return `${m} min ${s} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

function median(xs: number[]): number | undefined {
  const v = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return undefined;
  const mid = v.length >> 1;
  return v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
}

function mean(xs: number[]): number | undefined {
  const v = xs.filter((x) => Number.isFinite(x));
  return v.length ? v.reduce((a, b) => a + b, 0) / v.length : undefined;
}

/** Flatten a JSON-able config into [dotted key, display value] rows (depth- and size-limited). */
export function flattenConfig(config: unknown, maxRows = 80): Array<[string, string]> {
  const rows: Array<[string, string]> = [];
  const show = (v: unknown): string => {
    if (v === null) return 'null';
    if (v === undefined) return '–';
    if (typeof v === 'string') return v;
    if (typeof v === 'number' || typeof v === 'boolean' || typeof v === 'bigint') return String(v);
    let s: string;
    try {
      s = JSON.stringify(v) ?? String(v);
    } catch {
      s = String(v);
    }
    return s.length > 120 ? `${s.slice(0, 117)}…` : s;
  };
  const walk = (v: unknown, key: string, depth: number): void => {
    if (rows.length >= maxRows) return;
    if (v !== null && typeof v === 'object' && !Array.isArray(v) && depth < 5) {
      const entries = Object.entries(v as Record<string, unknown>);
      if (entries.length === 0) rows.push([key || '(config)', '{}']);
      for (const [k, child] of entries) walk(child, key ? `${key}.${k}` : k, depth + 1);
      return;
    }
    rows.push([key || '(config)', show(v)]);
  };
  if (config === undefined || config === null) return [];
  walk(config, '', 0);
  return rows;
}

function table(rows: Array<[string, string]>, cls = 'kv'): string {
  return `<table class="${cls}"><tbody>${rows.map(([k, v]) => `<tr><th scope="row">${escapeHtml(k)}</th><td>${escapeHtml(v)}</td></tr>`).join('')}</tbody></table>`;
}

function lastN<T>(xs: T[], n: number): T[] {
  return xs.slice(Math.max(0, xs.length - n));
}

function summaryRows(log: RunLog, steps: StepMetrics[]): Array<[string, string]> {
  const rows: Array<[string, string]> = [];
  const last = steps[steps.length - 1];
  rows.push(['steps recorded', last ? `${steps.length} (last step ${last.step})` : '0']);
  if (last) {
    rows.push(['tokens processed', steps.reduce((a, s) => a + (Number.isFinite(s.tokens) ? s.tokens : 0), 0).toLocaleString('en-US')]);
    rows.push(['wall-clock', duration(last.elapsedSeconds)]);
    const tail = lastN(steps, 10).map((s) => s.loss);
    rows.push(['final train loss', `${fmt(last.loss)} (mean of last ${tail.length}: ${fmt(mean(tail))})`]);
  }
  const evals = [...log.evals].sort((a, b) => a.step - b.step);
  const lastEval = evals[evals.length - 1];
  if (lastEval) {
    rows.push(['final eval loss', `${fmt(lastEval.loss)} at step ${lastEval.step}`]);
    if (lastEval.perplexity !== undefined) rows.push(['final eval perplexity', fmt(lastEval.perplexity, 2)]);
    if (lastEval.accuracy !== undefined) rows.push(['final eval accuracy', pct(lastEval.accuracy, 2)]);
    const finiteEvals = evals.filter((e) => Number.isFinite(e.loss));
    if (finiteEvals.length > 1) {
      const best = finiteEvals.reduce((a, b) => (b.loss < a.loss ? b : a));
      rows.push(['best eval loss', `${fmt(best.loss)} at step ${best.step}`]);
    }
  }
  if (last) {
    rows.push(['throughput', `${fmt(median(steps.map((s) => s.tokensPerSecond)), 0)} tokens/s (median), last ${fmt(last.tokensPerSecond, 0)}`]);
    rows.push(['final aux loss', fmt(last.auxLoss, 4)]);
    rows.push(['final learning rate', fmt(last.lr, 6)]);
    rows.push(['final grad norm', fmt(last.gradNorm)]);
  }
  return rows;
}

function moeTable(steps: StepMetrics[], numExperts: number): string {
  const layers = [...new Set(steps.flatMap((s) => s.moe.map((m) => m.layer)))].sort((a, b) => a - b);
  if (layers.length === 0) return '';
  const tail = lastN(
    steps.filter((s) => s.moe.length > 0),
    10,
  );
  const head =
    '<tr><th scope="col">MoE layer</th><th scope="col">drop fraction</th><th scope="col">router entropy</th>' +
    '<th scope="col">load imbalance</th><th scope="col">busiest expert</th><th scope="col">idle experts</th></tr>';
  const body = layers
    .map((layer) => {
      const ms = tail.flatMap((s) => s.moe.filter((m) => m.layer === layer));
      const last = ms[ms.length - 1];
      const E = Math.max(numExperts, ...ms.map((m) => m.tokensPerExpert.length));
      const sums = new Array<number>(E).fill(0);
      for (const m of ms) m.tokensPerExpert.forEach((n, e) => (sums[e] += Number.isFinite(n) ? n : 0));
      const total = sums.reduce((a, b) => a + b, 0);
      let busiest = 0;
      sums.forEach((n, e) => (n > sums[busiest] ? (busiest = e) : 0));
      const idle = sums.filter((n) => n === 0).length;
      const maxH = E > 1 ? ` / ln ${E} = ${fmt(Math.log(E), 2)}` : '';
      return (
        `<tr><th scope="row">layer ${layer}</th><td>${pct(last?.dropFraction)}</td>` +
        `<td>${fmt(last?.routerEntropy)}${maxH}</td><td>${fmt(last?.loadImbalance)}</td>` +
        `<td>${total > 0 ? `expert ${busiest}: ${pct(sums[busiest] / total)}` : '–'}</td><td>${idle} of ${E}</td></tr>`
      );
    })
    .join('');
  return (
    `<table class="grid"><caption>Per MoE layer: final step, and expert shares over the last ${tail.length} step${tail.length === 1 ? '' : 's'}</caption>` +
    `<thead>${head}</thead><tbody>${body}</tbody></table>`
  );
}

function tokenText(tok: string): string {
  if (tok.length === 0) return '∅';
  return escapeHtml(tok.replace(/\r\n|\n|\r/g, '↵\n'));
}

function routingSection(log: RunLog): string {
  const rs = log.routingSample;
  if (!rs || rs.layers.length === 0 || rs.tokens.length === 0) return '';
  const E = Math.max(1, rs.numExperts, runExpertCount(log));
  const layers = [...rs.layers].sort((a, b) => a.layer - b.layer);
  const valid = (e: unknown): e is number => typeof e === 'number' && Number.isInteger(e) && e >= 0 && e < E;
  const radios = layers
    .map((l, i) => `<input type="radio" name="routing-layer" id="rl-${i}"${i === 0 ? ' checked' : ''}><label for="rl-${i}">layer ${l.layer}</label>`)
    .join('');
  const allRadio = layers.length > 1 ? `<input type="radio" name="routing-layer" id="rl-all"><label for="rl-all">all layers</label>` : '';
  const panels = layers
    .map((l, i) => {
      const counts = new Array<number>(E).fill(0);
      const spans = rs.tokens
        .map((tok, t) => {
          const ex = l.experts[t] ?? [];
          const gs = l.gates[t] ?? [];
          const top = ex[0];
          const cls = valid(top) ? `tok x${top}` : 'tok xnone';
          if (valid(top)) counts[top]++;
          const pairs = ex.map((e, j) => `expert ${e}${typeof gs[j] === 'number' ? ` (gate ${fmt(gs[j], 3)})` : ''}`).join(', ');
          const title = `${JSON.stringify(tok)} · layer ${l.layer} · ${pairs || 'no experts'}`;
          return `<span class="${cls}" title="${escapeHtml(title)}">${tokenText(tok)}</span>`;
        })
        .join('');
      const legend = counts
        .map((n, e) => `<span class="chip x${e}${n === 0 ? ' unused' : ''}" title="expert ${e}: top-1 of ${n} token${n === 1 ? '' : 's'} here">${e}<small>${n}</small></span>`)
        .join('');
      return (
        `<div class="routing-panel rp-${i}" data-layer="${l.layer}"><h3>layer ${l.layer}</h3>` +
        `<div class="tokens">${spans}</div>` +
        `<div class="legend" aria-label="expert colours">${legend}</div></div>`
      );
    })
    .join('');
  const showCss = layers.map((_, i) => `#rl-${i}:checked~.routing-panels .rp-${i}`).join(',') + (allRadio ? ',#rl-all:checked~.routing-panels .routing-panel' : '');
  const titleCss = allRadio ? '#rl-all:checked~.routing-panels h3{display:block}' : '';
  const palette = expertPalette(E);
  const colourCss = palette.map((c, e) => `.x${e}{background:${c}}`).join('');
  const dimCss = palette.map((_, e) => `.routing-panel[data-hl="${e}"] .tok:not(.x${e})`).join(',');
  return (
    `<section id="routing"><h2>Routing of the sample text</h2>` +
    `<p class="hint">Each token is coloured by its top-1 expert in the selected MoE layer; hover a token for its experts and gate values (other experts' tokens fade). The numbers under each expert colour count the tokens it got as top-1.</p>` +
    `<style>${showCss}{display:block}${titleCss}${colourCss}${dimCss ? `${dimCss}{opacity:.28}` : ''}</style>` +
    `<div class="tabs">${radios}${allRadio}<div class="routing-panels">${panels}</div></div>` +
    `<div class="tok-info" aria-live="polite">&nbsp;</div></section>`
  );
}

const HOVER_SCRIPT =
  "(()=>{const info=document.querySelector('.tok-info');" +
  "document.querySelectorAll('.routing-panel').forEach((p)=>{" +
  "p.addEventListener('mouseover',(ev)=>{const t=ev.target;if(!(t instanceof HTMLElement)||!t.classList.contains('tok'))return;" +
  "const m=/\\bx(\\d+)\\b/.exec(t.className);if(m)p.dataset.hl=m[1];if(info)info.textContent=t.title;});" +
  "p.addEventListener('mouseleave',()=>{delete p.dataset.hl;});});})();";

const CSS = `
:root{--fg:#1f2328;--muted:#57606a;--line:#d0d7de;--bg:#f6f8fa;--accent:#0969da}
*{box-sizing:border-box}
body{margin:0;font:14px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:var(--fg);background:var(--bg)}
main{max-width:1180px;margin:0 auto;padding:24px 20px 48px}
header h1{font-size:24px;margin:0 0 4px}
header .sub{color:var(--muted);margin:0}
h2{font-size:18px;margin:0 0 12px}
h3{font-size:14px;margin:0 0 8px}
section,.card{background:#fff;border:1px solid var(--line);border-radius:8px;padding:16px 18px;margin:16px 0}
.cols{display:grid;grid-template-columns:repeat(auto-fit,minmax(360px,1fr));gap:16px;align-items:start}
.cols>section{margin:0}
table{border-collapse:collapse;width:100%}
table.kv th{text-align:left;font-weight:500;color:var(--muted);padding:3px 12px 3px 0;white-space:nowrap;vertical-align:top;width:1%}
table.kv td{padding:3px 0;font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px;word-break:break-word}
table.grid{margin-top:14px}
table.grid caption{text-align:left;color:var(--muted);padding-bottom:6px}
table.grid th,table.grid td{border-top:1px solid var(--line);padding:5px 10px 5px 0;text-align:left;font-variant-numeric:tabular-nums}
table.grid thead th{font-weight:500;color:var(--muted);border-top:0}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(600px,1fr));gap:16px}
.charts figure{margin:0;background:#fff;border:1px solid var(--line);border-radius:8px;padding:10px;overflow-x:auto}
.charts figure.wide{grid-column:1/-1}
.chart-svg{display:block;max-width:100%;height:auto;margin:0 auto}
.note{color:var(--muted);background:var(--bg);border:1px dashed var(--line);border-radius:6px;padding:10px 12px;margin:8px 0}
pre.sample{white-space:pre-wrap;word-break:break-word;background:var(--bg);border-radius:6px;padding:12px;margin:0;font:13px/1.55 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;max-height:360px;overflow:auto}
.hint{color:var(--muted);margin:0 0 10px}
.tabs>input{position:absolute;opacity:0;pointer-events:none}
.tabs>label{display:inline-block;padding:4px 12px;margin:0 6px 10px 0;border:1px solid var(--line);border-radius:999px;cursor:pointer;user-select:none;color:var(--muted)}
.tabs>input:checked+label{background:var(--accent);border-color:var(--accent);color:#fff}
.tabs>input:focus-visible+label{outline:2px solid var(--accent);outline-offset:2px}
.routing-panel{display:none;margin-bottom:12px}
.routing-panel h3{display:none}
.tokens{white-space:pre-wrap;word-break:break-word;font:14px/2 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:#fff}
.tok{border-radius:3px;padding:2px 0;color:#111;transition:opacity .12s}
.tok.xnone{background:#eee;color:#888}
.legend{display:flex;flex-wrap:wrap;gap:4px;margin-top:10px}
.chip{display:inline-flex;flex-direction:column;align-items:center;min-width:30px;padding:2px 4px;border-radius:4px;font-size:12px;font-weight:600;color:#111;line-height:1.2}
.chip small{font-weight:400;font-size:10px;color:#333}
.chip.unused{opacity:.45}
.tok-info{min-height:1.5em;color:var(--muted);font-size:12.5px;font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;word-break:break-all}
footer{color:var(--muted);font-size:12px;text-align:center;margin-top:24px}
`;

function figure(id: string, svg: string, caption: string, wide = false): string {
  return `<figure id="chart-${id}"${wide ? ' class="wide"' : ''} aria-label="${escapeHtml(caption)}">${inlineSvg(svg, `${id}-`)}</figure>`;
}

/** The report page built from already-rendered charts (synchronous; `renderReportHtml` renders them first). */
export function reportHtmlFromCharts(log: RunLog, charts: ReportCharts): string {
  const steps = [...log.steps].sort((a, b) => a.step - b.step);
  const layers = runMoELayers(log);
  const E = runExpertCount(log);
  const dense = layers.length === 0;
  const title = log.name && log.name.trim() ? log.name : 'Switchyard run';
  const sub = [
    log.startedAt ? `started ${log.startedAt}` : '',
    dense ? 'dense (no MoE layers)' : `${layers.length} MoE layer${layers.length === 1 ? '' : 's'} (${layers.join(', ')}) × ${E} experts`,
    `${steps.length} step${steps.length === 1 ? '' : 's'}`,
    `${log.evals.length} evaluation${log.evals.length === 1 ? '' : 's'}`,
  ].filter(Boolean);

  const figs: string[] = [figure('loss', charts.loss, 'Loss vs step')];
  if (!dense && charts.expertLoad) figs.push(figure('expert-load', charts.expertLoad, 'Expert load over time', true));
  if (!dense && charts.dropFraction) figs.push(figure('drop-fraction', charts.dropFraction, 'Drop fraction vs step'));
  if (!dense && charts.routerEntropy) figs.push(figure('router-entropy', charts.routerEntropy, 'Router entropy vs step'));
  figs.push(figure('throughput', charts.throughput, 'Throughput vs step'));
  const denseNote = dense
    ? '<p class="note">Dense run: no MoE layers, so there are no expert-load, drop-fraction or router-entropy charts and no routing view.</p>'
    : '';

  const configRows = flattenConfig(log.config);
  const sample = log.sampleText !== undefined && log.sampleText !== '' ? `<section id="sample"><h2>Sample text</h2><pre class="sample">${escapeHtml(log.sampleText)}</pre></section>` : '';
  const routing = dense ? '' : routingSection(log);
  const script = routing ? HOVER_SCRIPT : '';
  const scriptHash = createHash('sha256').update(script).digest('base64');
  // Nothing on this page may load anything: inline styles, inline SVG and (only) our own hover script.
  const csp = `default-src 'none'; style-src 'unsafe-inline'; img-src data:; script-src ${script ? `'sha256-${scriptHash}'` : "'none'"}`;

  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="${csp}">
<meta name="generator" content="switchyard report">
<title>${escapeHtml(title)} · Switchyard report</title>
<style>${CSS}</style>
</head>
<body>
<main>
<header><h1>${escapeHtml(title)}</h1><p class="sub">${escapeHtml(sub.join(' · '))}</p></header>
<div class="cols">
<section id="config"><h2>Run configuration</h2>${configRows.length ? table(configRows) : '<p class="note">No configuration recorded.</p>'}</section>
<section id="metrics"><h2>Final metrics</h2>${table(summaryRows(log, steps))}</section>
</div>
${dense ? '' : `<section id="moe-summary"><h2>Experts</h2>${moeTable(steps, E)}</section>`}
<section id="charts"><h2>Charts</h2>${denseNote}<div class="charts">${figs.join('')}</div></section>
${sample}
${routing}
<footer>Generated by Switchyard · self-contained page, no network access needed</footer>
</main>
${script ? `<script>${script}</script>` : ''}
</body>
</html>
`;
}

/** Render a run's report as one self-contained HTML page (charts are rendered first, hence async). */
export async function renderReportHtml(log: RunLog): Promise<string> {
  return reportHtmlFromCharts(log, await renderCharts(log));
}
