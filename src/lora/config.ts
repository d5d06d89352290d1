/**
 * LoRA and mixture settings and their validation: every bad value throws a ConfigError naming the
 * field and the value (rank <= 0, alpha, dropout, router type, k, adapter names).
 */
import { ConfigError } from '../errors.js';

/** One low-rank adapter's hyperparameters (PEFT `LoraConfig` names in brackets). */
export interface LoRAOptions {
  /** Rank r of A [r, in] and B [out, r] [r]. */
  rank: number;
  /** Scale numerator: the update is (alpha / r)·B·A [lora_alpha]. Default: rank (scale 1). */
  alpha?: number;
  /** Dropout on the LoRA path's input during training [lora_dropout]. Default 0. */
  dropout?: number;
  /** Rank-stabilised scale alpha/√r instead of alpha/r (Kalajdzievski 2023) [use_rslora]. Default false. */
  useRslora?: boolean;
  /** Seed of A's initialisation (B starts at zero). Default 0. */
  seed?: number;
}

/** Validated LoRA options with defaults filled in. */
export interface ResolvedLoRAOptions {
  rank: number;
  alpha: number;
  dropout: number;
  useRslora: boolean;
  seed: number;
  /** alpha/r (or alpha/√r with rsLoRA). */
  scale: number;
}

/** Validate LoRA options; `field` prefixes every error field. */
export function resolveLoRAOptions(o: LoRAOptions, field = 'lora'): ResolvedLoRAOptions {
  if (typeof o !== 'object' || o === null) throw new ConfigError(field, o, 'must be an object with a rank');
  const rank = o.rank;
  if (typeof rank !== 'number' || !Number.isInteger(rank) || rank <= 0) throw new ConfigError(`${field}.rank`, rank, 'must be an integer >= 1');
  const alpha = o.alpha ?? rank;
  if (typeof alpha !== 'number' || !Number.isFinite(alpha) || alpha <= 0) throw new ConfigError(`${field}.alpha`, alpha, 'must be a finite number > 0');
  const dropout = o.dropout ?? 0;
  if (typeof dropout !== 'number' || !(dropout >= 0 && dropout < 1)) throw new ConfigError(`${field}.dropout`, dropout, 'must be a number in [0, 1)');
  const useRslora = o.useRslora ?? false;
  if (typeof useRslora !== 'boolean') throw new ConfigError(`${field}.useRslora`, useRslora, 'must be a boolean');
  const seed = o.seed ?? 0;
  if (typeof seed !== 'number' || !Number.isFinite(seed)) throw new ConfigError(`${field}.seed`, seed, 'must be a finite number');
  return { rank, alpha, dropout, useRslora, seed, scale: useRslora ? alpha / Math.sqrt(rank) : alpha / rank };
}

/**
 * How a mixture weighs its adapters per token, g_e(x) in  y = W x + Σ_e g_e(x)·scale_e·B_e A_e x.
 * - 'topk': token-level top-k of softmax(x·Wrᵀ) (the MoE router: Shazeer 2017 / Mixtral; MoLoRA,
 *   Zadouri et al. 2023), k picked gates renormalised to sum 1 (default), balancing losses as MoELayer.
 * - 'dense': every adapter, softmax weights (X-LoRA-like scalings, but from this layer's own input in
 *   the same pass instead of a second forward of the whole model).
 * - 'sequence': one top-k choice per sequence from the mean over the sequence of this layer's input
 *   (whole-prompt routing); causal only across sequences (a prompt's tokens all use its choice).
 * - 'single': no router, every token uses adapter 0 with weight 1 (plain LoRA: `lora train`).
 */
export type MixtureRouterConfig =
  | { type: 'topk'; k: number; normalize?: boolean; losses?: { balance?: number; zLoss?: number } }
  | { type: 'dense'; losses?: { zLoss?: number } }
  | { type: 'sequence'; k?: number; normalize?: boolean }
  | { type: 'single' };

/** A validated router config. */
export interface ResolvedRouterConfig {
  type: 'topk' | 'dense' | 'sequence' | 'single';
  /** Adapters per token (n for dense, 1 for single). */
  k: number;
  normalize: boolean;
  balance: number;
  zLoss: number;
}

const ADAPTER_NAME = /^[A-Za-z0-9_-]{1,64}$/;

/** Check an adapter name: 1-64 of [A-Za-z0-9_-] (it becomes a tensor-name component and a directory). */
export function checkAdapterName(name: unknown, field = 'adapter name'): string {
  if (typeof name !== 'string' || !ADAPTER_NAME.test(name)) throw new ConfigError(field, name, 'must be 1-64 characters of A-Z, a-z, 0-9, _ or -');
  return name;
}

function coef(v: unknown, field: string): number {
  if (v === undefined || v === null) return 0;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) throw new ConfigError(field, v, 'must be a finite number >= 0');
  return v;
}

/** Validate a router config for `numAdapters` adapters. */
export function resolveRouterConfig(r: MixtureRouterConfig, numAdapters: number): ResolvedRouterConfig {
  if (typeof r !== 'object' || r === null) throw new ConfigError('router', r, "must be { type: 'topk' | 'dense' | 'sequence' | 'single', ... }");
  switch (r.type) {
    case 'single':
      if (numAdapters !== 1) throw new ConfigError('router.type', r.type, `'single' needs exactly one adapter, got ${numAdapters}`);
      return { type: 'single', k: 1, normalize: true, balance: 0, zLoss: 0 };
    case 'topk':
    case 'sequence': {
      const k = r.k ?? 1;
      if (typeof k !== 'number' || !Number.isInteger(k) || k < 1 || k > numAdapters) throw new ConfigError('router.k', k, `must be an integer in [1, ${numAdapters}]`);
      const normalize = r.normalize ?? true;
      if (typeof normalize !== 'boolean') throw new ConfigError('router.normalize', normalize, 'must be a boolean');
      const losses = r.type === 'topk' ? r.losses ?? {} : {};
      return { type: r.type, k, normalize, balance: coef(losses.balance, 'router.losses.balance'), zLoss: coef(losses.zLoss, 'router.losses.zLoss') };
    }
    case 'dense':
      return { type: 'dense', k: numAdapters, normalize: false, balance: 0, zLoss: coef(r.losses?.zLoss, 'router.losses.zLoss') };
    default:
      throw new ConfigError('router.type', (r as { type: unknown }).type, "must be 'topk', 'dense', 'sequence' or 'single'");
  }
}
