/**
 * Hugging Face checkpoint import: a folder with `config.json` (+ optional `generation_config.json`),
 * `model.safetensors` or a sharded `model.safetensors.index.json`, and optionally
 * `tokenizer.json` becomes a MoETransformerLM (plus a Tokenizer), for the decoder-only MoE
 * families
 *
 *   mixtral      MixtralForCausalLM      `block_sparse_moe.gate`, `block_sparse_moe.experts.{j}.w1/w2/w3`
 *   qwen2_moe    Qwen2MoeForCausalLM     q/k/v biases, `mlp.experts.{j}.gate_proj/up_proj/down_proj`,
 *                                        `mlp.shared_expert.*` gated by `mlp.shared_expert_gate`
 *   qwen3_moe    Qwen3MoeForCausalLM     per-head `q_norm`/`k_norm`, `head_dim`
 *   olmoe        OlmoeForCausalLM        whole-projection `q_norm`/`k_norm`, `clip_qkv`
 *   deepseek_v2  DeepseekV2ForCausalLM   multi-head latent attention (interleaved rope), softmax routing,
 *                                        greedy / group-limited (group max) top-k, `routed_scaling_factor`
 *   deepseek_v3  DeepseekV3ForCausalLM   multi-head latent attention, `first_k_dense_replace`,
 *                                        sigmoid routing with `mlp.gate.e_score_correction_bias`,
 *                                        group-limited top-k, `routed_scaling_factor`, `mlp.shared_experts.*`
 *
 * Rotary positions: the default RoPE, or YaRN (`rope_scaling` / `rope_parameters` type "yarn",
 * resolved as transformers' _compute_yarn_parameters, with DeepSeek's softmax-scale correction).
 * A sliding window becomes a context cap (the window then never masks anything).
 *
 * The config is translated field by field (each Switchyard option documents its HF source, see
 * TransformerLMConfig / TopKRouterConfig); anything this library does not implement is refused with
 * a ConfigError whose field is the config.json key (`rope_scaling`, `quantization_config`, ...) or
 * the tensor name. Tensors are checked (presence, shape, dtype) from the safetensors headers before
 * a byte of weight data is read; then each one is read with a single positioned read straight into
 * its parameter (F32 in place; BF16/F16/F64 decoded to fp32). Expert names map as
 * gate_proj → w1, up_proj → w3, down_proj → w2 (Mixtral's w1/w2/w3 are the same roles).
 */
import { copyFile, mkdir, open, readFile, stat, type FileHandle } from 'node:fs/promises';
import { pathExists } from './path-exists.js';
import { join, resolve } from 'node:path';
import type { Tokenizer as HFTokenizerImpl } from '@huggingface/tokenizers';
import { ConfigError, RangeValueError } from '../errors.js';
import type { TokenizerSpec, Tokenizer } from '../data/tokenizer.js';
import { withDeferredExperts } from '../moe/layer.js';
import type { TopKRouterConfig } from '../moe/config.js';
import { MoETransformerLM, yarnMscale, type TransformerLMConfig, type YarnRopeConfig } from '../nn/transformer.js';
import { Tensor } from '../tensor/tensor.js';
import { replaceFileAtomic } from './atomic.js';
import { decodeSafetensorsTensor, readSafetensorsHeader, readSafetensorsHeaderLength, type SafetensorsHeader, type SafetensorsTensorInfo } from './safetensors.js';
import { saveSafetensors, loadSafetensors } from './safetensors-file.js';

/** The config.json `model_type`s this importer supports. */
export const HF_MODEL_TYPES = ['mixtral', 'qwen2_moe', 'qwen3_moe', 'olmoe', 'deepseek_v2', 'deepseek_v3'] as const;
export type HFModelType = (typeof HF_MODEL_TYPES)[number];

/** A raw config.json object. */
export type HFConfig = Record<string, unknown>;

/** Options of loadHFModel. */
export interface HFImportOptions {
  /**
   * Longest sequence the model accepts. Default: max_position_embeddings, capped at the sliding
   * window when the config has one (so the window never masks anything and results stay exact);
   * a larger value than the window is refused.
   */
  maxSeqLen?: number;
  /** Load tokenizer.json when present (default true). */
  tokenizer?: boolean;
  /**
   * Build the model with its routed experts unmaterialised (withDeferredExperts) and do not read
   * them: for an expert store that serves them from the HF shards (see `tensors` in the result).
   */
  deferExperts?: boolean;
  /** Read the weights (default true); false validates config and tensor headers only. */
  weights?: boolean;
}

/** Where one Switchyard parameter comes from in the HF files. */
export interface HFTensorSource {
  /** Absolute path of the safetensors shard. */
  file: string;
  /** Tensor name in that file. */
  name: string;
  dtype: string;
  /** The stored tensor's shape. */
  shape: number[];
  /** Absolute byte offset of the first element read (for positioned reads). */
  byteOffset: number;
  /** Bytes read (a whole tensor, or one expert's slice of a fused tensor). */
  byteLength: number;
  /** Rows permuted after reading (DeepSeek `rope_interleave`: the rope part back to rotate-half order). */
  permuteRows: Int32Array | null;
  /** True for routed-expert weights (what an expert store keeps on disk). */
  expert: boolean;
}

/** What loadHFModel returns. */
export interface HFImportResult {
  model: MoETransformerLM;
  /** The Switchyard config the model was built from. */
  config: TransformerLMConfig;
  /** config.json as read. */
  hfConfig: HFConfig;
  /** generation_config.json, or null when absent. */
  generationConfig: HFConfig | null;
  /** tokenizer.json wrapped as a Tokenizer, or null when absent (or not requested). */
  tokenizer: HFTokenizer | null;
  family: HFModelType;
  /** Switchyard parameter/buffer name → its source in the HF files. */
  tensors: Map<string, HFTensorSource>;
  /** End-of-sequence ids from generation_config.json / config.json. */
  eosTokenIds: number[];
  /** Human-readable notes (e.g. a sliding window turned into a context cap, ignored tensors). */
  notes: string[];
}

// ---------------------------------------------------------------------------------------------
// config.json → TransformerLMConfig

function has(cfg: HFConfig, key: string): boolean {
  return cfg[key] !== undefined && cfg[key] !== null;
}

