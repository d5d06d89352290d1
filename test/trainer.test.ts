/** Trainer: loss falls on a tiny MoE LM, metrics are filled, bias balancing is applied, eval works. */
import { describe, expect, it } from 'vitest';
import { crossEntropy, Linear, Module, MoETransformerLM, Tensor, ValueError, type TransformerLMConfig } from '../src/index.js';
import { sequentialBatches, TokenWindowSampler, Trainer, type Batch, type TrainData, type TrainerOptions } from '../src/train/index.js';

const TEXT = 'the whale swam in the sea and the ship sailed on the sea after the whale. '.repeat(8);
const CHARS = [...new Set(TEXT)].sort();
const IDS = [...TEXT].map((c) => CHARS.indexOf(c));

function lmConfig(over: Partial<TransformerLMConfig> = {}): TransformerLMConfig {
  return {
    vocabSize: CHARS.length, dModel: 32, nLayers: 2, nHeads: 4, dFF: 32, maxSeqLen: 32, seed: 3,
    moe: { numExperts: 4, router: { type: 'topk', k: 2 }, losses: { balance: 0.01, zLoss: 0.001 } },
    ...over,
  };
}

function options(over: Partial<TrainerOptions> = {}): TrainerOptions {
  return {
    lr: 1e-2, weightDecay: 0.01, warmupSteps: 5, totalSteps: 60, evalEvery: 0, evalBatches: 2, seed: 0,
    ...over,
  };
}

/** A minimal in-test data source: consecutive windows of the repeated text, cursor as state. */
class CyclicWindows implements TrainData {
  private cursor = 0;
  constructor(readonly batchSize: number, readonly seqLen: number) {}
  next(): Batch {
    const B = this.batchSize, T = this.seqLen;
    const x: number[] = [], y: number[] = [];
    for (let b = 0; b < B; b++) {
      for (let t = 0; t < T; t++) {
        x.push(IDS[(this.cursor + t) % IDS.length]);
        y.push(IDS[(this.cursor + t + 1) % IDS.length]);
      }
      this.cursor = (this.cursor + 7) % IDS.length;
    }
    return { input: Tensor.indices(x, [B, T]), target: Tensor.indices(y), tokens: B * T };
  }
  state(): unknown {
    return { cursor: this.cursor };
  }
  setState(s: unknown): void {
    this.cursor = (s as { cursor: number }).cursor;
  }
}

