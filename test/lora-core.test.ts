/** LoRALinear, the grouped low-rank op and LoRA mixtures against naive references and finite differences. */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  AdamW,
  ConfigError,
  Generator,
  groupedLowRank,
  Linear,
  loadAdapter,
  LoRALinear,
  LoRAModel,
  MoETransformerLM,
  noGrad,
  saveAdapter,
  ShapeError,
  StateDictError,
  Tensor,
  type TransformerLMConfig,
} from '../src/index.js';
import { expectAllClose, forEachBackend, gradCheck } from './helpers.js';

const TINY: TransformerLMConfig = {
  vocabSize: 17, dModel: 16, nLayers: 2, nHeads: 2, dFF: 24, maxSeqLen: 16, seed: 3,
  moe: { numExperts: 4, router: { type: 'topk', k: 2 } }, moeEvery: 2,
};

function randn(shape: number[], seed: number, scale = 1): Tensor {
  const t = Tensor.randn(shape, { generator: new Generator(seed) });
  (t.data as Float32Array).forEach((v, i, a) => (a[i] = v * scale));
  return t;
}

/** Naive y[t] = W x[t] + b + Σ_e g[t][e] · s_e · B_e (A_e x[t]) in float64. */
function naiveMixture(x: Float32Array, T: number, W: Float32Array, b: Float32Array | null, inF: number, outF: number, A: Float32Array[], B: Float32Array[], r: number[], s: number[], g: number[][]): Float64Array {
  const y = new Float64Array(T * outF);
  for (let t = 0; t < T; t++) {
    for (let o = 0; o < outF; o++) {
      let acc = b ? b[o] : 0;
      for (let i = 0; i < inF; i++) acc += W[o * inF + i] * x[t * inF + i];
      y[t * outF + o] = acc;
    }
    A.forEach((Ae, e) => {
      if (g[t][e] === 0) return;
      const h = new Float64Array(r[e]);
      for (let j = 0; j < r[e]; j++) for (let i = 0; i < inF; i++) h[j] += Ae[j * inF + i] * x[t * inF + i];
      for (let o = 0; o < outF; o++) {
        let acc = 0;
        for (let j = 0; j < r[e]; j++) acc += B[e][o * r[e] + j] * h[j];
        y[t * outF + o] += g[t][e] * s[e] * acc;
      }
    });
  }
  return y;
}

function softmaxRows(logits: Float32Array, T: number, n: number): number[][] {
  const out: number[][] = [];
  for (let t = 0; t < T; t++) {
    const row = Array.from(logits.subarray(t * n, (t + 1) * n));
    const m = Math.max(...row);
    const ex = row.map((v) => Math.exp(v - m));
    const z = ex.reduce((a, c) => a + c, 0);
    out.push(ex.map((v) => v / z));
  }
  return out;
}

/** Give every adapter non-zero B (B starts at zero, which would make every test trivially pass). */
function randomiseAdapters(m: LoRAModel, seed: number): void {
  m.sites.forEach((s, i) => s.factors.forEach((f, e) => f && (f.B.data as Float32Array).set(randn(f.B.shape as number[], seed + 31 * i + e, 0.3).f32)));
}

