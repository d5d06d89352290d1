/**
 * Tiny Hugging Face checkpoints for the import tests, written in each family's exact file layout:
 * config.json (+ generation_config.json) with the real field names, safetensors with the real
 * tensor names in the case's dtype (F32, BF16 or F16), as one model.safetensors or as shards with a
 * model.safetensors.index.json. The weights, input ids and reference logits come from
 * test/fixtures/hf/<case>.json, written by scripts/fixtures/make_hf_goldens.py (PyTorch
 * reference implementations of each family). Nothing is downloaded.
 */
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const FIXTURES = join(dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'hf');

export const HF_CASES = ['mixtral', 'qwen2_moe', 'qwen3_moe', 'olmoe', 'deepseek_v3', 'deepseek_v3_plain', 'deepseek_v3_yarn', 'qwen3_moe_yarn', 'deepseek_v2'] as const;
export type HFCaseName = (typeof HF_CASES)[number];

export interface HFTensor {
  name: string;
  shape: number[];
  data: Float32Array;
}

/** One golden case: config, weights (fp32 values, exactly representable in the case's dtype), ids, expected logits. */
export interface HFCase {
  name: string;
  modelType: string;
  description: string;
  dtype: 'F32' | 'BF16' | 'F16';
  shards: number;
  config: Record<string, unknown>;
  generationConfig: Record<string, unknown> | null;
  tensors: HFTensor[];
  inputIds: number[][];
  logits: { shape: number[]; data: Float32Array };
  source: string;
}

function f32(b64: string): Float32Array {
  const buf = Buffer.from(b64, 'base64');
  const out = new Float32Array(buf.length / 4);
  for (let i = 0; i < out.length; i++) out[i] = buf.readFloatLE(4 * i);
  return out;
}

/** Read test/fixtures/hf/<name>.json. */
export function loadHFCase(name: HFCaseName): HFCase {
  const doc = JSON.parse(readFileSync(join(FIXTURES, `${name}.json`), 'utf8'));
  return {
    name: doc.name,
    modelType: doc.model_type,
    description: doc.description,
    dtype: doc.dtype,
    shards: doc.shards,
    config: doc.config,
    generationConfig: doc.generation_config,
    tensors: doc.tensors.map((t: { name: string; shape: number[]; data: string }) => ({ name: t.name, shape: t.shape, data: f32(t.data) })),
    inputIds: doc.input_ids,
    logits: { shape: doc.logits.shape, data: f32(doc.logits.data) },
    source: doc.source,
  };
}

// --- 16-bit encodings (round to nearest even; exact for values the fixture already rounded) ----

const scratch = new DataView(new ArrayBuffer(4));

function f32Bits(v: number): number {
  scratch.setFloat32(0, v, true);
  return scratch.getUint32(0, true);
}

export function toBF16Bits(v: number): number {
  const u = f32Bits(v);
  if ((u & 0x7f800000) === 0x7f800000 && (u & 0x7fffff)) return (u >>> 16) | 0x40; // NaN stays NaN
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

export function toF16Bits(v: number): number {
  const u = f32Bits(v);
  const sign = (u >>> 16) & 0x8000;
  const exp = (u >>> 23) & 0xff;
  let mant = u & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >>> shift;
    const rem = mant & ((1 << shift) - 1), mid = 1 << (shift - 1);
    if (rem > mid || (rem === mid && half & 1)) half++;
    return sign | half;
  }
  let half = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && half & 1)) half++;
  return sign | half;
}

function encode(t: HFTensor, dtype: string): Uint8Array {
  const n = t.data.length;
  if (dtype === 'F32') {
    const out = new Uint8Array(4 * n);
    const view = new DataView(out.buffer);
    for (let i = 0; i < n; i++) view.setFloat32(4 * i, t.data[i], true);
    return out;
  }
  const out = new Uint8Array(2 * n);
  const view = new DataView(out.buffer);
  const enc = dtype === 'BF16' ? toBF16Bits : toF16Bits;
  for (let i = 0; i < n; i++) view.setUint16(2 * i, enc(t.data[i]), true);
  return out;
}

