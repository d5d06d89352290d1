/** Same seed and thread count ⇒ bit-identical results (issue 2, item 8). */
import { describe, expect, it } from 'vitest';
import { AdamW, MoELayer, Tensor, withBackend } from '../src/index.js';
import { backendsUnderTest } from './helpers.js';

function trainRun(): { params: Float32Array[]; losses: number[] } {
  const layer = new MoELayer({
    dModel: 16, dFF: 32, numExperts: 4, seed: 3,
    expert: { activation: 'silu', gated: true },
    router: { type: 'topk', k: 2, noise: { type: 'gaussian' }, capacityFactor: 1.0 },
    losses: { balance: 0.01, zLoss: 0.001, load: 0.01 },
  });
  const opt = new AdamW(layer.parameters(), { lr: 1e-2 });
  const losses: number[] = [];
  for (let step = 0; step < 5; step++) {
    const x = Tensor.randn([2, 8, 16], { seed: 100 + step });
    const out = layer.forward(x);
    const loss = out.output.square().mean().add(out.auxLoss);
    opt.zeroGrad();
    loss.backward();
    opt.step();
    losses.push(loss.item());
  }
  return { params: layer.parameters().map((p) => p.toFloat32Array()), losses };
}

describe('determinism', () => {
  for (const backend of backendsUnderTest()) {
    it(`two seeded training runs are bit-identical (${backend.name})`, () => {
      const a = withBackend(backend, trainRun);
      const b = withBackend(backend, trainRun);
      expect(b.losses).toEqual(a.losses);
      a.params.forEach((p, i) => expect(Buffer.from(b.params[i].buffer).equals(Buffer.from(p.buffer))).toBe(true));
    });
  }

  it('randn with the same seed gives the same values, different seeds differ', () => {
    expect(Tensor.randn([64], { seed: 7 }).toArray()).toEqual(Tensor.randn([64], { seed: 7 }).toArray());
    expect(Tensor.randn([64], { seed: 7 }).toArray()).not.toEqual(Tensor.randn([64], { seed: 8 }).toArray());
  });
});
