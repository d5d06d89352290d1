import { describe, expect, it } from 'vitest';
import {
  AdamW, ConfigError, Generator, MoELayer, MoEViT, ShapeError, Tensor, argmax, denseViTConfig, expertApplicationsPerToken, noGrad, patchify,
  type RouterConfig, type ViTConfig,
} from '../src/index.js';
import { expectAllClose } from './helpers.js';

const base: ViTConfig = {
  imageSize: 8, patchSize: 2, numClasses: 3, dModel: 16, nLayers: 2, nHeads: 2, dFF: 16, seed: 3,
  moe: { numExperts: 4, router: { type: 'topk', k: 2 }, losses: { balance: 0.01 } },
};

const routers: Array<{ name: string; router: RouterConfig }> = [
  { name: 'top-2 dropless', router: { type: 'topk', k: 2 } },
  { name: 'top-1 capacity 1.25', router: { type: 'topk', k: 1, capacityFactor: 1.25 } },
  { name: 'expert choice', router: { type: 'expert-choice', capacityFactor: 2 } },
  { name: 'soft', router: { type: 'soft', slotsPerExpert: 2 } },
];

function withRouter(router: RouterConfig, extra: Partial<ViTConfig> = {}): ViTConfig {
  const losses = router.type === 'soft' ? { zLoss: 1e-3 } : { balance: 0.01 };
  return { ...base, ...extra, moe: { numExperts: 4, router, losses } };
}

/** 8x8 images, three classes: 0 two horizontal bars, 1 two vertical bars, 2 noise of the same density. */
function barsData(n: number, seed: number): { images: Tensor; labels: number[] } {
  const g = new Generator(seed);
  const S = 8;
  const px = new Float32Array(n * S * S);
  const labels: number[] = [];
  for (let i = 0; i < n; i++) {
    const cls = i % 3;
    labels.push(cls);
    const img = px.subarray(i * S * S, (i + 1) * S * S);
    if (cls === 2) {
      for (let j = 0; j < S * S; j++) img[j] = g.uniform() < 0.25 ? 1 : 0;
    } else {
      const a = g.int(S), b = (a + 2 + g.int(S - 3)) % S;
      for (const line of [a, b]) for (let j = 0; j < S; j++) img[cls === 0 ? line * S + j : j * S + line] = 1;
      for (let j = 0; j < S * S; j++) img[j] += 0.2 * (g.uniform() - 0.5);
    }
  }
  return { images: Tensor.from(px, [n, S, S]), labels };
}

function accuracy(model: MoEViT, images: Tensor, labels: number[]): number {
  const pred = noGrad(() => argmax(model.forward(images).logits, -1)).i32;
  return labels.filter((l, i) => pred[i] === l).length / labels.length;
}

/** Rows `rows` of a [B, ...] tensor, in that order. */
function pickRows(t: Tensor, rows: number[]): Tensor {
  const per = t.size / t.shape[0];
  const out = new Float32Array(rows.length * per);
  rows.forEach((r, i) => out.set(t.f32.subarray(r * per, (r + 1) * per), i * per));
  return Tensor.from(out, [rows.length, ...t.shape.slice(1)]);
}