/** A safetensors file as the reference writer lays it out (metadata first, header padded to 8 bytes). */
export function safetensorsBytes(tensors: Array<HFTensor & { dtype?: string }>, dtype: string, rawOverride?: Map<string, { dtype: string; bytes: Uint8Array }>): Uint8Array {
  const parts: string[] = ['"__metadata__":{"format":"pt"}'];
  const blobs: Uint8Array[] = [];
  let offset = 0;
  for (const t of tensors) {
    const raw = rawOverride?.get(t.name);
    const dt = raw?.dtype ?? t.dtype ?? dtype;
    const bytes = raw?.bytes ?? encode(t, dt);
    parts.push(`${JSON.stringify(t.name)}:{"dtype":"${dt}","shape":${JSON.stringify(t.shape)},"data_offsets":[${offset},${offset + bytes.length}]}`);
    blobs.push(bytes);
    offset += bytes.length;
  }
  const json = Buffer.from(`{${parts.join(',')}}`, 'utf8');
  const n = Math.ceil(json.length / 8) * 8;
  const out = new Uint8Array(8 + n + offset);
  new DataView(out.buffer).setUint32(0, n, true);
  out.set(json, 8);
  out.fill(0x20, 8 + json.length, 8 + n);
  let at = 8 + n;
  for (const b of blobs) {
    out.set(b, at);
    at += b.length;
  }
  return out;
}

export interface WriteOptions {
  /** Override the case's storage dtype. */
  dtype?: 'F32' | 'BF16' | 'F16';
  /** Override the shard count (1 = model.safetensors). */
  shards?: number;
  /** Shallow changes to config.json (a value of undefined deletes the key). */
  config?: Record<string, unknown>;
  /** Tensors left out of the files. */
  omit?: string[];
  /** Replace tensors (e.g. a wrong shape). */
  replace?: HFTensor[];
  /** Store tensors in a dtype of their own with raw bytes (e.g. an F8 weight). */
  raw?: Map<string, { dtype: string; bytes: Uint8Array }>;
  /** Rename tensors (old name → new name), e.g. transformers v5's mlp.gate for Mixtral's block_sparse_moe.gate. */
  rename?: Record<string, string>;
  /** Extra tensors added to the last file. */
  extra?: HFTensor[];
  /** Write transformers-v5 fused expert tensors (experts.gate_up_proj / experts.down_proj) instead of per-expert ones. */
  fusedExperts?: boolean;
  /** Write a small byte-level BPE tokenizer.json (+ tokenizer_config.json). */
  tokenizer?: boolean;
}

/** Per-expert tensors → transformers v5 fused [E, 2I, H] gate_up_proj and [E, H, I] down_proj. */
function fuseExperts(tensors: HFTensor[]): HFTensor[] {
  const out: HFTensor[] = [];
  const groups = new Map<string, Map<number, Record<string, HFTensor>>>();
  const fused = new Map<string, HFTensor[]>();
  for (const t of tensors) {
    const m = /^(model\.layers\.\d+)\.(?:mlp|block_sparse_moe)\.experts\.(\d+)\.(\w+)\.weight$/.exec(t.name);
    if (!m) {
      out.push(t);
      continue;
    }
    const role = { w1: 'gate', gate_proj: 'gate', w3: 'up', up_proj: 'up', w2: 'down', down_proj: 'down' }[m[3]] as string;
    if (!groups.has(m[1])) {
      groups.set(m[1], new Map());
      out.push({ name: `__placeholder__${m[1]}`, shape: [], data: new Float32Array(0) });
    }
    const g = groups.get(m[1]) as Map<number, Record<string, HFTensor>>;
    const e = Number(m[2]);
    if (!g.has(e)) g.set(e, {});
    (g.get(e) as Record<string, HFTensor>)[role] = t;
  }
  for (const [layer, g] of groups) {
    const E = g.size;
    const first = g.get(0) as Record<string, HFTensor>;
    const [I, H] = first.gate.shape;
    const gu = new Float32Array(E * 2 * I * H), dn = new Float32Array(E * H * I);
    for (let e = 0; e < E; e++) {
      const ex = g.get(e) as Record<string, HFTensor>;
      gu.set(ex.gate.data, e * 2 * I * H);
      gu.set(ex.up.data, e * 2 * I * H + I * H);
      dn.set(ex.down.data, e * H * I);
    }
    fused.set(`__placeholder__${layer}`, [
      { name: `${layer}.mlp.experts.gate_up_proj`, shape: [E, 2 * I, H], data: gu },
      { name: `${layer}.mlp.experts.down_proj`, shape: [E, H, I], data: dn },
    ]);
  }
  return out.flatMap((t) => fused.get(t.name) ?? [t]);
}

