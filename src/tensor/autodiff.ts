/**
 * Reverse-mode automatic differentiation on a tape (Wengert list), PyTorch-style:
 * every differentiable op records a GradNode on its output; `backward()` walks the graph in
 * reverse topological order, calling each node's rule once with the summed output gradient.
 */
import { allocFloat32 } from '../backend/alloc.js';
import { acquireScratch, releaseScratch } from '../backend/scratch.js';
import { AnomalyError, GradError } from '../errors.js';
import { shapesEqual } from './shape.js';
// Value import is circular with tensor.ts but only used at call time.
import { Tensor } from './tensor.js';

/** A backward rule: given dL/d(output), return dL/d(input_i) for each input (null where not needed). */
export type BackwardRule = (gradOutput: Tensor) => ReadonlyArray<Tensor | null | undefined>;

/** One recorded op application. */
export interface GradNode {
  readonly op: string;
  readonly inputs: readonly Tensor[];
  backward: BackwardRule | null;
}

let gradEnabled = true;
let anomalyMode = false;

/** Whether ops currently record onto the tape. */
export function isGradEnabled(): boolean {
  return gradEnabled;
}

/** Run fn without recording (like torch.no_grad): results do not require grad. */
export function noGrad<T>(fn: () => T): T {
  const prev = gradEnabled;
  gradEnabled = false;
  try {
    return fn();
  } finally {
    gradEnabled = prev;
  }
}

/** Run fn with recording on, even inside noGrad. */
export function enableGrad<T>(fn: () => T): T {
  const prev = gradEnabled;
  gradEnabled = true;
  try {
    return fn();
  } finally {
    gradEnabled = prev;
  }
}

/**
 * Anomaly mode (opt-in, like torch.autograd.detect_anomaly): every op's output and every
 * backward gradient is checked for NaN/Inf, and the first op that produced one is named in an
 * AnomalyError. Costs one pass over each output.
 */
export function setAnomalyDetection(on: boolean): void {
  anomalyMode = on;
}

export function isAnomalyDetectionEnabled(): boolean {
  return anomalyMode;
}

function firstNonFinite(t: Tensor): number {
  const d = t.data;
  for (let i = 0; i < d.length; i++) if (!Number.isFinite(d[i])) return i;
  return -1;
}

/** Anomaly check of a forward output (no-op unless anomaly mode is on). */
export function checkAnomaly(op: string, out: Tensor, phase: 'forward' | 'backward' = 'forward'): void {
  if (!anomalyMode || out.dtype !== 'float32') return;
  const i = firstNonFinite(out);
  if (i >= 0) {
    throw new AnomalyError(op, out.data[i], `${phase} of op '${op}' produced a non-finite value at flat index ${i} (shape [${out.shape}])`);
  }
}

/**
 * Whether record() will attach a backward to an op over these inputs (grad mode on and one of them
 * requires grad): a forward may skip keeping what only its backward would read.
 */
export function willRecord(inputs: readonly Tensor[]): boolean {
  return gradEnabled && inputs.some((t) => t.requiresGrad);
}

/**
 * Record `out = op(inputs)` on the tape with its backward rule. The rule is a required argument:
 * an op without a gradient does not compile. Returns `out` for chaining.
 */
export function record(op: string, inputs: readonly Tensor[], out: Tensor, backward: BackwardRule): Tensor {
  checkAnomaly(op, out);
  if (!willRecord(inputs)) return out;
  out.requiresGrad = true;
  out.gradNode = { op, inputs, backward };
  return out;
}

// Gradient buffers handed back by zeroGrad (recycleGrad), reused by the next backward's fused
// rules instead of allocating (and zero-filling, and page-faulting) fresh ones every step: at 64
// experts the expert weight gradients alone are ~200 MB per step.
const spareGrads = new WeakMap<Tensor, Float32Array>();

/**
 * Reset a leaf's gradient to null (like PyTorch's zero_grad(set_to_none=True)) but keep its buffer
 * for reuse by the next backward. A gradient tensor read before the reset must be cloned if it is
 * to be kept: its buffer is overwritten by a later backward.
 */
export function recycleGrad(t: Tensor): void {
  const g = t.grad;
  t.grad = null;
  if (g && g.data instanceof Float32Array && g.size === t.size) spareGrads.set(t, g.data);
}

/**
 * Where a fused backward rule may write a leaf's gradient directly (and return null for it):
 * its live `.grad` to accumulate into (`accumulate: true`), or else a recycled or new buffer,
 * already installed as `.grad`, to overwrite (`accumulate: false`, contents undefined).
 * Null when `t` is not a leaf that requires grad, or in anomaly mode (whose per-gradient checks
 * need the gradient returned); the rule then returns the gradient as usual.
 */
export function leafGradSink(t: Tensor): { data: Float32Array; accumulate: boolean } | null {
  if (!t.requiresGrad || t.gradNode || anomalyMode || t.dtype !== 'float32') return null;
  if (t.grad) return { data: t.grad.data as Float32Array, accumulate: true };
  const spare = spareGrads.get(t);
  spareGrads.delete(t);
  const data = spare ?? allocFloat32(t.size);
  t.grad = new Tensor(data, t.shape);
  return { data, accumulate: false };
}

/** While a backward runs: the engine's pending gradient for a tensor, if a rule may add into it. */
let pendingSink: ((t: Tensor) => Float32Array | null) | null = null;

