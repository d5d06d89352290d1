/**
 * End-to-end language-model runs: corpus → tokenizer → token stream → model → Trainer →
 * checkpoints, run log, routing sample and report. Shared by the CLI's demo/train/compare
 * commands and the experiments, and `loadLanguageModel` rebuilds a trained model for
 * eval/sample/inspect/serve.
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { loadCorpus } from '../data/corpus.js';
import { evalBatches, LMBatcher, TokenStream } from '../data/lm-data.js';
import { buildTokenizer, tokenizerFromJSON, type Tokenizer, type TokenizerKind } from '../data/tokenizer.js';
import { ConfigError } from '../errors.js';
import { replaceFileAtomic } from '../io/atomic.js';
import { MoETransformerLM, type TransformerLMConfig } from '../nn/transformer.js';
import { writeReport } from '../report/write.js';
import { noGrad } from '../tensor/autodiff.js';
import { Tensor } from '../tensor/tensor.js';
import { listCheckpoints, loadCheckpoint, resumeTrainer } from './checkpoint.js';
import type { EvalMetrics, RoutingSample, RunLog, StepMetrics } from './metrics.js';
import type { TrainPreset } from './presets.js';
import { Trainer } from './trainer.js';

/** Everything that defines a language-model run (also what a checkpoint records to rebuild it). */
export interface LMRunSpec {
  /** Corpus name ('moby-dick', 'fortunes-multilingual', ...) or a path to .txt file(s). */
  corpus: string;
  tokenizer: TokenizerKind;
  /** Model config without the vocabulary size (the tokenizer sets it). */
  model: Omit<TransformerLMConfig, 'vocabSize'>;
  train: TrainPreset & { weightDecay?: number; clipNorm?: number; seed?: number; evalBatches?: number };
  name?: string;
}

export interface LMRunOptions {
  /** Output directory: checkpoints/, run.json, report.html and chart SVGs. */
  outDir: string;
  /** Save a checkpoint every this many steps (default: at evaluations and at the end). */
  checkpointEvery?: number;
  /** Resume from the latest checkpoint in outDir/checkpoints when one exists. */
  resume?: boolean;
  onStep?(m: StepMetrics): void;
  onEval?(m: EvalMetrics): void;
  /** Called once data and model are ready (for progress displays). */
  onReady?(info: { vocabSize: number; trainTokens: number; evalTokens: number; parameters: number; activeParameters: number; startStep: number }): void;
  /** Write report.html (default true). */
  report?: boolean;
  /** Prompt of the sample text printed and stored in the log. */
  samplePrompt?: string;
}

export interface LMRunResult {
  model: MoETransformerLM;
  tokenizer: Tokenizer;
  stream: TokenStream;
  log: RunLog;
  sample: string;
  reportPath: string | null;
}

/** The text a run routes for its routing sample: the start of the held-out split. */
function routingText(stream: TokenStream, maxTokens: number): number[] {
  return Array.from(stream.eval.tokens.subarray(0, maxTokens));
}

/** Route `ids` through the model and record, per MoE layer, each token's experts and gates. */
export function routingSample(model: MoETransformerLM, tokenizer: Tokenizer, ids: number[]): RoutingSample {
  const T = Math.min(ids.length, model.config.maxSeqLen);
  const used = ids.slice(0, T);
  const wasTraining = model.training;
  model.eval();
  try {
    const out = noGrad(() => model.forward(Tensor.indices(used, [1, T])));
    const layers = out.moe.map(({ layer, out: o }) => {
      const r = o.routing;
      const experts: number[][] = [], gates: number[][] = [];
      if (r) {
        for (let t = 0; t < T; t++) {
          experts.push(Array.from(r.experts.subarray(t * r.k, (t + 1) * r.k)));
          gates.push(Array.from(r.gates.subarray(t * r.k, (t + 1) * r.k), (g) => +g.toFixed(4)));
        }
      }
      return { layer, experts, gates };
    });
    const numExperts = model.moeLayers()[0]?.config.numExperts ?? 0;
    return { tokens: used.map((id) => tokenizer.tokenString(id)), layers, numExperts };
  } finally {
    model.train(wasTraining);
  }
}

