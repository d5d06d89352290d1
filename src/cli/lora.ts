/**
 * `switchyard lora train` and `switchyard lora mix`: train a LoRA adapter on your own text over a
 * frozen checkpoint; mix adapters under a router (optionally trained alone). Also the helpers that
 * let `sample` and `inspect` run a checkpoint with a mixture or one adapter and show which adapter
 * each token used.
 */
import { join, resolve } from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import { ConfigError } from '../errors.js';
import type { MixtureRouterConfig } from '../lora/config.js';
import type { LoRAModel } from '../lora/mixture.js';
import { attachAdapters, DEFAULT_LORA_TARGETS, loadMixture, mixAdapters, readAdapterFolder, trainAdapter } from '../lora/workflow.js';
import { noGrad } from '../tensor/autodiff.js';
import { Tensor } from '../tensor/tensor.js';
import type { Tokenizer } from '../data/tokenizer.js';
import { loadLanguageModel } from '../train/lm-run.js';
import { intOption, loadSparkline, numberOption, TrainingProgress } from './common.js';

function listOption(flag: string): (v: string) => string[] {
  return (v: string) => {
    const items = v.split(',').map((s) => s.trim()).filter(Boolean);
    if (items.length === 0) throw new InvalidArgumentError(`${flag} must be a comma-separated list, got ${JSON.stringify(v)}`);
    return items;
  };
}

interface TrainFlags {
  base: string;
  data: string;
  name: string;
  out?: string;
  targets: string[];
  rank: number;
  alpha: number;
  dropout: number;
  steps: number;
  batchSize: number;
  seqLen: number;
  lr: number;
  maxDocuments?: number;
  seed: number;
}

function trainSub(): Command {
  return new Command('train')
    .description('train one LoRA adapter on your own text over a frozen base checkpoint (saved as a PEFT adapter folder)')
    .requiredOption('--base <checkpoint>', 'base model: a run directory written by switchyard train/demo')
    .requiredOption('--data <dir|file>', 'training text: a .txt file, a directory of .txt files, a fortune file or a built-in corpus name')
    .requiredOption('--name <adapter>', 'adapter name (A-Z a-z 0-9 _ -)')
    .option('--out <dir>', 'adapter folder (default <base>/adapters/<name>)')
    .option('--targets <list>', 'Linears to adapt, by name pattern', listOption('--targets'), DEFAULT_LORA_TARGETS)
    .option('--rank <n>', 'LoRA rank r', intOption('--rank'), 8)
    .option('--alpha <x>', 'LoRA alpha (scale alpha/r)', numberOption('--alpha', { positive: true }), 16)
    .option('--dropout <x>', 'dropout on the LoRA path', numberOption('--dropout', { min: 0 }), 0.05)
    .option('--steps <n>', 'training steps', intOption('--steps'), 300)
    .option('--batch-size <n>', 'windows per step', intOption('--batch-size'), 16)
    .option('--seq-len <n>', 'tokens per window', intOption('--seq-len'), 128)
    .option('--lr <x>', 'peak learning rate', numberOption('--lr', { positive: true }), 3e-3)
    .option('--max-documents <n>', 'use at most this many documents (a seeded choice)', intOption('--max-documents'))
    .option('--seed <n>', 'seed', intOption('--seed', 0), 0)
    .action(async (f: TrainFlags) => {
      const out = f.out ?? join(resolve(f.base), 'adapters', f.name);
      const progress = new TrainingProgress(f.steps, `adapter ${f.name}`);
      const res = await trainAdapter({
        base: f.base, data: f.data, name: f.name, outDir: out, targets: f.targets, rank: f.rank, alpha: f.alpha, dropout: f.dropout,
        steps: f.steps, batchSize: f.batchSize, seqLen: f.seqLen, lr: f.lr, maxDocuments: f.maxDocuments, seed: f.seed,
        onReady: (i) => {
          console.log(`switchyard lora train "${f.name}" on ${f.data}`);
          console.log(`  ${i.trainTokens.toLocaleString('en-US')} train / ${i.evalTokens.toLocaleString('en-US')} eval tokens; base frozen (${i.baseParameters.toLocaleString('en-US')} parameters), ${i.trainable.toLocaleString('en-US')} trainable (rank ${f.rank} on ${f.targets.join(', ')})`);
          console.log(`  base model's eval loss on this data: ${i.baseEvalLoss.toFixed(3)}`);
          progress.start();
        },
        onStep: (m) => progress.update(m),
      });
      progress.stop();
      console.log(`\neval loss ${res.baseEvalLoss.toFixed(3)} (base) -> ${res.evalLoss.toFixed(3)} (with adapter) in ${res.seconds.toFixed(1)} s`);
      console.log(`adapter: ${res.dir} (adapter_model.safetensors + adapter_config.json, PEFT layout)   report: ${join(res.dir, 'report.html')}`);
    });
}

