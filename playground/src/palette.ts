/**
 * Colour-blind-safe colours. Experts 0–7 use Okabe & Ito's palette (with Tol's indigo in place of
 * black so dark text stays readable on it), experts 8–15 Paul Tol's "muted" scheme. The heatmaps
 * use viridis, which stays ordered under every common colour-vision deficiency.
 */
export const EXPERT_COLORS: readonly string[] = [
  '#E69F00', '#56B4E9', '#009E73', '#F0E442', '#0072B2', '#D55E00', '#CC79A7', '#332288',
  '#88CCEE', '#44AA99', '#117733', '#999933', '#DDCC77', '#CC6677', '#882255', '#AA4499',
];

/** Colour of a dropped token (no expert). */
export const DROPPED_COLOR = '#FFFFFF';

function hexRgb(hex: string): [number, number, number] {
  const n = parseInt(hex.slice(1), 16);
  return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
}

/** Black or white, whichever reads better on `hex` (WCAG relative luminance). */
export function textColorOn(hex: string): string {
  const [r, g, b] = hexRgb(hex).map((v) => {
    const c = v / 255;
    return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
  });
  const l = 0.2126 * r + 0.7152 * g + 0.0722 * b;
  return l > 0.179 ? '#000000' : '#FFFFFF';
}

/** An expert's colour as [r, g, b]. */
export function expertRgb(e: number): [number, number, number] {
  return hexRgb(EXPERT_COLORS[e % EXPERT_COLORS.length]);
}

const VIRIDIS: [number, number, number][] = [
  [68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37],
];

/** Viridis at t ∈ [0, 1] (linear between five stops). */
export function viridis(t: number): [number, number, number] {
  const x = Math.min(1, Math.max(0, t)) * (VIRIDIS.length - 1);
  const i = Math.min(VIRIDIS.length - 2, Math.floor(x));
  const f = x - i;
  const a = VIRIDIS[i], b = VIRIDIS[i + 1];
  return [a[0] + (b[0] - a[0]) * f, a[1] + (b[1] - a[1]) * f, a[2] + (b[2] - a[2]) * f];
}
