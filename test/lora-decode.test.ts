/**
 * The mixture's one-call decode path (src/lora/decode.ts, Backend.loraMixture) against the grouped
 * GEMM path that prompts take: same outputs, routes and stats row by row; KV-cache decoding equals
 * the full forward; in-place weight updates reach it; replaced tensors fall back to the tensor path.
 */
import { describe, expect, it } from 'vitest';
import { loadNativeBackend } from '../src/backend/native.js';
import { AdamW, Generator, KVCache, LoRAModel, MoETransformerLM, noGrad, Tensor, type TransformerLMConfig } from '../src/index.js';
import { DECODE_ROWS } from '../src/lora/decode.js';
import type { MixtureRouterConfig } from '../src/lora/config.js';
import { expectAllClose, forEachBackend } from './helpers.js';

const TINY: TransformerLMConfig = {
  vocabSize: 17, dModel: 16, nLayers: 2, nHeads: 2, dFF: 24, maxSeqLen: 48, seed: 3,
  moe: { numExperts: 4, router: { type: 'topk', k: 2 } }, moeEvery: 2,
};

function randn(shape: number[], seed: number, scale = 1): Float32Array {
  return Tensor.randn(shape, { generator: new Generator(seed) }).f32.map((v) => v * scale);
}

function mixture(router: MixtureRouterConfig, adapters = 4): LoRAModel {
  const m = new LoRAModel(new MoETransformerLM(TINY), {
    targets: ['q_proj', 'k_proj', 'v_proj', 'o_proj'],
    adapters: Array.from({ length: adapters }, (_, i) => ({ name: `a${i}`, rank: 2 + (i % 3), alpha: 4 + i })),
    router,
  });
  m.sites.forEach((s, i) => s.factors.forEach((f, e) => f && (f.B.data as Float32Array).set(randn([...f.B.shape], 100 + 7 * i + e, 0.3))));
  m.eval();
  return m;
}

const ROUTERS: MixtureRouterConfig[] = [{ type: 'topk', k: 2 }, { type: 'topk', k: 2, normalize: false }, { type: 'topk', k: 1 }, { type: 'dense' }];

