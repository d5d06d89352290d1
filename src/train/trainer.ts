/**
 * Trainer: the training loop of an MoE model (a language model or a classifier with the same
 * `loss()` shape). Per step: forward, loss + the MoE layers' aux losses (already weighted by
 * their coefficients), backward, global gradient clipping, AdamW, warmup + cosine schedule, then
 * DeepSeek-style bias balancing on every MoE layer; metrics into a RunLog. Periodic evaluation
 * and crash-safe checkpoints (checkpoint.ts) that resume to the bit.
 */
import { ValueError } from '../errors.js';
import type { MoELayer, MoEStats } from '../moe/layer.js';
import { Module } from '../nn/module.js';
import { AdamW } from '../optim/adamw.js';
import { clipGradNorm } from '../optim/clip.js';
import { LRScheduler, warmupCosine } from '../optim/schedule.js';
import { defaultGenerator, Generator, type GeneratorState } from '../random.js';
import { noGrad } from '../tensor/autodiff.js';
import { Tensor } from '../tensor/tensor.js';
import { saveCheckpoint, type SaveCheckpointOptions, type TrainerCheckpointState } from './checkpoint.js';
import type { EvalMetrics, LayerRoutingMetrics, RunLog, StepMetrics } from './metrics.js';

/** What a model's loss() returns: the main loss and the forward output with aux losses and MoE stats. */
export interface ModelLossOutput {
  loss: Tensor;
  out: {
    /** Σ of the MoE layers' weighted aux losses (scalar). */
    auxLoss: Tensor;
    moe: Array<{ layer: number; out: { stats: MoEStats } }>;
    /** Logits (for accuracy in evaluation), last axis = classes. */
    logits?: Tensor;
  };
}

/** What the Trainer needs of a model (MoETransformerLM and MoEViT fit). */
export interface TrainableModel {
  loss(input: Tensor, target: Tensor): ModelLossOutput;
  parameters(): Tensor[];
  stateDict(): Record<string, Tensor>;
  loadStateDict(dict: Record<string, Tensor>): unknown;
  train(on?: boolean): unknown;
  eval(): unknown;
  /** The MoE layers (bias balancing, noise generators). When absent, found by walking a Module's children. */
  moeLayers?(): MoELayer[];
  /** The model's (resolved) config, recorded in the run log and checked on resume. */
  readonly config?: unknown;
}

/** One batch: model input, target, and the number of tokens (or examples) it holds (default: target.size). */
export interface Batch {
  input: Tensor;
  target: Tensor;
  tokens?: number;
}

const batchTokens = (b: Batch): number => b.tokens ?? b.target.size;

/** A seeded, resumable stream of training batches. `state()` must be JSON-able. */
export interface TrainData {
  next(): Batch;
  state(): unknown;
  setState(state: unknown): void;
}

export interface TrainerOptions {
  /** Peak learning rate. */
  lr: number;
  weightDecay: number;
  betas?: [number, number];
  eps?: number;
  /** Which parameters decay: 'matrices' (default; rank ≥ 2, not norms or biases) or 'all'. */
  decay?: 'matrices' | 'all';
  warmupSteps: number;
  /** Length of the schedule (the cosine reaches its floor here). */
  totalSteps: number;
  /** Floor of the cosine as a fraction of lr (default 0.1). */
  minLrRatio?: number;
  /** Max global gradient norm (default 1.0); null = measure but do not clip. */
  clipNorm?: number | null;
  /** Evaluate every this many steps (0 = never). */
  evalEvery: number;
  /** Batches per evaluation (taken from the start of evalData()). */
  evalBatches: number;
  /** Deterministic evaluation batches (called afresh for each evaluation). */
  evalData?: () => Iterable<Batch>;
  /** 'perplexity' (language models, default), 'accuracy' (classifiers: argmax of out.logits), or both. */
  evalMetrics?: Array<'perplexity' | 'accuracy'>;
  /** Save a checkpoint every this many steps during run() (needs checkpointDir). */
  checkpointEvery?: number;
  checkpointDir?: string;
  /** Checkpoints kept on disk (default 2). */
  keepCheckpoints?: number;
  /** Seeds the process-wide default generator (dropout, any unseeded randomness). */
  seed: number;
  /** Run name for the log. */
  name?: string;
  /** Extra config recorded in the log and checkpoints (data set, tokenizer, ...). */
  config?: unknown;
  onStep?(m: StepMetrics): void;
  onEval?(m: EvalMetrics): void;
  onCheckpoint?(path: string): void;
}