describe('Trainer', () => {
  it('trains a tiny MoE LM: the loss falls (train and eval)', async () => {
    const lm = new MoETransformerLM(lmConfig());
    const evalData = sequentialBatches(IDS, { batchSize: 2, seqLen: 16, maxBatches: 2 });
    const trainer = new Trainer(lm, new CyclicWindows(4, 16), options({ evalEvery: 30, evalData }));
    const before = trainer.evaluate();
    await trainer.run();
    const losses = trainer.log.steps.map((s) => s.loss);
    expect(losses).toHaveLength(60);
    const head = losses.slice(0, 5).reduce((a, b) => a + b) / 5;
    const tail = losses.slice(-5).reduce((a, b) => a + b) / 5;
    expect(tail).toBeLessThan(0.5 * head);
    expect(tail).toBeLessThan(1.2);
    // The initial evaluation plus evaluations at steps 30 and 60.
    expect(trainer.log.evals.map((e) => e.step)).toEqual([0, 30, 60]);
    const after = trainer.log.evals[2];
    expect(after.loss).toBeLessThan(0.5 * before.loss);
    expect(after.perplexity).toBeCloseTo(Math.exp(after.loss), 10);
  });

  it('fills every step metric, per-layer routing metrics included', async () => {
    const cfg = lmConfig({ nLayers: 3, moeEvery: 2, dFF: 32 });
    const lm = new MoETransformerLM(cfg);
    const seen: number[] = [];
    const trainer = new Trainer(lm, new TokenWindowSampler(IDS, { batchSize: 2, seqLen: 12, seed: 5 }), options({ warmupSteps: 2, totalSteps: 6, onStep: (m) => seen.push(m.step) }));
    await trainer.run(4);
    expect(seen).toEqual([1, 2, 3, 4]);
    const steps = trainer.log.steps;
    expect(steps.map((s) => s.step)).toEqual([1, 2, 3, 4]);
    // Warmup from 0: lr of step t (1-based) is base·(t-1)/warmup, then cosine.
    expect(steps[0].lr).toBe(0);
    expect(steps[1].lr).toBeCloseTo(0.005, 12);
    expect(steps[2].lr).toBeCloseTo(0.01, 12);
    expect(steps[3].lr).toBeLessThan(0.01);
    let prevElapsed = 0;
    for (const s of steps) {
      expect(s.tokens).toBe(24);
      expect(s.tokensPerSecond).toBeGreaterThan(0);
      expect(s.elapsedSeconds).toBeGreaterThan(prevElapsed);
      prevElapsed = s.elapsedSeconds;
      expect(s.gradNorm).toBeGreaterThan(0);
      expect(Number.isFinite(s.loss)).toBe(true);
      expect(s.auxLoss).toBeGreaterThan(0); // balance + z-loss are on
      expect(s.moe.map((m) => m.layer)).toEqual([1]); // layer 1 is the only MoE layer
      for (const m of s.moe) {
        expect(m.tokensPerExpert).toHaveLength(4);
        expect(m.tokensPerExpert.reduce((a, b) => a + b)).toBe(24 * 2); // dropless: every token, k = 2
        expect(m.dropFraction).toBe(0);
        expect(m.droppedTokens).toBe(0);
        expect(m.routerEntropy).toBeGreaterThan(0);
        expect(m.routerEntropy).toBeLessThanOrEqual(Math.log(4) + 1e-9);
        expect(m.loadImbalance).toBeGreaterThanOrEqual(1);
        expect(m.balanceLoss).toBeGreaterThan(0);
        expect(m.zLoss).toBeGreaterThan(0);
      }
    }
    // The aux loss is exactly the weighted sum the layers report.
    const m0 = steps[3].moe[0];
    expect(steps[3].auxLoss).toBeCloseTo(0.01 * m0.balanceLoss + 0.001 * m0.zLoss, 5);
    expect(trainer.log.config).toMatchObject({ model: lm.config, trainer: { lr: 1e-2, totalSteps: 6 } });
    expect(JSON.parse(JSON.stringify(trainer.log))).toEqual(trainer.log);
  });

  it('records drops with a capacity limit', () => {
    const lm = new MoETransformerLM(lmConfig({ moe: { numExperts: 4, router: { type: 'topk', k: 1, capacityFactor: 0.5 } } }));
    const trainer = new Trainer(lm, new CyclicWindows(2, 16), options());
    const s = trainer.step();
    for (const m of s.moe) {
      const kept = m.tokensPerExpert.reduce((a, b) => a + b);
      expect(kept).toBeLessThanOrEqual(4 * Math.ceil((0.5 * 32) / 4));
      expect(m.dropFraction).toBeCloseTo((32 - kept) / 32, 12);
      expect(m.droppedTokens).toBe(32 - kept);
    }
  });

  it('applies bias balancing after every step when configured', () => {
    const rate = 0.01;
    const lm = new MoETransformerLM(lmConfig({ moe: { numExperts: 4, router: { type: 'topk', k: 2, biasBalancing: { rate } } } }));
    const biases = lm.moeLayers().map((l) => l.gate.bias!);
    expect(biases.every((b) => b.f32.every((v) => v === 0))).toBe(true);
    const trainer = new Trainer(lm, new CyclicWindows(2, 16), options());
    const expected = biases.map((b) => Array.from(b.f32));
    for (let i = 0; i < 3; i++) {
      const s = trainer.step();
      // Dropless, so tokensPerExpert are the selection counts the update uses.
      s.moe.forEach((m, li) => {
        const mean = m.tokensPerExpert.reduce((a, b) => a + b) / 4;
        expected[li] = expected[li].map((v, e) => Math.fround(v + rate * Math.sign(mean - m.tokensPerExpert[e])));
      });
      biases.forEach((b, li) => expect(Array.from(b.f32)).toEqual(expected[li]));
    }
    expect(biases.some((b) => b.f32.some((v) => v !== 0))).toBe(true);
  });

  it('leaves the bias alone without bias balancing', () => {
    const lm = new MoETransformerLM(lmConfig());
    expect(lm.moeLayers().every((l) => l.gate.bias === null)).toBe(true);
    const trainer = new Trainer(lm, new CyclicWindows(2, 16), options());
    expect(() => trainer.step()).not.toThrow();
  });

  it('clips the global gradient norm and records the norm before clipping', () => {
    const run = (clipNorm: number | null): { norm: number; params: Float32Array[] } => {
      const lm = new MoETransformerLM(lmConfig());
      const trainer = new Trainer(lm, new CyclicWindows(2, 16), options({ clipNorm, warmupSteps: 0 }));
      const s = trainer.step();
      return { norm: s.gradNorm, params: lm.parameters().map((p) => p.f32.slice()) };
    };
    const clipped = run(1e-3), free = run(null);
    expect(clipped.norm).toBe(free.norm);
    expect(clipped.norm).toBeGreaterThan(1e-3);
    // Adam is scale-invariant except for eps: a clipped first step still differs from an unclipped one only slightly,
    // but parameters are not bit-identical.
    expect(clipped.params.some((p, i) => p.some((v, j) => v !== free.params[i][j]))).toBe(true);
  });

  it('does not decay norm weights (rank-1) by default', () => {
    const lm = new MoETransformerLM(lmConfig());
    const trainer = new Trainer(lm, new CyclicWindows(2, 16), options());
    const groups = trainer.optimizer.paramGroups;
    expect(groups.map((g) => g.weightDecay)).toEqual([0.01, 0]);
    expect(groups[1].params.every((p) => p.rank === 1)).toBe(true);
    expect(groups[0].params.every((p) => p.rank >= 2)).toBe(true);
    const all = new Trainer(lm, new CyclicWindows(2, 16), options({ decay: 'all' }));
    expect(all.optimizer.paramGroups).toHaveLength(1);
  });

  it('evaluates without touching training state, and measures accuracy for classifiers', () => {
    // A non-MoE classifier with the same loss() shape.
    class Classifier extends Module {
      readonly fc = this.registerModule('fc', new Linear(2, 2, { seed: 1 }));
      loss(x: Tensor, y: Tensor) {
        const logits = this.fc.forward(x);
        return { loss: crossEntropy(logits, y), out: { auxLoss: Tensor.scalar(0), moe: [], logits } };
      }
    }
    const points: Batch[] = [];
    for (let b = 0; b < 4; b++) {
      const xs: number[] = [], ys: number[] = [];
      for (let i = 0; i < 8; i++) {
        const a = Math.sin(b * 8 + i), c = Math.cos(3 * (b * 8 + i));
        xs.push(a, c);
        ys.push(a > c ? 1 : 0);
      }
      points.push({ input: Tensor.from(xs, [8, 2]), target: Tensor.indices(ys), tokens: 8 });
    }
    let k = 0;
    const data: TrainData = { next: () => points[k++ % 4], state: () => k, setState: (s) => void (k = s as number) };
    const model = new Classifier();
    const trainer = new Trainer(model, data, options({ lr: 0.1, warmupSteps: 0, totalSteps: 200, evalEvery: 100, evalBatches: 4, evalData: () => points, evalMetrics: ['accuracy'] }));
    const before = trainer.evaluate();
    expect(model.training).toBe(true);
    expect(trainer.completedSteps).toBe(0);
    expect(k).toBe(0);
    for (let i = 0; i < 200; i++) trainer.step();
    const after = trainer.evaluate();
    expect(after.perplexity).toBeUndefined();
    expect(after.accuracy).toBeGreaterThanOrEqual(0.9);
    expect(after.loss).toBeLessThan(before.loss);
  });

  it('accepts batches without a token count (counts the targets) and LMBatcher-style sources', () => {
    const lm = new MoETransformerLM(lmConfig());
    const inner = new CyclicWindows(2, 16);
    const data: TrainData = {
      next: () => {
        const { input, target } = inner.next();
        return { input, target };
      },
      state: () => inner.state(),
      setState: (s: unknown) => inner.setState(s),
    };
    const trainer = new Trainer(lm, data, options({ evalEvery: 1, evalData: () => [data.next()] }));
    expect(trainer.step().tokens).toBe(32);
    expect(Number.isFinite(trainer.evaluate().loss)).toBe(true);
  });

  it('refuses invalid options with ValueError naming the option', () => {
    const lm = new MoETransformerLM(lmConfig());
    const data = new CyclicWindows(2, 16);
    expect(() => new Trainer(lm, data, options({ lr: -1 }))).toThrow(/Trainer\.lr/);
    expect(() => new Trainer(lm, data, options({ evalEvery: 10 }))).toThrow(/Trainer\.evalData/);
    expect(() => new Trainer(lm, data, options({ checkpointEvery: 10 }))).toThrow(/Trainer\.checkpointDir/);
    expect(() => new Trainer(lm, {} as TrainData, options())).toThrow(ValueError);
  });

  it('TokenWindowSampler is seeded and resumable', () => {
    const a = new TokenWindowSampler(IDS, { batchSize: 3, seqLen: 8, seed: 9 });
    const b = new TokenWindowSampler(IDS, { batchSize: 3, seqLen: 8, seed: 9 });
    a.next();
    const s = JSON.parse(JSON.stringify(a.state()));
    const next = a.next();
    b.setState(s);
    const again = b.next();
    expect(Array.from(again.input.i32)).toEqual(Array.from(next.input.i32));
    expect(Array.from(again.target.i32)).toEqual(Array.from(next.target.i32));
    // Targets are inputs shifted by one.
    const x = next.input.i32, y = next.target.i32;
    for (let i = 0; i < 3; i++) expect(Array.from(y.subarray(i * 8, i * 8 + 7))).toEqual(Array.from(x.subarray(i * 8 + 1, i * 8 + 8)));
    expect(() => b.setState({ nope: 1 })).toThrow(ValueError);
  });
});