/**
 * Where a backward rule may add its gradient for input `t` in place (and then return null for
 * it): the sum of `t`'s gradients from the consumers whose rules have already run, when that
 * buffer is the engine's alone. One GEMM with accumulation then replaces a temporary the size of
 * `t` plus an element-wise add (x feeding both the router and the experts; q, k, v projections
 * of one input). Null outside a backward rule, when nothing is pending for `t` yet, when the
 * buffer is shared, or in anomaly mode (its per-gradient checks need the gradient returned).
 */
export function pendingGradSink(t: Tensor): Float32Array | null {
  return pendingSink && !anomalyMode && t.dtype === 'float32' ? pendingSink(t) : null;
}

/** Reverse topological order of the graph below root (iterative: deep graphs must not overflow). */
function reverseTopo(root: Tensor): Tensor[] {
  const order: Tensor[] = [];
  const visited = new Set<Tensor>();
  const stack: Array<[Tensor, number]> = [[root, 0]];
  visited.add(root);
  while (stack.length > 0) {
    const top = stack[stack.length - 1];
    const [t, i] = top;
    const inputs = t.gradNode?.inputs ?? [];
    if (i < inputs.length) {
      top[1] = i + 1;
      const child = inputs[i];
      if (child.requiresGrad && !visited.has(child)) {
        visited.add(child);
        stack.push([child, 0]);
      }
    } else {
      stack.pop();
      order.push(t);
    }
  }
  return order.reverse();
}

/**
 * Backpropagate from `root`. Leaves that require grad accumulate into `.grad`; intermediate
 * gradients are freed, and so is the graph (a second backward through it is an error, as in PyTorch).
 * `gradOutput` defaults to 1 for a scalar root.
 */
export function runBackward(root: Tensor, gradOutput: Tensor): void {
  if (!root.requiresGrad) {
    throw new GradError('backward', root.shape, 'backward() on a tensor that does not require grad (no input had requiresGrad: true, or it was computed under noGrad)');
  }
  const order = reverseTopo(root);
  const grads = new Map<Tensor, Tensor>();
  // Rules may hand one buffer to several inputs (add returns g twice; reshape shares g's buffer).
  // Count hand-outs per buffer: a gradient whose buffer went out exactly once is exclusively the
  // engine's, so it may be summed into in place or adopted as a leaf's .grad without a copy.
  const handouts = new Map<ArrayBufferLike, number>();
  const handOut = (g: Tensor, n = 1): void => {
    handouts.set(g.data.buffer, (handouts.get(g.data.buffer) ?? 0) + n);
  };
  const exclusive = (g: Tensor): boolean => handouts.get(g.data.buffer) === 1;
  // A dead gradient whose buffer nobody else holds goes back to the scratch pool; its next
  // hand-out (from the pool) starts a fresh count.
  const recycle = (g: Tensor): void => {
    if (!exclusive(g) || !(g.data instanceof Float32Array)) return;
    handouts.delete(g.data.buffer);
    releaseScratch(g.data);
  };
  grads.set(root, gradOutput);
  handOut(gradOutput, 2); // the caller's tensor: never adopted or mutated
  const prev = gradEnabled;
  const prevSink = pendingSink;
  gradEnabled = false;
  pendingSink = (t) => {
    const acc = grads.get(t);
    return acc && exclusive(acc) && acc.data instanceof Float32Array && acc.size === t.size ? acc.data : null;
  };
  try {
    for (const t of order) {
      const g = grads.get(t);
      if (!g) continue;
      grads.delete(t);
      const node = t.gradNode;
      if (!node) {
        // A leaf: accumulate.
        if (t.grad) t.grad.addInPlace(g);
        else t.grad = exclusive(g) ? g : g.clone();
        continue;
      }
      if (!node.backward) {
        throw new GradError('backward', node.op, `the graph through '${node.op}' was already freed by an earlier backward()`);
      }
      const inputGrads = node.backward(g);
      node.backward = null; // free saved tensors
      // g is dead now unless a rule passed its buffer on (add, reshape): recycle it for the rules
      // still to run, instead of leaving ~100 MB per step of gradients to the garbage collector.
      let passedOn = false;
      for (let i = 0; i < inputGrads.length && !passedOn; i++) passedOn = inputGrads[i]?.data.buffer === g.data.buffer;
      if (!passedOn) recycle(g);
      for (let i = 0; i < node.inputs.length; i++) {
        const input = node.inputs[i];
        const ig = inputGrads[i];
        if (!input.requiresGrad || !ig) continue;
        if (ig.size !== input.size) {
          throw new GradError(`${node.op}.backward`, [ig.shape, input.shape], `gradient rule of '${node.op}' returned shape [${ig.shape}] for input ${i} of shape [${input.shape}]`);
        }
        checkAnomaly(node.op, ig, 'backward');
        // Same size, possibly another shape ([1, K] for a 1-d input): give the input's exact shape.
        const shaped = shapesEqual(ig.shape, input.shape) ? ig : ig.reshape(input.shape);
        handOut(shaped);
        const acc = grads.get(input);
        if (!acc) grads.set(input, shaped);
        else {
          if (exclusive(acc)) acc.addInPlace(shaped);
          else {
            const buf = acquireScratch(acc.size);
            buf.set(acc.data);
            const sum = new Tensor(buf, acc.shape).addInPlace(shaped);
            handOut(sum);
            grads.set(input, sum);
          }
          recycle(shaped); // summed in: dead unless shared
        }
      }
    }
  } finally {
    gradEnabled = prev;
    pendingSink = prevSink;
  }
}
