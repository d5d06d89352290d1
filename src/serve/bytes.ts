/**
 * Memory budgets for the expert store: `'200MB'`, `'1.5GB'`, `'512KiB'`, `'1000000'` (bytes), a
 * fraction of the total expert bytes (`0.25`, `'0.25'`, `'25%'`), or `'all'`. Units are binary
 * (1 KB = 1 KiB = 1024 bytes), as in most memory flags and the npm `bytes` package.
 */
import { ValueError } from '../errors.js';

const UNITS: Record<string, number> = {
  b: 1,
  kb: 2 ** 10, kib: 2 ** 10, k: 2 ** 10,
  mb: 2 ** 20, mib: 2 ** 20, m: 2 ** 20,
  gb: 2 ** 30, gib: 2 ** 30, g: 2 ** 30,
  tb: 2 ** 40, tib: 2 ** 40, t: 2 ** 40,
};

/** What a budget means before the model's size is known. */
export type ByteBudgetSpec = { kind: 'bytes'; bytes: number } | { kind: 'fraction'; fraction: number } | { kind: 'all' };

/**
 * Parse a budget strictly (ValueError naming `field` otherwise): an absolute size with an optional
 * unit, a fraction in (0, 1] (a bare number ≤ 1, or a percentage), or 'all'.
 */
export function parseByteBudget(value: string | number, field = 'expertMemory'): ByteBudgetSpec {
  if (typeof value === 'number') {
    if (!Number.isFinite(value) || value <= 0) throw new ValueError(field, value, 'must be a positive size in bytes, or a fraction in (0, 1] of the total expert bytes');
    return value <= 1 ? { kind: 'fraction', fraction: value } : { kind: 'bytes', bytes: Math.floor(value) };
  }
  if (typeof value !== 'string') throw new ValueError(field, value, "must be a size ('200MB', '1.5GB'), a fraction (0.25, '25%') or 'all'");
  const s = value.trim().toLowerCase();
  if (s === 'all' || s === '100%') return { kind: 'all' };
  const pct = /^(\d+(?:\.\d+)?)\s*%$/.exec(s);
  if (pct) {
    const f = Number(pct[1]) / 100;
    if (!(f > 0 && f <= 1)) throw new ValueError(field, value, 'a percentage must be in (0%, 100%]');
    return { kind: 'fraction', fraction: f };
  }
  const m = /^(\d+(?:\.\d+)?|\.\d+)\s*([a-z]*)$/.exec(s);
  if (!m) throw new ValueError(field, value, "must be a size ('200MB', '1.5GB', '512KiB'), a fraction (0.25, '25%') or 'all'");
  const n = Number(m[1]);
  const unit = m[2];
  if (unit === '') {
    if (!(n > 0)) throw new ValueError(field, value, 'must be positive');
    return n <= 1 ? { kind: 'fraction', fraction: n } : { kind: 'bytes', bytes: Math.floor(n) };
  }
  const mult = UNITS[unit];
  if (mult === undefined) throw new ValueError(field, value, `unknown unit ${JSON.stringify(m[2])} (use B, KB, MB, GB, TB or KiB, MiB, GiB, TiB)`);
  const bytes = Math.floor(n * mult);
  if (!(bytes > 0) || !Number.isSafeInteger(bytes)) throw new ValueError(field, value, 'must be a positive size that fits in a safe integer');
  return { kind: 'bytes', bytes };
}

/** The budget in bytes for a model whose experts total `totalBytes`. */
export function resolveByteBudget(spec: ByteBudgetSpec, totalBytes: number): number {
  if (spec.kind === 'all') return totalBytes;
  if (spec.kind === 'fraction') return Math.floor(spec.fraction * totalBytes);
  return spec.bytes;
}

/** 1536 → '1.5 KiB' (for logs and docs). */
export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0, v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(v >= 100 ? 0 : 1)} ${units[i]}`;
}