function intField(cfg: HFConfig, key: string, opts: { min?: number; fallback?: number } = {}): number {
  const v = has(cfg, key) ? cfg[key] : opts.fallback;
  const min = opts.min ?? 1;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min) throw new ConfigError(key, cfg[key], `must be an integer >= ${min} in config.json`);
  return v;
}

/** The key a config uses for a value transformers also knows under another name (its attribute_map). */
function aliased(cfg: HFConfig, key: string, alias: string): string {
  return !has(cfg, key) && has(cfg, alias) ? alias : key;
}

function numField(cfg: HFConfig, key: string, fallback?: number): number {
  const v = has(cfg, key) ? cfg[key] : fallback;
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new ConfigError(key, cfg[key], 'must be a finite number in config.json');
  return v;
}

function boolField(cfg: HFConfig, key: string, fallback: boolean): boolean {
  const v = has(cfg, key) ? cfg[key] : fallback;
  if (typeof v !== 'boolean') throw new ConfigError(key, cfg[key], 'must be a boolean in config.json');
  return v;
}

/** What the rotary embedding of a config.json is: its base, and YaRN scaling when configured. */
interface RopeSpec {
  theta: number;
  yarn: YarnRopeConfig | null;
  /** The config key that held the scaling (for DeepSeek's softmax-scale correction). */
  raw: Record<string, unknown> | null;
}

/**
 * rope_theta from `rope_parameters` (transformers v5) or `rope_theta`, and `rope_scaling` /
 * `rope_parameters` of type "yarn" (resolved as Hugging Face's _compute_yarn_parameters does);
 * every other rope type is refused naming the key.
 */
function ropeSpec(cfg: HFConfig, fallback: number): RopeSpec {
  let theta: number | null = null;
  let yarn: YarnRopeConfig | null = null;
  let raw: Record<string, unknown> | null = null;
  for (const key of ['rope_parameters', 'rope_scaling']) {
    const r = cfg[key];
    if (r === undefined || r === null) continue;
    if (typeof r !== 'object' || Array.isArray(r)) throw new ConfigError(key, r, 'must be an object or null');
    const o = r as Record<string, unknown>;
    // transformers v5 may key rope parameters by layer type: { full_attention: {...}, ... }
    if (!('rope_type' in o) && !('type' in o) && !('rope_theta' in o)) {
      throw new ConfigError(key, r, 'per-layer-type rope parameters are not supported (only one rotary embedding)');
    }
    const type = o.rope_type ?? o.type ?? 'default';
    if (type !== 'default' && type !== 'yarn') {
      throw new ConfigError(key, r, `rope type ${JSON.stringify(type)} is not implemented (only the default rotary embedding and YaRN; linear, dynamic, llama3, longrope scaling are refused)`);
    }
    if (o.partial_rotary_factor !== undefined && o.partial_rotary_factor !== 1) {
      throw new ConfigError(`${key}.partial_rotary_factor`, o.partial_rotary_factor, 'partial rotary embeddings are not supported');
    }
    if (key === 'rope_parameters' && typeof o.rope_theta === 'number') theta = o.rope_theta;
    if (type === 'yarn' && !yarn) {
      const num = (k: string, optional = true): number | undefined => {
        const v = o[k];
        if (v === undefined || v === null) {
          if (optional) return undefined;
          throw new ConfigError(`${key}.${k}`, v, 'is required for YaRN');
        }
        if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw new ConfigError(`${key}.${k}`, v, 'must be a finite number > 0');
        return v;
      };
      const maxPos = intField(cfg, 'max_position_embeddings', { fallback: 4096 });
      let factor = num('factor', false) as number;
      const original = num('original_max_position_embeddings');
      // HF: with original_max_position_embeddings, the factor is max_position_embeddings / original.
      if (original !== undefined) factor = maxPos / original;
      const mscale = num('mscale'), mscaleAll = num('mscale_all_dim');
      let attentionFactor = num('attention_factor');
      if (attentionFactor === undefined) attentionFactor = mscale && mscaleAll ? yarnMscale(factor, mscale) / yarnMscale(factor, mscaleAll) : yarnMscale(factor);
      if (o.truncate !== undefined && typeof o.truncate !== 'boolean') throw new ConfigError(`${key}.truncate`, o.truncate, 'must be a boolean');
      yarn = {
        factor,
        originalMaxPositionEmbeddings: original ?? maxPos,
        betaFast: num('beta_fast') ?? 32,
        betaSlow: num('beta_slow') ?? 1,
        attentionFactor,
        truncate: (o.truncate as boolean | undefined) ?? true,
      };
      raw = o;
    }
  }
  if (has(cfg, 'partial_rotary_factor') && cfg.partial_rotary_factor !== 1) {
    throw new ConfigError('partial_rotary_factor', cfg.partial_rotary_factor, 'partial rotary embeddings are not supported');
  }
  return { theta: theta ?? numField(cfg, 'rope_theta', fallback), yarn, raw };
}

/** Set the model's rope base and YaRN scaling from config.json. */
function applyRope(base: TransformerLMConfig, cfg: HFConfig, fallback: number): RopeSpec {
  const r = ropeSpec(cfg, fallback);
  base.ropeTheta = r.theta;
  if (r.yarn) base.ropeYarn = r.yarn;
  return r;
}

function checkActivation(cfg: HFConfig): void {
  const act = cfg.hidden_act ?? 'silu';
  if (act !== 'silu' && act !== 'swish') throw new ConfigError('hidden_act', act, "only 'silu' (SwiGLU experts) is supported");
}

function checkCommon(cfg: HFConfig): void {
  if (has(cfg, 'quantization_config')) {
    const q = cfg.quantization_config as Record<string, unknown>;
    throw new ConfigError('quantization_config', q?.quant_method ?? q, 'quantized checkpoints (FP8, GPTQ, AWQ, bitsandbytes, ...) are not supported: use an unquantized (F32/BF16/F16) export');
  }
  if (has(cfg, 'pretraining_tp') && cfg.pretraining_tp !== 1) {
    throw new ConfigError('pretraining_tp', cfg.pretraining_tp, 'only 1 is supported');
  }
  checkActivation(cfg);
}