interface MixFlags {
  base: string;
  adapters: string[];
  trainRouter?: boolean;
  router: 'topk' | 'dense' | 'sequence';
  k: number;
  from?: string;
  retrainExisting?: boolean;
  out?: string;
  supervisedSteps: number;
  lmSteps: number;
  batchSize: number;
  seqLen: number;
  lr: number;
  seed: number;
}

function routerFrom(type: string, k: number, n: number): MixtureRouterConfig {
  if (n === 1) return { type: 'single' };
  if (type === 'dense') return { type: 'dense' };
  if (type === 'sequence') return { type: 'sequence', k };
  if (type === 'topk') return { type: 'topk', k, losses: { balance: 0.01 } };
  throw new ConfigError('--router', type, "must be 'topk', 'dense' or 'sequence'");
}

function mixSub(): Command {
  return new Command('mix')
    .description('mix adapters under a router over the frozen base; --train-router trains only the router (domain labels, then LM loss)')
    .requiredOption('--base <checkpoint>', 'base model run directory')
    .requiredOption('--adapters <list>', 'adapter names (in <base>/adapters) or folders, comma-separated', listOption('--adapters'))
    .option('--train-router', 'train the router: supervised from each adapter\'s data as a warm start, then on the LM loss')
    .option('--router <type>', 'topk (per token), dense (softmax over all) or sequence (one choice per prompt)', 'topk')
    .option('--k <n>', 'adapters per token (topk) or per sequence (sequence)', intOption('--k'), 1)
    .option('--from <mixture>', 'a saved mixture: its adapters keep their router rows, frozen (add adapters without moving old routes)')
    .option('--retrain-existing', 'with --from: train the loaded router rows too')
    .option('--out <dir>', 'mixture folder (default <base>/mixtures/<a+b+c>)')
    .option('--supervised-steps <n>', 'router warm-start steps', intOption('--supervised-steps', 0), 200)
    .option('--lm-steps <n>', 'router steps on the LM loss', intOption('--lm-steps', 0), 50)
    .option('--batch-size <n>', 'windows per step', intOption('--batch-size'), 16)
    .option('--seq-len <n>', 'tokens per window', intOption('--seq-len'), 64)
    .option('--lr <x>', 'router learning rate', numberOption('--lr', { positive: true }), 1e-2)
    .option('--seed <n>', 'seed', intOption('--seed', 0), 0)
    .action(async (f: MixFlags) => {
      const out = f.out ?? join(resolve(f.base), 'mixtures', f.adapters.map((a) => a.split('/').filter(Boolean).pop()).join('+'));
      const router = routerFrom(f.router, f.k, f.adapters.length);
      let last = 0;
      const res = await mixAdapters({
        base: f.base, adapters: f.adapters, outDir: out, router, trainRouter: !!f.trainRouter, from: f.from, retrainExisting: !!f.retrainExisting,
        supervisedSteps: f.supervisedSteps, lmSteps: f.lmSteps, batchSize: f.batchSize, seqLen: f.seqLen, lr: f.lr, seed: f.seed,
        onStep: (phase, step, total, loss) => {
          if (step === total || Date.now() - last > 3000) {
            last = Date.now();
            process.stderr.write(`router ${phase} step ${step}/${total} loss ${loss.toFixed(3)}\n`);
          }
        },
      });
      res.model.detach();
      console.log(`mixture of ${res.adapters.map((a) => a.name).join(', ')} (${router.type}${'k' in router && router.k ? ` k=${router.k}` : ''}) over ${res.base.path}`);
      const m = res.metrics;
      if (m) {
        for (const a of res.adapters) console.log(`  ${a.name.padEnd(16)} eval loss ${m.evalLoss[a.name].toFixed(3)}  router picks it on ${(100 * m.routerAccuracyByDomain[a.name]).toFixed(1)}% of its tokens`);
        console.log(`  router accuracy ${(100 * m.routerAccuracy).toFixed(1)}%, ${m.trainableParameters.toLocaleString('en-US')} trainable router parameters, ${m.routerTrainingSeconds.toFixed(1)} s`);
      }
      console.log(`mixture: ${out}`);
    });
}

