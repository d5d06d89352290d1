import { describe, expect, it } from 'vitest';
import { AdamW, ConfigError, KVCache, MoETransformerLM, Tensor, denseBaselineConfig, noGrad, type TransformerLMConfig } from '../src/index.js';
import { expectAllClose } from './helpers.js';

const base: TransformerLMConfig = {
  vocabSize: 32, dModel: 32, nLayers: 2, nHeads: 4, dFF: 32, maxSeqLen: 32, seed: 1,
  moe: { numExperts: 4, router: { type: 'topk', k: 2 }, losses: { balance: 0.01 } },
};

describe('MoETransformerLM', () => {
  it('names parameters PyTorch-style and marks MoE layers', () => {
    const lm = new MoETransformerLM({ ...base, moeEvery: 2, dFF: 64 });
    const names = lm.namedParameters().map(([n]) => n);
    expect(names).toContain('embed_tokens.weight');
    expect(names).toContain('layers.0.self_attn.q_proj.weight');
    expect(names).toContain('layers.0.mlp.w1.weight');
    expect(names).toContain('layers.1.mlp.gate.weight');
    expect(names).toContain('layers.1.mlp.experts.3.w3.weight');
    expect(names).toContain('norm.weight');
    expect(lm.moeLayerIndices()).toEqual([1]);
  });

  it('refuses non-causal routers', () => {
    expect(() => new MoETransformerLM({ ...base, moe: { numExperts: 4, router: { type: 'soft', slotsPerExpert: 1 } } })).toThrow(ConfigError);
    expect(() => new MoETransformerLM({ ...base, moe: { numExperts: 4, router: { type: 'expert-choice' } } })).toThrow(/moe\.router\.type/);
  });

  it('is causal: changing a future token never changes an earlier logit', () => {
    const lm = new MoETransformerLM(base);
    lm.eval();
    const ids = [3, 5, 7, 11, 13, 17, 19, 23];
    const a = noGrad(() => lm.forward(Tensor.indices(ids, [1, 8])).logits);
    for (let pos = 1; pos < 8; pos++) {
      const changed = [...ids];
      changed[pos] = (changed[pos] + 9) % 32;
      const b = noGrad(() => lm.forward(Tensor.indices(changed, [1, 8])).logits);
      const V = 32;
      expect(Array.from(b.f32.subarray(0, pos * V))).toEqual(Array.from(a.f32.subarray(0, pos * V)));
      expect(Array.from(b.f32.subarray(pos * V, (pos + 1) * V))).not.toEqual(Array.from(a.f32.subarray(pos * V, (pos + 1) * V)));
    }
  });

  it('KV-cached incremental decoding matches the full forward', () => {
    const lm = new MoETransformerLM(base);
    lm.eval();
    const ids = [1, 2, 3, 4, 5, 6];
    const full = noGrad(() => lm.forward(Tensor.indices(ids, [1, 6])).logits);
    const cache = new KVCache(2);
    const first = noGrad(() => lm.forward(Tensor.indices(ids.slice(0, 4), [1, 4]), { cache }).logits);
    const rest = noGrad(() => lm.forward(Tensor.indices(ids.slice(4), [1, 2]), { cache }).logits);
    expectAllClose(first.f32, full.f32.subarray(0, 4 * 32), { rtol: 1e-4, atol: 1e-5 });
    expectAllClose(rest.f32, full.f32.subarray(4 * 32), { rtol: 1e-4, atol: 1e-5 });
  });

  it('a tiny MoE LM overfits a short text', () => {
    const text = 'the whale the sea the ship the whale the sea the ship ';
    const chars = [...new Set(text)].sort();
    const ids = [...text].map((ch) => chars.indexOf(ch));
    const lm = new MoETransformerLM({ ...base, vocabSize: chars.length, maxSeqLen: 64 });
    const opt = new AdamW(lm.parameters(), { lr: 1e-2, weightDecay: 0 });
    const x = Tensor.indices(ids.slice(0, -1), [1, ids.length - 1]);
    const y = Tensor.indices(ids.slice(1));
    let last = Infinity;
    for (let step = 0; step < 150; step++) {
      const { loss, out } = lm.loss(x, y);
      opt.zeroGrad();
      loss.add(out.auxLoss).backward();
      opt.step();
      last = loss.item();
    }
    expect(last).toBeLessThan(0.3);
  });

  it('the dense baseline has the same active parameters per token', () => {
    const moe = new MoETransformerLM(base);
    const dense = new MoETransformerLM(denseBaselineConfig(base));
    // Router weights are the only active extra: 4·32 per MoE layer.
    expect(moe.activeParameters() - dense.activeParameters()).toBe(2 * 4 * 32);
    expect(moe.numParameters()).toBeGreaterThan(dense.numParameters());
  });
});