/** Sliding window: a context cap that keeps the window from ever masking (so the import stays exact). */
function windowCap(cfg: HFConfig, family: HFModelType): { field: string; window: number } | null {
  if (family === 'mixtral') {
    if (!has(cfg, 'sliding_window')) return null;
    return { field: 'sliding_window', window: intField(cfg, 'sliding_window') };
  }
  if (family === 'qwen2_moe' || family === 'qwen3_moe') {
    if (!boolField(cfg, 'use_sliding_window', false) || !has(cfg, 'sliding_window')) return null;
    return { field: 'sliding_window', window: intField(cfg, 'sliding_window') };
  }
  if (has(cfg, 'sliding_window')) return { field: 'sliding_window', window: intField(cfg, 'sliding_window') };
  return null;
}

/** The family of a config.json, or a ConfigError naming `model_type`. */
export function hfFamily(cfg: HFConfig): HFModelType {
  const t = cfg.model_type;
  if (typeof t !== 'string' || !(HF_MODEL_TYPES as readonly string[]).includes(t)) {
    throw new ConfigError('model_type', t, `unsupported architecture; supported: ${HF_MODEL_TYPES.join(', ')}`);
  }
  return t as HFModelType;
}

/**
 * Translate a Hugging Face config.json into a Switchyard TransformerLMConfig. Throws ConfigError
 * naming the config.json field for anything unsupported.
 */
