/**
 * The playground's model: a task-specific input layer, then h + MoE(LayerNorm(h)) and a linear
 * head. The MoE layer can be swapped for a re-configured one that keeps every weight whose shape
 * still fits (router changes are live), while the trunk keeps its optimizer state.
 */
import { MoELayer, type MoEOutput } from '../../src/moe/layer.js';
import type { MoEConfig } from '../../src/moe/config.js';
import { Embedding, LayerNorm, Linear } from '../../src/nn/layers.js';
import { Module } from '../../src/nn/module.js';
import { add, gelu } from '../../src/ops/elementwise.js';
import { reshape } from '../../src/ops/shape.js';
import { Tensor } from '../../src/tensor/tensor.js';
import { Generator } from '../../src/random.js';

/** A batch: float features [B, inDim] or int32 context ids [B, context]. */
export type ModelInput = { kind: 'features'; x: Tensor } | { kind: 'ids'; ids: Int32Array; batch: number };

/** Input layer + norm + head: everything but the MoE layer. */
export class Trunk extends Module {
  readonly embed: Embedding | null;
  readonly inProj: Linear;
  readonly norm: LayerNorm;
  readonly head: Linear;
  constructor(
    readonly spec: { inDim: number; dModel: number; classes: number; vocab?: number; context?: number; embedDim?: number },
    seed: number,
  ) {
    super();
    const g = new Generator(seed + 101);
    this.embed = spec.vocab ? this.registerModule('embed', new Embedding(spec.vocab, spec.embedDim ?? 8, { generator: g })) : null;
    const inDim = spec.vocab ? (spec.embedDim ?? 8) * (spec.context ?? 1) : spec.inDim;
    this.inProj = this.registerModule('in_proj', new Linear(inDim, spec.dModel, { generator: g }));
    this.norm = this.registerModule('norm', new LayerNorm(spec.dModel));
    this.head = this.registerModule('head', new Linear(spec.dModel, spec.classes, { generator: g }));
  }

  /** h = gelu(in_proj(features)). */
  hidden(input: ModelInput): Tensor {
    let x: Tensor;
    if (input.kind === 'ids') {
      if (!this.embed) throw new Error('this model takes features, not ids');
      const e = this.embed.forward(input.ids);
      x = reshape(e, [input.batch, e.size / input.batch]);
    } else x = input.x;
    return gelu(this.inProj.forward(x));
  }
}

/** Logits and the MoE layer's output for a batch. */
export function forward(trunk: Trunk, moe: MoELayer, input: ModelInput): { logits: Tensor; moe: MoEOutput } {
  const h = trunk.hidden(input);
  const out = moe.forward(trunk.norm.forward(h));
  return { logits: trunk.head.forward(add(h, out.output)), moe: out };
}

/**
 * A new MoE layer for `config` that starts from `old`'s weights wherever names and shapes match
 * (experts always; the gate unless its row count changed, e.g. to or from Soft MoE's slots).
 */
export function reconfigureMoE(old: MoELayer | null, config: MoEConfig): MoELayer {
  const next = new MoELayer(config);
  if (!old) return next;
  const mine = next.stateDict();
  const keep: Record<string, Tensor> = {};
  for (const [name, t] of Object.entries(old.stateDict())) {
    const m = mine[name];
    if (m && m.shape.length === t.shape.length && m.shape.every((d, i) => d === t.shape[i])) keep[name] = t;
  }
  next.loadStateDict(keep, { strict: false });
  return next;
}
