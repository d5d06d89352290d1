/**
 * The adapter workflow behind `switchyard lora train` and `switchyard lora mix`: train one LoRA
 * adapter on your own text over a frozen checkpoint, then mix adapters under a router that is
 * optionally trained alone (supervised from each adapter's domain as a warm start, then on the
 * language-model loss), and save / load mixtures. Adapters are PEFT folders (peft.ts) plus a
 * `switchyard_adapter.json` that records the data they were trained on (for router training).
 */
import { readFileSync, statSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { basename, isAbsolute, join, resolve } from 'node:path';
import { loadCorpus, parseFortunes, type Corpus } from '../data/corpus.js';
import { evalBatches, LMBatcher, TokenStream, type LMBatch } from '../data/lm-data.js';
import type { Tokenizer } from '../data/tokenizer.js';
import { ConfigError } from '../errors.js';
import { replaceFileAtomic } from '../io/atomic.js';
import { loadSafetensors, saveSafetensors } from '../io/safetensors-file.js';
import { crossEntropy } from '../ops/loss.js';
import { add, mul } from '../ops/elementwise.js';
import { AdamW } from '../optim/adamw.js';
import { clipGradNorm } from '../optim/clip.js';
import { Generator } from '../random.js';
import { writeReport } from '../report/write.js';
import { noGrad } from '../tensor/autodiff.js';
import { Tensor } from '../tensor/tensor.js';
import { loadLanguageModel, type LoadedLanguageModel } from '../train/lm-run.js';
import type { EvalMetrics, RunLog, StepMetrics } from '../train/metrics.js';
import { Trainer } from '../train/trainer.js';
import { checkAdapterName, type MixtureRouterConfig } from './config.js';
import { LoRAModel } from './mixture.js';
import { loadAdapter, saveAdapter, type PeftAdapter } from './peft.js';

/** Switchyard's record next to a PEFT adapter: what it was trained on. */
export const ADAPTER_META_FILE = 'switchyard_adapter.json';
/** A saved mixture's description and its router weights. */
export const MIXTURE_FILE = 'mixture.json';
export const MIXTURE_ROUTER_FILE = 'router.safetensors';
/** Default LoRA targets: the attention projections. */
export const DEFAULT_LORA_TARGETS = ['q_proj', 'k_proj', 'v_proj', 'o_proj'];

/**
 * Load training text: a built-in corpus name, a .txt file or a directory of .txt files (as
 * loadCorpus), or a fortune file (records separated by lines holding only '%', e.g. Debian's
 * /usr/share/games/fortunes/science), which becomes one document per record.
 */
export function loadAdapterCorpus(data: string): Corpus {
  const path = resolve(data);
  let st;
  try {
    st = statSync(path);
  } catch {
    return loadCorpus(data);
  }
  if (st.isFile()) {
    const text = readFileSync(path, 'latin1').includes('\n%\n') ? readFileSync(path, 'utf8') : null;
    if (text !== null) {
      const docs = parseFortunes(text).map((t) => ({ text: t, label: basename(path) }));
      if (docs.length >= 2) return { name: path, documents: docs, ordered: false };
    }
  }
  return loadCorpus(data);
}

/** A base checkpoint given as a path or already loaded (with the path it came from). */
export type BaseModelSource = string | (LoadedLanguageModel & { path: string });

async function loadBase(base: BaseModelSource): Promise<LoadedLanguageModel & { path: string }> {
  if (typeof base !== 'string') return base;
  return { ...(await loadLanguageModel(base)), path: resolve(base) };
}

/** Options of trainAdapter. */
export interface TrainAdapterOptions {
  base: BaseModelSource;
  /** Training text (see loadAdapterCorpus). */
  data: string;
  name: string;
  /** Output folder (PEFT files, switchyard_adapter.json, report.html). */
  outDir: string;
  targets?: string[];
  rank?: number;
  alpha?: number;
  dropout?: number;
  steps?: number;
  batchSize?: number;
  seqLen?: number;
  lr?: number;
  warmupSteps?: number;
  evalEvery?: number;
  evalBatches?: number;
  seed?: number;
  /** Cap on documents used (a seeded choice; default all). */
  maxDocuments?: number;
  report?: boolean;
  onReady?(info: { trainTokens: number; evalTokens: number; trainable: number; baseParameters: number; baseEvalLoss: number }): void;
  onStep?(m: StepMetrics): void;
  onEval?(m: EvalMetrics): void;
}

/** What trainAdapter returns. */
export interface TrainAdapterResult {
  dir: string;
  baseEvalLoss: number;
  evalLoss: number;
  trainableParameters: number;
  seconds: number;
  log: RunLog;
}

/** Recorded in switchyard_adapter.json. */
export interface AdapterMeta {
  name: string;
  base: string;
  data: string;
  maxDocuments?: number;
  seed: number;
  steps: number;
  baseEvalLoss: number;
  evalLoss: number;
  trainableParameters: number;
  seconds: number;
}

/** The train/eval token streams an adapter trained on `data` used (same seeded document choice and 10% held-out split). */
export function adapterTokenStream(data: string, tokenizer: Tokenizer, seed: number, maxDocuments?: number): TokenStream {
  let corpus = loadAdapterCorpus(data);
  if (maxDocuments !== undefined && corpus.documents.length > maxDocuments) {
    const g = new Generator(seed + 17);
    const idx = corpus.documents.map((_, i) => i);
    for (let i = idx.length - 1; i > 0; i--) {
      const j = g.int(i + 1);
      [idx[i], idx[j]] = [idx[j], idx[i]];
    }
    const keep = new Set(idx.slice(0, maxDocuments));
    corpus = { ...corpus, documents: corpus.documents.filter((_, i) => keep.has(i)) };
  }
  return TokenStream.fromCorpus(corpus, tokenizer, { seed, evalFraction: 0.1 });
}

/** Mean loss of `model` over batches, in eval mode, without gradients. */
export function evalLoss(model: { loss(i: Tensor, t: Tensor): { loss: Tensor }; eval(): unknown; train(on?: boolean): unknown }, batches: readonly LMBatch[]): number {
  model.eval();
  try {
    let s = 0;
    for (const b of batches) s += noGrad(() => model.loss(b.input, b.target).loss.item());
    return batches.length ? s / batches.length : NaN;
  } finally {
    model.train(true);
  }
}

/** Train one LoRA adapter over a frozen base checkpoint and save it as a PEFT folder (see module doc). */
export async function trainAdapter(o: TrainAdapterOptions): Promise<TrainAdapterResult> {
  checkAdapterName(o.name, '--name');
  const base = await loadBase(o.base);
  const seed = o.seed ?? 0;
  const seqLen = Math.min(o.seqLen ?? 128, base.model.config.maxSeqLen);
  const batchSize = o.batchSize ?? 16;
  const steps = o.steps ?? 300;
  const stream = adapterTokenStream(o.data, base.tokenizer, seed, o.maxDocuments);
  const model = new LoRAModel(base.model, {
    targets: o.targets ?? DEFAULT_LORA_TARGETS,
    adapters: [{ name: o.name, rank: o.rank ?? 8, alpha: o.alpha ?? 16, dropout: o.dropout ?? 0.05, seed }],
  });
  try {
    const evalSet = evalBatches(stream.eval.tokens, batchSize, Math.min(seqLen, Math.max(1, stream.eval.tokens.length - 1)), o.evalBatches ?? 8);
    const batcher = new LMBatcher({ tokens: stream.train.tokens, batchSize, seqLen, seed });
    const baseEvalLoss = evalLoss(model, evalSet); // B = 0: the adapter starts at the base model
    const trainable = model.trainableParameterCount();
    o.onReady?.({ trainTokens: stream.train.tokens.length, evalTokens: stream.eval.tokens.length, trainable, baseParameters: base.model.numParameters(), baseEvalLoss });
    const trainer = new Trainer(model, batcher, {
      lr: o.lr ?? 3e-3,
      weightDecay: 0,
      warmupSteps: Math.min(o.warmupSteps ?? 20, Math.max(0, steps - 1)),
      totalSteps: steps,
      clipNorm: 1.0,
      evalEvery: Math.min(o.evalEvery ?? 50, steps),
      evalBatches: o.evalBatches ?? 8,
      evalData: () => evalSet,
      seed,
      name: `LoRA adapter "${o.name}" on ${o.data}`,
      config: { adapter: o.name, data: o.data, base: base.path },
      onStep: o.onStep,
      onEval: o.onEval,
    });
    const t0 = Date.now();
    await trainer.run(steps);
    if (trainer.log.evals.at(-1)?.step !== steps) trainer.evaluate();
    const seconds = (Date.now() - t0) / 1000;
    const final = trainer.log.evals.at(-1)?.loss ?? NaN;
    const dir = resolve(o.outDir);
    await saveAdapter(dir, model, o.name, { baseModel: base.path });
    const meta: AdapterMeta = { name: o.name, base: base.path, data: resolve(o.data), maxDocuments: o.maxDocuments, seed, steps, baseEvalLoss, evalLoss: final, trainableParameters: trainable, seconds };
    await replaceFileAtomic(join(dir, ADAPTER_META_FILE), JSON.stringify(meta, null, 2) + '\n');
    if (o.report !== false) {
      await replaceFileAtomic(join(dir, 'run.json'), JSON.stringify(trainer.log));
      await writeReport(dir, trainer.log);
    }
    return { dir, baseEvalLoss, evalLoss: final, trainableParameters: trainable, seconds, log: trainer.log };
  } finally {
    model.detach();
  }
}

/** An adapter folder with its PEFT contents and (when it has one) Switchyard's record. */
export interface AdapterFolder {
  name: string;
  dir: string;
  adapter: PeftAdapter;
  meta: AdapterMeta | null;
}

/** Find an adapter by name under `adaptersDir`, or by path. */
export async function readAdapterFolder(nameOrPath: string, adaptersDir: string): Promise<AdapterFolder> {
  const looksLikePath = nameOrPath.includes('/') || isAbsolute(nameOrPath);
  const dir = resolve(looksLikePath ? nameOrPath : join(adaptersDir, nameOrPath));
  const adapter = await loadAdapter(dir);
  let meta: AdapterMeta | null = null;
  try {
    meta = JSON.parse(await readFile(join(dir, ADAPTER_META_FILE), 'utf8')) as AdapterMeta;
  } catch {
    meta = null;
  }
  const name = checkAdapterName(meta?.name ?? basename(dir), `adapter ${nameOrPath}`);
  return { name, dir, adapter, meta };
}

/** Saved mixture description (mixture.json). */
export interface MixtureFile {
  format: 'switchyard-lora-mixture';
  version: 1;
  base: string;
  adapters: Array<{ name: string; dir: string }>;
  router: MixtureRouterConfig;
  targets: string[];
  metrics?: MixtureMetrics;
}

/** Per-domain evaluation of a mixture. */
export interface MixtureMetrics {
  /** Adapter (domain) name → mean eval loss of the mixture on that adapter's held-out data. */
  evalLoss: Record<string, number>;
  /** Fraction of held-out tokens whose most-used adapter (gates summed over sites) is their domain's. */
  routerAccuracy: number;
  /** Per domain. */
  routerAccuracyByDomain: Record<string, number>;
  trainableParameters: number;
  routerTrainingSeconds: number;
  /** The same measures right after the supervised warm start (before the LM-loss steps), when both ran. */
  afterWarmStart?: Omit<MixtureMetrics, 'trainableParameters' | 'routerTrainingSeconds' | 'afterWarmStart'>;
}

/** Options of mixAdapters. */
export interface MixAdaptersOptions {
  base: BaseModelSource;
  /** Adapter names (looked up in adaptersDir) or folders. */
  adapters: string[];
  /** Default: <base>/adapters. */
  adaptersDir?: string;
  outDir: string;
  /** Default { type: 'topk', k: 1 }. */
  router?: MixtureRouterConfig;
  trainRouter?: boolean;
  /** A saved mixture whose adapters' router rows are loaded and frozen (adding adapters to a trained mixture). */
  from?: string;
  /** With `from`: train the loaded rows too (default false: they stay frozen, so their routes do not move). */
  retrainExisting?: boolean;
  supervisedSteps?: number;
  lmSteps?: number;
  batchSize?: number;
  seqLen?: number;
  /** Router learning rate of the warm start (default 1e-2); the LM-loss steps use a tenth of it. */
  lr?: number;
  evalBatches?: number;
  seed?: number;
  onStep?(phase: 'supervised' | 'lm', step: number, total: number, loss: number): void;
}

/** A mixture built (and maybe trained) by mixAdapters or loaded by loadMixture. */
export interface MixtureResult {
  model: LoRAModel;
  tokenizer: Tokenizer;
  base: LoadedLanguageModel & { path: string };
  adapters: AdapterFolder[];
  metrics: MixtureMetrics | null;
  file: MixtureFile;
}

/** Attach adapter folders to a loaded base as a mixture (adapters frozen; the router as configured, untrained). */
export function attachAdapters(base: LoadedLanguageModel, adapters: AdapterFolder[], router: MixtureRouterConfig, seed = 0): LoRAModel {
  const targets = [...new Set(adapters.flatMap((a) => [...a.adapter.weights.keys()]))];
  const model = new LoRAModel(base.model, {
    targets,
    adapters: adapters.map((a) => ({ name: a.name, rank: a.adapter.options.rank, alpha: a.adapter.options.alpha, useRslora: a.adapter.options.useRslora, dropout: 0 })),
    router,
    seed,
  });
  try {
    for (const a of adapters) model.loadAdapterWeights(a.name, a.adapter.weights);
  } catch (e) {
    model.detach();
    throw e;
  }
  model.setAdaptersTrainable(false);
  return model;
}

interface DomainData {
  train: Int32Array;
  eval: LMBatch[];
}

function domainData(adapters: AdapterFolder[], tokenizer: Tokenizer, batchSize: number, seqLen: number, evalBatchCount: number): DomainData[] {
  return adapters.map((a) => {
    if (!a.meta?.data) throw new ConfigError(`adapter ${a.name}`, a.dir, `has no ${ADAPTER_META_FILE} recording its training data: router training and evaluation need each adapter's data`);
    const stream = adapterTokenStream(a.meta.data, tokenizer, a.meta.seed ?? 0, a.meta.maxDocuments);
    return { train: stream.train.tokens, eval: evalBatches(stream.eval.tokens, batchSize, seqLen, evalBatchCount) };
  });
}

/** Per-domain eval loss and router accuracy of a mixture (see MixtureMetrics). */
export function evaluateMixture(model: LoRAModel, domains: DomainData[], names: string[]): Omit<MixtureMetrics, 'trainableParameters' | 'routerTrainingSeconds'> {
  const evalLossBy: Record<string, number> = {};
  const accBy: Record<string, number> = {};
  let hit = 0, total = 0;
  model.eval();
  try {
    domains.forEach((d, label) => {
      let s = 0, h = 0, n = 0;
      for (const b of d.eval) {
        s += noGrad(() => model.loss(b.input, b.target).loss.item());
        const u = model.adapterUsage();
        for (let t = 0; t < u.tokens; t++) if (u.top[t] === label) h++;
        n += u.tokens;
      }
      evalLossBy[names[label]] = d.eval.length ? s / d.eval.length : NaN;
      accBy[names[label]] = n ? h / n : NaN;
      hit += h;
      total += n;
    });
  } finally {
    model.train(true);
  }
  return { evalLoss: evalLossBy, routerAccuracy: total ? hit / total : NaN, routerAccuracyByDomain: accBy };
}

/** Batches of windows drawn round-robin from the domains, with each window's domain label. */
function mixedBatch(domains: DomainData[], batchSize: number, seqLen: number, g: Generator, step: number): { input: Tensor; target: Tensor; labels: Int32Array } {
  const input = new Int32Array(batchSize * seqLen), target = new Int32Array(batchSize * seqLen), labels = new Int32Array(batchSize);
  for (let b = 0; b < batchSize; b++) {
    const label = (step * batchSize + b) % domains.length;
    const toks = domains[label].train;
    const start = g.int(Math.max(1, toks.length - seqLen - 1));
    input.set(toks.subarray(start, start + seqLen), b * seqLen);
    target.set(toks.subarray(start + 1, start + seqLen + 1), b * seqLen);
    labels[b] = label;
  }
  return { input: Tensor.indices(input, [batchSize, seqLen]), target: Tensor.indices(target, [batchSize * seqLen]), labels };
}

/**
 * Mix adapters under a router; optionally train the router alone: `supervisedSteps` of
 * cross-entropy between every site's router logits and the window's domain (warm start), then
 * `lmSteps` on the language-model loss (+ the routers' balancing losses). Saves the mixture.
 */
export async function mixAdapters(o: MixAdaptersOptions): Promise<MixtureResult> {
  if (!Array.isArray(o.adapters) || o.adapters.length === 0) throw new ConfigError('--adapters', o.adapters, 'must name at least one adapter');
  const base = await loadBase(o.base);
  const adaptersDir = o.adaptersDir ?? join(base.path, 'adapters');
  const adapters = await Promise.all(o.adapters.map((a) => readAdapterFolder(a, adaptersDir)));
  const dup = adapters.find((a, i) => adapters.findIndex((b) => b.name === a.name) !== i);
  if (dup) throw new ConfigError('--adapters', dup.name, 'names the same adapter twice');
  const names = adapters.map((a) => a.name);
  const router = o.router ?? (names.length === 1 ? { type: 'single' as const } : { type: 'topk' as const, k: 1 });
  const seed = o.seed ?? 0;
  const model = attachAdapters(base, adapters, router, seed);
  try {
    if (o.from) {
      const prev = await readMixtureFile(o.from);
      const keep = prev.adapters.map((a) => a.name).filter((n) => names.includes(n));
      const dict = await loadSafetensors(join(resolve(o.from), MIXTURE_ROUTER_FILE));
      // Saved gate rows are in the old mixture's adapter order: pick the rows of the adapters kept.
      const picked: Record<string, Tensor> = {};
      for (const [k, w] of Object.entries(dict)) {
        const d = w.shape[1];
        const rows = keep.map((n) => prev.adapters.findIndex((a) => a.name === n));
        const data = new Float32Array(rows.length * d);
        rows.forEach((r, i) => data.set(w.f32.subarray(r * d, (r + 1) * d), i * d));
        picked[k] = new Tensor(data, [rows.length, d]);
      }
      model.loadRouterRows(picked, keep);
      if (!o.retrainExisting) model.setRouterRowsTrainable(false, keep);
    }
    const batchSize = o.batchSize ?? 16;
    const seqLen = Math.min(o.seqLen ?? 64, base.model.config.maxSeqLen);
    const needData = o.trainRouter || adapters.every((a) => a.meta?.data);
    const domains = needData ? domainData(adapters, base.tokenizer, batchSize, seqLen, o.evalBatches ?? 4) : null;
    let seconds = 0;
    let warm: MixtureMetrics['afterWarmStart'] | undefined;
    let evalMs = 0;
    if (o.trainRouter && domains && model.routerConfig.type !== 'single') {
      const params = model.parameters();
      if (params.length === 0) throw new ConfigError('--train-router', true, 'every router row is frozen: nothing to train');
      const opt = new AdamW(params, { lr: o.lr ?? 1e-2, weightDecay: 0 });
      const g = new Generator(seed + 101);
      const t0 = Date.now();
      const sup = o.supervisedSteps ?? 200, lm = o.lmSteps ?? 50;
      const lr = o.lr ?? 1e-2;
      model.train(true);
      for (let step = 0; step < sup + lm; step++) {
        if (step === sup) {
          if (sup > 0 && lm > 0) {
            const te = Date.now();
            warm = evaluateMixture(model, domains, names);
            model.train(true);
            evalMs += Date.now() - te;
          }
          // The LM loss alone pulls every route towards the adapter that is best on average: a
          // gentler rate keeps the warm start's routes as the starting point it refines.
          for (const g of opt.paramGroups) g.lr = lr / 10;
        }
        const batch = mixedBatch(domains, batchSize, seqLen, g, step);
        opt.zeroGrad();
        let loss: Tensor;
        if (step < sup) {
          // Warm start: every site's router is a classifier of the hidden state it sees, trained on
          // the window's domain; the forward runs without a tape (only the router rows learn here).
          for (const site of model.sites) site.recordInput = true;
          noGrad(() => model.forward(batch.input));
          const labelsTok = Int32Array.from({ length: batchSize * seqLen }, (_, i) => batch.labels[Math.floor(i / seqLen)]);
          const terms = model.sites.map((site) => {
            const logits = site.router.supervisionLogits(site.lastInput as Tensor, batchSize);
            return crossEntropy(logits, logits.shape[0] === batchSize && model.routerConfig.type === 'sequence' ? batch.labels : labelsTok);
          });
          for (const site of model.sites) {
            site.recordInput = false;
            site.lastInput = null;
          }
          loss = mul(terms.reduce((a, b) => add(a, b)), 1 / terms.length);
        } else {
          const r = model.loss(batch.input, batch.target);
          loss = add(r.loss, r.out.auxLoss);
        }
        loss.backward();
        clipGradNorm(params, 1.0);
        opt.step();
        o.onStep?.(step < sup ? 'supervised' : 'lm', step + 1, sup + lm, loss.item());
      }
      seconds = (Date.now() - t0 - evalMs) / 1000;
    }
    const metrics: MixtureMetrics | null = domains
      ? { ...evaluateMixture(model, domains, names), trainableParameters: model.trainableParameterCount(), routerTrainingSeconds: seconds, ...(warm ? { afterWarmStart: warm } : {}) }
      : null;
    const file: MixtureFile = { format: 'switchyard-lora-mixture', version: 1, base: base.path, adapters: adapters.map((a) => ({ name: a.name, dir: a.dir })), router, targets: model.targets, ...(metrics ? { metrics } : {}) };
    const out = resolve(o.outDir);
    await mkdir(out, { recursive: true });
    const routerDict = model.routerWeights();
    if (Object.keys(routerDict).length) await saveSafetensors(join(out, MIXTURE_ROUTER_FILE), routerDict, { format: 'switchyard-lora-router' });
    await replaceFileAtomic(join(out, MIXTURE_FILE), JSON.stringify(file, null, 2) + '\n');
    return { model, tokenizer: base.tokenizer, base, adapters, metrics, file };
  } catch (e) {
    model.detach();
    throw e;
  }
}

async function readMixtureFile(dir: string): Promise<MixtureFile> {
  let f: MixtureFile;
  try {
    f = JSON.parse(await readFile(join(resolve(dir), MIXTURE_FILE), 'utf8')) as MixtureFile;
  } catch (e) {
    throw new ConfigError('mixture', dir, `has no readable ${MIXTURE_FILE} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  if (f.format !== 'switchyard-lora-mixture' || f.version !== 1) throw new ConfigError(`${MIXTURE_FILE} format`, f.format, "must be 'switchyard-lora-mixture' version 1");
  return f;
}

/** Load a saved mixture (its base from `base` or the path it recorded). */
export async function loadMixture(dir: string, base?: BaseModelSource): Promise<MixtureResult> {
  const f = await readMixtureFile(dir);
  const b = await loadBase(base ?? f.base);
  const adapters = await Promise.all(f.adapters.map((a) => readAdapterFolder(a.dir, '.')));
  const model = attachAdapters(b, adapters, f.router, 0);
  try {
    if (f.router.type !== 'single') model.loadRouterRows(await loadSafetensors(join(resolve(dir), MIXTURE_ROUTER_FILE)), adapters.map((a) => a.name));
  } catch (e) {
    model.detach();
    throw e;
  }
  model.eval();
  return { model, tokenizer: b.tokenizer, base: b, adapters, metrics: f.metrics ?? null, file: f };
}
