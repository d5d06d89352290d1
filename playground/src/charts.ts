/** Canvas charts for the live views: line charts, bars and heatmaps, sized for the device pixel ratio. */
import { EXPERT_COLORS, textColorOn, viridis } from './palette.js';

/** Fit the canvas backing store to its CSS size × devicePixelRatio; returns the context and CSS size. */
export function fit(canvas: HTMLCanvasElement): { g: CanvasRenderingContext2D; w: number; h: number } {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || 300, h = canvas.clientHeight || 150;
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
  }
  const g = canvas.getContext('2d') as CanvasRenderingContext2D;
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);
  g.font = '11px system-ui, sans-serif';
  return { g, w, h };
}

let scratch: HTMLCanvasElement | null = null;

/** A reused off-screen canvas at least w × h (for scaling small images up without smoothing). */
export function scratchCanvas(w: number, h: number): HTMLCanvasElement {
  scratch ??= document.createElement('canvas');
  if (scratch.width < w || scratch.height < h) {
    scratch.width = Math.max(scratch.width, w);
    scratch.height = Math.max(scratch.height, h);
  }
  return scratch;
}

/** Bucket means of `values` into at most `n` points (x = index of the bucket's first value). */
export function downsample(values: ArrayLike<number>, n: number): { x: number[]; y: number[] } {
  const len = values.length;
  const size = Math.max(1, Math.ceil(len / n));
  const x: number[] = [], y: number[] = [];
  for (let i = 0; i < len; i += size) {
    let s = 0, c = 0;
    for (let j = i; j < Math.min(len, i + size); j++) if (Number.isFinite(values[j])) { s += values[j]; c++; }
    x.push(i);
    y.push(c ? s / c : NaN);
  }
  return { x, y };
}

function niceTicks(lo: number, hi: number, n = 4): number[] {
  const span = hi - lo || 1;
  const step0 = span / n;
  const mag = 10 ** Math.floor(Math.log10(step0));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= step0) ?? step0;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-9; v += step) out.push(Math.abs(v) < 1e-12 ? 0 : v);
  return out;
}

function fmt(v: number): string {
  if (v === 0) return '0';
  if (Math.abs(v) >= 100) return v.toFixed(0);
  if (Math.abs(v) >= 1) return v.toFixed(1);
  return v.toPrecision(2);
}

export interface Series {
  values: ArrayLike<number>;
  color: string;
  width?: number;
  dash?: number[];
  /** Stretch the series over the whole x axis (a reference line given by its two ends). */
  span?: boolean;
}

/** A line chart of several series over the same step axis (steps = offset + index). */
export function lineChart(canvas: HTMLCanvasElement, series: Series[], opts: { yMin?: number; yMax?: number; steps: number; first?: number; percent?: boolean }): void {
  const { g, w, h } = fit(canvas);
  const left = 40, right = 8, top = 6, bottom = 18;
  const pw = w - left - right, ph = h - top - bottom;
  const ds = series.map((s) => downsample(s.values, Math.max(2, Math.floor(pw))));
  let lo = opts.yMin ?? Infinity, hi = opts.yMax ?? -Infinity;
  if (opts.yMin === undefined || opts.yMax === undefined) {
    for (const d of ds) for (const v of d.y) if (Number.isFinite(v)) {
      if (opts.yMin === undefined) lo = Math.min(lo, v);
      if (opts.yMax === undefined) hi = Math.max(hi, v);
    }
  }
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) { lo = 0; hi = 1; }
  if (hi - lo < 1e-9) hi = lo + 1;
  const n = Math.max(1, opts.steps);
  const X = (i: number): number => left + (i / Math.max(1, n - 1)) * pw;
  const Y = (v: number): number => top + ph - ((v - lo) / (hi - lo)) * ph;
  g.strokeStyle = '#e4e4e4';
  g.fillStyle = '#555';
  g.lineWidth = 1;
  g.textAlign = 'right';
  g.textBaseline = 'middle';
  for (const t of niceTicks(lo, hi)) {
    g.beginPath(); g.moveTo(left, Y(t)); g.lineTo(w - right, Y(t)); g.stroke();
    g.fillText(opts.percent ? `${fmt(t * 100)}%` : fmt(t), left - 4, Y(t));
  }
  g.textAlign = 'center';
  g.textBaseline = 'top';
  // x ticks are training steps: the series' index plus the step of its first value.
  const first = opts.first ?? 0;
  for (const t of niceTicks(first, first + n - 1)) if (t >= first) g.fillText(String(Math.round(t)), X(t - first), top + ph + 4);
  ds.forEach((d, si) => {
    const s = series[si];
    g.strokeStyle = s.color;
    g.lineWidth = s.width ?? 1.5;
    g.setLineDash(s.dash ?? []);
    g.beginPath();
    let started = false;
    d.x.forEach((x, i) => {
      const v = d.y[i];
      if (!Number.isFinite(v)) { started = false; return; }
      const at = s.span ? (x / Math.max(1, s.values.length - 1)) * (n - 1) : x + (s.values.length > d.x.length ? s.values.length / d.x.length / 2 : 0);
      const px = X(at), py = Y(Math.min(hi, Math.max(lo, v)));
      if (started) g.lineTo(px, py); else { g.moveTo(px, py); started = true; }
    });
    g.stroke();
    g.setLineDash([]);
  });
}

