/**
 * The language-model run spec from a JSON config file and/or flags (flags win), validated with
 * zod so a bad file is refused with the offending path and value.
 */
import { readFileSync } from 'node:fs';
import { Command } from 'commander';
import { z } from 'zod';
import { ConfigError } from '../errors.js';
import type { RouterConfig } from '../moe/config.js';
import { DEMO_LM, DEMO_TRAIN } from '../train/presets.js';
import type { LMRunSpec } from '../train/lm-run.js';
import { intOption, numberOption } from './common.js';

const routerSchema = z.union([
  z.object({
    type: z.literal('topk'),
    k: z.number().int().positive(),
    normalize: z.boolean().optional(),
    noise: z.union([z.object({ type: z.literal('jitter'), eps: z.number() }), z.object({ type: z.literal('gaussian') }), z.null()]).optional(),
    capacityFactor: z.number().positive().nullable().optional(),
    dropPolicy: z.enum(['position', 'score']).optional(),
    capacityScope: z.enum(['batch', 'sequence']).optional(),
    biasBalancing: z.object({ rate: z.number().nonnegative() }).nullable().optional(),
  }).strict(),
  z.object({ type: z.literal('expert-choice'), capacityFactor: z.number().positive().optional() }).strict(),
  z.object({ type: z.literal('soft'), slotsPerExpert: z.number().int().positive() }).strict(),
]);

const expertSchema = z.object({ activation: z.enum(['relu', 'gelu', 'silu']), gated: z.boolean() }).strict();

const fileSchema = z
  .object({
    name: z.string().optional(),
    corpus: z.string().optional(),
    tokenizer: z.enum(['char', 'byte', 'bpe']).optional(),
    model: z
      .object({
        dModel: z.number().int().positive().optional(),
        nLayers: z.number().int().positive().optional(),
        nHeads: z.number().int().positive().optional(),
        dFF: z.number().int().positive().optional(),
        maxSeqLen: z.number().int().positive().optional(),
        moeEvery: z.number().int().positive().optional(),
        ffn: expertSchema.optional(),
        ropeTheta: z.number().positive().optional(),
        seed: z.number().int().optional(),
        moe: z
          .object({
            numExperts: z.number().int(),
            router: routerSchema,
            expert: expertSchema.optional(),
            dFF: z.number().int().positive().optional(),
            numSharedExperts: z.number().int().nonnegative().optional(),
            sharedDFF: z.number().int().positive().optional(),
            losses: z
              .object({
                balance: z.number().nonnegative().optional(),
                zLoss: z.number().nonnegative().optional(),
                importance: z.number().nonnegative().optional(),
                load: z.number().nonnegative().optional(),
                biasBalancing: z.object({ rate: z.number().nonnegative() }).nullable().optional(),
              })
              .strict()
              .optional(),
          })
          .strict()
          .nullable()
          .optional(),
      })
      .strict()
      .optional(),
    train: z
      .object({
        batchSize: z.number().int().positive().optional(),
        seqLen: z.number().int().positive().optional(),
        steps: z.number().int().positive().optional(),
        lr: z.number().positive().optional(),
        warmupSteps: z.number().int().nonnegative().optional(),
        evalEvery: z.number().int().nonnegative().optional(),
        evalBatches: z.number().int().positive().optional(),
        weightDecay: z.number().nonnegative().optional(),
        clipNorm: z.number().positive().optional(),
        seed: z.number().int().optional(),
      })
      .strict()
      .optional(),
  })
  .strict();