describe('MoEViT', () => {
  it('names parameters PyTorch-style, with the documented shapes', () => {
    const vit = new MoEViT({ ...base, channels: 3, moeEvery: 2 });
    const shapes = new Map(vit.namedParameters().map(([n, t]) => [n, [...t.shape]]));
    expect(shapes.get('patch_embed.weight')).toEqual([16, 2 * 2 * 3]);
    expect(shapes.get('patch_embed.bias')).toEqual([16]);
    expect(shapes.get('pos_embed')).toEqual([16, 16]);
    for (const p of ['q', 'k', 'v', 'o']) {
      expect(shapes.get(`blocks.0.attn.${p}_proj.weight`)).toEqual([16, 16]);
      expect(shapes.get(`blocks.0.attn.${p}_proj.bias`)).toEqual([16]);
    }
    expect(shapes.get('blocks.0.norm1.weight')).toEqual([16]);
    expect(shapes.get('blocks.0.norm2.bias')).toEqual([16]);
    expect(shapes.get('blocks.0.mlp.w1.weight')).toEqual([16, 16]); // dense (moeEvery 2)
    expect(shapes.has('blocks.0.mlp.w3.weight')).toBe(false); // GELU, not gated
    expect(shapes.get('blocks.1.mlp.gate.weight')).toEqual([4, 16]);
    expect(shapes.get('blocks.1.mlp.experts.3.w2.weight')).toEqual([16, 16]);
    expect(shapes.get('norm.weight')).toEqual([16]);
    expect(shapes.get('head.weight')).toEqual([3, 16]);
    expect(shapes.get('head.bias')).toEqual([3]);
    expect(vit.moeLayerIndices()).toEqual([1]);
    expect(vit.moeLayers()).toHaveLength(1);
    expect(vit.numPatches).toBe(16);
    // pos_embed ~ N(0, 0.02)
    const pe = vit.pos_embed.f32;
    const std = Math.sqrt(pe.reduce((s, v) => s + v * v, 0) / pe.length);
    expect(std).toBeGreaterThan(0.012);
    expect(std).toBeLessThan(0.03);
  });

  it('forward shapes: [B, C, H, W] and [B, H, W] inputs, one MoE entry per MoE layer', () => {
    const vit = new MoEViT(base);
    const img = Tensor.randn([5, 1, 8, 8], { seed: 1 });
    const out = noGrad(() => vit.forward(img));
    expect([...out.logits.shape]).toEqual([5, 3]);
    expect(out.auxLoss.size).toBe(1);
    expect(out.moe.map((m) => m.layer)).toEqual([0, 1]);
    expect([...out.moe[0].out.output.shape]).toEqual([5, 16, 16]);
    const out3 = noGrad(() => vit.forward(Tensor.from(img.f32, [5, 8, 8])));
    expect(Array.from(out3.logits.f32)).toEqual(Array.from(out.logits.f32));
    const rgb = new MoEViT({ ...base, channels: 3, imageSize: 6, patchSize: 3, moe: null });
    expect([...noGrad(() => rgb.forward(Tensor.randn([2, 3, 6, 6], { seed: 2 }))).logits.shape]).toEqual([2, 3]);
    expect(() => rgb.forward(Tensor.randn([2, 6, 6], { seed: 2 }))).toThrow(ShapeError);
    expect(() => vit.forward(Tensor.randn([2, 1, 8, 6], { seed: 2 }))).toThrow(/images/);
  });

  it('patchify flattens each patch (channel, row, column) like a stride-p Conv2d', () => {
    // 1 image, 2 channels, 4x4, patch 2: value = c·100 + row·10 + col.
    const v: number[] = [];
    for (let c = 0; c < 2; c++) for (let r = 0; r < 4; r++) for (let col = 0; col < 4; col++) v.push(c * 100 + r * 10 + col);
    const p = patchify(Tensor.from(v, [1, 2, 4, 4]), 2);
    expect([...p.shape]).toEqual([1, 4, 8]);
    // Patch 1 is grid row 0, grid column 1.
    expect(Array.from(p.f32.subarray(8, 16))).toEqual([2, 3, 12, 13, 102, 103, 112, 113]);
    expect(Array.from(p.f32.subarray(24, 32))).toEqual([22, 23, 32, 33, 122, 123, 132, 133]);
  });

  it('validates its config, naming the field', () => {
    const bad = (c: Partial<ViTConfig>, field: RegExp): void => {
      expect(() => new MoEViT({ ...base, ...c } as ViTConfig)).toThrow(ConfigError);
      expect(() => new MoEViT({ ...base, ...c } as ViTConfig)).toThrow(field);
    };
    bad({ imageSize: 9, patchSize: 2 }, /^patchSize=2: must divide imageSize \(9\)/);
    bad({ nHeads: 3 }, /^nHeads=3/);
    bad({ channels: 0 }, /^channels=0/);
    bad({ numClasses: 1 }, /^numClasses=1/);
    bad({ moeEvery: 3 }, /^moeEvery=3: no layer would be MoE/);
    bad({ moe: { numExperts: 4, router: { type: 'topk', k: 5 } } }, /^moe\.router\.k=5/);
    bad({ moe: { numExperts: 4, router: { type: 'soft', slotsPerExpert: 1 }, losses: { balance: 0.01 } } }, /^moe\.losses=/);
    bad({ ffn: { activation: 'tanh' as 'gelu', gated: false } }, /^ffn\.activation/);
  });

  for (const { name, router } of routers) {
    it(`${name}: forward and backward reach every parameter`, () => {
      const vit = new MoEViT(withRouter(router));
      const { images, labels } = barsData(6, 5);
      const { loss, out } = vit.loss(images, labels);
      expect(Number.isFinite(loss.item())).toBe(true);
      loss.add(out.auxLoss).backward();
      const hasGrad = (t: Tensor): boolean => t.grad !== null && t.grad.f32.some((g) => g !== 0);
      const experts = /^blocks\.(\d+)\.mlp\.experts\.(\d+)\./;
      const missing = vit.namedParameters().filter(([n, t]) => !experts.test(n) && !hasGrad(t)).map(([n]) => n);
      expect(missing).toEqual([]);
      // An expert gets a gradient exactly when it processed tokens (a token-choice router may leave one idle).
      for (const [n, t] of vit.namedParameters()) {
        const m = experts.exec(n);
        if (m) expect(hasGrad(t), n).toBe(out.moe[Number(m[1])].out.stats.tokensPerExpert[Number(m[2])] > 0);
      }
      expect(images.requiresGrad).toBe(false);
      expect(images.grad).toBeNull();
      const stats = out.moe[0].out.stats;
      expect(stats.tokensPerExpert).toHaveLength(4);
    });
  }

  for (const { name, router } of [routers[0], routers[2], routers[3]]) {
    it(`${name}: a tiny MoEViT learns bars vs noise to > 90% training accuracy`, () => {
      const vit = new MoEViT(withRouter(router, { nLayers: 1 }));
      const train = barsData(60, 7);
      const opt = new AdamW(vit.parameters(), { lr: 3e-3, weightDecay: 0 });
      const before = accuracy(vit, train.images, train.labels);
      for (let step = 0; step < 150; step++) {
        const { loss, out } = vit.loss(train.images, train.labels);
        opt.zeroGrad();
        loss.add(out.auxLoss).backward();
        opt.step();
      }
      expect(before).toBeLessThan(0.6);
      expect(accuracy(vit, train.images, train.labels)).toBeGreaterThan(0.9);
      // And it generalises to fresh images of the same kinds.
      const held = barsData(30, 99);
      expect(accuracy(vit, held.images, held.labels)).toBeGreaterThan(0.8);
    });
  }

  describe('batch dependence', () => {
    const { images } = barsData(6, 11);
    const perm = [3, 0, 5, 1, 4, 2];
    const equivariant = [routers[0], routers[2], routers[3], { name: 'top-1 capacity 1.25 by score', router: { type: 'topk', k: 1, capacityFactor: 1.25, dropPolicy: 'score' } as RouterConfig }];
    for (const { name, router } of equivariant) {
      it(`${name}: permuting the batch permutes the logits`, () => {
        const vit = new MoEViT(withRouter(router)).eval();
        const a = noGrad(() => vit.forward(images).logits);
        const b = noGrad(() => vit.forward(pickRows(images, perm)).logits);
        expectAllClose(b, pickRows(a, perm), { rtol: 1e-4, atol: 1e-5 });
      });
    }

    it('top-1 capacity 1.25, position drop policy: even the order of the batch matters (documented)', () => {
      const vit = new MoEViT(withRouter(routers[1].router)).eval();
      const a = noGrad(() => vit.forward(images));
      const b = noGrad(() => vit.forward(pickRows(images, perm)).logits);
      expect(a.moe.some((m) => m.out.stats.droppedAssignments > 0)).toBe(true);
      const pa = pickRows(a.logits, perm).f32;
      expect(Math.max(...Array.from(b.f32, (v, i) => Math.abs(v - pa[i])))).toBeGreaterThan(1e-4);
    });

    const independent = [routers[0], routers[3], { name: 'top-1 capacity 1.25 per image', router: { type: 'topk', k: 1, capacityFactor: 1.25, capacityScope: 'sequence' } as RouterConfig }];
    for (const { name, router } of independent) {
      it(`${name}: an image's logits do not depend on the other images in its batch`, () => {
        const vit = new MoEViT(withRouter(router)).eval();
        const all = noGrad(() => vit.forward(images).logits);
        for (let i = 0; i < 6; i++) {
          const alone = noGrad(() => vit.forward(pickRows(images, [i])).logits);
          expectAllClose(alone, pickRows(all, [i]), { rtol: 1e-4, atol: 1e-5, label: `image ${i}` });
        }
      });
    }

    for (const { name, router } of [routers[1], routers[2]]) {
      it(`${name}: is batch-dependent (documented): an image's logits change with its batch-mates`, () => {
        const vit = new MoEViT(withRouter(router)).eval();
        const all = noGrad(() => vit.forward(images).logits);
        let maxDiff = 0;
        for (let i = 0; i < 6; i++) {
          const alone = noGrad(() => vit.forward(pickRows(images, [i])).logits).f32;
          const inBatch = pickRows(all, [i]).f32;
          for (let j = 0; j < alone.length; j++) maxDiff = Math.max(maxDiff, Math.abs(alone[j] - inBatch[j]));
        }
        expect(maxDiff).toBeGreaterThan(1e-4);
      });
    }
  });

  describe('dense baseline', () => {
    const cases: Array<{ name: string; router: RouterConfig; width: number; routerParams: number }> = [
      // top-2 of experts with dFF 16: dense dFF 32; router 4·16 per MoE layer.
      { name: 'top-2', router: { type: 'topk', k: 2 }, width: 32, routerParams: 4 * 16 },
      // expert choice cf 2: on average 2 experts per token.
      { name: 'expert choice cf 2', router: { type: 'expert-choice', capacityFactor: 2 }, width: 32, routerParams: 4 * 16 },
      // soft: 4 experts · 2 slots over 16 patches = 0.5 expert applications per token; router 8·16.
      { name: 'soft 2 slots', router: { type: 'soft', slotsPerExpert: 2 }, width: 8, routerParams: 8 * 16 },
    ];
    for (const { name, router, width, routerParams } of cases) {
      it(`${name}: same active parameters per token, up to the router`, () => {
        const cfg = withRouter(router);
        const dense = denseViTConfig(cfg);
        expect(dense.moe).toBeNull();
        expect(dense.dFF).toBe(width);
        expect(dense.ffn).toEqual({ activation: 'gelu', gated: false });
        const moe = new MoEViT(cfg);
        const d = new MoEViT(dense);
        expect(d.moeLayers()).toEqual([]);
        expect(d.activeParameters()).toBe(d.numParameters());
        expect(moe.activeParameters() - d.activeParameters()).toBe(2 * routerParams);
        expect(moe.numParameters()).toBeGreaterThan(d.numParameters());
      });
    }

    it('expert applications per token, shared experts and interleaving', () => {
      expect(expertApplicationsPerToken({ numExperts: 8, router: { type: 'topk', k: 2 } }, 16)).toBe(2);
      expect(expertApplicationsPerToken({ numExperts: 8, router: { type: 'expert-choice' } }, 16)).toBe(1);
      expect(expertApplicationsPerToken({ numExperts: 8, router: { type: 'soft', slotsPerExpert: 1 } }, 16)).toBe(0.5);
      const shared = withRouter({ type: 'topk', k: 1 });
      shared.moe = { ...shared.moe!, numSharedExperts: 1, sharedDFF: 8, expert: { activation: 'silu', gated: true } };
      const dense = denseViTConfig(shared);
      expect(dense.dFF).toBe(16 + 8);
      expect(dense.ffn).toEqual({ activation: 'silu', gated: true });
      expect(new MoEViT(shared).activeParameters() - new MoEViT(dense).activeParameters()).toBe(2 * 4 * 16);
      // Interleaved: dense layers and MoE layers must already share the active width.
      expect(() => denseViTConfig({ ...withRouter({ type: 'topk', k: 2 }), moeEvery: 2 })).toThrow(/^moeEvery=2/);
      const inter = { ...base, moeEvery: 2, dFF: 32, moe: { numExperts: 4, router: { type: 'topk', k: 2 }, dFF: 16 } } as ViTConfig;
      expect(denseViTConfig(inter).dFF).toBe(32);
      expect(new MoEViT(inter).activeParameters() - new MoEViT(denseViTConfig(inter)).activeParameters()).toBe(4 * 16);
      // A dense config is its own baseline.
      expect(denseViTConfig({ ...base, moe: null }).dFF).toBe(16);
      expect(new MoEViT(base).moeLayers().every((l) => l instanceof MoELayer)).toBe(true);
    });
  });
});
