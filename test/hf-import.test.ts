/**
 * Hugging Face import: tiny checkpoints in each family's exact layout (test/helpers/hf-fixtures.ts)
 * must give the logits of the PyTorch reference implementations written from Hugging Face's
 * modeling code (scripts/fixtures/make_hf_goldens.py → test/fixtures/hf/*.json), and everything
 * unsupported must be refused with a ConfigError naming the config field or tensor.
 */
import { open, rm } from 'node:fs/promises';
import { afterAll, describe, expect, it } from 'vitest';
import { ConfigError, KVCache, MoELayer, MultiHeadLatentAttention, noGrad, Tensor } from '../src/index.js';
import { decodeSafetensorsTensor, HF_MODEL_TYPES, hfConfigToSwitchyard, loadHFModel, loadModelFolder, saveImportedModel } from '../src/io/index.js';
import { HF_CASES, loadHFCase, tempCheckpointDir, writeHFCheckpoint, type HFCase, type HFCaseName, type WriteOptions } from './helpers/hf-fixtures.js';

const dirs: string[] = [];
afterAll(async () => {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

function checkpoint(c: HFCase, opts?: WriteOptions): string {
  const dir = tempCheckpointDir(c.name);
  dirs.push(dir);
  return writeHFCheckpoint(dir, c, opts);
}

function logitsOf(model: Awaited<ReturnType<typeof loadHFModel>>['model'], ids: number[][]): Float32Array {
  return noGrad(() => model.forward(Tensor.indices(ids.flat(), [ids.length, ids[0].length])).logits.f32);
}

/** max |a − e| / max |e| ≤ tol (relative to the logits' scale) and elementwise rtol with that floor. */
function expectLogitsClose(actual: Float32Array, expected: Float32Array, rtol: number, label: string): void {
  expect(actual.length, `${label} length`).toBe(expected.length);
  let scale = 0;
  for (const v of expected) scale = Math.max(scale, Math.abs(v));
  let worst = 0, at = -1;
  for (let i = 0; i < expected.length; i++) {
    const err = Math.abs(actual[i] - expected[i]) / (Math.abs(expected[i]) + 1e-2 * scale);
    if (!(err <= worst)) {
      worst = err;
      at = i;
    }
  }
  expect(worst, `${label}: worst relative error at ${at}: got ${actual[at]}, expected ${expected[at]}`).toBeLessThanOrEqual(rtol);
}

async function refusal(p: Promise<unknown>): Promise<ConfigError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return e as ConfigError;
  }
  throw new Error('expected a ConfigError, but the import succeeded');
}

describe('Hugging Face import: logits match the PyTorch references', () => {
  it('covers every supported model_type', () => {
    const types = new Set(HF_CASES.map((n) => loadHFCase(n).modelType));
    for (const t of HF_MODEL_TYPES) expect(types.has(t), t).toBe(true);
  });

  for (const name of HF_CASES) {
    it(`${name}: logits within 1e-4 relative of the reference`, async () => {
      const c = loadHFCase(name as HFCaseName);
      expect(c.source).toBe('scripts/fixtures/make_hf_goldens.py');
      const res = await loadHFModel(checkpoint(c));
      expect(res.family).toBe(c.modelType);
      const logits = logitsOf(res.model, c.inputIds);
      expect([c.inputIds.length, c.inputIds[0].length, res.config.vocabSize]).toEqual(c.logits.shape);
      expectLogitsClose(logits, c.logits.data, 1e-4, name);
      // Every MoE layer routed something; every parameter came from the files.
      expect(res.model.moeLayers().length).toBeGreaterThan(0);
      expect(res.tensors.size).toBe(Object.keys(res.model.stateDict()).length);
    });

    it(`${name}: incremental decoding with the KV cache gives the full-sequence logits`, async () => {
      const c = loadHFCase(name as HFCaseName);
      const { model } = await loadHFModel(checkpoint(c));
      const ids = c.inputIds[1];
      const full = logitsOf(model, [ids]);
      const V = model.config.vocabSize;
      const cache = new KVCache(model.config.nLayers);
      noGrad(() => {
        // Two tokens, then one at a time.
        let pos = 0;
        for (const n of [2, 1, 1, 1, 1, 1]) {
          const step = model.forward(Tensor.indices(ids.slice(pos, pos + n), [1, n]), { cache }).logits.f32;
          expectLogitsClose(step, full.subarray(pos * V, (pos + n) * V), 1e-5, `${name} cached step at ${pos}`);
          pos += n;
        }
      });
    });
  }

  it('family specifics reach the model: GQA, head_dim, biases, q/k norms, clip, tied head, dense layers, MLA, shared gate', async () => {
    const mix = hfConfigToSwitchyard(loadHFCase('mixtral').config).config;
    expect(mix).toMatchObject({ nKVHeads: 2, tieEmbeddings: false, ropeTheta: 1e6, normEps: 1e-5, moe: { numExperts: 4, router: { type: 'topk', k: 2, normalize: true } } });
    const q2 = hfConfigToSwitchyard(loadHFCase('qwen2_moe').config).config;
    expect(q2).toMatchObject({ attentionBias: true, denseLayers: [1], moe: { dFF: 12, numSharedExperts: 1, sharedDFF: 20, sharedExpertGate: true, router: { normalize: false } } });
    expect(q2.attentionOutputBias).toBeUndefined();
    const q3 = hfConfigToSwitchyard(loadHFCase('qwen3_moe').config).config;
    expect(q3).toMatchObject({ headDim: 8, qkNorm: 'head', tieEmbeddings: true, ropeTheta: 1e6 });
    const ol = hfConfigToSwitchyard(loadHFCase('olmoe').config).config;
    expect(ol).toMatchObject({ qkNorm: 'full', clipQKV: 1.5, normEps: 1e-5 });
    const ds = hfConfigToSwitchyard(loadHFCase('deepseek_v3').config).config;
    expect(ds).toMatchObject({
      denseLayers: [0],
      mla: { qLoraRank: 20, kvLoraRank: 12, qkNopeHeadDim: 8, qkRopeHeadDim: 4, vHeadDim: 6 },
      moe: { numExperts: 8, dFF: 8, numSharedExperts: 1, sharedDFF: 16, router: { scoring: 'sigmoid', groups: { numGroups: 4, topkGroups: 2 }, routedScalingFactor: 2.5, selectionBias: true, normalize: true } },
    });
    const { model } = await loadHFModel(checkpoint(loadHFCase('deepseek_v3')));
    expect(model.layers.items[0].mlp).not.toBeInstanceOf(MoELayer);
    expect(model.layers.items[1].mlp).toBeInstanceOf(MoELayer);
    expect(model.layers.items[1].self_attn).toBeInstanceOf(MultiHeadLatentAttention);
    const layer = model.layers.items[1].mlp as MoELayer;
    expect(layer.gate.bias).not.toBeNull();
    const q3model = (await loadHFModel(checkpoint(loadHFCase('qwen3_moe')))).model;
    expect(q3model.lm_head).toBeNull();
  });
});

