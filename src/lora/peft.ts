/**
 * Adapters on disk in Hugging Face PEFT's layout, so adapters trained here load in PEFT and PEFT
 * adapters for a model imported from Hugging Face load here:
 *   adapter_model.safetensors  `base_model.model.<HF module path>.lora_A.weight` [r, in],
 *                              `base_model.model.<HF module path>.lora_B.weight` [out, r]
 *   adapter_config.json        { "peft_type": "LORA", "r", "lora_alpha", "lora_dropout",
 *                                "target_modules", "use_rslora", ... }
 * HF module paths follow the Llama/Mixtral layout the importer maps from (src/io/hf-import.ts):
 * `model.layers.N.self_attn.q_proj`, dense FFN `model.layers.N.mlp.gate_proj/up_proj/down_proj`,
 * shared experts `model.layers.N.mlp.shared_experts.*` (`shared_expert.*` for Qwen2-MoE).
 * Files are written atomically.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ConfigError, StateDictError } from '../errors.js';
import { replaceFileAtomic } from '../io/atomic.js';
import { loadSafetensors, saveSafetensors } from '../io/safetensors-file.js';
import { Tensor } from '../tensor/tensor.js';
import { resolveLoRAOptions, type ResolvedLoRAOptions } from './config.js';
import type { LoRAModel } from './mixture.js';

/** PEFT's weights file name. */
export const ADAPTER_WEIGHTS_FILE = 'adapter_model.safetensors';
/** PEFT's config file name. */
export const ADAPTER_CONFIG_FILE = 'adapter_config.json';

const FFN_HF: Record<string, string> = { w1: 'gate_proj', w2: 'down_proj', w3: 'up_proj' };
const FFN_SW: Record<string, string> = { gate_proj: 'w1', down_proj: 'w2', up_proj: 'w3' };

/** Options of the name mapping: which HF family's shared-expert naming to use (default DeepSeek-style `shared_experts`). */
export interface PeftNamingOptions {
  family?: string | null;
}

/** The HF module path (without `base_model.model.`) of a Switchyard module path. */
export function hfModulePath(swPath: string, opts: PeftNamingOptions = {}): string {
  let m: RegExpExecArray | null;
  if ((m = /^layers\.(\d+)\.self_attn\.([^.]+)$/.exec(swPath))) return `model.layers.${m[1]}.self_attn.${m[2]}`;
  if ((m = /^layers\.(\d+)\.mlp\.(w[123])$/.exec(swPath))) return `model.layers.${m[1]}.mlp.${FFN_HF[m[2]]}`;
  if ((m = /^layers\.(\d+)\.mlp\.shared_experts\.(\d+)\.(w[123])$/.exec(swPath))) {
    return opts.family === 'qwen2_moe' ? `model.layers.${m[1]}.mlp.shared_expert.${FFN_HF[m[3]]}` : `model.layers.${m[1]}.mlp.shared_experts.${FFN_HF[m[3]]}`;
  }
  throw new ConfigError('target module', swPath, 'has no PEFT (Hugging Face) name: only attention projections and dense/shared FFN weights are adapted');
}

/** The Switchyard module path of an HF module path, or null when it is not one we adapt. */
export function switchyardModulePath(hfPath: string): string | null {
  let m: RegExpExecArray | null;
  if ((m = /^model\.layers\.(\d+)\.self_attn\.([^.]+)$/.exec(hfPath))) return `layers.${m[1]}.self_attn.${m[2]}`;
  if ((m = /^model\.layers\.(\d+)\.mlp\.(gate_proj|up_proj|down_proj)$/.exec(hfPath))) return `layers.${m[1]}.mlp.${FFN_SW[m[2]]}`;
  if ((m = /^model\.layers\.(\d+)\.mlp\.shared_experts?\.(gate_proj|up_proj|down_proj)$/.exec(hfPath))) return `layers.${m[1]}.mlp.shared_experts.0.${FFN_SW[m[2]]}`;
  return null;
}

/** An adapter read from disk. */
export interface PeftAdapter {
  options: ResolvedLoRAOptions;
  /** PEFT `target_modules` as written in the config. */
  targetModules: string[];
  /** Switchyard site path → factors. */
  weights: Map<string, { A: Tensor; B: Tensor }>;
  /** The whole adapter_config.json. */
  config: Record<string, unknown>;
}

/** Write adapter `name` of `model` as a PEFT adapter folder (created if needed), atomically per file. */
export async function saveAdapter(dir: string, model: LoRAModel, name: string, extra: { baseModel?: string; family?: string | null } = {}): Promise<void> {
  const { mkdir } = await import('node:fs/promises');
  await mkdir(dir, { recursive: true });
  const e = model.adapterIndex(name);
  const o = model.adapterOptions[e];
  const dict: Record<string, Tensor> = {};
  const leaves = new Set<string>();
  for (const [path, { A, B }] of model.adapterWeights(name)) {
    const hf = hfModulePath(path, { family: extra.family });
    dict[`base_model.model.${hf}.lora_A.weight`] = A.detach();
    dict[`base_model.model.${hf}.lora_B.weight`] = B.detach();
    leaves.add(hf.split('.').pop() as string);
  }
  const config = {
    peft_type: 'LORA',
    task_type: 'CAUSAL_LM',
    base_model_name_or_path: extra.baseModel ?? null,
    r: o.rank,
    lora_alpha: o.alpha,
    lora_dropout: o.dropout,
    target_modules: [...leaves].sort(),
    use_rslora: o.useRslora,
    bias: 'none',
    fan_in_fan_out: false,
    inference_mode: true,
    init_lora_weights: true,
    modules_to_save: null,
    layers_to_transform: null,
    rank_pattern: {},
    alpha_pattern: {},
  };
  await saveSafetensors(join(dir, ADAPTER_WEIGHTS_FILE), dict, { format: 'pt' });
  await replaceFileAtomic(join(dir, ADAPTER_CONFIG_FILE), JSON.stringify(config, null, 2) + '\n');
}

