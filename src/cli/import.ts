/**
 * `switchyard import <dir>`: validate and load a Hugging Face MoE checkpoint folder (Mixtral,
 * Qwen2-MoE, Qwen3-MoE, OLMoE, DeepSeek-V2, DeepSeek-V3), print what it is, optionally write a Switchyard
 * model folder (`--out`) and generate a few tokens from a prompt as a smoke test.
 */
import { Command } from 'commander';
import { ConfigError } from '../errors.js';
import { loadHFModel, saveImportedModel, type HFImportResult } from '../io/hf-import.js';
import { MoELayer } from '../moe/layer.js';
import { intOption, numberOption } from './common.js';

/** Compact parameter counts: 1234 → 1.23K, 7e9 → 7.00B. */
export function formatCount(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)}B`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(2)}K`;
  return String(n);
}

/**
 * Total and per-token active parameters from the tensors the import mapped (so they are right even
 * when the experts were left on disk): routed experts count k/E each, everything else fully.
 */
export function parameterCounts(res: HFImportResult): { parameters: number; activeParameters: number } {
  let total = 0, active = 0;
  for (const [name, src] of res.tensors) {
    const n = src.shape.reduce((a, b) => a * b, 1);
    total += n;
    if (!src.expert) {
      active += n;
      continue;
    }
    const layer = Number(/^layers\.(\d+)\./.exec(name)?.[1]);
    const mlp = res.model.layers.items[layer]?.mlp;
    const r = mlp instanceof MoELayer ? mlp.config.router : null;
    active += r && r.type === 'topk' && mlp instanceof MoELayer ? (n * r.k) / mlp.config.numExperts : n;
  }
  return { parameters: total, activeParameters: Math.round(active) };
}

/** The facts `import` prints, as a plain object (also the --json output). */
export function importSummary(res: HFImportResult): Record<string, unknown> {
  const c = res.model.config;
  const moe = res.model.moeLayers();
  const first: MoELayer | undefined = moe[0];
  const router = first?.config.router;
  const files = new Set([...res.tensors.values()].map((s) => s.file));
  const dtypes = [...new Set([...res.tensors.values()].map((s) => s.dtype))];
  const attention = c.mla
    ? `multi-head latent (q_lora ${c.mla.qLoraRank ?? 'none'}, kv_lora ${c.mla.kvLoraRank}, rope ${c.mla.qkRopeHeadDim})`
    : `${c.nHeads} heads, ${c.nKVHeads ?? c.nHeads} kv heads, head size ${c.headDim ?? c.dModel / c.nHeads}${c.qkNorm ? `, q/k norm ${c.qkNorm}` : ''}`;
  return {
    family: res.family,
    architectures: res.hfConfig.architectures ?? null,
    layers: c.nLayers,
    moeLayers: moe.length,
    dModel: c.dModel,
    vocabSize: c.vocabSize,
    maxSeqLen: c.maxSeqLen,
    attention,
    experts: first ? first.config.numExperts : 0,
    topK: router?.type === 'topk' ? router.k : null,
    scoring: router?.type === 'topk' ? router.scoring : null,
    sharedExperts: first?.config.numSharedExperts ?? 0,
    expertDFF: first?.config.dFF ?? null,
    ...parameterCounts(res),
    files: files.size,
    dtypes,
    tokenizer: res.tokenizer ? res.tokenizer.name : null,
    notes: res.notes,
  };
}

interface ImportOptions {
  out?: string;
  prompt?: string;
  maxTokens: number;
  temperature: number;
  seed: number;
  maxSeqLen?: number;
  json?: boolean;
  validateOnly?: boolean;
}

export function importCommand(): Command {
  return new Command('import')
    .description('load a Hugging Face MoE checkpoint folder (mixtral, qwen2_moe, qwen3_moe, olmoe, deepseek_v2, deepseek_v3): summary, --out, --prompt')
    .argument('<dir>', 'folder with config.json and model.safetensors (or model.safetensors.index.json + shards)')
    .option('--out <dir>', 'write a Switchyard model folder (model.safetensors + config.json + tokenizer files)')
    .option('--prompt <text>', 'generate a few tokens after this text (needs tokenizer.json)')
    .option('--max-tokens <n>', 'tokens to generate with --prompt', intOption('--max-tokens'), 16)
    .option('--temperature <x>', 'sampling temperature (0 = greedy)', numberOption('--temperature', { min: 0 }), 0)
    .option('--seed <n>', 'sampling seed', intOption('--seed', 0), 0)
    .option('--max-seq-len <n>', 'context length (default: max_position_embeddings, capped at a sliding window)', intOption('--max-seq-len'))
    .option('--json', 'print the summary as JSON')
    .option('--validate-only', 'check config.json and the tensor headers (names, shapes, dtypes) without reading weights')
    .action(async (dir: string, o: ImportOptions) => {
      if (o.validateOnly && (o.out || o.prompt !== undefined)) throw new ConfigError('--validate-only', true, 'cannot be combined with --out or --prompt');
      const res = await loadHFModel(dir, { maxSeqLen: o.maxSeqLen, ...(o.validateOnly ? { weights: false, deferExperts: true } : {}) });
      const s = importSummary(res);
      if (o.json) console.log(JSON.stringify(s));
      else {
        console.log(`${s.family} (${(s.architectures as string[] | null)?.join(', ') ?? 'no architectures field'}) from ${dir}`);
        console.log(`  layers ${s.layers} (${s.moeLayers} MoE), d_model ${s.dModel}, vocab ${s.vocabSize}, context ${s.maxSeqLen}`);
        console.log(`  attention: ${s.attention}`);
        if (s.experts) {
          console.log(`  experts: ${s.experts} routed (top-${s.topK}, ${s.scoring}, hidden ${s.expertDFF})${s.sharedExperts ? ` + ${s.sharedExperts} shared` : ''}`);
        }
        console.log(`  parameters: ${formatCount(s.parameters as number)} total, ${formatCount(s.activeParameters as number)} active per token`);
        console.log(`  weights: ${(s.dtypes as string[]).join('/')} in ${s.files} file${s.files === 1 ? '' : 's'}; tokenizer: ${s.tokenizer ?? 'none (no tokenizer.json)'}`);
        for (const n of res.notes) console.log(`  note: ${n}`);
        if (o.validateOnly) console.log('valid: config and every tensor header check out (weights not read)');
      }
      if (o.out) {
        await saveImportedModel(res, o.out, dir);
        if (!o.json) console.log(`wrote ${o.out}/model.safetensors and config.json`);
      }
      if (o.prompt !== undefined) {
        if (!res.tokenizer) throw new ConfigError('--prompt', o.prompt, `needs tokenizer.json in ${dir}`);
        const ids = res.tokenizer.encodePrompt(o.prompt);
        if (ids.length === 0) throw new ConfigError('--prompt', o.prompt, 'encodes to no tokens');
        let out = res.model.generate(ids, o.maxTokens, { temperature: o.temperature, seed: o.seed });
        const stop = out.findIndex((t) => res.eosTokenIds.includes(t));
        if (stop >= 0) out = out.slice(0, stop);
        const text = res.tokenizer.decode(out);
        if (o.json) console.log(JSON.stringify({ prompt: o.prompt, ids: out, text }));
        else console.log(`${o.prompt}${text}`);
      }
    });
}