describe('Hugging Face import: file layouts and dtypes', () => {
  it('BF16 values stored as F32 (single file) and as BF16 (two shards) load to the same bits', async () => {
    const c = loadHFCase('qwen3_moe');
    const a = await loadHFModel(checkpoint(c, { dtype: 'F32', shards: 1 }));
    const b = await loadHFModel(checkpoint(c, { dtype: 'BF16', shards: 2 }));
    expect(Array.from(logitsOf(a.model, c.inputIds))).toEqual(Array.from(logitsOf(b.model, c.inputIds)));
    expect(b.tensors.get('layers.0.self_attn.q_proj.weight')?.dtype).toBe('BF16');
    expect(new Set([...b.tensors.values()].map((s) => s.file)).size).toBe(2);
  });

  it('F16 weights decode exactly (olmoe F16 vs the same values as F32)', async () => {
    const c = loadHFCase('olmoe');
    const a = await loadHFModel(checkpoint(c));
    const b = await loadHFModel(checkpoint(c, { dtype: 'F32' }));
    expect(a.tensors.get('embed_tokens.weight')?.dtype).toBe('F16');
    expect(Array.from(logitsOf(a.model, c.inputIds))).toEqual(Array.from(logitsOf(b.model, c.inputIds)));
  });

  it('transformers v5 fused expert tensors (experts.gate_up_proj / down_proj) give the same model', async () => {
    for (const name of ['qwen3_moe', 'mixtral', 'deepseek_v3'] as const) {
      const c = loadHFCase(name);
      // v5 also renames Mixtral's block_sparse_moe.gate to mlp.gate.
      const rename = name === 'mixtral' ? Object.fromEntries([0, 1].map((l) => [`model.layers.${l}.block_sparse_moe.gate.weight`, `model.layers.${l}.mlp.gate.weight`])) : undefined;
      const res = await loadHFModel(checkpoint(c, { fusedExperts: true, rename }));
      expect(res.tensors.get('layers.1.mlp.experts.1.w3.weight')?.name).toBe('model.layers.1.mlp.experts.gate_up_proj');
      expectLogitsClose(logitsOf(res.model, c.inputIds), c.logits.data, 1e-4, `${name} fused`);
    }
  });

  it('deferExperts leaves routed experts on disk and reports where each one is (positioned reads give its values)', async () => {
    const c = loadHFCase('deepseek_v3');
    const res = await loadHFModel(checkpoint(c), { deferExperts: true });
    const expertParams = Object.entries(res.model.stateDict()).filter(([n]) => /\.mlp\.experts\.\d+\./.test(n));
    expect(expertParams.length).toBeGreaterThan(0);
    for (const [, t] of expertParams) expect(t.size).toBe(0);
    const src = res.tensors.get('layers.2.mlp.experts.5.w2.weight');
    expect(src?.expert).toBe(true);
    const fh = await open(src!.file, 'r');
    const raw = new Uint8Array(src!.byteLength);
    await fh.read(raw, 0, raw.length, src!.byteOffset);
    await fh.close();
    const t = decodeSafetensorsTensor(src!.name, { dtype: src!.dtype, shape: src!.shape, dataOffsets: [0, raw.length] }, raw);
    const want = c.tensors.find((x) => x.name === 'model.layers.2.mlp.experts.5.down_proj.weight')!;
    expect(t.shape).toEqual(want.shape);
    expect(Array.from(t.f32)).toEqual(Array.from(want.data));
    // Non-expert weights are loaded.
    expect(Array.from(res.model.stateDict()['layers.2.mlp.gate.e_score_correction_bias'].f32)).toEqual(Array.from(c.tensors.find((x) => x.name === 'model.layers.2.mlp.gate.e_score_correction_bias')!.data));
  });

  it('tensors of multi-token-prediction layers beyond num_hidden_layers are ignored with a note', async () => {
    const c = loadHFCase('deepseek_v3');
    const extra = { name: 'model.layers.3.eh_proj.weight', shape: [16, 32], data: new Float32Array(512) };
    const res = await loadHFModel(checkpoint(c, { extra: [extra] }));
    expect(res.notes.join('\n')).toMatch(/ignored 1 tensors of layers beyond num_hidden_layers/);
  });

  it('reads generation_config.json for the end-of-sequence ids', async () => {
    const res = await loadHFModel(checkpoint(loadHFCase('qwen3_moe')), { weights: false });
    expect(res.eosTokenIds).toEqual([0]);
    expect(res.generationConfig).toMatchObject({ temperature: 0.6 });
  });

  it('a sliding window becomes a context cap (exact), and a longer context is refused naming sliding_window', async () => {
    const c = loadHFCase('mixtral');
    const dir = checkpoint(c, { config: { sliding_window: 16 } });
    const res = await loadHFModel(dir);
    expect(res.model.config.maxSeqLen).toBe(16);
    expect(res.notes.join('\n')).toMatch(/sliding_window=16/);
    expectLogitsClose(logitsOf(res.model, c.inputIds), c.logits.data, 1e-4, 'mixtral capped');
    const e = await refusal(loadHFModel(dir, { maxSeqLen: 32 }));
    expect(e.field).toBe('sliding_window');
    // Qwen: only when use_sliding_window is true.
    const q = loadHFCase('qwen2_moe');
    expect((await loadHFModel(checkpoint(q), { weights: false })).model.config.maxSeqLen).toBe(64);
    expect((await loadHFModel(checkpoint(q, { config: { use_sliding_window: true } }), { weights: false })).model.config.maxSeqLen).toBe(32);
  });
});