/** Read and validate a run config file; ConfigError names the file, the JSON path and the problem. */
export function readRunConfigFile(path: string): z.infer<typeof fileSchema> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new ConfigError('--config', path, `cannot read the file (${(e as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new ConfigError('--config', path, `is not valid JSON: ${(e as Error).message}`);
  }
  const parsed = fileSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const where = issue.path.join('.') || '(top level)';
    throw new ConfigError(`${path}: ${where}`, valueAt(json, issue.path), issue.message);
  }
  return parsed.data;
}

function valueAt(json: unknown, path: ReadonlyArray<string | number>): unknown {
  let v = json;
  for (const p of path) v = v && typeof v === 'object' ? (v as Record<string | number, unknown>)[p] : undefined;
  return v;
}

/** Flags shared by `train` and `compare` (each may override the config file). */
export function addRunFlags(cmd: Command): Command {
  return cmd
    .option('--config <file>', 'JSON run config: { corpus, tokenizer, model: {...}, train: {...} }')
    .option('--corpus <name|path>', "training text: moby-dick, fortunes, fortunes-multilingual, fortunes-de|es|it|ru, or a .txt file/directory")
    .option('--tokenizer <kind>', 'char | byte | bpe')
    .option('--steps <n>', 'training steps', intOption('--steps'))
    .option('--batch-size <n>', 'sequences per batch', intOption('--batch-size'))
    .option('--seq-len <n>', 'tokens per sequence', intOption('--seq-len'))
    .option('--lr <x>', 'peak learning rate', numberOption('--lr', { positive: true }))
    .option('--d-model <n>', 'model width', intOption('--d-model'))
    .option('--layers <n>', 'transformer layers', intOption('--layers'))
    .option('--heads <n>', 'attention heads', intOption('--heads'))
    .option('--d-ff <n>', 'feed-forward (expert) hidden size', intOption('--d-ff'))
    .option('--experts <n>', 'experts per MoE layer', intOption('--experts', 2))
    .option('--k <n>', 'experts per token (top-k)', intOption('--k'))
    .option('--capacity-factor <x>', 'expert capacity factor (default: dropless)', numberOption('--capacity-factor', { positive: true }))
    .option('--moe-every <n>', 'an MoE layer every n layers', intOption('--moe-every'))
    .option('--balance <x>', 'balance-loss coefficient', numberOption('--balance', { min: 0 }))
    .option('--z-loss <x>', 'router z-loss coefficient', numberOption('--z-loss', { min: 0 }))
    .option('--noisy', 'noisy top-k gating (Gaussian noise, Shazeer 2017)')
    .option('--bias-balancing <rate>', 'DeepSeek-V3 auxiliary-loss-free balancing rate', numberOption('--bias-balancing', { min: 0 }))
    .option('--dense', 'train the dense baseline (same active parameters) instead')
    .option('--seed <n>', 'random seed', intOption('--seed', 0));
}

/** Flags as commander parses them. */
export interface RunFlags {
  config?: string;
  corpus?: string;
  tokenizer?: string;
  steps?: number;
  batchSize?: number;
  seqLen?: number;
  lr?: number;
  dModel?: number;
  layers?: number;
  heads?: number;
  dFf?: number;
  experts?: number;
  k?: number;
  capacityFactor?: number;
  moeEvery?: number;
  balance?: number;
  zLoss?: number;
  noisy?: boolean;
  biasBalancing?: number;
  dense?: boolean;
  seed?: number;
}

/** Demo defaults ← config file ← flags. Deeper validation happens in the model and MoE configs. */
export function runSpecFrom(flags: RunFlags): LMRunSpec {
  const file = flags.config ? readRunConfigFile(flags.config) : {};
  const tokenizer = flags.tokenizer ?? file.tokenizer ?? 'char';
  if (tokenizer !== 'char' && tokenizer !== 'byte' && tokenizer !== 'bpe') throw new ConfigError('--tokenizer', tokenizer, 'must be char, byte or bpe');
  const fm = file.model ?? {};
  const baseMoE = DEMO_LM.moe!;
  let moe = fm.moe === null ? null : { ...baseMoE, ...(fm.moe ?? {}) };
  if (moe) {
    let router: RouterConfig = { ...moe.router } as RouterConfig;
    if (flags.k !== undefined || flags.capacityFactor !== undefined || flags.noisy || flags.biasBalancing !== undefined) {
      if (router.type !== 'topk') throw new ConfigError('--k', flags.k, 'top-k flags need a top-k router');
      router = {
        ...router,
        ...(flags.k !== undefined ? { k: flags.k } : {}),
        ...(flags.capacityFactor !== undefined ? { capacityFactor: flags.capacityFactor } : {}),
        ...(flags.noisy ? { noise: { type: 'gaussian' as const } } : {}),
        ...(flags.biasBalancing !== undefined ? { biasBalancing: { rate: flags.biasBalancing } } : {}),
      };
    }
    const losses = { ...(moe.losses ?? {}) };
    if (flags.balance !== undefined) losses.balance = flags.balance;
    if (flags.zLoss !== undefined) losses.zLoss = flags.zLoss;
    moe = { ...moe, router, losses, ...(flags.experts !== undefined ? { numExperts: flags.experts } : {}) };
  }
  const ft = file.train ?? {};
  const seqLen = flags.seqLen ?? ft.seqLen ?? DEMO_TRAIN.seqLen;
  const model = {
    ...DEMO_LM,
    ...fm,
    moe,
    ...(flags.dModel !== undefined ? { dModel: flags.dModel } : {}),
    ...(flags.layers !== undefined ? { nLayers: flags.layers } : {}),
    ...(flags.heads !== undefined ? { nHeads: flags.heads } : {}),
    ...(flags.dFf !== undefined ? { dFF: flags.dFf } : {}),
    ...(flags.moeEvery !== undefined ? { moeEvery: flags.moeEvery } : {}),
    maxSeqLen: Math.max(fm.maxSeqLen ?? DEMO_LM.maxSeqLen, seqLen),
  };
  const steps = flags.steps ?? ft.steps ?? DEMO_TRAIN.steps;
  const train = {
    ...DEMO_TRAIN,
    ...ft,
    seqLen,
    steps,
    ...(flags.batchSize !== undefined ? { batchSize: flags.batchSize } : {}),
    ...(flags.lr !== undefined ? { lr: flags.lr } : {}),
    ...(flags.seed !== undefined ? { seed: flags.seed } : {}),
  };
  train.warmupSteps = Math.min(train.warmupSteps, Math.max(0, steps - 1));
  train.evalEvery = Math.min(train.evalEvery, steps);
  return { name: file.name, corpus: flags.corpus ?? file.corpus ?? 'moby-dick', tokenizer, model, train };
}
