/**
 * MoE layer golden tests: every case in test/fixtures/moe.json (written by
 * scripts/fixtures/make_moe_goldens.py, an independent PyTorch float64 reference written from
 * the papers and Hugging Face's Mixtral / SwitchTransformers code) is built as an MoELayer from
 * its config, put in eval mode, loaded with the case's state dict and run forward on every
 * backend. Output, router logits, auxLoss, capacity, dropped counts, tokensPerExpert, the
 * unweighted balance / z losses, and the gradients of Σ(out ⊙ G) + auxLoss with respect to the
 * input, the gate and every expert weight (unused experts: zeros) are compared.
 *
 * Tolerance: rtol = 1e-4 per element, plus atol = 1e-5 · max|want| over the tensor compared
 * (fp32 sums of terms cancel to near zero in places; the absolute slack scales with the tensor),
 * plus an absolute floor of 1e-9, far below fp32 resolution of the O(1) quantities here: it only
 * lets a mathematically zero gradient (e.g. the gate gradient of k=1 with normalize, whose gate
 * is p/p = 1) match the reference's float64 round-off (~1e-17).
 *
 * Regenerate the fixture with: /usr/bin/python3 scripts/fixtures/make_moe_goldens.py
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { add, matmul, mul, softplus, sum, Tensor, MoELayer, loadLoss, type MoEConfig } from '../src/index.js';
import { expectAllClose, forEachBackend } from './helpers.js';

interface ArrayJson {
  shape: number[];
  data: number[];
}

interface MoECase {
  name: string;
  config: MoEConfig;
  x: ArrayJson;
  weights: Record<string, ArrayJson>;
  gradOutput: ArrayJson;
  expected: {
    output: ArrayJson;
    routerLogits: ArrayJson;
    auxLoss: number;
    capacity: number | null;
    stats: { tokensPerExpert: number[]; droppedAssignments: number; droppedTokens: number; balanceLoss: number; zLoss: number };
    grads: Record<string, ArrayJson>;
  };
}

interface FunctionCase {
  name: string;
  fn: 'loadLoss';
  k: number;
  inputs: Record<string, ArrayJson>;
  expected: { loss: number; grads: Record<string, ArrayJson> };
}

interface GoldenFile {
  source: string;
  torch: string;
  cases: MoECase[];
  functions: FunctionCase[];
}

const golden = JSON.parse(readFileSync(new URL('./fixtures/moe.json', import.meta.url), 'utf8')) as GoldenFile;

const RTOL = 1e-4;
const ATOL_SCALE = 1e-5;
const ATOL_FLOOR = 1e-9;

const tensorOf = (a: ArrayJson, requiresGrad = false): Tensor => Tensor.from(a.data, a.shape, { requiresGrad });

function close(got: Tensor | ArrayLike<number>, want: ArrayJson, label: string): void {
  if (got instanceof Tensor) expect([...got.shape], `${label} shape`).toEqual(want.shape);
  const maxAbs = want.data.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
  expectAllClose(got, want.data, { rtol: RTOL, atol: ATOL_SCALE * maxAbs + ATOL_FLOOR, label });
}

function closeScalar(got: number, want: number, label: string): void {
  expectAllClose([got], [want], { rtol: RTOL, atol: ATOL_SCALE * Math.abs(want) + ATOL_FLOOR, label });
}

describe('MoE fixture', () => {
  it('names its generator and covers every router', () => {
    expect(golden.source).toBe('scripts/fixtures/make_moe_goldens.py');
    const types = new Set(golden.cases.map((c) => c.config.router.type));
    expect([...types].sort()).toEqual(['expert-choice', 'soft', 'topk']);
  });
});

forEachBackend((backend, run) => {
  describe(`MoE layer goldens [${backend.name}]`, () => {
    for (const c of golden.cases) {
      it(`${c.name} (golden: make_moe_goldens.py)`, () => {
        run(() => {
          const layer = new MoELayer(c.config);
          layer.eval();
          const dict: Record<string, Tensor> = {};
          for (const [k, v] of Object.entries(c.weights)) dict[k] = tensorOf(v);
          layer.loadStateDict(dict);
          const x = tensorOf(c.x, true);
          const out = layer.forward(x);
          const e = c.expected;

          close(out.output, e.output, 'output');
          expect(out.routerLogits, 'routerLogits').toBeDefined();
          close(out.routerLogits!, e.routerLogits, 'routerLogits');
          closeScalar(out.auxLoss.item(), e.auxLoss, 'auxLoss');
          closeScalar(out.stats.balanceLoss, e.stats.balanceLoss, 'stats.balanceLoss');
          closeScalar(out.stats.zLoss, e.stats.zLoss, 'stats.zLoss');
          expect(out.stats.tokensPerExpert, 'tokensPerExpert').toEqual(e.stats.tokensPerExpert);
          expect(out.stats.droppedAssignments, 'droppedAssignments').toBe(e.stats.droppedAssignments);
          expect(out.stats.droppedTokens, 'droppedTokens').toBe(e.stats.droppedTokens);
          if (c.config.router.type !== 'soft') expect(out.plan?.capacityPerExpert ?? null, 'capacity').toBe(e.capacity);

          const loss = add(sum(mul(out.output, tensorOf(c.gradOutput))), out.auxLoss);
          loss.backward();
          const params = new Map(layer.namedParameters());
          const gradNames = Object.keys(e.grads).sort();
          expect(gradNames, 'every parameter has a golden gradient').toEqual(['x', ...params.keys()].sort());
          for (const name of gradNames) {
            const t = name === 'x' ? x : params.get(name)!;
            const want = e.grads[name];
            const got = t.grad ?? Tensor.zeros(t.shape);
            close(got, want, `grad ${name}`);
          }
        });
      });
    }

    for (const f of golden.functions) {
      it(`${f.name} (golden: make_moe_goldens.py)`, () => {
        run(() => {
          const x = tensorOf(f.inputs.x, true);
          const wg = tensorOf(f.inputs['gate.weight'], true);
          const wn = tensorOf(f.inputs['gate.noise.weight'], true);
          const noise = tensorOf(f.inputs.noise);
          const clean = matmul(x, wg, { transB: true });
          const std = softplus(matmul(x, wn, { transB: true }));
          const noisy = add(clean, mul(noise, std));
          const loss = loadLoss(clean, noisy, std, f.k);
          closeScalar(loss.item(), f.expected.loss, 'loadLoss');
          loss.backward();
          close(x.grad!, f.expected.grads.x, 'grad x');
          close(wg.grad!, f.expected.grads['gate.weight'], 'grad gate.weight');
          close(wn.grad!, f.expected.grads['gate.noise.weight'], 'grad gate.noise.weight');
        });
      });
    }
  });
});