describe('Hugging Face import: tokenizer.json', () => {
  it('wraps tokenizer.json as a Tokenizer (encode, decode, tokenString, vocabSize) and generates from a prompt', async () => {
    const c = loadHFCase('mixtral');
    const res = await loadHFModel(checkpoint(c, { tokenizer: true }));
    const tok = res.tokenizer!;
    expect(tok).not.toBeNull();
    expect(tok.vocabSize).toBe(48);
    const ids = tok.encode('hello world the');
    expect(ids).toEqual([31, 36, 38]);
    expect(tok.decode(ids)).toBe('hello world the');
    expect(tok.tokenString(36)).toBe(' world');
    expect(() => tok.decode([48])).toThrow(/\[0, 48\)/);
    const out = res.model.generate(tok.encodePrompt('hello world'), 4, { temperature: 0 });
    expect(out).toHaveLength(4);
    expect(typeof tok.decode(out)).toBe('string');
  });

  it('no tokenizer.json: tokenizer is null', async () => {
    const res = await loadHFModel(checkpoint(loadHFCase('olmoe')), { weights: false });
    expect(res.tokenizer).toBeNull();
  });
});

describe('Hugging Face import: Switchyard model folders (import --out)', () => {
  it('saveImportedModel → loadModelFolder round-trips to identical logits', async () => {
    const c = loadHFCase('deepseek_v3');
    const src = checkpoint(c, { tokenizer: true });
    const res = await loadHFModel(src);
    const out = tempCheckpointDir('out');
    dirs.push(out);
    await saveImportedModel(res, out, src);
    const back = await loadModelFolder(out);
    expect(back.kind).toBe('switchyard');
    expect(back.family).toBe('deepseek_v3');
    expect(back.tokenizer?.vocabSize).toBe(48);
    expect(Array.from(logitsOf(back.model, c.inputIds))).toEqual(Array.from(logitsOf(res.model, c.inputIds)));
    const hf = await loadModelFolder(src);
    expect(hf.kind).toBe('hf');
  });
});