/** Train (or resume) a language model as specified, writing checkpoints, the run log and a report. */
export async function trainLanguageModel(spec: LMRunSpec, opts: LMRunOptions): Promise<LMRunResult> {
  const corpus = loadCorpus(spec.corpus);
  const t = spec.train;
  // Fit the tokenizer on the whole corpus text for char/byte (tiny vocabularies); BPE remaps to ids seen.
  const tokenizer = buildTokenizer(spec.tokenizer, corpus.documents.map((d) => d.text));
  const stream = TokenStream.fromCorpus(corpus, tokenizer, { seed: t.seed ?? 0 });
  if (t.seqLen > spec.model.maxSeqLen) throw new ConfigError('train.seqLen', t.seqLen, `must not exceed model.maxSeqLen (${spec.model.maxSeqLen})`);
  const model = new MoETransformerLM({ ...spec.model, vocabSize: tokenizer.vocabSize });
  const batcher = new LMBatcher({ tokens: stream.train.tokens, batchSize: t.batchSize, seqLen: t.seqLen, seed: t.seed ?? 0 });
  const evalSet = evalBatches(stream.eval.tokens, t.batchSize, t.seqLen, t.evalBatches ?? 8);
  const checkpointDir = join(opts.outDir, 'checkpoints');
  const runConfig = { spec, tokenizer: tokenizer.toJSON() };
  const trainer = new Trainer(model, batcher, {
    lr: t.lr,
    weightDecay: t.weightDecay ?? 0.1,
    warmupSteps: t.warmupSteps,
    totalSteps: t.steps,
    clipNorm: t.clipNorm ?? 1.0,
    evalEvery: t.evalEvery,
    evalBatches: t.evalBatches ?? 8,
    evalData: () => evalSet,
    checkpointEvery: opts.checkpointEvery ?? t.evalEvery,
    checkpointDir,
    seed: t.seed ?? 0,
    name: spec.name ?? `${spec.model.moe ? 'moe' : 'dense'} LM on ${corpus.name}`,
    config: runConfig,
    onStep: opts.onStep,
    onEval: opts.onEval,
  });
  let startStep = 0;
  if (opts.resume && (await listCheckpoints(checkpointDir)).length > 0) {
    startStep = (await resumeTrainer(trainer, checkpointDir, { fallback: true })).step;
  }
  opts.onReady?.({
    vocabSize: tokenizer.vocabSize,
    trainTokens: stream.train.tokens.length,
    evalTokens: stream.eval.tokens.length,
    parameters: model.numParameters(),
    activeParameters: model.activeParameters(),
    startStep,
  });
  await trainer.run(t.steps - startStep);
  if (trainer.log.evals.at(-1)?.step !== t.steps) trainer.evaluate();
  await trainer.save();

  const prompt = opts.samplePrompt ?? 'Call me Ishmael. ';
  const promptIds = tokenizer.encode(prompt);
  const sample = prompt + tokenizer.decode(model.generate(promptIds, 200, { temperature: 0.8, topP: 0.95, seed: t.seed ?? 0 }));
  const log = trainer.log;
  log.sampleText = sample;
  log.routingSample = routingSample(model, tokenizer, routingText(stream, Math.min(160, spec.model.maxSeqLen)));
  await mkdir(opts.outDir, { recursive: true });
  await replaceFileAtomic(join(opts.outDir, 'run.json'), JSON.stringify(log));
  let reportPath: string | null = null;
  if (opts.report !== false) reportPath = (await writeReport(opts.outDir, log)).html;
  return { model, tokenizer, stream, log, sample, reportPath };
}

/** A trained language model rebuilt from a checkpoint (run dir, checkpoints dir or step dir). */
export interface LoadedLanguageModel {
  model: MoETransformerLM;
  tokenizer: Tokenizer;
  spec: LMRunSpec;
  step: number;
  log: RunLog;
}

/** Rebuild model and tokenizer from a checkpoint written by trainLanguageModel. */
export async function loadLanguageModel(path: string): Promise<LoadedLanguageModel> {
  let ckpt;
  try {
    ckpt = await loadCheckpoint(join(path, 'checkpoints'), { fallback: true });
  } catch {
    ckpt = await loadCheckpoint(path, { fallback: true });
  }
  // trainLanguageModel passes { spec, tokenizer } as the Trainer's extra config.
  const run = (ckpt.trainer.config as { extra?: { spec?: LMRunSpec; tokenizer?: unknown } } | undefined)?.extra;
  if (!run?.spec || !run.tokenizer) throw new ConfigError('checkpoint', path, 'is not a language-model checkpoint written by switchyard train/demo (no run spec and tokenizer in trainer.json)');
  const tokenizer = tokenizerFromJSON(run.tokenizer);
  const model = new MoETransformerLM({ ...run.spec.model, vocabSize: tokenizer.vocabSize });
  model.loadStateDict(ckpt.model);
  model.eval();
  return { model, tokenizer, spec: run.spec, step: ckpt.step, log: ckpt.trainer.log };
}

/** Write a JSON file atomically (small helper for CLI outputs). */
export async function writeJsonAtomic(path: string, value: unknown): Promise<void> {
  await replaceFileAtomic(path, JSON.stringify(value, null, 2));
}