forEachBackend((backend, run) => {
  describe(`LoRA mixture decode path [${backend.name}]`, () => {
    for (const router of [...ROUTERS, { type: 'single' } as const]) {
      it(`${JSON.stringify(router)}: a few rows give the grouped path's outputs, routes and stats`, () => run(() => {
        const m = mixture(router, router.type === 'single' ? 1 : 4);
        const site = m.sites[1];
        const T = DECODE_ROWS + 4, few = 3, inF = site.base.inFeatures, outF = site.base.outFeatures;
        const x = Tensor.from(randn([T, inF], 5), [T, inF]);
        const yAll = noGrad(() => site.forward(x)).f32.slice();
        const all = site.last!;
        const xFew = Tensor.from(x.f32.subarray(0, few * inF), [few, inF]);
        const yFew = noGrad(() => site.forward(xFew)).f32.slice();
        const r = site.last!;
        expectAllClose(yFew, yAll.subarray(0, few * outF), { rtol: 1e-4, atol: 1e-5, label: 'y' });
        expect(r.k).toBe(all.k);
        expect(Array.from(r.experts)).toEqual(Array.from(all.experts.subarray(0, few * all.k)));
        if (router.type === 'single') expect(r.gates).toBeNull();
        else expectAllClose(r.gates!.f32, all.gates!.f32.subarray(0, few * all.k), { rtol: 1e-5, atol: 1e-6, label: 'gates' });
        // Stats as the tensor path reports them: assignments per adapter counted from the choices.
        const counts = new Array(site.factors.length).fill(0);
        for (const e of r.experts) counts[e]++;
        expect(r.stats.tokensPerExpert).toEqual(counts);
        expect(r.stats.droppedAssignments).toBe(0);
        expect(r.plan.expertOffsets[site.factors.length]).toBe(few * r.k);
        if (router.type !== 'single') expect([...r.logits!.shape]).toEqual([few, site.factors.length]);
      }));
    }

    it('KV-cache decoding one token at a time equals the full forward (top-2 and dense)', () => run(() => {
      for (const router of [ROUTERS[0], ROUTERS[3]]) {
        const m = mixture(router);
        // Longer than DECODE_ROWS: the full forward takes the grouped path, each cached step the decode path.
        const ids = Array.from({ length: DECODE_ROWS + 8 }, (_, i) => (i * 7 + 3) % TINY.vocabSize);
        const full = noGrad(() => m.forward(Tensor.indices(ids, [1, ids.length])).logits).f32.slice();
        const cache = new KVCache(TINY.nLayers);
        const V = TINY.vocabSize;
        noGrad(() => {
          for (let t = 0; t < ids.length; t++) {
            const out = m.forward(Tensor.indices([ids[t]], [1, 1]), { cache }).logits.f32;
            expectAllClose(out, full.subarray(t * V, (t + 1) * V), { rtol: 1e-4, atol: 1e-4, label: `${router.type} token ${t}` });
          }
        });
      }
    }));

    it('sees in-place updates of adapters and router rows (optimizer step, loading), and falls back when a tensor was replaced', () => run(() => {
      const m = mixture({ type: 'topk', k: 2 });
      const site = m.sites[0];
      const T = DECODE_ROWS + 2, inF = site.base.inFeatures, outF = site.base.outFeatures;
      const x = Tensor.from(randn([T, inF], 9), [T, inF]);
      const few = Tensor.from(x.f32.subarray(0, 2 * inF), [2, inF]);
      const agree = (label: string): void => {
        const yAll = noGrad(() => site.forward(x)).f32.slice();
        const yFew = noGrad(() => site.forward(few)).f32;
        expectAllClose(yFew, yAll.subarray(0, 2 * outF), { rtol: 1e-4, atol: 1e-5, label });
      };
      const before = noGrad(() => site.forward(few)).f32.slice();
      // One optimizer step on everything trainable writes the parameters in place.
      const opt = new AdamW(m.parameters(), { lr: 0.05 });
      const ids = Tensor.indices([1, 2, 3, 4, 5, 6], [1, 6]);
      m.train();
      m.loss(ids, [2, 3, 4, 5, 6, -100]).loss.backward();
      opt.step();
      m.eval();
      expect(Math.max(...noGrad(() => site.forward(few)).f32.map((v, i) => Math.abs(v - before[i])))).toBeGreaterThan(1e-4);
      agree('after an optimizer step');
      m.loadAdapterWeights('a1', new Map([[site.path, { A: Tensor.from(randn([3, inF], 11), [3, inF]), B: Tensor.from(randn([outF, 3], 12), [outF, 3]) }]]));
      const saved = m.routerWeights();
      saved[`${site.path}.router.weight`] = Tensor.from(randn([4, inF], 13), [4, inF]);
      m.loadRouterRows(saved, m.adapterNames);
      agree('after loading adapter and router weights');
      // A factor replaced by another tensor: the packed buffers are stale, so the tensor path must run.
      const f = site.factors[2]!;
      (site.factors as Array<typeof f>)[2] = { A: Tensor.from(f.A.f32.map((v) => -v), f.A.shape), B: Tensor.from(f.B.f32, f.B.shape) };
      agree('after replacing a factor');
    }));
  });
});

const native = loadNativeBackend();
describe.runIf(native !== null)('loraMixture native argument checks', () => {
  it('short buffers and bad ranks throw RangeError naming the argument; nothing is written', () => {
    const nb = native!;
    const f = (n: number): Float32Array => new Float32Array(n);
    const dims = new Int32Array([2, 4, 3, 2, 1, 0, 1, 2]); // rows 2, d 4, out 3, n 2, k 1, top-k, ranks 1 and 2
    const ok = (): [Float32Array, Float32Array, Float32Array, Float32Array, Float32Array, Int32Array, Int32Array, Float32Array, Float32Array | null, Float32Array] =>
      [f(8), f(8), f(12), f(9), f(2), dims, new Int32Array(2), f(2), f(4), f(6)];
    expect(() => nb.loraMixture(...ok())).not.toThrow();
    const bad = (i: number, v: unknown, msg: RegExp | typeof TypeError): void => {
      const args = ok();
      (args as unknown[])[i] = v;
      expect(() => nb.loraMixture(...args)).toThrow(msg);
    };
    bad(0, f(7), /x has 7 elements/);
    bad(1, f(7), /router has 7/);
    bad(2, f(11), /A has 11/);
    bad(3, f(8), /B has 8/);
    bad(4, f(1), /scales has 1/);
    bad(6, new Int32Array(1), /experts has 1/);
    bad(8, f(3), /logits has 3/);
    bad(9, f(5), /y has 5/);
    bad(5, new Int32Array([2, 4, 3, 2, 1, 0, 1]), /dims must be/);
    bad(5, new Int32Array([2, 4, 3, 2, 1, 0, 1, -2]), /ranks\[1\]=-2/);
    bad(7, new Float64Array(2), TypeError);
    const y = f(5).fill(3);
    const args = ok();
    args[9] = y;
    expect(() => nb.loraMixture(...args)).toThrow(RangeError);
    expect(Array.from(y)).toEqual([3, 3, 3, 3, 3]);
  });
});