function checkPosInt(field: string, v: unknown, min = 0): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min) throw new ValueError(`Trainer.${field}`, v, `must be an integer >= ${min}`);
  return v;
}

function checkFinite(field: string, v: unknown, min = 0): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min) throw new ValueError(`Trainer.${field}`, v, `must be a finite number >= ${min}`);
  return v;
}

/** The MoE layers of a model: its moeLayers() or, for a Module, every MoELayer among its descendants. */
export function findMoELayers(model: TrainableModel): MoELayer[] {
  if (typeof model.moeLayers === 'function') return model.moeLayers();
  if (!(model instanceof Module)) return [];
  const out: MoELayer[] = [];
  const walk = (m: Module): void => {
    // Duck-typed to avoid a runtime import cycle: an MoE layer has a noise generator and bias balancing.
    const maybe = m as unknown as Partial<MoELayer>;
    if (maybe.noiseGenerator instanceof Generator && typeof maybe.updateBiasBalancing === 'function') out.push(m as unknown as MoELayer);
    for (const [, c] of m.namedChildren()) walk(c);
  };
  walk(model);
  return out;
}

/** JSON-able copy of the options (functions dropped). */
function plainOptions(o: TrainerOptions): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(o)) if (typeof v !== 'function' && k !== 'config' && v !== undefined) out[k] = v;
  return out;
}

function seconds(from: bigint): number {
  return Number(process.hrtime.bigint() - from) / 1e9;
}

export class Trainer<M extends TrainableModel = TrainableModel> {
  readonly model: M;
  readonly data: TrainData;
  readonly options: Readonly<TrainerOptions>;
  readonly optimizer: AdamW;
  readonly scheduler: LRScheduler;
  /** Everything recorded so far (restored on resume). */
  log: RunLog;
  private stepCount = 0;
  private startTime: bigint | null = null;
  private readonly params: Tensor[];
  private readonly moe: MoELayer[];

  constructor(model: M, data: TrainData, options: TrainerOptions) {
    if (typeof options !== 'object' || options === null) throw new ValueError('Trainer.options', options, 'must be an object');
    checkFinite('lr', options.lr);
    checkFinite('weightDecay', options.weightDecay);
    checkPosInt('warmupSteps', options.warmupSteps);
    checkPosInt('totalSteps', options.totalSteps);
    checkPosInt('evalEvery', options.evalEvery);
    checkPosInt('evalBatches', options.evalBatches);
    if (options.checkpointEvery !== undefined) checkPosInt('checkpointEvery', options.checkpointEvery);
    if (options.keepCheckpoints !== undefined) checkPosInt('keepCheckpoints', options.keepCheckpoints, 1);
    if (options.clipNorm !== undefined && options.clipNorm !== null) checkFinite('clipNorm', options.clipNorm);
    if (typeof options.seed !== 'number' || !Number.isFinite(options.seed)) throw new ValueError('Trainer.seed', options.seed, 'must be a finite number');
    if (options.checkpointEvery && !options.checkpointDir) throw new ValueError('Trainer.checkpointDir', options.checkpointDir, 'is required when checkpointEvery is set');
    if (options.evalEvery > 0 && !options.evalData) throw new ValueError('Trainer.evalData', undefined, 'is required when evalEvery > 0');
    if (!data || typeof data.next !== 'function' || typeof data.state !== 'function' || typeof data.setState !== 'function') {
      throw new ValueError('Trainer.data', typeof data, 'must be an object with next(), state() and setState()');
    }
    this.model = model;
    this.data = data;
    this.options = { ...options };
    this.params = model.parameters();
    this.moe = findMoELayers(model);
    defaultGenerator().seed(options.seed);

    const decayAll = (options.decay ?? 'matrices') === 'all';
    const decayed = this.params.filter((p) => decayAll || p.rank >= 2);
    const plain = this.params.filter((p) => !(decayAll || p.rank >= 2));
    const groups = [
      { params: decayed, weightDecay: options.weightDecay },
      { params: plain, weightDecay: 0 },
    ].filter((g) => g.params.length > 0);
    this.optimizer = new AdamW(groups, { lr: options.lr, betas: options.betas, eps: options.eps, weightDecay: options.weightDecay });
    this.scheduler = new LRScheduler(
      this.optimizer,
      warmupCosine({ warmupSteps: options.warmupSteps, totalSteps: Math.max(options.totalSteps, options.warmupSteps), minLrRatio: options.minLrRatio ?? 0.1 }),
    );
    this.log = {
      name: options.name ?? 'run',
      config: this.fullConfig(),
      startedAt: new Date().toISOString(),
      steps: [],
      evals: [],
    };
  }