describe('Hugging Face import: refusals name the config field or tensor', () => {
  const base = loadHFCase('mixtral');
  const cases: Array<[string, HFCaseName, Record<string, unknown>, string, RegExp]> = [
    ['unsupported model_type', 'mixtral', { model_type: 'llama' }, 'model_type', /unsupported architecture.*supported: mixtral/],
    ['deepseek_v2 with norm_topk_prob', 'deepseek_v2', { norm_topk_prob: true }, 'norm_topk_prob', /ambiguous/],
    ['deepseek_v2 with noaux_tc', 'deepseek_v2', { topk_method: 'noaux_tc' }, 'topk_method', /greedy/],
    ['deepseek_v2 with sigmoid scores', 'deepseek_v2', { scoring_func: 'sigmoid' }, 'scoring_func', /softmax/],
    ['dynamic rope_scaling', 'deepseek_v3', { rope_scaling: { type: 'dynamic', factor: 4 } }, 'rope_scaling', /"dynamic" is not implemented/],
    ['YaRN without a factor', 'deepseek_v3', { rope_scaling: { type: 'yarn', original_max_position_embeddings: 16 } }, 'rope_scaling.factor', /required for YaRN/],
    ['rope_parameters of another type', 'qwen3_moe', { rope_parameters: { rope_type: 'linear', factor: 2, rope_theta: 1e6 } }, 'rope_parameters', /"linear"/],
    ['quantization_config', 'deepseek_v3', { quantization_config: { quant_method: 'fp8', fmt: 'e4m3' } }, 'quantization_config', /quantized/],
    ['topk_method', 'deepseek_v3', { topk_method: 'greedy' }, 'topk_method', /noaux_tc/],
    ['scoring_func', 'deepseek_v3', { scoring_func: 'softmax' }, 'scoring_func', /sigmoid/],
    ['hidden_act', 'olmoe', { hidden_act: 'gelu' }, 'hidden_act', /silu/],
    ['num_experts_per_tok > experts', 'mixtral', { num_experts_per_tok: 5 }, 'num_experts_per_tok', /exceeds num_local_experts/],
    ['num_key_value_heads not dividing heads', 'mixtral', { num_key_value_heads: 3 }, 'num_key_value_heads', /must divide/],
    ['missing hidden_size', 'olmoe', { hidden_size: undefined }, 'hidden_size', /integer/],
    ['moe_layer_freq', 'deepseek_v3', { moe_layer_freq: 2 }, 'moe_layer_freq', /only 1/],
  ];
  for (const [label, name, patch, field, msg] of cases) {
    it(label, async () => {
      const e = await refusal(loadHFModel(checkpoint(loadHFCase(name), { config: patch })));
      expect(e.field).toBe(field);
      expect(e.message).toMatch(msg);
    });
  }

  it('a missing tensor', async () => {
    const e = await refusal(loadHFModel(checkpoint(base, { omit: ['model.layers.1.self_attn.k_proj.weight'] })));
    expect(e.field).toBe('model.layers.1.self_attn.k_proj.weight');
    expect(e.message).toMatch(/not found/);
  });

  it('a missing expert tensor (sharded DeepSeek)', async () => {
    const e = await refusal(loadHFModel(checkpoint(loadHFCase('deepseek_v3'), { omit: ['model.layers.2.mlp.experts.7.up_proj.weight'] })));
    expect(e.field).toBe('model.layers.2.mlp.experts.7.up_proj.weight');
  });

  it('an untied model without lm_head.weight', async () => {
    const e = await refusal(loadHFModel(checkpoint(base, { omit: ['lm_head.weight'] })));
    expect(e.field).toBe('lm_head.weight');
  });

  it('a bad shape', async () => {
    const bad = { name: 'model.layers.0.self_attn.q_proj.weight', shape: [8, 16], data: new Float32Array(128) };
    const e = await refusal(loadHFModel(checkpoint(base, { replace: [bad] })));
    expect(e.field).toBe('model.layers.0.self_attn.q_proj.weight');
    expect(e.message).toMatch(/shape \[8, 16\].*\[16, 16\]/);
  });

  it('a bad expert shape, even with deferExperts', async () => {
    const bad = { name: 'model.layers.1.block_sparse_moe.experts.2.w2.weight', shape: [16, 20], data: new Float32Array(320) };
    const e = await refusal(loadHFModel(checkpoint(base, { replace: [bad] }), { deferExperts: true }));
    expect(e.field).toBe('model.layers.1.block_sparse_moe.experts.2.w2.weight');
  });

  it('a quantized (F8) tensor', async () => {
    const raw = new Map([['model.layers.0.self_attn.o_proj.weight', { dtype: 'F8_E4M3', bytes: new Uint8Array(256) }]]);
    const e = await refusal(loadHFModel(checkpoint(base, { raw })));
    expect(e.field).toBe('model.layers.0.self_attn.o_proj.weight');
    expect(e.message).toMatch(/F8_E4M3/);
  });

  it('no config.json, no weights', async () => {
    const empty = tempCheckpointDir('empty');
    dirs.push(empty);
    expect((await refusal(loadHFModel(empty))).field).toBe('config.json');
    const dir = checkpoint(base);
    await rm(`${dir}/model.safetensors`);
    expect((await refusal(loadHFModel(dir))).field).toBe('model.safetensors');
  });

  it('an index naming a shard that lacks the tensor', async () => {
    const c = loadHFCase('qwen2_moe');
    const dir = checkpoint(c);
    const { readFile, writeFile } = await import('node:fs/promises');
    const idx = JSON.parse(await readFile(`${dir}/model.safetensors.index.json`, 'utf8'));
    idx.weight_map['model.norm.weight'] = 'model-00001-of-00002.safetensors';
    await writeFile(`${dir}/model.safetensors.index.json`, JSON.stringify(idx));
    const e = await refusal(loadHFModel(dir));
    expect(e.field).toBe('model.norm.weight');
  });
});