/** One bar per expert, in the expert's colour, with the ideal equal share as a dashed line. */
export function barChart(canvas: HTMLCanvasElement, shares: number[]): void {
  const { g, w, h } = fit(canvas);
  const E = shares.length;
  const left = 40, top = 6, bottom = 18, pw = w - left - 8, ph = h - top - bottom;
  const hi = Math.max(2 / Math.max(E, 1), ...shares) * 1.05;
  const Y = (v: number): number => top + ph - (v / hi) * ph;
  g.fillStyle = '#555';
  g.strokeStyle = '#e4e4e4';
  g.textAlign = 'right';
  g.textBaseline = 'middle';
  for (const t of niceTicks(0, hi)) {
    g.beginPath(); g.moveTo(left, Y(t)); g.lineTo(w - 8, Y(t)); g.stroke();
    g.fillText(`${fmt(t * 100)}%`, left - 4, Y(t));
  }
  const bw = pw / Math.max(E, 1);
  g.textAlign = 'center';
  g.textBaseline = 'top';
  shares.forEach((v, e) => {
    g.fillStyle = EXPERT_COLORS[e % EXPERT_COLORS.length];
    g.fillRect(left + e * bw + bw * 0.12, Y(v), bw * 0.76, top + ph - Y(v));
    g.strokeStyle = '#0005';
    g.strokeRect(left + e * bw + bw * 0.12, Y(v), bw * 0.76, top + ph - Y(v));
    g.fillStyle = '#333';
    g.fillText(String(e), left + e * bw + bw / 2, top + ph + 4);
  });
  if (E > 0) {
    g.strokeStyle = '#000';
    g.setLineDash([4, 3]);
    g.beginPath(); g.moveTo(left, Y(1 / E)); g.lineTo(w - 8, Y(1 / E)); g.stroke();
    g.setLineDash([]);
  }
}

/**
 * A rows × cols heatmap (row-major `values`), viridis from 0 to `max`; each row is labelled by a
 * swatch of its expert's colour (or by `rowLabels`) on the left.
 */
export function heatmap(canvas: HTMLCanvasElement, values: ArrayLike<number>, rows: number, cols: number, opts: { max: number; rowLabels?: string[]; colLabels?: string[] }): void {
  const { g, w, h } = fit(canvas);
  const left = opts.rowLabels ? 86 : 24, top = 2, bottom = opts.colLabels ? 16 : 4;
  const pw = w - left - 4, ph = h - top - bottom;
  if (rows === 0 || cols === 0) return;
  const img = g.createImageData(cols, rows);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) {
    const v = values[r * cols + c];
    const [R, G, B] = Number.isFinite(v) ? viridis(v / opts.max) : [240, 240, 240];
    const o = 4 * (r * cols + c);
    img.data[o] = R; img.data[o + 1] = G; img.data[o + 2] = B; img.data[o + 3] = 255;
  }
  const off = scratchCanvas(cols, rows);
  (off.getContext('2d') as CanvasRenderingContext2D).putImageData(img, 0, 0);
  g.imageSmoothingEnabled = false;
  g.drawImage(off, 0, 0, cols, rows, left, top, pw, ph);
  const rh = ph / rows;
  g.textAlign = 'right';
  g.textBaseline = 'middle';
  g.fillStyle = '#333';
  for (let r = 0; r < rows; r++) {
    if (opts.rowLabels) g.fillText(opts.rowLabels[r], left - 4, top + (r + 0.5) * rh);
    else {
      g.fillStyle = EXPERT_COLORS[r % EXPERT_COLORS.length];
      g.fillRect(4, top + r * rh + rh * 0.1, 14, Math.max(2, rh * 0.8));
      g.fillStyle = '#333';
    }
  }
  if (opts.colLabels) {
    g.textAlign = 'center';
    g.textBaseline = 'top';
    const cw = pw / cols;
    opts.colLabels.forEach((l, c) => {
      g.fillStyle = EXPERT_COLORS[c % EXPERT_COLORS.length];
      g.fillRect(left + c * cw + cw / 2 - 8, top + ph + 3, 16, 10);
      g.fillStyle = textColorOn(EXPERT_COLORS[c % EXPERT_COLORS.length]);
      g.fillText(l, left + c * cw + cw / 2, top + ph + 3);
    });
  }
}
