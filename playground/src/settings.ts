/**
 * Playground settings: one flat record that the knobs edit, the URL stores (shareable links) and
 * the worker turns into an MoE config. No engine code here: the UI thread imports this module too.
 */
import type { MoEConfig } from '../../src/moe/config.js';

/** The built-in datasets. */
export type TaskName = 'char' | 'plane' | 'images';
/** Router families as the playground names them ('switch' = top-1 token choice with capacity). */
export type RouterName = 'topk' | 'switch' | 'expert-choice' | 'soft';
export type NoiseName = 'none' | 'jitter' | 'gaussian';
/** Engine backend: the browser entry's pick (WebGPU, else wasm), wasm only, or the TypeScript reference. */
export type BackendChoice = 'auto' | 'wasm' | 'reference';

export interface Settings {
  task: TaskName;
  router: RouterName;
  /** Experts per token (top-k only; Switch is always 1). */
  k: number;
  experts: number;
  /** Capacity factor; for top-k, 0 means dropless (no capacity). */
  capacity: number;
  dropPolicy: 'position' | 'score';
  noise: NoiseName;
  /** Jitter noise eps (Switch's multiplicative input noise). */
  eps: number;
  balance: number;
  zLoss: number;
  /** Bias-balancing rate (0 = off). */
  bias: number;
  lr: number;
  seed: number;
  backend: BackendChoice;
}

/** What a link without settings opens: top-2 dropless on the character model, 4 experts. */
export const DEFAULTS: Readonly<Settings> = Object.freeze({
  task: 'char',
  router: 'topk',
  k: 2,
  experts: 4,
  capacity: 0,
  dropPolicy: 'position',
  noise: 'none',
  eps: 0.1,
  balance: 0.01,
  zLoss: 0.001,
  bias: 0,
  lr: 0.003,
  seed: 0,
  // wasm, not the browser entry's automatic pick: this model's matrices are tiny, so WebGPU's
  // per-op round trips cost more than they save (on SwiftShader ~4 steps/s against wasm's ~60).
  backend: 'wasm',
});

/** Allowed values of the enumerated settings (the knobs' options). */
export const TASKS: readonly TaskName[] = ['char', 'plane', 'images'];
export const ROUTERS: readonly RouterName[] = ['topk', 'switch', 'expert-choice', 'soft'];
export const EXPERT_COUNTS: readonly number[] = [2, 4, 8, 16];
export const BACKENDS: readonly BackendChoice[] = ['wasm', 'auto', 'reference'];
/** Slots per expert for Soft MoE (fixed: one slot per expert keeps the compute equal to top-1). */
export const SOFT_SLOTS = 1;

/** Numeric knobs: URL key, inclusive range. */
const NUMERIC: Record<'k' | 'capacity' | 'eps' | 'balance' | 'zLoss' | 'bias' | 'lr' | 'seed', { min: number; max: number; int?: boolean }> = {
  k: { min: 1, max: 16, int: true },
  capacity: { min: 0, max: 16 },
  eps: { min: 0, max: 0.5 },
  balance: { min: 0, max: 1 },
  zLoss: { min: 0, max: 1 },
  bias: { min: 0, max: 0.1 },
  lr: { min: 1e-5, max: 0.1 },
  seed: { min: 0, max: 2 ** 31 - 1, int: true },
};

/** A settings value that failed validation: names the field and the value. */
export class SettingsError extends Error {
  constructor(
    readonly field: string,
    readonly value: unknown,
    reason: string,
  ) {
    super(`${field}: ${JSON.stringify(value)} ${reason}`);
    this.name = 'SettingsError';
  }
}

function oneOf<T extends string>(field: string, v: unknown, allowed: readonly T[]): T {
  if (!allowed.includes(v as T)) throw new SettingsError(field, v, `must be one of ${allowed.join(', ')}`);
  return v as T;
}

/** Validate a settings record (throws SettingsError) and make its router-specific parts consistent. */
export function validateSettings(s: Settings): Settings {
  const out: Settings = { ...s };
  out.task = oneOf('task', s.task, TASKS);
  out.router = oneOf('router', s.router, ROUTERS);
  if (!EXPERT_COUNTS.includes(s.experts)) throw new SettingsError('experts', s.experts, `must be one of ${EXPERT_COUNTS.join(', ')}`);
  out.dropPolicy = oneOf('dropPolicy', s.dropPolicy, ['position', 'score'] as const);
  out.noise = oneOf('noise', s.noise, ['none', 'jitter', 'gaussian'] as const);
  out.backend = oneOf('backend', s.backend, BACKENDS);
  for (const [key, r] of Object.entries(NUMERIC) as [keyof typeof NUMERIC, { min: number; max: number; int?: boolean }][]) {
    const v = s[key];
    if (typeof v !== 'number' || !Number.isFinite(v) || v < r.min || v > r.max || (r.int && !Number.isInteger(v))) {
      throw new SettingsError(key, v, `must be ${r.int ? 'an integer' : 'a number'} in [${r.min}, ${r.max}]`);
    }
  }
  if (out.router === 'switch') out.k = 1;
  if (out.k > out.experts) throw new SettingsError('k', out.k, `must be at most the number of experts (${out.experts})`);
  if ((out.router === 'switch' || out.router === 'expert-choice') && out.capacity === 0) {
    throw new SettingsError('capacity', out.capacity, `must be > 0 for the ${out.router} router`);
  }
  return out;
}