describe('switchyard import (CLI, against dist/)', async () => {
  const { spawnSync } = await import('node:child_process');
  const { existsSync } = await import('node:fs');
  const { dirname, join, resolve } = await import('node:path');
  const { fileURLToPath } = await import('node:url');
  const bin = join(resolve(dirname(fileURLToPath(import.meta.url)), '..'), 'dist', 'cli', 'main.js');
  const run = (...args: string[]) => spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', timeout: 120_000 });

  it.skipIf(!existsSync(bin))('prints a summary, writes --out, generates from --prompt; refusals are one line naming the field', async () => {
    const src = checkpoint(loadHFCase('qwen2_moe'), { tokenizer: true });
    const out = tempCheckpointDir('cli-out');
    dirs.push(out);
    const r = run('import', src, '--out', out, '--prompt', 'hello world', '--max-tokens', '3');
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^qwen2_moe \(Qwen2MoeForCausalLM\)/);
    expect(r.stdout).toMatch(/layers 3 \(2 MoE\)/);
    expect(r.stdout).toMatch(/experts: 6 routed \(top-2, softmax, hidden 12\) \+ 1 shared/);
    expect(r.stdout).toMatch(/parameters: [\d.]+K total, [\d.]+K active per token/);
    expect(r.stdout).toMatch(/weights: F32 in 2 files; tokenizer: hf-bpe/);
    expect(r.stdout).toMatch(/\nhello world/);
    expect(existsSync(join(out, 'model.safetensors')) && existsSync(join(out, 'config.json')) && existsSync(join(out, 'tokenizer.json'))).toBe(true);
    const back = await loadModelFolder(out);
    expect(back.kind).toBe('switchyard');

    const j = run('import', src, '--json');
    expect(j.status, j.stderr).toBe(0);
    const s = JSON.parse(j.stdout);
    expect(s).toMatchObject({ family: 'qwen2_moe', layers: 3, moeLayers: 2, experts: 6, topK: 2, sharedExperts: 1, files: 2 });
    expect(s.activeParameters).toBeLessThan(s.parameters);
    const loaded = await loadHFModel(src);
    expect(s.parameters).toBe(loaded.model.numParameters());
    expect(s.activeParameters).toBe(loaded.model.activeParameters());

    const v = run('import', src, '--validate-only', '--json');
    expect(v.status, v.stderr).toBe(0);
    expect(JSON.parse(v.stdout)).toMatchObject({ parameters: s.parameters, activeParameters: s.activeParameters });
    const badShape = checkpoint(loadHFCase('mixtral'), { replace: [{ name: 'model.layers.1.block_sparse_moe.experts.3.w1.weight', shape: [20, 16], data: new Float32Array(320) }] });
    expect(run('import', badShape, '--validate-only').stderr).toMatch(/^switchyard: model\.layers\.1\.block_sparse_moe\.experts\.3\.w1\.weight=\[20, 16\]: has shape/);

    const bad = checkpoint(loadHFCase('mixtral'), { config: { model_type: 'llama' } });
    const e = run('import', bad);
    expect(e.status).not.toBe(0);
    expect(e.stderr.trim().split('\n')).toHaveLength(1);
    expect(e.stderr).toMatch(/^switchyard: model_type="llama": unsupported architecture/);
    const np = run('import', checkpoint(loadHFCase('olmoe')), '--prompt', 'hi');
    expect(np.status).not.toBe(0);
    expect(np.stderr).toMatch(/--prompt="hi": needs tokenizer.json/);
    expect(run('import', '--help').stdout).toMatch(/Usage: switchyard import/);
  });
});