/** Read a PEFT LoRA adapter folder; every unsupported option or unknown tensor is a typed error naming it. */
export async function loadAdapter(dir: string): Promise<PeftAdapter> {
  let raw: string;
  try {
    raw = await readFile(join(dir, ADAPTER_CONFIG_FILE), 'utf8');
  } catch (e) {
    throw new ConfigError('adapter', dir, `has no readable ${ADAPTER_CONFIG_FILE} (${(e as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  let cfg: Record<string, unknown>;
  try {
    cfg = JSON.parse(raw) as Record<string, unknown>;
  } catch (e) {
    throw new ConfigError(ADAPTER_CONFIG_FILE, dir, `is not valid JSON (${(e as Error).message})`);
  }
  if (cfg.peft_type !== undefined && cfg.peft_type !== 'LORA') throw new ConfigError('peft_type', cfg.peft_type, "only 'LORA' adapters are supported");
  for (const f of ['rank_pattern', 'alpha_pattern'] as const) {
    const v = cfg[f];
    if (v !== undefined && v !== null && (typeof v !== 'object' || Object.keys(v).length > 0)) throw new ConfigError(f, v, 'per-module ranks/alphas are not supported');
  }
  if (cfg.fan_in_fan_out === true) throw new ConfigError('fan_in_fan_out', true, 'Conv1D (GPT-2) layouts are not supported');
  if (cfg.use_dora === true) throw new ConfigError('use_dora', true, 'DoRA adapters are not supported');
  // PEFT's own field names in errors (r, lora_alpha, lora_dropout), not ours.
  if (typeof cfg.r !== 'number' || !Number.isInteger(cfg.r) || cfg.r <= 0) throw new ConfigError('r', cfg.r, `${ADAPTER_CONFIG_FILE}: the rank must be an integer >= 1`);
  const la = cfg.lora_alpha;
  if (la !== undefined && (typeof la !== 'number' || !Number.isFinite(la) || la <= 0)) throw new ConfigError('lora_alpha', la, `${ADAPTER_CONFIG_FILE}: must be a number > 0`);
  const ld = cfg.lora_dropout;
  if (ld !== undefined && ld !== null && (typeof ld !== 'number' || !(ld >= 0 && ld < 1))) throw new ConfigError('lora_dropout', ld, `${ADAPTER_CONFIG_FILE}: must be a number in [0, 1)`);
  const options = resolveLoRAOptions(
    { rank: cfg.r as number, alpha: (cfg.lora_alpha as number | undefined) ?? 8, dropout: (cfg.lora_dropout as number | null | undefined) ?? 0, useRslora: (cfg.use_rslora as boolean | undefined) ?? false },
    'adapter_config',
  );
  const tensors = await loadSafetensors(join(dir, ADAPTER_WEIGHTS_FILE)).catch((e: Error) => {
    throw new ConfigError('adapter', dir, `cannot read ${ADAPTER_WEIGHTS_FILE}: ${e.message.split('\n')[0]}`);
  });
  const pairs = new Map<string, { A?: Tensor; B?: Tensor }>();
  for (const [key, t] of Object.entries(tensors)) {
    const m = /^base_model\.model\.(.+)\.lora_([AB])(?:\.default)?\.weight$/.exec(key);
    if (!m) throw new StateDictError(key, t.shape, 'is not a LoRA weight (expected base_model.model.<module>.lora_A.weight / lora_B.weight)');
    const sw = switchyardModulePath(m[1]);
    if (!sw) throw new StateDictError(key, m[1], 'targets a module Switchyard does not adapt (attention projections, dense or shared-expert FFN weights)');
    const p = pairs.get(sw) ?? {};
    if (m[2] === 'A') p.A = t;
    else p.B = t;
    pairs.set(sw, p);
  }
  const weights = new Map<string, { A: Tensor; B: Tensor }>();
  for (const [sw, p] of pairs) {
    const hf = `base_model.model.${hfModulePath(sw)}`;
    if (!p.A || !p.B) throw new StateDictError(`${hf}.lora_${p.A ? 'B' : 'A'}.weight`, undefined, 'missing: every module needs both lora_A and lora_B');
    if (p.A.rank !== 2 || p.A.shape[0] !== options.rank) throw new StateDictError(`${hf}.lora_A.weight`, p.A.shape, `must be [r=${options.rank}, in] as adapter_config.json's r says`);
    if (p.B.rank !== 2 || p.B.shape[1] !== options.rank) throw new StateDictError(`${hf}.lora_B.weight`, p.B.shape, `must be [out, r=${options.rank}] as adapter_config.json's r says`);
    weights.set(sw, { A: new Tensor(p.A.f32.slice(), p.A.shape), B: new Tensor(p.B.f32.slice(), p.B.shape) });
  }
  if (weights.size === 0) throw new ConfigError('adapter', dir, `${ADAPTER_WEIGHTS_FILE} holds no LoRA weights`);
  const tm = cfg.target_modules;
  const targetModules = Array.isArray(tm) ? tm.map(String) : typeof tm === 'string' ? [tm] : [];
  return { options, targetModules, weights, config: cfg };
}