export function hfConfigToSwitchyard(cfg: HFConfig, opts: { maxSeqLen?: number } = {}): { config: TransformerLMConfig; family: HFModelType; notes: string[] } {
  if (typeof cfg !== 'object' || cfg === null || Array.isArray(cfg)) throw new ConfigError('config.json', cfg, 'must be a JSON object');
  const family = hfFamily(cfg);
  checkCommon(cfg);
  const notes: string[] = [];
  const dModel = intField(cfg, 'hidden_size');
  const nHeads = intField(cfg, 'num_attention_heads');
  const nLayers = intField(cfg, 'num_hidden_layers');
  const vocabSize = intField(cfg, 'vocab_size');
  const nKV = has(cfg, 'num_key_value_heads') ? intField(cfg, 'num_key_value_heads') : nHeads;
  if (nHeads % nKV !== 0) throw new ConfigError('num_key_value_heads', nKV, `must divide num_attention_heads (${nHeads})`);
  let maxPos = intField(cfg, 'max_position_embeddings', { fallback: 4096 });
  const cap = windowCap(cfg, family);
  let maxSeqLen = opts.maxSeqLen ?? maxPos;
  if (cap && cap.window < maxPos) {
    if (opts.maxSeqLen !== undefined && opts.maxSeqLen > cap.window) {
      throw new ConfigError(cap.field, cap.window, `sliding-window attention is not implemented: maxSeqLen ${opts.maxSeqLen} would let the window mask keys (use maxSeqLen <= ${cap.window})`);
    }
    maxPos = cap.window;
    if (opts.maxSeqLen === undefined) maxSeqLen = cap.window;
    notes.push(`${cap.field}=${cap.window}: context capped at ${maxSeqLen} tokens so the window never masks (sliding-window attention itself is not implemented)`);
  }
  const normEps = numField(cfg, 'rms_norm_eps', family === 'olmoe' || family === 'mixtral' ? 1e-5 : 1e-6);
  const tie = boolField(cfg, 'tie_word_embeddings', false);
  const base: TransformerLMConfig = {
    vocabSize,
    dModel,
    nLayers,
    nHeads,
    dFF: intField(cfg, 'intermediate_size'),
    maxSeqLen,
    ffn: { activation: 'silu', gated: true },
    moe: null,
    moeEvery: 1,
    ropeTheta: 10000,
    normEps,
    seed: 0,
    tieEmbeddings: tie,
  };
  if (nKV !== nHeads) base.nKVHeads = nKV;
  const headDim = has(cfg, 'head_dim') ? intField(cfg, 'head_dim') : undefined;
  if (headDim !== undefined && headDim !== dModel / nHeads) base.headDim = headDim;
  if (headDim === undefined && dModel % nHeads !== 0) throw new ConfigError('num_attention_heads', nHeads, `must divide hidden_size (${dModel}) when head_dim is absent`);

  const topk = (k: number, normalize: boolean, extra: Partial<TopKRouterConfig> = {}): TopKRouterConfig => ({ type: 'topk', k, normalize, ...extra });

  switch (family) {
    case 'mixtral': {
      applyRope(base, cfg, 1e6);
      const E = intField(cfg, aliased(cfg, 'num_local_experts', 'num_experts'), { min: 2 });
      const k = intField(cfg, 'num_experts_per_tok');
      if (k > E) throw new ConfigError('num_experts_per_tok', k, `exceeds num_local_experts (${E})`);
      // MixtralSparseMoeBlock always renormalises the top-k softmax weights.
      base.moe = { numExperts: E, router: topk(k, true) };
      break;
    }
    case 'qwen2_moe':
    case 'qwen3_moe': {
      applyRope(base, cfg, 10000);
      const E = intField(cfg, aliased(cfg, 'num_experts', 'num_local_experts'), { min: 0 });
      const k = intField(cfg, 'num_experts_per_tok');
      if (E > 0 && E < 2) throw new ConfigError('num_experts', E, 'must be 0 (dense) or >= 2');
      if (k > E && E > 0) throw new ConfigError('num_experts_per_tok', k, `exceeds num_experts (${E})`);
      base.moeEvery = intField(cfg, 'decoder_sparse_step', { fallback: 1 });
      const only = cfg.mlp_only_layers ?? [];
      if (!Array.isArray(only) || !only.every((l) => Number.isInteger(l) && l >= 0 && l < nLayers)) {
        throw new ConfigError('mlp_only_layers', only, `must be a list of layer indices in [0, ${nLayers})`);
      }
      if (only.length) base.denseLayers = only as number[];
      if (family === 'qwen2_moe') {
        base.attentionBias = boolField(cfg, 'qkv_bias', true);
        const sharedDFF = intField(cfg, 'shared_expert_intermediate_size', { min: 0 });
        base.moe = E > 0 ? { numExperts: E, dFF: intField(cfg, 'moe_intermediate_size'), router: topk(k, boolField(cfg, 'norm_topk_prob', false)) } : null;
        if (base.moe && sharedDFF > 0) Object.assign(base.moe, { numSharedExperts: 1, sharedDFF, sharedExpertGate: true });
      } else {
        const bias = boolField(cfg, 'attention_bias', false);
        if (bias) base.attentionBias = base.attentionOutputBias = true;
        base.qkNorm = 'head';
        base.moe = E > 0 ? { numExperts: E, dFF: intField(cfg, 'moe_intermediate_size'), router: topk(k, boolField(cfg, 'norm_topk_prob', false)) } : null;
      }
      break;
    }
    case 'olmoe': {
      applyRope(base, cfg, 10000);
      const E = intField(cfg, aliased(cfg, 'num_experts', 'num_local_experts'), { min: 2 });
      const k = intField(cfg, 'num_experts_per_tok');
      if (k > E) throw new ConfigError('num_experts_per_tok', k, `exceeds num_experts (${E})`);
      if (boolField(cfg, 'attention_bias', false)) base.attentionBias = base.attentionOutputBias = true;
      base.qkNorm = 'full';
      if (has(cfg, 'clip_qkv')) {
        const c = numField(cfg, 'clip_qkv');
        if (!(c > 0)) throw new ConfigError('clip_qkv', c, 'must be > 0 or null');
        base.clipQKV = c;
      }
      base.moe = { numExperts: E, router: topk(k, boolField(cfg, 'norm_topk_prob', false)) };
      break;
    }
    case 'deepseek_v2':
    case 'deepseek_v3': {
      const v2 = family === 'deepseek_v2';
      const ropeCfg = applyRope(base, cfg, 10000);
      if (nKV !== nHeads) throw new ConfigError('num_key_value_heads', nKV, `multi-head latent attention needs num_key_value_heads = num_attention_heads (${nHeads})`);
      delete base.nKVHeads;
      delete base.headDim;
      const scoring = v2 ? 'softmax' : 'sigmoid';
      if (has(cfg, 'scoring_func') && cfg.scoring_func !== scoring) throw new ConfigError('scoring_func', cfg.scoring_func, `only '${scoring}' is supported for ${family}`);
      const method = has(cfg, 'topk_method') ? cfg.topk_method : v2 ? 'greedy' : 'noaux_tc';
      if (v2 && method !== 'greedy' && method !== 'group_limited_greedy') throw new ConfigError('topk_method', method, "only 'greedy' and 'group_limited_greedy' are supported for deepseek_v2");
      if (!v2 && method !== 'noaux_tc') throw new ConfigError('topk_method', method, "only 'noaux_tc' (group-limited top-k on bias-corrected sigmoid scores) is supported");
      if (v2 && boolField(cfg, 'norm_topk_prob', false)) {
        throw new ConfigError('norm_topk_prob', true, "is ambiguous for deepseek_v2 (Hugging Face ignores it, DeepSeek's original code renormalises instead of scaling): only false is supported");
      }
      if (v2 && boolField(cfg, 'mlp_bias', false)) throw new ConfigError('mlp_bias', true, 'MLP biases are not supported');
      if (has(cfg, 'moe_layer_freq') && cfg.moe_layer_freq !== 1) throw new ConfigError('moe_layer_freq', cfg.moe_layer_freq, 'only 1 is supported (Hugging Face ignores it too)');
      const E = intField(cfg, aliased(cfg, 'n_routed_experts', 'num_local_experts'), { min: 2 });
      const k = intField(cfg, 'num_experts_per_tok');
      const grouped = v2 ? method === 'group_limited_greedy' : true;
      const G = grouped ? intField(cfg, 'n_group', { fallback: 1 }) : 1;
      const TG = grouped ? intField(cfg, 'topk_group', { fallback: 1 }) : 1;
      if (E % G !== 0) throw new ConfigError('n_group', G, `must divide n_routed_experts (${E})`);
      if (TG > G) throw new ConfigError('topk_group', TG, `exceeds n_group (${G})`);
      if (!v2 && G > 1 && E / G < 2) throw new ConfigError('n_group', G, 'needs at least 2 experts per group (group score = sum of the top 2)');
      if (k > (E / G) * TG) throw new ConfigError('num_experts_per_tok', k, `exceeds the experts of topk_group groups (${(E / G) * TG})`);
      const first = intField(cfg, 'first_k_dense_replace', { min: 0, fallback: 0 });
      if (first > 0) base.denseLayers = Array.from({ length: Math.min(first, nLayers) }, (_, i) => i);
      const qLora = cfg.q_lora_rank === null || cfg.q_lora_rank === undefined ? null : intField(cfg, 'q_lora_rank');
      const rope = intField(cfg, 'qk_rope_head_dim');
      if (rope % 2 !== 0) throw new ConfigError('qk_rope_head_dim', rope, 'must be even');
      base.mla = {
        qLoraRank: qLora,
        kvLoraRank: intField(cfg, 'kv_lora_rank'),
        qkNopeHeadDim: intField(cfg, 'qk_nope_head_dim', { min: 0 }),
        qkRopeHeadDim: rope,
        vHeadDim: intField(cfg, 'v_head_dim'),
      };
      if (boolField(cfg, 'attention_bias', false)) base.attentionBias = base.attentionOutputBias = true;
      if (ropeCfg.raw) {
        // DeepseekV2/V3Attention: with rope scaling, softmax scale ·= yarn_get_mscale(factor, mscale_all_dim)² (the config's factor).
        const all = ropeCfg.raw.mscale_all_dim;
        if (typeof all === 'number' && all !== 0) {
          const m = yarnMscale(ropeCfg.raw.factor as number, all);
          base.attentionScale = (1 / Math.sqrt(base.mla.qkNopeHeadDim + base.mla.qkRopeHeadDim)) * m * m;
        }
      }
      const nShared = intField(cfg, 'n_shared_experts', { min: 0, fallback: 0 });
      const moeDFF = intField(cfg, 'moe_intermediate_size');
      base.moe = {
        numExperts: E,
        dFF: moeDFF,
        router: v2
          ? // DeepseekV2Moe: softmax over experts, top-k (within the topk_group best groups by their max score), weights · routed_scaling_factor, no renormalisation.
            topk(k, false, {
              scoring: 'softmax',
              groups: G > 1 ? { numGroups: G, topkGroups: TG, groupScore: 'max' } : null,
              routedScalingFactor: numField(cfg, 'routed_scaling_factor', 1),
            })
          : topk(k, boolField(cfg, 'norm_topk_prob', true), {
              scoring: 'sigmoid',
              groups: G > 1 ? { numGroups: G, topkGroups: TG, groupScore: 'top2sum' } : null,
              routedScalingFactor: numField(cfg, 'routed_scaling_factor', 1),
              selectionBias: true,
            }),
      };
      // HF DeepseekV2Moe / DeepseekV3MoE: one shared MLP of width moe_intermediate_size · n_shared_experts.
      if (nShared > 0) Object.assign(base.moe, { numSharedExperts: 1, sharedDFF: moeDFF * nShared });
      break;
    }
  }
  return { config: base, family, notes };
}

