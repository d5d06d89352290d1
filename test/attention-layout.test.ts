/** Attention in [B, T, H, D] layout and with grouped key/value heads equals the plain [B, H, T, D] op. */
import { describe, it } from 'vitest';
import { Tensor, concat, scaledDotProductAttention, slice, transpose } from '../src/index.js';
import { expectAllClose, forEachBackend, gradCheck } from './helpers.js';

/** Repeat each kv head `group` times along the head axis of a [B, Hkv, T, D] tensor. */
function repeatHeads(x: Tensor, group: number): Tensor {
  const heads: Tensor[] = [];
  for (let h = 0; h < x.shape[1]; h++) for (let r = 0; r < group; r++) heads.push(slice(x, 1, h, h + 1));
  return concat(heads, 1);
}

forEachBackend((backend, run) => {
  describe(`attention layouts and GQA (${backend.name})`, () => {
    for (const causal of [false, true]) {
      it(`bthd equals bhtd (causal=${causal}), forward and gradients`, () => run(() => {
        const [B, H, T, D] = [2, 3, 5, 4];
        const q = Tensor.randn([B, T, H, D], { seed: 1, requiresGrad: true });
        const k = Tensor.randn([B, T, H, D], { seed: 2, requiresGrad: true });
        const v = Tensor.randn([B, T, H, D], { seed: 3, requiresGrad: true });
        const g = Tensor.randn([B, T, H, D], { seed: 4 });
        const perm = [0, 2, 1, 3];
        const a = scaledDotProductAttention(q, k, v, { causal, layout: 'bthd' });
        const b = transpose(scaledDotProductAttention(transpose(q, perm), transpose(k, perm), transpose(v, perm), { causal }), perm);
        expectAllClose(a, b, { rtol: 1e-5, atol: 1e-6 });
        a.mul(g).sum().backward();
        const grads = [q.grad!, k.grad!, v.grad!];
        q.grad = k.grad = v.grad = null;
        b.mul(g).sum().backward();
        expectAllClose(grads[0], q.grad!, { rtol: 1e-5, atol: 1e-6 });
        expectAllClose(grads[1], k.grad!, { rtol: 1e-5, atol: 1e-6 });
        expectAllClose(grads[2], v.grad!, { rtol: 1e-5, atol: 1e-6 });
      }));
    }

    for (const layout of ['bhtd', 'bthd'] as const) {
      it(`grouped kv heads equal repeated heads (${layout})`, () => run(() => {
        const [B, H, Hkv, Tq, Tk, D] = [2, 4, 2, 3, 5, 4];
        const toLayout = (t: Tensor): Tensor => (layout === 'bhtd' ? t : transpose(t, [0, 2, 1, 3]));
        const q0 = Tensor.randn([B, H, Tq, D], { seed: 5 });
        const k0 = Tensor.randn([B, Hkv, Tk, D], { seed: 6 });
        const v0 = Tensor.randn([B, Hkv, Tk, D], { seed: 7 });
        const gqa = scaledDotProductAttention(toLayout(q0), toLayout(k0), toLayout(v0), { causal: true, layout });
        const full = scaledDotProductAttention(q0, repeatHeads(k0, H / Hkv), repeatHeads(v0, H / Hkv), { causal: true });
        expectAllClose(gqa, toLayout(full), { rtol: 1e-5, atol: 1e-6 });
        gradCheck((q, k, v) => scaledDotProductAttention(q, k, v, { causal: true, layout }).square().sum(), [toLayout(q0), toLayout(k0), toLayout(v0)], { label: `gqa ${layout}` });
      }));
    }
  });
});

describe('rotary layouts', () => {
  it("'bthd' equals the transposed 'bhtd' rotation, with an offset start", async () => {
    const { applyRotary } = await import('../src/index.js');
    const x = Tensor.randn([2, 5, 3, 8], { seed: 9, requiresGrad: true });
    const a = applyRotary(x, { layout: 'bthd', startPos: 3 });
    const b = transpose(applyRotary(transpose(x, [0, 2, 1, 3]), { startPos: 3 }), [0, 2, 1, 3]);
    expectAllClose(a, b, { rtol: 1e-6, atol: 1e-7 });
    gradCheck((t) => applyRotary(t, { layout: 'bthd', startPos: 2 }).square().sum(), [x.detach()], { label: 'rope bthd' });
  });
});