/** The `lora` command with its `train` and `mix` subcommands. */
export function loraCommand(): Command {
  return new Command('lora').description('LoRA adapters over a frozen base model, and mixtures of them').addCommand(trainSub()).addCommand(mixSub());
}

/** A checkpoint with (optionally) a mixture or one adapter attached, for sample and inspect. */
export interface AdaptedModel {
  generate(prompt: number[], n: number, o: { temperature: number; topP: number; seed: number }): number[];
  tokenizer: Tokenizer;
  maxSeqLen: number;
  lora: LoRAModel | null;
}

/** Load `ckpt`, then attach `--mixture <dir>` or `--adapter <dir>` when given. */
export async function loadAdapted(ckpt: string, o: { mixture?: string; adapter?: string }): Promise<AdaptedModel> {
  if (o.mixture && o.adapter) throw new ConfigError('--adapter', o.adapter, 'give --mixture or --adapter, not both');
  const base = { ...(await loadLanguageModel(ckpt)), path: resolve(ckpt) };
  let lora: LoRAModel | null = null;
  if (o.mixture) lora = (await loadMixture(o.mixture, base)).model;
  else if (o.adapter) lora = attachAdapters(base, [await readAdapterFolder(o.adapter, '.')], { type: 'single' });
  lora?.eval();
  const gen = lora ?? base.model;
  return { generate: (p, n, g) => gen.generate(p, n, g), tokenizer: base.tokenizer, maxSeqLen: base.model.config.maxSeqLen, lora };
}

const COLOURS = [31, 32, 33, 34, 35, 36, 91, 92, 93, 94, 95, 96];

/** Route `ids` through the adapted model and show each token's most-used adapter: colours on a TTY, `[name]` markers otherwise. */
export function adapterRouting(lora: LoRAModel, tokenizer: Tokenizer, ids: number[], useColour = !!process.stdout.isTTY): { text: string; legend: string; load: number[] } {
  noGrad(() => lora.forward(Tensor.indices(ids, [1, ids.length])));
  const u = lora.adapterUsage();
  const names = lora.adapterNames;
  const load = new Array<number>(names.length).fill(0);
  let text = '';
  let prev = -1;
  for (let t = 0; t < u.tokens; t++) {
    const a = u.top[t];
    load[a]++;
    const tok = tokenizer.tokenString(ids[t]).replace(/\\n/g, '↵');
    if (useColour) text += `\x1b[${COLOURS[a % COLOURS.length]}m${tok}\x1b[0m`;
    else text += (a !== prev ? `[${names[a]}]` : '') + tok;
    prev = a;
  }
  const legend = names.map((n, i) => (useColour ? `\x1b[${COLOURS[i % COLOURS.length]}m${n}\x1b[0m` : n) + ` ${load[i]}`).join('  ') + `  ${loadSparkline(load)}`;
  return { text, legend, load };
}