describe('Hugging Face import: published config.json files translate (or are refused by name)', () => {
  // The config.json of public checkpoints (trimmed of fields the importer ignores, e.g. auto_map).
  const mixtral8x7b = { architectures: ['MixtralForCausalLM'], attention_dropout: 0.0, bos_token_id: 1, eos_token_id: 2, hidden_act: 'silu', hidden_size: 4096, initializer_range: 0.02, intermediate_size: 14336, max_position_embeddings: 32768, model_type: 'mixtral', num_attention_heads: 32, num_experts_per_tok: 2, num_hidden_layers: 32, num_key_value_heads: 8, num_local_experts: 8, output_router_logits: false, rms_norm_eps: 1e-5, rope_theta: 1e6, router_aux_loss_coef: 0.02, sliding_window: null, tie_word_embeddings: false, torch_dtype: 'bfloat16', use_cache: true, vocab_size: 32000 };
  const qwen15moe = { architectures: ['Qwen2MoeForCausalLM'], attention_dropout: 0.0, bos_token_id: 151643, eos_token_id: 151643, hidden_act: 'silu', hidden_size: 2048, initializer_range: 0.02, intermediate_size: 5632, max_position_embeddings: 8192, max_window_layers: 21, model_type: 'qwen2_moe', num_attention_heads: 16, num_hidden_layers: 24, num_key_value_heads: 16, rms_norm_eps: 1e-6, rope_theta: 1e6, sliding_window: 32768, tie_word_embeddings: false, torch_dtype: 'bfloat16', use_cache: true, use_sliding_window: false, vocab_size: 151936, decoder_sparse_step: 1, moe_intermediate_size: 1408, shared_expert_intermediate_size: 5632, num_experts_per_tok: 4, num_experts: 60, norm_topk_prob: false, output_router_logits: false, router_aux_loss_coef: 0.001 };
  const qwen3_30b = { architectures: ['Qwen3MoeForCausalLM'], attention_bias: false, attention_dropout: 0.0, bos_token_id: 151643, decoder_sparse_step: 1, eos_token_id: 151645, head_dim: 128, hidden_act: 'silu', hidden_size: 2048, initializer_range: 0.02, intermediate_size: 6144, max_position_embeddings: 40960, max_window_layers: 48, mlp_only_layers: [], model_type: 'qwen3_moe', moe_intermediate_size: 768, norm_topk_prob: true, num_attention_heads: 32, num_experts: 128, num_experts_per_tok: 8, num_hidden_layers: 48, num_key_value_heads: 4, output_router_logits: false, rms_norm_eps: 1e-6, rope_scaling: null, rope_theta: 1e6, router_aux_loss_coef: 0.001, sliding_window: null, tie_word_embeddings: false, torch_dtype: 'bfloat16', use_cache: true, use_sliding_window: false, vocab_size: 151936 };
  const olmoe1b7b = { architectures: ['OlmoeForCausalLM'], attention_bias: false, attention_dropout: 0.0, clip_qkv: null, eos_token_id: 50279, hidden_act: 'silu', hidden_size: 2048, initializer_range: 0.02, intermediate_size: 1024, max_position_embeddings: 4096, model_type: 'olmoe', norm_topk_prob: false, num_attention_heads: 16, num_experts: 64, num_experts_per_tok: 8, num_hidden_layers: 16, num_key_value_heads: 16, output_router_logits: false, pad_token_id: 1, rms_norm_eps: 1e-5, rope_scaling: null, rope_theta: 10000.0, router_aux_loss_coef: 0.01, tie_word_embeddings: false, torch_dtype: 'bfloat16', use_cache: true, vocab_size: 50304 };
  const moonlight = { architectures: ['DeepseekV3ForCausalLM'], aux_loss_alpha: 0.001, bos_token_id: 163584, eos_token_id: 163585, ep_size: 1, first_k_dense_replace: 1, hidden_act: 'silu', hidden_size: 2048, initializer_range: 0.02, intermediate_size: 11264, kv_lora_rank: 512, max_position_embeddings: 8192, model_type: 'deepseek_v3', moe_intermediate_size: 1408, moe_layer_freq: 1, n_group: 1, n_routed_experts: 64, n_shared_experts: 2, norm_topk_prob: true, num_attention_heads: 16, num_experts_per_tok: 6, num_hidden_layers: 27, num_key_value_heads: 16, num_nextn_predict_layers: 0, pretraining_tp: 1, q_lora_rank: null, qk_nope_head_dim: 128, qk_rope_head_dim: 64, rms_norm_eps: 1e-5, rope_scaling: null, rope_theta: 50000.0, routed_scaling_factor: 2.446, scoring_func: 'sigmoid', seq_aux: true, tie_word_embeddings: false, topk_group: 1, topk_method: 'noaux_tc', torch_dtype: 'bfloat16', use_cache: true, v_head_dim: 128, vocab_size: 163840 };
  const deepseekV3 = { architectures: ['DeepseekV3ForCausalLM'], bos_token_id: 0, eos_token_id: 1, ep_size: 1, first_k_dense_replace: 3, hidden_act: 'silu', hidden_size: 7168, initializer_range: 0.02, intermediate_size: 18432, kv_lora_rank: 512, max_position_embeddings: 163840, model_type: 'deepseek_v3', moe_intermediate_size: 2048, moe_layer_freq: 1, n_group: 8, n_routed_experts: 256, n_shared_experts: 1, norm_topk_prob: true, num_attention_heads: 128, num_experts_per_tok: 8, num_hidden_layers: 61, num_key_value_heads: 128, num_nextn_predict_layers: 1, q_lora_rank: 1536, qk_nope_head_dim: 128, qk_rope_head_dim: 64, quantization_config: { activation_scheme: 'dynamic', fmt: 'e4m3', quant_method: 'fp8', weight_block_size: [128, 128] }, rms_norm_eps: 1e-6, rope_scaling: { beta_fast: 32, beta_slow: 1, factor: 40, mscale: 1.0, mscale_all_dim: 1.0, original_max_position_embeddings: 4096, type: 'yarn' }, rope_theta: 10000, routed_scaling_factor: 2.5, scoring_func: 'sigmoid', tie_word_embeddings: false, topk_group: 4, topk_method: 'noaux_tc', torch_dtype: 'bfloat16', use_cache: true, v_head_dim: 128, vocab_size: 129280 };

  it('Mixtral-8x7B, Qwen1.5-MoE-A2.7B, Qwen3-30B-A3B, OLMoE-1B-7B, Moonlight-16B-A3B', () => {
    expect(hfConfigToSwitchyard(mixtral8x7b).config).toMatchObject({ dModel: 4096, nLayers: 32, nKVHeads: 8, maxSeqLen: 32768, moe: { numExperts: 8, router: { k: 2, normalize: true } } });
    expect(hfConfigToSwitchyard(qwen15moe).config).toMatchObject({ maxSeqLen: 8192, attentionBias: true, moe: { numExperts: 60, dFF: 1408, sharedDFF: 5632, sharedExpertGate: true, router: { k: 4, normalize: false } } });
    expect(hfConfigToSwitchyard(qwen3_30b).config).toMatchObject({ headDim: 128, nKVHeads: 4, qkNorm: 'head', moe: { numExperts: 128, dFF: 768, router: { k: 8, normalize: true } } });
    expect(hfConfigToSwitchyard(olmoe1b7b).config).toMatchObject({ qkNorm: 'full', normEps: 1e-5, moe: { numExperts: 64, router: { k: 8, normalize: false } } });
    expect(hfConfigToSwitchyard(olmoe1b7b).config.clipQKV).toBeUndefined();
    expect(hfConfigToSwitchyard(moonlight).config).toMatchObject({
      ropeTheta: 50000,
      denseLayers: [0],
      mla: { qLoraRank: null, kvLoraRank: 512, qkNopeHeadDim: 128, qkRopeHeadDim: 64, vHeadDim: 128 },
      moe: { numExperts: 64, dFF: 1408, numSharedExperts: 1, sharedDFF: 2816, router: { k: 6, scoring: 'sigmoid', groups: null, routedScalingFactor: 2.446 } },
    });
  });

  it('accepts the attribute_map aliases of the expert count (num_local_experts ↔ num_experts)', () => {
    expect(hfConfigToSwitchyard({ ...qwen3_30b, num_experts: undefined, num_local_experts: 128 }).config.moe?.numExperts).toBe(128);
    expect(hfConfigToSwitchyard({ ...olmoe1b7b, num_experts: undefined, num_local_experts: 64 }).config.moe?.numExperts).toBe(64);
    expect(hfConfigToSwitchyard({ ...mixtral8x7b, num_local_experts: undefined, num_experts: 8 }).config.moe?.numExperts).toBe(8);
    expect(hfConfigToSwitchyard({ ...moonlight, n_routed_experts: undefined, num_local_experts: 64 }).config.moe?.numExperts).toBe(64);
  });

  it('DeepSeek-V2-Lite: greedy softmax routing, YaRN with the mscale_all_dim softmax correction', () => {
    const lite = { architectures: ['DeepseekV2ForCausalLM'], attention_bias: false, attention_dropout: 0.0, aux_loss_alpha: 0.001, bos_token_id: 100000, eos_token_id: 100001, first_k_dense_replace: 1, hidden_act: 'silu', hidden_size: 2048, initializer_range: 0.02, intermediate_size: 10944, kv_lora_rank: 512, max_position_embeddings: 163840, model_type: 'deepseek_v2', moe_intermediate_size: 1408, moe_layer_freq: 1, n_group: 1, n_routed_experts: 64, n_shared_experts: 2, norm_topk_prob: false, num_attention_heads: 16, num_experts_per_tok: 6, num_hidden_layers: 27, num_key_value_heads: 16, pretraining_tp: 1, q_lora_rank: null, qk_nope_head_dim: 128, qk_rope_head_dim: 64, rms_norm_eps: 1e-6, rope_scaling: { beta_fast: 32, beta_slow: 1, factor: 40, mscale: 0.707, mscale_all_dim: 0.707, original_max_position_embeddings: 4096, type: 'yarn' }, rope_theta: 10000, routed_scaling_factor: 1.0, scoring_func: 'softmax', seq_aux: true, tie_word_embeddings: false, topk_group: 1, topk_method: 'greedy', torch_dtype: 'bfloat16', use_cache: true, v_head_dim: 128, vocab_size: 102400 };
    const c = hfConfigToSwitchyard(lite).config;
    expect(c).toMatchObject({ denseLayers: [0], mla: { qLoraRank: null, kvLoraRank: 512 }, moe: { numExperts: 64, dFF: 1408, sharedDFF: 2816, router: { k: 6, scoring: 'softmax', groups: null, normalize: false, routedScalingFactor: 1 } } });
    expect(c.ropeYarn).toMatchObject({ factor: 40, attentionFactor: 1 });
    const m = 0.1 * 0.707 * Math.log(40) + 1;
    expect(c.attentionScale).toBeCloseTo((m * m) / Math.sqrt(192), 12);
  });

  it('DeepSeek-V3 as published: FP8 quantization_config refused; a BF16 export translates with its YaRN scaling', () => {
    expect(() => hfConfigToSwitchyard(deepseekV3)).toThrow(expect.objectContaining({ field: 'quantization_config' }));
    const bf16 = hfConfigToSwitchyard({ ...deepseekV3, quantization_config: undefined }).config;
    expect(bf16).toMatchObject({ denseLayers: [0, 1, 2], moe: { numExperts: 256, router: { groups: { numGroups: 8, topkGroups: 4 } } } });
    expect(bf16.ropeYarn).toEqual({ factor: 40, originalMaxPositionEmbeddings: 4096, betaFast: 32, betaSlow: 1, attentionFactor: 1, truncate: true });
    const m = 0.1 * Math.log(40) + 1;
    expect(bf16.attentionScale).toBeCloseTo((m * m) / Math.sqrt(192), 12);
  });
});