// ---------------------------------------------------------------------------------------------
// Tensor names

interface NameRule {
  hf: string;
  /** Other names the same tensor has in some exports (tried when `hf` is absent). */
  alt?: string[];
  /** For fused (transformers v5) expert tensors: which expert and which row block. */
  fused?: { name: string; expert: number; part: 'gate' | 'up' | 'down' };
  permute?: 'q' | 'kv';
  expert?: boolean;
}

/** The HF tensor name of Switchyard parameter `sw` in a `family` checkpoint. */
function hfName(sw: string, family: HFModelType, interleave: boolean): NameRule {
  if (sw === 'embed_tokens.weight') return { hf: 'model.embed_tokens.weight' };
  if (sw === 'norm.weight') return { hf: 'model.norm.weight' };
  if (sw === 'lm_head.weight') return { hf: 'lm_head.weight' };
  const m = /^layers\.(\d+)\.(.*)$/.exec(sw);
  if (!m) return { hf: sw };
  const layer = `model.layers.${m[1]}`;
  const rest = m[2];
  if (rest.startsWith('self_attn.')) {
    const rule: NameRule = { hf: `${layer}.${rest}` };
    if ((family === 'deepseek_v3' || family === 'deepseek_v2') && interleave) {
      if (rest === 'self_attn.q_b_proj.weight' || rest === 'self_attn.q_proj.weight') rule.permute = 'q';
      if (rest === 'self_attn.kv_a_proj_with_mqa.weight' || rest === 'self_attn.kv_a_proj_with_mqa.bias') rule.permute = 'kv';
    }
    return rule;
  }
  if (!rest.startsWith('mlp.')) return { hf: `${layer}.${rest}` };
  const moe = family === 'mixtral' ? `${layer}.block_sparse_moe` : `${layer}.mlp`;
  const proj: Record<string, string> = family === 'mixtral' ? { w1: 'w1', w2: 'w2', w3: 'w3' } : { w1: 'gate_proj', w2: 'down_proj', w3: 'up_proj' };
  const part: Record<string, 'gate' | 'up' | 'down'> = { w1: 'gate', w3: 'up', w2: 'down' };
  let e: RegExpExecArray | null;
  if ((e = /^mlp\.experts\.(\d+)\.(w[123])\.weight$/.exec(rest))) {
    const fusedName = `${layer}.mlp.experts.${e[2] === 'w2' ? 'down_proj' : 'gate_up_proj'}`;
    return { hf: `${moe}.experts.${e[1]}.${proj[e[2]]}.weight`, fused: { name: fusedName, expert: Number(e[1]), part: part[e[2]] }, expert: true };
  }
  if ((e = /^mlp\.shared_experts\.0\.(w[123])\.weight$/.exec(rest))) {
    const dir = family === 'qwen2_moe' ? 'shared_expert' : 'shared_experts';
    return { hf: `${layer}.mlp.${dir}.${proj[e[1]]}.weight` };
  }
  // transformers v5 renamed Mixtral's block_sparse_moe to mlp.
  if (rest === 'mlp.gate.weight') return family === 'mixtral' ? { hf: `${moe}.gate.weight`, alt: [`${layer}.mlp.gate.weight`] } : { hf: `${moe}.gate.weight` };
  if (rest === 'mlp.gate.e_score_correction_bias') return { hf: `${layer}.mlp.gate.e_score_correction_bias` };
  if (rest === 'mlp.shared_expert_gate.weight') return { hf: `${layer}.mlp.shared_expert_gate.weight` };
  if ((e = /^mlp\.(w[123])\.weight$/.exec(rest))) {
    // Dense feed-forward (HF names it gate_proj/up_proj/down_proj in every family).
    const dense: Record<string, string> = { w1: 'gate_proj', w2: 'down_proj', w3: 'up_proj' };
    return { hf: `${layer}.mlp.${dense[e[1]]}.weight` };
  }
  return { hf: `${layer}.${rest}` };
}

/** Row order that turns HF's interleaved rope layout (pairs (2i, 2i+1)) into rotate-half order. */
function interleavePermutation(rows: number, blocks: Array<{ start: number; rope: number }>): Int32Array {
  const p = Int32Array.from({ length: rows }, (_, i) => i);
  for (const { start, rope } of blocks) {
    const half = rope / 2;
    for (let j = 0; j < rope; j++) p[start + j] = start + (j < half ? 2 * j : 2 * (j - half) + 1);
  }
  return p;
}

// ---------------------------------------------------------------------------------------------
// safetensors shards

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
const FLOAT_DTYPES: Record<string, number> = { F32: 4, F16: 2, BF16: 2, F64: 8 };

interface Shard {
  path: string;
  fh: FileHandle;
  header: SafetensorsHeader;
}

async function readExactly(fh: FileHandle, into: Uint8Array, position: number, path: string): Promise<void> {
  let done = 0;
  while (done < into.length) {
    const { bytesRead } = await fh.read(into, done, into.length - done, position + done);
    if (bytesRead === 0) throw new ConfigError(path, position + done, 'file ended early (truncated?)');
    done += bytesRead;
  }
}

async function openShard(path: string): Promise<Shard> {
  let fh: FileHandle;
  try {
    fh = await open(path, 'r');
  } catch (e) {
    throw new ConfigError(path, null, `cannot open: ${(e as Error).message}`);
  }
  try {
    const { size } = await fh.stat();
    const prefix = new Uint8Array(Math.min(8, size));
    await readExactly(fh, prefix, 0, path);
    const n = readSafetensorsHeaderLength(prefix, size);
    const head = new Uint8Array(8 + n);
    head.set(prefix);
    await readExactly(fh, head.subarray(8), 8, path);
    return { path, fh, header: readSafetensorsHeader(head, size) };
  } catch (e) {
    await fh.close();
    throw e;
  }
}

