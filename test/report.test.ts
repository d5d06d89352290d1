import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  exampleRunLog,
  expertLoadCells,
  expertPalette,
  escapeHtml,
  flattenConfig,
  heatmapBuckets,
  inlineSvg,
  renderCharts,
  renderReportHtml,
  writeReport,
  type ReportCharts,
} from '../src/report/index.js';
import type { RunLog } from '../src/train/metrics.js';

/** Minimal well-formedness check: every tag closes in order, no stray `<` or `&` in text/attributes. */
function assertWellFormed(xml: string): void {
  const body = xml.replace(/^<\?xml[^>]*\?>\s*/, '');
  const stack: string[] = [];
  const tagRe = /<(\/?)([A-Za-z][\w:.-]*)((?:\s+[\w:.-]+\s*=\s*"[^"]*")*)\s*(\/?)>/g;
  let last = 0;
  for (let m = tagRe.exec(body); m; m = tagRe.exec(body)) {
    const text = body.slice(last, m.index);
    expect(text, `stray markup before <${m[2]}>`).not.toMatch(/[<>]/);
    expect(text).not.toMatch(/&(?!(amp|lt|gt|quot|apos|#\d+|#x[0-9a-fA-F]+);)/);
    last = tagRe.lastIndex;
    const [, close, name, , selfClose] = m;
    if (close) expect(stack.pop(), `closing </${name}>`).toBe(name);
    else if (!selfClose) stack.push(name);
  }
  expect(body.slice(last).trim()).toBe('');
  expect(stack).toEqual([]);
}

function textOf(svg: string): string {
  return [...svg.matchAll(/<text[^>]*>([^<]*)<\/text>/g)].map((m) => m[1]).join('\n');
}

function log50(): RunLog {
  return exampleRunLog({ steps: 50, moeLayers: [1, 3], experts: 8, evalEvery: 10 });
}

describe('report charts', () => {
  let charts: ReportCharts;
  it('renders every chart of an MoE run as well-formed SVG', async () => {
    charts = await renderCharts(log50());
    for (const svg of Object.values(charts)) {
      expect(svg).not.toBeNull();
      expect(svg).toMatch(/^<svg[^>]*xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
      expect(svg).toMatch(/viewBox="0 0 \d+(\.\d+)? \d+(\.\d+)?"/);
      assertWellFormed(svg as string);
    }
  });

  it('draws the expected series', () => {
    const loss = textOf(charts.loss);
    expect(loss).toContain('Loss');
    expect(loss).toContain('train (per step)');
    expect(loss).toContain('train (smoothed)');
    expect(loss).toContain('eval');
    expect(loss).toContain('step');
    // A line per series: 3 line paths in the loss chart.
    expect((charts.loss.match(/aria-roledescription="line mark"/g) ?? []).length).toBe(3);

    const heat = charts.expertLoad as string;
    expect(textOf(heat)).toContain('Expert load over time');
    expect(textOf(heat)).toContain('layer 1');
    expect(textOf(heat)).toContain('layer 3');
    // 2 layers × 8 experts × 50 one-step buckets.
    expect((heat.match(/<path d="M[^"]*" fill="rgb/g) ?? []).length).toBe(2 * 8 * 50);

    for (const [svg, title] of [
      [charts.dropFraction, 'Drop fraction'],
      [charts.routerEntropy, 'Router entropy'],
    ] as const) {
      const t = textOf(svg as string);
      expect(t).toContain(title);
      expect(t).toContain('layer 1');
      expect(t).toContain('layer 3');
      expect(((svg as string).match(/aria-roledescription="line mark"/g) ?? []).length).toBe(2);
    }
    expect(textOf(charts.routerEntropy as string)).toContain('ln 8');
    expect(textOf(charts.throughput)).toContain('tokens / s');
  });

  it('bins expert load into shares that sum to 1 per layer and bucket', () => {
    const log = exampleRunLog({ steps: 300, experts: 64, moeLayers: [1, 3, 5] });
    const buckets = heatmapBuckets(log);
    expect(buckets).toBeGreaterThanOrEqual(20);
    expect(buckets).toBeLessThanOrEqual(100);
    const cells = expertLoadCells(log);
    const sums = new Map<string, number>();
    for (const c of cells) sums.set(`${c.start}/${c.layer}`, (sums.get(`${c.start}/${c.layer}`) ?? 0) + c.fraction);
    expect(sums.size).toBeLessThanOrEqual(3 * buckets);
    for (const s of sums.values()) expect(s).toBeCloseTo(1, 9);
    const starts = [...new Set(cells.map((c) => c.start))];
    for (const c of cells) expect(c.end).toBeGreaterThan(c.start);
    expect(Math.min(...starts)).toBe(1);
    expect(Math.max(...cells.map((c) => c.end))).toBe(301);
  });

  it('handles a dense run (no MoE charts) and a one-step run', async () => {
    const dense = await renderCharts(exampleRunLog({ moeLayers: [] }));
    expect(dense.expertLoad).toBeNull();
    expect(dense.dropFraction).toBeNull();
    expect(dense.routerEntropy).toBeNull();
    assertWellFormed(dense.loss);
    assertWellFormed(dense.throughput);

    const one = await renderCharts(exampleRunLog({ steps: 1 }));
    for (const svg of Object.values(one)) assertWellFormed(svg as string);
    expect(textOf(one.loss)).toContain('eval');
    // The single point of each series is drawn as a point mark.
    expect(one.loss).toContain('aria-roledescription="point"');
  });

  it('all-zero drop fractions: a 0..1% axis, and the subtitle says so', async () => {
    const log = log50();
    for (const st of log.steps) for (const m of st.moe) m.dropFraction = 0;
    const t = textOf((await renderCharts(log)).dropFraction as string);
    expect(t).toContain('none dropped in this run');
    expect(t).toContain('1%');
  });

  it('renders a run with no steps as notes instead of failing', async () => {
    const empty: RunLog = { name: 'empty', config: {}, startedAt: '', steps: [], evals: [] };
    const c = await renderCharts(empty);
    expect(textOf(c.loss)).toContain('No steps or evaluations recorded yet.');
    expect(c.expertLoad).toBeNull();
    const html = await renderReportHtml(empty);
    expect(html).toContain('Dense run');
  });
});

describe('report html', () => {
  const hostile = (): RunLog => {
    const log = log50();
    log.name = 'run <img src=x onerror=alert(1)> & "quotes"';
    log.config = { model: { note: '</td><script>alert(2)</script>' }, url: 'see https://example.com' };
    log.sampleText = 'a <script>alert(3)</script> & b';
    return log;
  };

  it('is one self-contained page: no external URLs, no external resources', async () => {
    const log = log50();
    log.config = { a: 1 };
    const html = await renderReportHtml(log);
    expect(html.startsWith('<!doctype html>')).toBe(true);
    expect(html).not.toMatch(/https?:\/\//i);
    expect(html).not.toMatch(/\s(src|href)\s*=\s*"(?!#)/i);
    expect(html).not.toMatch(/@import|url\((?!#)/i);
    expect(html).toContain("default-src 'none'");
    // Five inline charts, each with unique ids.
    expect((html.match(/<svg\b/g) ?? []).length).toBe(5);
    const ids = [...html.matchAll(/\bid="([^"]+)"/g)].map((m) => m[1]);
    expect(new Set(ids).size).toBe(ids.length);
    // Every url(#…) reference points at an id on the page.
    for (const m of html.matchAll(/url\(#([^)]+)\)/g)) expect(ids).toContain(m[1]);
  });

  it('escapes all run text (name, config, sample, routing tokens)', async () => {
    const html = await renderReportHtml(hostile());
    // Exactly one script: our own hover script at the end.
    expect((html.match(/<script\b/gi) ?? []).length).toBe(1);
    expect(html).not.toContain('<img');
    expect(html).toContain('run &lt;img src=x onerror=alert(1)&gt; &amp; &quot;quotes&quot;');
    expect(html).toContain('&lt;/td&gt;&lt;script&gt;alert(2)&lt;/script&gt;');
    expect(html).toContain('a &lt;script&gt;alert(3)&lt;/script&gt; &amp; b');
    // Routing tokens: "<script>" and "&" and the literal "&amp;" token.
    expect(html).toMatch(/<span class="tok x\d+" title="[^"<>]*">\s&lt;script&gt;<\/span>/);
    expect(html).toMatch(/<span class="tok x\d+" title="[^"<>]*">\s&amp;<\/span>/);
    expect(html).toMatch(/<span class="tok x\d+" title="[^"<>]*">\s&amp;amp;<\/span>/);
    // The config's URL is shown as text but the page still holds no link.
    expect(html).toContain('see https://example.com');
    expect(html).not.toMatch(/href="http/);
  });

  it('shows the routing of the sample: one panel per MoE layer, tokens coloured by top-1 expert, gates in titles', async () => {
    const log = log50();
    const html = await renderReportHtml(log);
    const rs = log.routingSample!;
    expect((html.match(/class="routing-panel /g) ?? []).length).toBe(2);
    expect((html.match(/<span class="tok x/g) ?? []).length).toBe(2 * rs.tokens.length);
    const e0 = rs.layers[0].experts[0];
    const g0 = rs.layers[0].gates[0];
    expect(html).toContain(`class="tok x${e0[0]}" title="&quot;Call&quot; · layer 1 · expert ${e0[0]} (gate ${g0[0].toFixed(3)}), expert ${e0[1]}`);
    // Legend: one colour per expert, 8 distinct colours.
    for (let e = 0; e < 8; e++) expect(html).toContain(`.x${e}{background:${expertPalette(8)[e]}}`);
    expect(html).toContain('Run configuration');
    expect(html).toContain('Final metrics');
    expect(html).toContain('Sample text');
  });

  it('dense run: notes the missing MoE charts and has no routing view or script', async () => {
    const html = await renderReportHtml(exampleRunLog({ moeLayers: [] }));
    expect(html).toContain('Dense run: no MoE layers');
    expect(html).not.toContain('id="routing"');
    expect(html).not.toContain('<script');
    expect((html.match(/<svg\b/g) ?? []).length).toBe(2);
  });

  it('helpers: escaping, palette for up to 64 experts, config flattening, svg inlining', () => {
    expect(escapeHtml(`<a href="x">&'`)).toBe('&lt;a href=&quot;x&quot;&gt;&amp;&#39;');
    for (const n of [1, 8, 12, 13, 32, 64]) {
      const p = expertPalette(n);
      expect(p).toHaveLength(n);
      expect(new Set(p).size).toBe(n);
      for (const c of p) expect(c).toMatch(/^#[0-9a-f]{6}$/);
    }
    expect(flattenConfig({ a: { b: 1, c: [1, 2] }, d: 'x' })).toEqual([
      ['a.b', '1'],
      ['a.c', '[1,2]'],
      ['d', 'x'],
    ]);
    expect(flattenConfig('plain')).toEqual([['(config)', 'plain']]);
    const s = inlineSvg('<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink"><clipPath id="c1"/><g clip-path="url(#c1)"/></svg>', 'p-');
    expect(s).toBe('<svg role="img" class="chart-svg"><clipPath id="p-c1"/><g clip-path="url(#p-c1)"/></svg>');
  });
});

describe('writeReport', () => {
  const dirs: string[] = [];
  afterAll(async () => {
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });

  it('writes report.html and the chart SVGs atomically (no temp files left)', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'switchyard-report-'));
    dirs.push(dir);
    const out = await writeReport(join(dir, 'run'), log50());
    expect(out.html).toBe(join(dir, 'run', 'report.html'));
    const names = (await readdir(join(dir, 'run'))).sort();
    expect(names).toEqual(['drop-fraction.svg', 'expert-load.svg', 'loss.svg', 'report.html', 'router-entropy.svg', 'tokens-per-second.svg']);
    expect(out.svgs.map((p) => p.slice(join(dir, 'run').length + 1)).sort()).toEqual(names.filter((n) => n.endsWith('.svg')));
    for (const p of out.svgs) {
      const svg = await readFile(p, 'utf8');
      expect(svg.startsWith('<?xml version="1.0" encoding="UTF-8"?>\n<svg')).toBe(true);
      assertWellFormed(svg);
    }
    const html = await readFile(out.html, 'utf8');
    expect(html).toContain('</html>');
    expect(html).not.toMatch(/https?:\/\//);
    // Rewriting over an existing report works too.
    await writeReport(join(dir, 'run'), log50());
    expect((await readdir(join(dir, 'run'))).sort()).toEqual(names);
  });

  it('dense run: writes only the loss and throughput SVGs', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'switchyard-report-'));
    dirs.push(dir);
    const out = await writeReport(dir, exampleRunLog({ moeLayers: [] }));
    expect(out.svgs.map((p) => p.slice(dir.length + 1)).sort()).toEqual(['loss.svg', 'tokens-per-second.svg']);
    expect((await readdir(dir)).sort()).toEqual(['loss.svg', 'report.html', 'tokens-per-second.svg']);
  });
});