  /** Model config, trainer options (functions dropped) and the caller's extra config. */
  fullConfig(): { model: unknown; trainer: Record<string, unknown>; extra: unknown } {
    return { model: this.model.config ?? null, trainer: plainOptions(this.options as TrainerOptions), extra: this.options.config ?? null };
  }

  /** Optimizer steps completed. */
  get completedSteps(): number {
    return this.stepCount;
  }

  /** The MoE layers being balanced and checkpointed. */
  moeLayers(): MoELayer[] {
    return this.moe;
  }

  private elapsed(): number {
    if (this.startTime === null) this.startTime = process.hrtime.bigint();
    return seconds(this.startTime);
  }

  /** One optimizer step on the next training batch. */
  step(): StepMetrics {
    if (this.startTime === null) this.startTime = process.hrtime.bigint();
    this.model.train(true);
    const batch = this.data.next();
    const t0 = process.hrtime.bigint();
    const { loss, out } = this.model.loss(batch.input, batch.target);
    const total = loss.add(out.auxLoss);
    this.optimizer.zeroGrad();
    total.backward();
    const clip = this.options.clipNorm === undefined ? 1.0 : this.options.clipNorm;
    const gradNorm = clipGradNorm(this.params, clip === null ? Infinity : clip);
    const lr = this.optimizer.paramGroups[0].lr;
    this.optimizer.step();
    this.scheduler.step();
    for (const layer of this.moe) layer.updateBiasBalancing();
    const dt = seconds(t0);
    const tokens = batchTokens(batch);
    this.stepCount++;
    const moe: LayerRoutingMetrics[] = out.moe.map(({ layer, out: o }) => ({
      layer,
      tokensPerExpert: [...o.stats.tokensPerExpert],
      dropFraction: o.stats.dropFraction,
      droppedTokens: o.stats.droppedTokens,
      routerEntropy: o.stats.routerEntropy,
      loadImbalance: o.stats.loadImbalance,
      balanceLoss: o.stats.balanceLoss,
      zLoss: o.stats.zLoss,
    }));
    const m: StepMetrics = {
      step: this.stepCount,
      loss: loss.item(),
      auxLoss: out.auxLoss.item(),
      lr,
      gradNorm,
      tokens,
      tokensPerSecond: dt > 0 ? tokens / dt : 0,
      elapsedSeconds: this.elapsed(),
      moe,
    };
    this.log.steps.push(m);
    this.options.onStep?.(m);
    return m;
  }