async function readJson(path: string, what: string): Promise<HFConfig> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    throw new ConfigError(what, path, `cannot be read: ${(e as Error).message}`);
  }
  try {
    return JSON.parse(text) as HFConfig;
  } catch (e) {
    throw new ConfigError(what, path, `is not valid JSON (${(e as Error).message})`);
  }
}


/** The shard files of a checkpoint folder and which shard holds each tensor name. */
async function openCheckpointFiles(dir: string): Promise<{ shards: Shard[]; where: Map<string, Shard> }> {
  const index = join(dir, 'model.safetensors.index.json');
  const single = join(dir, 'model.safetensors');
  const shards: Shard[] = [];
  const where = new Map<string, Shard>();
  try {
    if (await pathExists(index)) {
      const idx = await readJson(index, 'model.safetensors.index.json');
      const map = idx.weight_map;
      if (typeof map !== 'object' || map === null || Array.isArray(map)) throw new ConfigError('model.safetensors.index.json weight_map', map, 'must be an object of tensor name → shard file');
      const byFile = new Map<string, Shard>();
      for (const [name, file] of Object.entries(map as Record<string, unknown>)) {
        if (typeof file !== 'string' || file.includes('/') || file.includes('\\') || file.startsWith('.')) {
          throw new ConfigError(`model.safetensors.index.json weight_map[${JSON.stringify(name)}]`, file, 'must be a shard file name in the same folder');
        }
        let shard = byFile.get(file);
        if (!shard) {
          shard = await openShard(join(dir, file));
          byFile.set(file, shard);
          shards.push(shard);
        }
        if (!Object.prototype.hasOwnProperty.call(shard.header.tensors, name)) {
          throw new ConfigError(name, file, `model.safetensors.index.json places this tensor in ${file}, which does not contain it`);
        }
        where.set(name, shard);
      }
    } else if (await pathExists(single)) {
      const shard = await openShard(single);
      shards.push(shard);
      for (const name of Object.keys(shard.header.tensors)) where.set(name, shard);
    } else {
      throw new ConfigError('model.safetensors', dir, 'the folder has neither model.safetensors nor model.safetensors.index.json');
    }
  } catch (e) {
    await Promise.all(shards.map((s) => s.fh.close()));
    throw e;
  }
  return { shards, where };
}

// ---------------------------------------------------------------------------------------------
// Loading

function shapeStr(s: readonly number[]): string {
  return `[${s.join(', ')}]`;
}

/**
 * Read a Hugging Face MoE checkpoint folder into a MoETransformerLM (see the module doc). Every
 * unsupported option, missing tensor, wrong shape or non-float dtype is a ConfigError naming the
 * config.json field or the tensor.
 */
export async function loadHFModel(dir: string, opts: HFImportOptions = {}): Promise<HFImportResult> {
  const root = resolve(dir);
  const hfConfig = await readJson(join(root, 'config.json'), 'config.json');
  const { config, family, notes } = hfConfigToSwitchyard(hfConfig, { maxSeqLen: opts.maxSeqLen });
  const generationConfig = (await pathExists(join(root, 'generation_config.json'))) ? await readJson(join(root, 'generation_config.json'), 'generation_config.json') : null;
  const build = (): MoETransformerLM => new MoETransformerLM(config);
  const model = opts.deferExperts ? withDeferredExperts(build) : build();
  model.eval();

  // DeepSeek-V2 always rotates interleaved pairs (complex multiply); V3 unless rope_interleave is false.
  const interleave = family === 'deepseek_v2' || (family === 'deepseek_v3' && boolField(hfConfig, 'rope_interleave', true));
  const { shards, where } = await openCheckpointFiles(root);
  const tensors = new Map<string, HFTensorSource>();
  try {
    const own = model.stateDict();
    const used = new Set<string>();
    for (const [sw, t] of Object.entries(own)) {
      const rule = hfName(sw, family, interleave);
      let src: HFTensorSource | null = null;
      const alt = rule.alt?.find((n) => !where.has(rule.hf) && where.has(n));
      if (alt) rule.hf = alt;
      const shard = where.get(rule.hf);
      if (shard) {
        const info = shard.header.tensors[rule.hf];
        const expected = rule.expert ? expertShape(config, sw) : t.shape;
        checkTensor(rule.hf, info, expected, sw);
        src = source(shard, rule.hf, info, info.dataOffsets[0], info.dataOffsets[1] - info.dataOffsets[0], !!rule.expert);
        used.add(rule.hf);
      } else if (rule.fused && where.has(rule.fused.name)) {
        const fshard = where.get(rule.fused.name) as Shard;
        const info = fshard.header.tensors[rule.fused.name];
        src = fusedSource(fshard, rule.fused, info, sw);
        const expected = expertShape(config, sw);
        if (src.shape.some((d, i) => d !== expected[i])) {
          throw new ConfigError(rule.fused.name, info.shape, `expert ${rule.fused.expert}'s ${rule.fused.part} block is ${shapeStr(src.shape)}, but the config implies ${shapeStr(expected)} (Switchyard ${sw})`);
        }
        used.add(rule.fused.name);
      } else if (sw === 'lm_head.weight' && config.tieEmbeddings !== false) {
        continue;
      } else {
        throw new ConfigError(rule.hf, 'missing', `tensor not found in the checkpoint (needed for Switchyard parameter ${sw}; family ${family})`);
      }
      if (rule.permute) src.permuteRows = permutationFor(rule.permute, config, src.shape[0]);
      tensors.set(sw, src);
    }
    const unused = [...where.keys()].filter((n) => !used.has(n));
    if (unused.length) {
      const mtp = unused.filter((n) => { const m = /^model\.layers\.(\d+)\./.exec(n); return m !== null && Number(m[1]) >= config.nLayers; });
      const other = unused.filter((n) => !mtp.includes(n));
      if (mtp.length) notes.push(`ignored ${mtp.length} tensors of layers beyond num_hidden_layers (multi-token-prediction heads)`);
      if (other.length) notes.push(`ignored ${other.length} tensors Switchyard does not use: ${other.slice(0, 4).join(', ')}${other.length > 4 ? ', ...' : ''}`);
    }
    if (opts.weights !== false) {
      for (const [sw, src] of tensors) {
        if (src.expert && opts.deferExperts) continue;
        await readInto(shards, src, own[sw]);
      }
    }
  } finally {
    await Promise.all(shards.map((s) => s.fh.close()));
  }

  let tokenizer: HFTokenizer | null = null;
  if (opts.tokenizer !== false && (await pathExists(join(root, 'tokenizer.json')))) {
    tokenizer = await HFTokenizer.fromDir(root, config.vocabSize);
  }
  const eos = generationConfig?.eos_token_id ?? hfConfig.eos_token_id;
  const eosTokenIds = (Array.isArray(eos) ? eos : eos === undefined || eos === null ? [] : [eos]).filter((v): v is number => Number.isInteger(v));
  return { model, config, hfConfig, generationConfig, tokenizer, family, tensors, eosTokenIds, notes };
}

