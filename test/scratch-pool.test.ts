// The backward pass recycles dead gradients through the scratch pool (runBackward) and rules take
// their gradient buffers from it. A training step with pooling on, and every parked buffer
// poisoned with NaN, must give bit-identical losses and gradients to one with pooling off: no
// rule may read a stale value, and no buffer may be recycled while something still uses it.
import { afterEach, describe, expect, test } from 'vitest';
import { AdamW, MoETransformerLM, Tensor, type TransformerLMConfig } from '../src/index.js';
import { poisonScratch, setScratchPooling } from '../src/backend/scratch.js';
import { forEachBackend } from './helpers.js';

// Sizes chosen so activations and gradients (B·T·d = 65,536 floats) are large enough to be pooled.
const config: TransformerLMConfig = {
  vocabSize: 300, dModel: 128, nLayers: 2, nHeads: 4, nKVHeads: 2, dFF: 128, maxSeqLen: 128, seed: 3,
  moe: { numExperts: 4, router: { type: 'topk', k: 2 }, losses: { balance: 0.01, zLoss: 0.001 } },
};

function train(pooled: boolean, run: <T>(f: () => T) => T): { losses: number[]; grads: Float32Array[] } {
  setScratchPooling(pooled);
  const lm = new MoETransformerLM(config);
  const opt = new AdamW(lm.parameters(), { lr: 1e-3 });
  const B = 4, T = 128;
  const ids = Tensor.indices(Array.from({ length: B * T }, (_, i) => (i * 37) % 300), [B, T]);
  const targets = Tensor.indices(Array.from({ length: B * T }, (_, i) => (i * 101 + 7) % 300));
  const losses: number[] = [];
  let grads: Float32Array[] = [];
  for (let step = 0; step < 2; step++) {
    opt.zeroGrad();
    run(() => {
      const { loss, out } = lm.loss(ids, targets);
      const total = loss.add(out.auxLoss);
      losses.push(total.item());
      if (pooled) poisonScratch(Number.NaN);
      total.backward();
    });
    grads = lm.parameters().map((p) => Float32Array.from((p.grad as Tensor).f32));
    opt.step();
  }
  return { losses, grads };
}

afterEach(() => setScratchPooling(true));

forEachBackend((backend, run) => {
  describe(`scratch pool in the backward pass [${backend.name}]`, () => {
    test('pooled (poisoned) and unpooled training steps agree bit for bit', () => {
      const plain = train(false, run);
      const pooled = train(true, run);
      expect(pooled.losses).toEqual(plain.losses);
      expect(pooled.grads.length).toBe(plain.grads.length);
      pooled.grads.forEach((g, i) => {
        expect(g.every((v) => Number.isFinite(v)), `param ${i} finite`).toBe(true);
        expect(Buffer.from(g.buffer).equals(Buffer.from(plain.grads[i].buffer)), `param ${i} bit-identical`).toBe(true);
      });
    });
  });
});