/** The tiny tokenizer.json: byte-level BPE over a-z, 'Ġ' and a few merges (ids below 48). */
export function tinyTokenizerJson(): Record<string, unknown> {
  const vocab: Record<string, number> = { '<|endoftext|>': 0 };
  for (const c of 'abcdefghijklmnopqrstuvwxyz') vocab[c] = Object.keys(vocab).length;
  vocab['Ġ'] = Object.keys(vocab).length;
  const merges = [['h', 'e'], ['l', 'l'], ['he', 'll'], ['hell', 'o'], ['Ġ', 'w'], ['o', 'r'], ['Ġw', 'or'], ['Ġwor', 'l'], ['Ġworl', 'd'], ['Ġ', 't'], ['Ġt', 'he']];
  for (const [a, b] of merges) vocab[a + b] = Object.keys(vocab).length;
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [{ id: 0, content: '<|endoftext|>', single_word: false, lstrip: false, rstrip: false, normalized: false, special: true }],
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: null,
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, ignore_merges: false, vocab, merges: merges.map(([a, b]) => `${a} ${b}`) },
  };
}

/** Write `c` as a Hugging Face checkpoint folder in `dir` (created if needed); returns dir. */
export function writeHFCheckpoint(dir: string, c: HFCase, opts: WriteOptions = {}): string {
  mkdirSync(dir, { recursive: true });
  const config: Record<string, unknown> = { ...c.config };
  for (const [k, v] of Object.entries(opts.config ?? {})) {
    if (v === undefined) delete config[k];
    else config[k] = v;
  }
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config, null, 2));
  if (c.generationConfig) writeFileSync(join(dir, 'generation_config.json'), JSON.stringify(c.generationConfig, null, 2));
  const replaced = new Map((opts.replace ?? []).map((t) => [t.name, t]));
  let tensors = c.tensors.filter((t) => !(opts.omit ?? []).includes(t.name)).map((t) => replaced.get(t.name) ?? t);
  if (opts.rename) tensors = tensors.map((t) => (opts.rename?.[t.name] ? { ...t, name: opts.rename[t.name] } : t));
  if (opts.fusedExperts) tensors = fuseExperts(tensors);
  tensors.push(...(opts.extra ?? []));
  const dtype = opts.dtype ?? c.dtype;
  const shards = opts.shards ?? c.shards;
  if (shards <= 1) {
    writeFileSync(join(dir, 'model.safetensors'), safetensorsBytes(tensors, dtype, opts.raw));
  } else {
    const per = Math.ceil(tensors.length / shards);
    const weightMap: Record<string, string> = {};
    let total = 0;
    for (let s = 0; s < shards; s++) {
      const file = `model-${String(s + 1).padStart(5, '0')}-of-${String(shards).padStart(5, '0')}.safetensors`;
      const part = tensors.slice(s * per, (s + 1) * per);
      const bytes = safetensorsBytes(part, dtype, opts.raw);
      writeFileSync(join(dir, file), bytes);
      for (const t of part) weightMap[t.name] = file;
      total += bytes.length;
    }
    writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }, null, 2));
  }
  if (opts.tokenizer) {
    writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(tinyTokenizerJson()));
    writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ tokenizer_class: 'PreTrainedTokenizerFast', eos_token: '<|endoftext|>', add_bos_token: false }));
  }
  return dir;
}

/** A fresh temp directory for one checkpoint. */
export function tempCheckpointDir(label: string): string {
  return mkdtempSync(join(tmpdir(), `switchyard-hf-${label}-`));
}