/** [dFF, dModel] for w1/w3, [dModel, dFF] for w2 of a routed expert (known from the config even when deferred). */
function expertShape(c: TransformerLMConfig, sw: string): number[] {
  const dFF = c.moe?.dFF ?? c.dFF;
  return sw.endsWith('.w2.weight') ? [c.dModel, dFF] : [dFF, c.dModel];
}

function checkTensor(name: string, info: SafetensorsTensorInfo, expected: readonly number[] | null, sw: string): void {
  if (!(info.dtype in FLOAT_DTYPES)) {
    throw new ConfigError(name, info.dtype, `dtype ${info.dtype} is not supported (F32, BF16, F16, F64 only; quantized weights are refused)`);
  }
  if (expected && (info.shape.length !== expected.length || info.shape.some((d, i) => d !== expected[i]))) {
    throw new ConfigError(name, info.shape, `has shape ${shapeStr(info.shape)}, but the config implies ${shapeStr(expected)} (Switchyard ${sw})`);
  }
}

function source(shard: Shard, name: string, info: SafetensorsTensorInfo, begin: number, length: number, expert: boolean): HFTensorSource {
  return { file: shard.path, name, dtype: info.dtype, shape: [...info.shape], byteOffset: shard.header.dataStart + begin, byteLength: length, permuteRows: null, expert };
}

/** One expert's block of a fused transformers-v5 tensor: gate_up_proj [E, 2·I, H] (gate rows first), down_proj [E, H, I]. */
function fusedSource(shard: Shard, f: NonNullable<NameRule['fused']>, info: SafetensorsTensorInfo, sw: string): HFTensorSource {
  if (!(info.dtype in FLOAT_DTYPES)) throw new ConfigError(f.name, info.dtype, `dtype ${info.dtype} is not supported (F32, BF16, F16, F64 only)`);
  if (info.shape.length !== 3 || f.expert >= info.shape[0] || (f.part !== 'down' && info.shape[1] % 2 !== 0)) {
    throw new ConfigError(f.name, info.shape, `fused expert tensor must be [experts, ${f.part === 'down' ? 'hidden, intermediate' : '2·intermediate, hidden'}] with expert ${f.expert} present (Switchyard ${sw})`);
  }
  const bytes = FLOAT_DTYPES[info.dtype];
  const [, rows, cols] = info.shape;
  const blockRows = f.part === 'down' ? rows : rows / 2;
  const rowStart = f.expert * rows + (f.part === 'up' ? blockRows : 0);
  const begin = info.dataOffsets[0] + rowStart * cols * bytes;
  const src = source(shard, f.name, info, begin, blockRows * cols * bytes, true);
  src.shape = [blockRows, cols];
  return src;
}

function permutationFor(kind: 'q' | 'kv', c: TransformerLMConfig, rows: number): Int32Array {
  const m = c.mla;
  if (!m) return Int32Array.from({ length: rows }, (_, i) => i);
  if (kind === 'kv') return interleavePermutation(rows, [{ start: m.kvLoraRank, rope: m.qkRopeHeadDim }]);
  const head = m.qkNopeHeadDim + m.qkRopeHeadDim;
  return interleavePermutation(rows, Array.from({ length: c.nHeads }, (_, h) => ({ start: h * head + m.qkNopeHeadDim, rope: m.qkRopeHeadDim })));
}

/** Read one tensor (or fused slice) into `target` with a single positioned read. */
async function readInto(shards: Shard[], src: HFTensorSource, target: Tensor): Promise<void> {
  const shard = shards.find((s) => s.path === src.file) as Shard;
  const out = target.data as Float32Array;
  const elems = src.byteLength / FLOAT_DTYPES[src.dtype];
  if (elems !== out.length) throw new ConfigError(src.name, src.shape, `holds ${elems} values, the parameter needs ${out.length}`);
  let values: Float32Array;
  if (src.dtype === 'F32' && LITTLE_ENDIAN && !src.permuteRows) {
    // Straight into the parameter's memory.
    await readExactly(shard.fh, new Uint8Array(out.buffer, out.byteOffset, out.byteLength), src.byteOffset, src.file);
    return;
  }
  const raw = new Uint8Array(src.byteLength);
  await readExactly(shard.fh, raw, src.byteOffset, src.file);
  values = decodeSafetensorsTensor(src.name, { dtype: src.dtype, shape: [elems], dataOffsets: [0, src.byteLength] }, raw).f32;
  if (src.permuteRows) {
    const rows = src.permuteRows.length, cols = elems / rows;
    const permuted = new Float32Array(elems);
    for (let r = 0; r < rows; r++) permuted.set(values.subarray(src.permuteRows[r] * cols, (src.permuteRows[r] + 1) * cols), r * cols);
    values = permuted;
  }
  out.set(values);
}

// ---------------------------------------------------------------------------------------------
// Tokenizer

const CONTROL = /[\u0000-\u001f\u007f-\u009f]/gu;

/**
 * tokenizer.json (+ tokenizer_config.json) through @huggingface/tokenizers (pure JS, nothing is
 * fetched), as a Switchyard Tokenizer. `encode` adds no special tokens; `encodePrompt` applies
 * the tokenizer's post-processor (e.g. a leading BOS), as transformers' tokenizer(text) does.
 */
export class HFTokenizer implements Tokenizer {
  readonly name: string;
  readonly vocabSize: number;
  readonly unknownId: number | null;
  readonly dir: string;
  private readonly impl: HFTokenizerImpl;