describe('MoETransformerLM: the generalised options', () => {
  it('validates them with ConfigErrors naming the field', async () => {
    const { MoETransformerLM } = await import('../src/index.js');
    const base = { vocabSize: 16, dModel: 16, nLayers: 2, nHeads: 4, dFF: 16, maxSeqLen: 8 };
    const bad: Array<[Record<string, unknown>, string]> = [
      [{ nKVHeads: 3 }, 'nKVHeads'],
      [{ headDim: 5 }, 'headDim'],
      [{ qkNorm: 'layer' }, 'qkNorm'],
      [{ clipQKV: -1 }, 'clipQKV'],
      [{ denseLayers: [2] }, 'denseLayers'],
      [{ tieEmbeddings: 'no' }, 'tieEmbeddings'],
      [{ mla: { qLoraRank: null, kvLoraRank: 4, qkNopeHeadDim: 4, qkRopeHeadDim: 3, vHeadDim: 4 } }, 'mla.qkRopeHeadDim'],
      [{ mla: { qLoraRank: null, kvLoraRank: 4, qkNopeHeadDim: 4, qkRopeHeadDim: 4, vHeadDim: 4 }, qkNorm: 'head' }, 'qkNorm'],
    ];
    for (const [patch, field] of bad) {
      expect(() => new MoETransformerLM({ ...base, ...patch } as never), field).toThrow(expect.objectContaining({ field }));
    }
    const router = { type: 'topk' as const, k: 2 };
    expect(() => new MoETransformerLM({ ...base, moe: { numExperts: 6, router: { ...router, groups: { numGroups: 4, topkGroups: 1 } } } })).toThrow(expect.objectContaining({ field: 'router.groups.numGroups' }));
    expect(() => new MoETransformerLM({ ...base, moe: { numExperts: 8, router: { ...router, k: 3, groups: { numGroups: 4, topkGroups: 1 } } } })).toThrow(expect.objectContaining({ field: 'router.k' }));
    expect(() => new MoETransformerLM({ ...base, moe: { numExperts: 4, router: { ...router, scoring: 'tanh' as never } } })).toThrow(expect.objectContaining({ field: 'router.scoring' }));
    expect(() => new MoETransformerLM({ ...base, moe: { numExperts: 4, router, sharedExpertGate: true } })).toThrow(expect.objectContaining({ field: 'sharedExpertGate' }));
    // Unset, none of the new keys appear in the resolved config (saved configs stay identical).
    const plain = new MoETransformerLM(base).config;
    for (const k of ['nKVHeads', 'headDim', 'attentionBias', 'qkNorm', 'clipQKV', 'tieEmbeddings', 'denseLayers', 'mla']) expect(k in plain, k).toBe(false);
  });

  it('imported models train: finite gradients reach every parameter through MLA, GQA, q/k norms, clipping and sigmoid routing', async () => {
    for (const name of ['deepseek_v3', 'olmoe', 'qwen3_moe', 'qwen2_moe'] as const) {
      const c = loadHFCase(name);
      const { model } = await loadHFModel(checkpoint(c));
      model.train();
      const ids = Tensor.indices(c.inputIds.flat(), [2, 7]);
      const targets = Tensor.indices(c.inputIds.map((r) => [...r.slice(1), r[0]]).flat(), [14]);
      const { loss } = model.loss(ids, targets);
      loss.backward();
      expect(Number.isFinite(loss.item())).toBe(true);
      let withGrad = 0, total = 0;
      for (const [n, p] of model.namedParameters()) {
        total++;
        if (!p.grad) continue;
        for (const v of p.grad.f32) expect(Number.isFinite(v), n).toBe(true);
        withGrad++;
      }
      // Experts no token picked get no gradient; everything else does.
      expect(withGrad, name).toBeGreaterThan(total / 2);
      const attn = Object.keys(model.stateDict()).filter((n) => n.includes('self_attn'));
      for (const n of attn) expect(model.stateDict()[n].grad, `${name} ${n}`).toBeTruthy();
    }
  });
});