  /** Mean loss (weighted by tokens) over the first evalBatches batches of evalData, in eval mode, without gradients. */
  evaluate(): EvalMetrics {
    const source = this.options.evalData;
    if (!source) throw new ValueError('Trainer.evalData', undefined, 'evaluate() needs evalData');
    const want = this.options.evalMetrics ?? ['perplexity'];
    let lossSum = 0, weight = 0, correct = 0, counted = 0, batches = 0;
    this.model.eval();
    try {
      noGrad(() => {
        for (const batch of source()) {
          if (batches >= this.options.evalBatches) break;
          batches++;
          const { loss, out } = this.model.loss(batch.input, batch.target);
          const n = batchTokens(batch);
          lossSum += loss.item() * n;
          weight += n;
          if (want.includes('accuracy') && out.logits) {
            const logits = out.logits.f32;
            const classes = out.logits.shape[out.logits.rank - 1];
            const target = batch.target.data;
            const rows = Math.min(target.length, logits.length / classes);
            for (let r = 0; r < rows; r++) {
              const y = target[r];
              if (y < 0) continue; // ignoreIndex
              let best = 0;
              for (let c = 1; c < classes; c++) if (logits[r * classes + c] > logits[r * classes + best]) best = c;
              counted++;
              if (best === y) correct++;
            }
          }
        }
      });
    } finally {
      this.model.train(true);
    }
    if (batches === 0) throw new ValueError('Trainer.evalData', 0, 'returned no batches');
    const loss = weight > 0 ? lossSum / weight : NaN;
    const m: EvalMetrics = { step: this.stepCount, loss, elapsedSeconds: this.elapsed() };
    if (want.includes('perplexity')) m.perplexity = Math.exp(loss);
    if (want.includes('accuracy')) m.accuracy = counted > 0 ? correct / counted : NaN;
    this.log.evals.push(m);
    this.options.onEval?.(m);
    return m;
  }

  /**
   * Train `steps` more steps (default: up to totalSteps), evaluating every evalEvery and
   * checkpointing every checkpointEvery steps. Returns this run's step metrics.
   */
  async run(steps = Math.max(0, this.options.totalSteps - this.stepCount)): Promise<StepMetrics[]> {
    checkPosInt('run.steps', steps);
    const out: StepMetrics[] = [];
    for (let i = 0; i < steps; i++) {
      out.push(this.step());
      const n = this.stepCount;
      if (this.options.evalEvery > 0 && n % this.options.evalEvery === 0) this.evaluate();
      if (this.options.checkpointEvery && this.options.checkpointDir && n % this.options.checkpointEvery === 0) {
        const path = await this.save();
        this.options.onCheckpoint?.(path);
      }
    }
    return out;
  }

  /** Everything besides model and optimizer a bit-exact resume needs. */
  checkpointState(): TrainerCheckpointState {
    return {
      step: this.stepCount,
      rng: { global: defaultGenerator().getState(), moe: this.moe.map((l) => l.noiseGenerator.getState()) },
      data: this.data.state(),
      log: structuredClone(this.log),
      config: this.fullConfig(),
    };
  }

  /** Restore a checkpointState() (model, optimizer and scheduler are restored separately: see resumeTrainer). */
  restoreState(s: TrainerCheckpointState): void {
    checkPosInt('restoreState.step', s.step);
    if (!s.rng || !Array.isArray(s.rng.moe) || s.rng.moe.length !== this.moe.length) {
      throw new ValueError('Trainer.restoreState.rng.moe', s.rng?.moe?.length, `needs one generator state per MoE layer (${this.moe.length})`);
    }
    const gens: GeneratorState[] = [s.rng.global, ...s.rng.moe];
    gens.forEach((g, i) => {
      if (!g || !Array.isArray(g.s) || g.s.length !== 4 || !g.s.every((v) => Number.isInteger(v)) || !(g.spareNormal === null || typeof g.spareNormal === 'number')) {
        throw new ValueError(i === 0 ? 'Trainer.restoreState.rng.global' : `Trainer.restoreState.rng.moe[${i - 1}]`, g, 'is not a generator state');
      }
    });
    this.data.setState(s.data);
    defaultGenerator().setState(s.rng.global);
    this.moe.forEach((l, i) => l.noiseGenerator.setState(s.rng.moe[i]));
    this.stepCount = s.step;
    this.log = structuredClone(s.log);
    this.startTime = null;
  }

