/**
 * LoRALinear (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models"): a frozen base
 * Linear plus a trainable low-rank update, y = W x + b + (alpha/r)·B(A·dropout(x)), A [r, in] with
 * PyTorch Linear's kaiming-uniform init and B [out, r] at zero, so training starts from the base
 * model exactly. The base weight and bias get requiresGrad = false: no gradient, no optimizer state.
 * Names follow PEFT's LoraLayer: `base_layer.weight`, `lora_A.weight`, `lora_B.weight`.
 */
import { add, mul } from '../ops/elementwise.js';
import { dropout } from '../ops/dropout.js';
import { linear } from '../ops/matmul.js';
import { Linear } from '../nn/layers.js';
import { Module } from '../nn/module.js';
import { Generator } from '../random.js';
import { Tensor } from '../tensor/tensor.js';
import { resolveLoRAOptions, type LoRAOptions, type ResolvedLoRAOptions } from './config.js';

/** Freeze a tensor: no gradient flows into it, so no optimizer ever gives it state. */
export function freeze(t: Tensor): Tensor {
  t.requiresGrad = false;
  t.grad = null;
  return t;
}

/** A: U(-1/√in, 1/√in) as torch.nn.Linear / PEFT's kaiming_uniform_(a=√5); B: zeros [out, r]. */
export function initLoRAFactors(inFeatures: number, outFeatures: number, o: ResolvedLoRAOptions, generator?: Generator): { A: Tensor; B: Tensor } {
  const bound = 1 / Math.sqrt(inFeatures);
  const A = Tensor.rand([o.rank, inFeatures], { generator: generator ?? new Generator(o.seed), low: -bound, high: bound });
  const B = Tensor.zeros([outFeatures, o.rank]);
  A.requiresGrad = true;
  B.requiresGrad = true;
  return { A, B };
}

/** A frozen Linear with one trainable low-rank adapter (see module doc). */
export class LoRALinear extends Module {
  readonly base_layer: Linear;
  readonly lora_A: Linear;
  readonly lora_B: Linear;
  readonly options: ResolvedLoRAOptions;

  /** Wrap `base` (frozen in place: its weight and bias stop requiring grad). */
  constructor(base: Linear, opts: LoRAOptions) {
    super();
    this.options = resolveLoRAOptions(opts);
    this.base_layer = this.registerModule('base_layer', base);
    freeze(base.weight);
    if (base.bias) freeze(base.bias);
    const { A, B } = initLoRAFactors(base.inFeatures, base.outFeatures, this.options);
    this.lora_A = this.registerModule('lora_A', new Linear(base.inFeatures, this.options.rank, { bias: false, seed: 0 }));
    this.lora_B = this.registerModule('lora_B', new Linear(this.options.rank, base.outFeatures, { bias: false, seed: 0 }));
    (this.lora_A.weight.data as Float32Array).set(A.f32);
    (this.lora_B.weight.data as Float32Array).set(B.f32);
  }

  /** alpha/r (alpha/√r with rsLoRA). */
  get scale(): number {
    return this.options.scale;
  }

  /** Trainable parameters only (lora_A, lora_B). */
  trainableParameters(): Tensor[] {
    return this.parameters().filter((p) => p.requiresGrad);
  }

  /** y = W x + b + scale·B(A·dropout(x)) for x [..., in]; the base runs once. */
  forward(x: Tensor): Tensor {
    const y = linear(x, this.base_layer.weight, this.base_layer.bias);
    const xd = dropout(x, this.options.dropout, { training: this.training });
    const delta = linear(linear(xd, this.lora_A.weight), this.lora_B.weight);
    return add(y, mul(delta, this.options.scale));
  }
}