  private constructor(impl: HFTokenizerImpl, name: string, vocabSize: number, unknownId: number | null, dir: string) {
    this.impl = impl;
    this.name = name;
    this.vocabSize = vocabSize;
    this.unknownId = unknownId;
    this.dir = dir;
  }

  /** Read `dir/tokenizer.json` (and tokenizer_config.json when present); ids span at least `minVocab`. */
  static async fromDir(dir: string, minVocab = 0): Promise<HFTokenizer> {
    const json = await readJson(join(dir, 'tokenizer.json'), 'tokenizer.json');
    const cfgPath = join(dir, 'tokenizer_config.json');
    const tcfg = (await pathExists(cfgPath)) ? await readJson(cfgPath, 'tokenizer_config.json') : {};
    let impl: HFTokenizerImpl;
    try {
      // Loaded on first use so importing the library stays light.
      const { Tokenizer: Impl } = await import('@huggingface/tokenizers');
      impl = new Impl(json, tcfg);
    } catch (e) {
      throw new ConfigError('tokenizer.json', join(dir, 'tokenizer.json'), `cannot be used: ${(e as Error).message}`);
    }
    let maxId = -1;
    for (const id of impl.get_vocab(true).values()) maxId = Math.max(maxId, id);
    const model = (json.model as { type?: string; unk_token?: string | null } | undefined) ?? {};
    const unk = typeof model.unk_token === 'string' ? impl.token_to_id(model.unk_token) ?? null : null;
    return new HFTokenizer(impl, `hf-${(model.type ?? 'tokenizer').toLowerCase()}`, Math.max(maxId + 1, minVocab), unk, dir);
  }

  encode(text: string): number[] {
    return this.impl.encode(text, { add_special_tokens: false }).ids;
  }

  /** Text to ids with the tokenizer's special tokens (BOS etc.) added, for prompting a model. */
  encodePrompt(text: string): number[] {
    return this.impl.encode(text).ids;
  }

  decode(ids: ArrayLike<number>): string {
    const list = Array.from(ids);
    list.forEach((id, i) => {
      if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) throw new RangeValueError(`ids[${i}]`, id, `token id must be an integer in [0, ${this.vocabSize})`);
    });
    return this.impl.decode(list, { skip_special_tokens: false });
  }

  tokenString(id: number): string {
    if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) throw new RangeValueError('id', id, `token id must be an integer in [0, ${this.vocabSize})`);
    if (id === this.unknownId) return '<unk>';
    if (this.impl.id_to_token(id) === undefined) return `<${id}>`;
    return this.impl.decode([id], { skip_special_tokens: false }).replace(CONTROL, (ch: string) => (ch === '\n' ? '\\n' : ch === '\t' ? '\\t' : `\\u{${ch.codePointAt(0)?.toString(16)}}`));
  }

  /** Not a built-in spec: the tokenizer is the folder's tokenizer.json (tokenizerFromJSON refuses this). */
  toJSON(): TokenizerSpec {
    return { type: 'hf-tokenizer-json', dir: this.dir } as unknown as TokenizerSpec;
  }
}

// ---------------------------------------------------------------------------------------------
// Switchyard model folders (import --out)

/** `config.json` format tag of a folder written by saveImportedModel. */
export const SWITCHYARD_MODEL_FORMAT = 'switchyard-model';

/**
 * Write `model.safetensors` (Switchyard parameter names, fp32) and `config.json`
 * ({ format, version, model: TransformerLMConfig, source }) into `outDir`, and copy the
 * tokenizer files beside them. loadModelFolder reads it back.
 */
export async function saveImportedModel(res: HFImportResult, outDir: string, srcDir?: string): Promise<void> {
  await mkdir(outDir, { recursive: true });
  await saveSafetensors(join(outDir, 'model.safetensors'), res.model.stateDict(), { format: SWITCHYARD_MODEL_FORMAT });
  const doc = {
    format: SWITCHYARD_MODEL_FORMAT,
    version: 1,
    model: res.config,
    source: { family: res.family, model_type: res.hfConfig.model_type, architectures: res.hfConfig.architectures ?? null },
    eosTokenIds: res.eosTokenIds,
  };
  await replaceFileAtomic(join(outDir, 'config.json'), JSON.stringify(doc, null, 2) + '\n');
  if (srcDir) {
    for (const f of ['tokenizer.json', 'tokenizer_config.json', 'generation_config.json']) {
      if (await pathExists(join(srcDir, f))) await copyFile(join(srcDir, f), join(outDir, f));
    }
  }
}

/** What loadModelFolder returns. */
export interface LoadedModelFolder {
  model: MoETransformerLM;
  config: TransformerLMConfig;
  tokenizer: HFTokenizer | null;
  eosTokenIds: number[];
  /** 'hf' for a Hugging Face folder, 'switchyard' for one written by saveImportedModel. */
  kind: 'hf' | 'switchyard';
  family: HFModelType | null;
}

/** Load a Hugging Face checkpoint folder or a folder written by saveImportedModel (told apart by config.json). */
export async function loadModelFolder(dir: string, opts: HFImportOptions = {}): Promise<LoadedModelFolder> {
  const root = resolve(dir);
  const cfg = await readJson(join(root, 'config.json'), 'config.json');
  if (cfg.format !== SWITCHYARD_MODEL_FORMAT) {
    const r = await loadHFModel(root, opts);
    return { model: r.model, config: r.config, tokenizer: r.tokenizer, eosTokenIds: r.eosTokenIds, kind: 'hf', family: r.family };
  }
  if (cfg.version !== 1) throw new ConfigError('config.json version', cfg.version, `unsupported ${SWITCHYARD_MODEL_FORMAT} version (expected 1)`);
  const config = cfg.model as TransformerLMConfig;
  const model = new MoETransformerLM(config);
  model.loadStateDict(await loadSafetensors(join(root, 'model.safetensors')));
  model.eval();
  const tokenizer = opts.tokenizer !== false && (await pathExists(join(root, 'tokenizer.json'))) ? await HFTokenizer.fromDir(root, config.vocabSize) : null;
  const src = cfg.source as { family?: HFModelType } | undefined;
  return { model, config, tokenizer, eosTokenIds: Array.isArray(cfg.eosTokenIds) ? (cfg.eosTokenIds as number[]) : [], kind: 'switchyard', family: src?.family ?? null };
}