  /** Write a checkpoint of the current state into `dir` (default checkpointDir); returns the step directory. */
  async save(dir = this.options.checkpointDir, opts?: SaveCheckpointOptions): Promise<string> {
    if (!dir) throw new ValueError('Trainer.checkpointDir', dir, 'save() needs a directory');
    return saveCheckpoint(
      dir,
      { model: this.model, optimizer: this.optimizer, scheduler: this.scheduler, trainerState: this.checkpointState() },
      { keep: this.options.keepCheckpoints, ...opts },
    );
  }
}

/** State of a TokenWindowSampler: its generator and the batches drawn. */
export interface TokenWindowSamplerState {
  generator: GeneratorState;
  batches: number;
}

/**
 * Seeded random windows of a token sequence for language-model training: each batch is
 * batchSize windows of seqLen + 1 tokens at uniform random offsets (input = first seqLen,
 * target = last seqLen). Resumable via state()/setState().
 */
export class TokenWindowSampler implements TrainData {
  readonly ids: Int32Array;
  readonly batchSize: number;
  readonly seqLen: number;
  private readonly gen: Generator;
  private batches = 0;

  constructor(ids: ArrayLike<number>, opts: { batchSize: number; seqLen: number; seed: number }) {
    this.ids = Int32Array.from(ids);
    this.batchSize = checkPosInt('TokenWindowSampler.batchSize', opts.batchSize, 1);
    this.seqLen = checkPosInt('TokenWindowSampler.seqLen', opts.seqLen, 1);
    if (this.ids.length < this.seqLen + 1) throw new ValueError('TokenWindowSampler.ids.length', this.ids.length, `needs at least seqLen + 1 = ${this.seqLen + 1} tokens`);
    this.gen = new Generator(opts.seed);
  }

  next(): Batch {
    const { batchSize: B, seqLen: T } = this;
    const x = new Int32Array(B * T), y = new Int32Array(B * T);
    const span = this.ids.length - T; // offsets 0..span-1
    for (let b = 0; b < B; b++) {
      const o = this.gen.int(span);
      x.set(this.ids.subarray(o, o + T), b * T);
      y.set(this.ids.subarray(o + 1, o + T + 1), b * T);
    }
    this.batches++;
    return { input: new Tensor(x, [B, T]), target: new Tensor(y, [B * T]), tokens: B * T };
  }

  state(): TokenWindowSamplerState {
    return { generator: this.gen.getState(), batches: this.batches };
  }

  setState(state: unknown): void {
    const s = state as TokenWindowSamplerState;
    if (!s || typeof s !== 'object' || !s.generator || !Array.isArray(s.generator.s) || s.generator.s.length !== 4 || !Number.isInteger(s.batches)) {
      throw new ValueError('TokenWindowSampler.state', state, 'is not a TokenWindowSampler state');
    }
    this.gen.setState(s.generator);
    this.batches = s.batches;
  }
}

/** Deterministic evaluation batches: consecutive non-overlapping windows from the start of `ids`. */
export function sequentialBatches(ids: ArrayLike<number>, opts: { batchSize: number; seqLen: number; maxBatches?: number }): () => Batch[] {
  const all = Int32Array.from(ids);
  const B = checkPosInt('sequentialBatches.batchSize', opts.batchSize, 1);
  const T = checkPosInt('sequentialBatches.seqLen', opts.seqLen, 1);
  const windows = Math.floor((all.length - 1) / T);
  const count = Math.min(Math.floor(windows / B), opts.maxBatches ?? Infinity);
  if (count < 1) throw new ValueError('sequentialBatches.ids.length', all.length, `needs at least batchSize·seqLen + 1 = ${B * T + 1} tokens`);
  return () => {
    const out: Batch[] = [];
    for (let i = 0; i < count; i++) {
      const x = new Int32Array(B * T), y = new Int32Array(B * T);
      for (let b = 0; b < B; b++) {
        const o = (i * B + b) * T;
        x.set(all.subarray(o, o + T), b * T);
        y.set(all.subarray(o + 1, o + T + 1), b * T);
      }
      out.push({ input: new Tensor(x, [B, T]), target: new Tensor(y, [B * T]), tokens: B * T });
    }
    return out;
  };
}