forEachBackend((backend, run) => {
  describe(`LoRALinear [${backend.name}]`, () => {
    it('equals the naive W x + b + scale·B(A x), gradients match finite differences, W gets none', () => run(() => {
      const base = new Linear(6, 5, { seed: 1 });
      const lora = new LoRALinear(base, { rank: 3, alpha: 6 });
      expect(lora.scale).toBe(2);
      expect(Array.from(lora.lora_B.weight.f32).every((v) => v === 0)).toBe(true);
      (lora.lora_B.weight.data as Float32Array).set(randn([5, 3], 2).f32);
      const x = randn([4, 6], 3);
      const y = lora.forward(x);
      const ref = naiveMixture(x.f32, 4, base.weight.f32, base.bias!.f32, 6, 5, [lora.lora_A.weight.f32], [lora.lora_B.weight.f32], [3], [2], [[1], [1], [1], [1]]);
      expectAllClose(y.f32, ref, { rtol: 1e-5, atol: 1e-5 });
      // Gradients to A, B and x by central differences; W and b are frozen.
      const W0 = base.weight.f32.slice();
      const fn = (xx: Tensor, A: Tensor, B: Tensor): Tensor => {
        (lora.lora_A.weight.data as Float32Array).set(A.f32);
        (lora.lora_B.weight.data as Float32Array).set(B.f32);
        const out = noGrad(() => 0) === 0 && A.requiresGrad ? tapeForward(lora, xx, A, B) : lora.forward(xx);
        return out.square().sum();
      };
      gradCheck(fn, [x, lora.lora_A.weight.detach().clone(), lora.lora_B.weight.detach().clone()], { label: 'LoRALinear' });
      // Through the module's own tape: W and b stay without a gradient.
      lora.zeroGrad();
      lora.forward(randn([4, 6], 9, 1).reshape([2, 2, 6])).square().sum().backward();
      expect(base.weight.requiresGrad).toBe(false);
      expect(base.weight.grad).toBeNull();
      expect(base.bias!.grad).toBeNull();
      expect(lora.lora_A.weight.grad).not.toBeNull();
      expect(lora.trainableParameters()).toEqual([lora.lora_A.weight, lora.lora_B.weight]);
      const opt = new AdamW(lora.trainableParameters(), { lr: 0.1 });
      opt.step();
      expect(Array.from(base.weight.f32)).toEqual(Array.from(W0));
      expect(opt.getState(base.weight)).toBeUndefined();
    }));

    it('rejects rank <= 0 and a bad alpha with a ConfigError naming the field', () => {
      const base = new Linear(4, 4, { seed: 1 });
      expect(() => new LoRALinear(base, { rank: 0 })).toThrow(ConfigError);
      try {
        new LoRALinear(base, { rank: -2 });
      } catch (e) {
        expect((e as ConfigError).field).toBe('lora.rank');
        expect((e as ConfigError).value).toBe(-2);
      }
      expect(() => new LoRALinear(base, { rank: 2, alpha: 0 })).toThrow(/lora\.alpha/);
    });
  });

  describe(`groupedLowRank [${backend.name}]`, () => {
    it('equals per-block naive products with mixed ranks, an empty block and an absent adapter; finite-difference gradients', () => run(() => {
      const d = 5, out = 4;
      const offsets = Int32Array.of(0, 3, 3, 7, 9);
      const ranks = [2, 3, 1, 2];
      const factors = ranks.map((r, e) => (e === 3 ? null : { A: randn([r, d], 10 + e), B: randn([out, r], 20 + e) }));
      const xs = randn([9, d], 5);
      const w = randn([9], 6);
      const y = groupedLowRank(xs, offsets, factors, w, out);
      const ref = new Float64Array(9 * out);
      for (let e = 0; e < 4; e++) {
        const f = factors[e];
        if (!f) continue;
        for (let i = offsets[e]; i < offsets[e + 1]; i++) {
          const h = new Float64Array(ranks[e]);
          for (let j = 0; j < ranks[e]; j++) for (let c = 0; c < d; c++) h[j] += f.A.f32[j * d + c] * xs.f32[i * d + c];
          for (let o = 0; o < out; o++) {
            let acc = 0;
            for (let j = 0; j < ranks[e]; j++) acc += f.B.f32[o * ranks[e] + j] * h[j] * w.f32[i];
            ref[i * out + o] = acc;
          }
        }
      }
      expectAllClose(y.f32, ref, { rtol: 1e-5, atol: 1e-5 });
      const present = factors.filter((f): f is { A: Tensor; B: Tensor } => f !== null);
      gradCheck(
        (x, ww, ...ab) => {
          const fs = [{ A: ab[0], B: ab[3] }, { A: ab[1], B: ab[4] }, { A: ab[2], B: ab[5] }, null];
          return groupedLowRank(x, offsets, fs, ww, out).square().sum();
        },
        [xs, w, ...present.map((f) => f.A), ...present.map((f) => f.B)],
        { label: 'groupedLowRank' },
      );
    }));
  });

  describe(`LoRAModel mixtures [${backend.name}]`, () => {
    it('one adapter with a router that always picks it equals plain LoRA (and the single path)', () => run(() => {
      const ids = Tensor.indices([1, 5, 2, 9, 3, 3, 7, 0, 4, 11], [2, 5]);
      const base = new MoETransformerLM(TINY);
      const baseLogits = noGrad(() => base.forward(ids).logits).f32.slice();
      const topk = new LoRAModel(base, { targets: ['q_proj', 'v_proj'], adapters: [{ name: 'a', rank: 4, alpha: 8 }], router: { type: 'topk', k: 1 } });
      // B = 0 at init: the mixture starts exactly at the base model.
      expectAllClose(noGrad(() => topk.forward(ids).logits).f32, baseLogits, { rtol: 0, atol: 0 });
      randomiseAdapters(topk, 1);
      const yTopk = noGrad(() => topk.forward(ids).logits).f32.slice();
      const weights = topk.adapterWeights('a');
      topk.detach();
      const single = new LoRAModel(base, { targets: ['q_proj', 'v_proj'], adapters: [{ name: 'a', rank: 4, alpha: 8 }] });
      single.loadAdapterWeights('a', weights);
      const ySingle = noGrad(() => single.forward(ids).logits).f32.slice();
      single.detach();
      // Plain LoRALinear modules at the same Linears, installed by hand.
      const restore: Array<() => void> = [];
      for (const layer of base.layers.items) {
        const attn = layer.self_attn as unknown as Record<string, Linear>;
        for (const p of ['q_proj', 'v_proj']) {
          const lin = attn[p];
          const idx = base.layers.items.indexOf(layer);
          const plain = new LoRALinear(new Linear(lin.inFeatures, lin.outFeatures, { bias: false, seed: 0 }), { rank: 4, alpha: 8 });
          (plain.base_layer.weight.data as Float32Array).set(lin.weight.f32);
          const f = weights.get(`layers.${idx}.self_attn.${p}`)!;
          (plain.lora_A.weight.data as Float32Array).set(f.A.f32);
          (plain.lora_B.weight.data as Float32Array).set(f.B.f32);
          plain.eval();
          Object.assign(lin, { forward: (x: Tensor) => plain.forward(x) });
          restore.push(() => delete (lin as Partial<Linear>).forward);
        }
      }
      const yPlain = noGrad(() => base.forward(ids).logits).f32.slice();
      restore.forEach((f) => f());
      expectAllClose(yTopk, yPlain, { rtol: 1e-4, atol: 1e-5 });
      expectAllClose(ySingle, yPlain, { rtol: 1e-4, atol: 1e-5 });
      expect(Math.max(...yPlain.map((v, i) => Math.abs(v - baseLogits[i])))).toBeGreaterThan(1e-3);
    }));

    for (const router of [{ type: 'dense' } as const, { type: 'topk', k: 2 } as const, { type: 'topk', k: 2, normalize: false } as const]) {
      it(`${JSON.stringify(router)} mixture of one Linear equals its naive sum; finite-difference gradients to A, B, router and x`, () => run(() => {
        const base = new MoETransformerLM({ ...TINY, nLayers: 1, moe: null });
        const m = new LoRAModel(base, { targets: ['layers.0.self_attn.o_proj'], adapters: [{ name: 'a', rank: 2 }, { name: 'b', rank: 3, alpha: 6 }, { name: 'c', rank: 2, alpha: 1 }], router });
        randomiseAdapters(m, 4);
        const site = m.sites[0];
        const lin = site.base;
        const x = randn([2, 3, 16], 8);
        const y = noGrad(() => site.forward(x));
        const rows = site.router.rows;
        const W = Tensor.from(new Float32Array(rows.flatMap((r) => Array.from(r.f32))), [3, 16]);
        const logits = noGrad(() => x.reshape([6, 16]).matmul(W, { transB: true })).f32;
        const probs = softmaxRows(logits, 6, 3);
        const g = probs.map((p) => {
          if (router.type === 'dense') return p;
          const order = [0, 1, 2].sort((a, b) => p[b] - p[a]).slice(0, 2);
          const z = router.normalize === false ? 1 : order.reduce((s, e) => s + p[e], 0);
          return p.map((v, e) => (order.includes(e) ? v / z : 0));
        });
        const f = site.factors as Array<{ A: Tensor; B: Tensor }>;
        const ref = naiveMixture(x.f32, 6, lin.weight.f32, lin.bias?.f32 ?? null, 16, 16, f.map((q) => q.A.f32), f.map((q) => q.B.f32), [2, 3, 2], [1, 2, 0.5], g);
        expectAllClose(y.f32, ref, { rtol: 1e-4, atol: 1e-5 });
        // A larger input takes the kernel path at inference (the small one the plain-loop decode path).
        const xl = randn([4, 12, 16], 81);
        const yl = noGrad(() => site.forward(xl));
        const ll = noGrad(() => xl.reshape([48, 16]).matmul(W, { transB: true })).f32;
        const gl = softmaxRows(ll, 48, 3).map((p) => {
          if (router.type === 'dense') return p;
          const order = [0, 1, 2].sort((a, b) => p[b] - p[a]).slice(0, 2);
          const z = router.normalize === false ? 1 : order.reduce((acc, e) => acc + p[e], 0);
          return p.map((v, e) => (order.includes(e) ? v / z : 0));
        });
        expectAllClose(yl.f32, naiveMixture(xl.f32, 48, lin.weight.f32, lin.bias?.f32 ?? null, 16, 16, f.map((q) => q.A.f32), f.map((q) => q.B.f32), [2, 3, 2], [1, 2, 0.5], gl), { rtol: 1e-4, atol: 1e-5, label: 'kernel path' });
        // The taped path (adapters require grad) gives the same values as the inference path.
        expectAllClose(site.forward(x).f32, y.f32, { rtol: 1e-6, atol: 1e-6, label: 'taped vs inference' });
        gradCheck(
          (xx, A0, B1, r2) => {
            (f[0].A.data as Float32Array).set(A0.f32);
            (f[1].B.data as Float32Array).set(B1.f32);
            (rows[2].data as Float32Array).set(r2.f32);
            const saved = [f[0].A, f[1].B, rows[2]];
            // Route the probes through the tape by swapping the leaves in.
            site.factors[0] = { A: A0, B: f[0].B };
            site.factors[1] = { A: f[1].A, B: B1 };
            rows[2] = r2;
            try {
              return site.forward(xx).square().sum();
            } finally {
              site.factors[0] = { A: saved[0], B: f[0].B };
              site.factors[1] = { A: f[1].A, B: saved[1] };
              rows[2] = saved[2];
            }
          },
          [x, f[0].A.detach().clone(), f[1].B.detach().clone(), rows[2].detach().clone()],
          { label: `mixture ${router.type}`, eps: 3e-3, rtol: 3e-2, atol: 3e-3 },
        );
        // The base Linear never gets a gradient.
        site.forward(x).sum().backward();
        expect(lin.weight.grad).toBeNull();
        m.detach();
      }));
    }

    it('sequence routing: one choice per sequence from its mean hidden state', () => run(() => {
      const base = new MoETransformerLM({ ...TINY, nLayers: 1, moe: null });
      const m = new LoRAModel(base, { targets: ['o_proj'], adapters: [{ name: 'a', rank: 2 }, { name: 'b', rank: 2 }], router: { type: 'sequence', k: 1 } });
      randomiseAdapters(m, 2);
      const site = m.sites[0];
      const x = randn([3, 4, 16], 12);
      const y = noGrad(() => site.forward(x));
      const W = Tensor.from(new Float32Array(site.router.rows.flatMap((r) => Array.from(r.f32))), [2, 16]);
      const g: number[][] = [];
      for (let b = 0; b < 3; b++) {
        const meanX = new Float32Array(16);
        for (let s = 0; s < 4; s++) for (let c = 0; c < 16; c++) meanX[c] += x.f32[(b * 4 + s) * 16 + c] / 4;
        const l = [0, 1].map((e) => meanX.reduce((acc, v, c) => acc + v * W.f32[e * 16 + c], 0));
        const pick = l[1] > l[0] ? 1 : 0;
        for (let s = 0; s < 4; s++) g.push([pick === 0 ? 1 : 0, pick === 1 ? 1 : 0]);
      }
      const f = site.factors as Array<{ A: Tensor; B: Tensor }>;
      const ref = naiveMixture(x.f32, 12, site.base.weight.f32, null, 16, 16, f.map((q) => q.A.f32), f.map((q) => q.B.f32), [2, 2], [1, 1], g);
      expectAllClose(y.f32, ref, { rtol: 1e-4, atol: 1e-5 });
      m.detach();
    }));

    for (const router of [{ type: 'topk', k: 1 } as const, { type: 'topk', k: 2 } as const, { type: 'sequence', k: 1 } as const]) it(`adding an adapter with frozen router rows leaves existing routes unchanged and trains only the new row (${JSON.stringify(router)})`, () => run(() => {
      const ids = Tensor.indices(Array.from({ length: 24 }, (_, i) => (i * 7 + Math.floor(i / 6)) % 17), [4, 6]);
      const base = new MoETransformerLM(TINY);
      const opts = (names: string[]) => ({ targets: ['layers.1.self_attn.o_proj'], adapters: names.map((name) => ({ name, rank: 2 })), router });
      const abc = new LoRAModel(base, opts(['a', 'b', 'c']));
      randomiseAdapters(abc, 7);
      const before = noGrad(() => abc.forward(ids).logits).f32.slice();
      const weights = ['a', 'b', 'c'].map((n) => abc.adapterWeights(n));
      const savedRouter = abc.routerWeights();
      abc.detach();
      const abcd = new LoRAModel(base, opts(['a', 'b', 'c', 'd']));
      ['a', 'b', 'c'].forEach((n, i) => abcd.loadAdapterWeights(n, weights[i]));
      abcd.loadRouterRows(savedRouter, ['a', 'b', 'c']);
      abcd.setRouterRowsTrainable(false, ['a', 'b', 'c']);
      abcd.setAdaptersTrainable(false, ['a', 'b', 'c']);
      expect(checkUnchanged(abcd, ids, before)).toBeGreaterThan(0);
      // Train: only d's router rows and d's factors move; a, b, c rows are bit-identical and get no optimizer state.
      const frozenRows = abcd.sites.map((s) => s.router.rows.slice(0, 3).map((r) => r.f32.slice()));
      const dRow0 = abcd.sites[0].router.rows[3].f32.slice();
      const params = abcd.parameters();
      expect(params.length).toBe(abcd.sites.length * 3); // d's A, B and router row per site
      expect(params).toContain(abcd.sites[0].router.rows[3]);
      const opt = new AdamW(params, { lr: 0.05, weightDecay: 0.1 });
      for (let step = 0; step < 3; step++) {
        opt.zeroGrad();
        const { loss } = abcd.loss(ids, Tensor.indices(Array.from({ length: 24 }, (_, i) => (i * 5) % 17), [24]));
        loss.backward();
        opt.step();
      }
      abcd.sites.forEach((s, i) => s.router.rows.slice(0, 3).forEach((r, e) => {
        expect(Array.from(r.f32)).toEqual(Array.from(frozenRows[i][e]));
        expect(opt.getState(r)).toBeUndefined();
      }));
      expect(abcd.sites[0].router.rows[3].f32.some((v, i) => v !== dRow0[i])).toBe(true);
      // Tokens still routed to a, b, c only (at every site, and every earlier token too) keep their exact outputs.
      expect(checkUnchanged(abcd, ids, before)).toBeGreaterThan(0);
      const used = abcd.adapterUsage();
      expect(used.tokens).toBe(24);
      abcd.detach();
    }));

    it('PEFT-named files round-trip and fit a fresh model; adapters of another shape are refused naming the tensor', async () => {
      const dir = mkdtempSync(join(tmpdir(), 'sy-lora-'));
      try {
        const ids = Tensor.indices([3, 1, 4, 1, 5, 9, 2, 6], [1, 8]);
        const base = new MoETransformerLM({ ...TINY, moeEvery: 2 });
        const m = new LoRAModel(base, { targets: ['q_proj', 'o_proj', 'mlp.w1', 'mlp.w2', 'mlp.w3'], adapters: [{ name: 'x', rank: 3, alpha: 12, dropout: 0.1 }] });
        randomiseAdapters(m, 5);
        m.eval();
        const y = noGrad(() => m.forward(ids).logits).f32.slice();
        await saveAdapter(dir, m, 'x', { baseModel: 'tiny' });
        m.detach();
        const cfg = JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8'));
        expect(cfg).toMatchObject({ peft_type: 'LORA', r: 3, lora_alpha: 12, lora_dropout: 0.1, target_modules: ['down_proj', 'gate_proj', 'o_proj', 'q_proj', 'up_proj'] });
        const loaded = await loadAdapter(dir);
        expect([...loaded.weights.keys()].sort()).toContain('layers.0.mlp.w1');
        expect(loaded.options.scale).toBe(4);
        const { readSafetensors } = await import('../src/index.js');
        const keys = Object.keys(readSafetensors(readFileSync(join(dir, 'adapter_model.safetensors')))).sort();
        expect(keys).toContain('base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight');
        expect(keys).toContain('base_model.model.model.layers.0.mlp.gate_proj.lora_B.weight');
        const fresh = new LoRAModel(base, { targets: [...loaded.weights.keys()], adapters: [{ name: 'x', rank: 3, alpha: 12 }] });
        fresh.loadAdapterWeights('x', loaded.weights);
        fresh.eval();
        expectAllClose(noGrad(() => fresh.forward(ids).logits).f32, y, { rtol: 0, atol: 0 });
        fresh.detach();
        // Another model's shapes: dModel 24 instead of 16.
        const other = new MoETransformerLM({ ...TINY, dModel: 24, nHeads: 2 });
        const wrong = new LoRAModel(other, { targets: [...loaded.weights.keys()], adapters: [{ name: 'x', rank: 3, alpha: 12 }] });
        expect(() => wrong.loadAdapterWeights('x', loaded.weights)).toThrow(ShapeError);
        expect(() => wrong.loadAdapterWeights('x', loaded.weights)).toThrow(/layers\.0\.(self_attn|mlp)\.\w+\.lora_[AB]\.weight/);
        wrong.detach();
        const fewer = new LoRAModel(base, { targets: ['q_proj'], adapters: [{ name: 'x', rank: 3 }] });
        expect(() => fewer.loadAdapterWeights('x', loaded.weights)).toThrow(StateDictError);
        fewer.detach();
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });

    it('bad targets and ranks give typed errors naming the field', () => {
      const base = new MoETransformerLM(TINY);
      const err = (f: () => unknown): ConfigError => {
        try {
          f();
        } catch (e) {
          return e as ConfigError;
        }
        throw new Error('did not throw');
      };
      const e1 = err(() => new LoRAModel(base, { targets: ['qq_proj'], adapters: [{ name: 'a', rank: 2 }] }));
      expect(e1).toBeInstanceOf(ConfigError);
      expect(e1.field).toBe('targets');
      expect(e1.value).toBe('qq_proj');
      const e2 = err(() => new LoRAModel(base, { targets: ['q_proj'], adapters: [{ name: 'a', rank: 0 }] }));
      expect(e2).toBeInstanceOf(ConfigError);
      expect(e2.field).toBe('adapters[0].rank');
      const e3 = err(() => new LoRAModel(base, { targets: ['experts.*.w1'], adapters: [{ name: 'a', rank: 2 }] }));
      expect(e3.field).toBe('targets');
      expect(e3.message).toMatch(/routed MoE expert/);
      const e4 = err(() => new LoRAModel(base, { targets: ['q_proj'], adapters: [{ name: 'a', rank: 2 }, { name: 'b', rank: 2 }], router: { type: 'topk', k: 3 } }));
      expect(e4.field).toBe('router.k');
      const e5 = err(() => new LoRAModel(base, { targets: ['q_proj'], adapters: [{ name: 'a b', rank: 2 }] }));
      expect(e5.field).toBe('adapters[0].name');
      // Nothing stayed patched after the failures: a valid mixture can still attach.
      new LoRAModel(base, { targets: ['q_proj'], adapters: [{ name: 'a', rank: 2 }] }).detach();
      expect(base.parameters().every((p) => p.requiresGrad)).toBe(true);
    });
  });
});

/** LoRALinear forward with A and B as given leaves (so gradCheck sees their gradients). */
function tapeForward(lora: LoRALinear, x: Tensor, A: Tensor, B: Tensor): Tensor {
  const y = x.matmul(lora.base_layer.weight, { transB: true }).add(lora.base_layer.bias!);
  return y.add(x.matmul(A, { transB: true }).matmul(B, { transB: true }).mul(lora.scale));
}

/** Compare logits of tokens whose routes (and every earlier token's in the sequence) avoid the last adapter; returns how many were checked. */
function checkUnchanged(m: LoRAModel, ids: Tensor, before: Float32Array): number {
  const ys = noGrad(() => m.forward(ids).logits).f32;
  const [B, S] = ids.shape;
  const V = ys.length / (B * S);
  const newest = m.adapterNames.length - 1;
  let checked = 0;
  for (let b = 0; b < B; b++) {
    let clean = true;
    for (let p = 0; p < S; p++) {
      const t = b * S + p;
      clean = clean && !m.sites.some((s) => Array.from(s.last!.experts.subarray(t * s.last!.k, (t + 1) * s.last!.k)).includes(newest));
      if (!clean) break;
      checked++;
      expectAllClose(ys.subarray(t * V, (t + 1) * V), before.subarray(t * V, (t + 1) * V), { rtol: 1e-5, atol: 1e-6, label: `token ${t}` });
    }
  }
  return checked;
}