/** URL query keys of each setting (short, stable: shared links depend on them). */
const KEYS: Record<keyof Settings, string> = {
  task: 'task',
  router: 'router',
  k: 'k',
  experts: 'experts',
  capacity: 'cf',
  dropPolicy: 'drop',
  noise: 'noise',
  eps: 'eps',
  balance: 'balance',
  zLoss: 'z',
  bias: 'bias',
  lr: 'lr',
  seed: 'seed',
  backend: 'backend',
};

/** Settings as a query string holding only what differs from the defaults. */
export function settingsToQuery(s: Settings): string {
  const p = new URLSearchParams();
  for (const key of Object.keys(KEYS) as (keyof Settings)[]) {
    if (s[key] !== DEFAULTS[key]) p.set(KEYS[key], String(s[key]));
  }
  return p.toString();
}

/**
 * Settings from a query string. Unknown keys are ignored; a bad value is reported in `errors`
 * (field and value) and the default is kept, so a mangled link still opens the playground.
 */
export function settingsFromQuery(query: string): { settings: Settings; errors: string[] } {
  const p = new URLSearchParams(query);
  const s: Settings = { ...DEFAULTS };
  const errors: string[] = [];
  const record = s as unknown as Record<string, unknown>;
  for (const key of Object.keys(KEYS) as (keyof Settings)[]) {
    const raw = p.get(KEYS[key]);
    if (raw === null) continue;
    record[key] = typeof DEFAULTS[key] === 'number' ? (raw.trim() === '' ? NaN : Number(raw)) : raw;
  }
  // Validate field by field so one bad value does not discard the others.
  let current = s;
  for (let attempt = 0; attempt < 20; attempt++) {
    try {
      return { settings: validateSettings(current), errors };
    } catch (e) {
      if (!(e instanceof SettingsError)) throw e;
      errors.push(e.message);
      current = { ...current, [e.field]: DEFAULTS[e.field as keyof Settings] };
      if (e.field === 'k') current.k = Math.min(DEFAULTS.k, current.experts);
      // Dropless (the default) is only valid for top-k; Switch and expert choice fall back to Switch's 1.25.
      if (e.field === 'capacity' && current.router !== 'topk') current.capacity = 1.25;
    }
  }
  return { settings: { ...DEFAULTS }, errors };
}

/** Model sizes per task (small enough to train live on the TypeScript backend). */
export const MODEL_SIZES: Record<TaskName, { dModel: number; dFF: number; batch: number }> = {
  char: { dModel: 32, dFF: 64, batch: 64 },
  plane: { dModel: 16, dFF: 32, batch: 128 },
  images: { dModel: 32, dFF: 64, batch: 64 },
};

/** The MoE layer config for these settings (validated again by the engine's resolveMoEConfig). */
export function moeConfig(s: Settings): MoEConfig {
  const { dModel, dFF } = MODEL_SIZES[s.task];
  const base = { dModel, dFF, numExperts: s.experts, expert: { activation: 'gelu' as const, gated: false }, seed: s.seed };
  if (s.router === 'soft') {
    return { ...base, router: { type: 'soft', slotsPerExpert: SOFT_SLOTS }, losses: { zLoss: s.zLoss } };
  }
  if (s.router === 'expert-choice') {
    return { ...base, router: { type: 'expert-choice', capacityFactor: s.capacity }, losses: { balance: s.balance, zLoss: s.zLoss } };
  }
  const noise = s.noise === 'jitter' ? { type: 'jitter' as const, eps: s.eps } : s.noise === 'gaussian' ? { type: 'gaussian' as const } : null;
  return {
    ...base,
    router: {
      type: 'topk',
      k: s.router === 'switch' ? 1 : s.k,
      noise,
      capacityFactor: s.capacity > 0 ? s.capacity : null,
      dropPolicy: s.dropPolicy,
      biasBalancing: s.bias > 0 ? { rate: s.bias } : null,
    },
    losses: { balance: s.balance, zLoss: s.zLoss },
  };
}

/** True when going from `a` to `b` needs a fresh model (a different task, expert count or seed). */
export function needsReset(a: Settings, b: Settings): boolean {
  return a.task !== b.task || a.experts !== b.experts || a.seed !== b.seed;
}
