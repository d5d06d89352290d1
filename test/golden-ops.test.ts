/**
 * Data-driven golden tests: every case in test/fixtures/ops.json (written by
 * scripts/fixtures/make_op_goldens.py from PyTorch in float64) is run through the Switchyard op it
 * names, on every backend, and its forward output and the gradient of every float input (for the
 * fixture's seed gradient) are compared with PyTorch's.
 *
 * Tolerance: |got - want| ≤ atol·max(1, max|want|) + rtol·|want| per element, with rtol = 1e-5 and
 * atol = 1e-6 by default, i.e. atol is relative to the magnitude of the tensor being compared.
 * A case may override rtol/atol in the fixture only together with a written reason (`tol.why`).
 *
 * Regenerate the fixture with: /usr/bin/python3 scripts/fixtures/make_op_goldens.py
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import * as sy from '../src/index.js';
import { Tensor } from '../src/index.js';
import { expectAllClose, forEachBackend } from './helpers.js';

interface ArrayJson {
  shape: number[];
  data: number[];
  dtype?: 'int32';
}

interface GoldenCase {
  name: string;
  op: string;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  args: Record<string, any>;
  inputs: Record<string, ArrayJson>;
  output: ArrayJson;
  grads: Record<string, ArrayJson>;
  gradOutput: ArrayJson | null;
  extraOutputs?: Record<string, ArrayJson>;
  tol?: { rtol?: number; atol?: number; why: string };
}

interface GoldenFile {
  source: string;
  torch: string;
  cases: GoldenCase[];
}

const FIXTURE = new URL('./fixtures/ops.json', import.meta.url);
const golden = JSON.parse(readFileSync(FIXTURE, 'utf8')) as GoldenFile;

const DEFAULT_RTOL = 1e-5;
const DEFAULT_ATOL = 1e-6;

type Inputs = Record<string, Tensor>;
type Args = GoldenCase['args'];
type OpResult = Tensor | { output: Tensor; extra: Record<string, Tensor> };
type OpFn = (i: Inputs, a: Args) => OpResult;

/** null in JSON ⇒ undefined (the op's default); otherwise the value. */
const opt = <T>(v: T | null | undefined): T | undefined => (v === null ? undefined : v);

const unary = (f: (x: Tensor) => Tensor): OpFn => (i) => f(i.x);
const binary = (f: (a: Tensor, b: Tensor | number) => Tensor): OpFn => (i, a) =>
  f(i.a, i.b ?? (a.scalar as number));
const binaryTensors = (f: (a: Tensor, b: Tensor) => Tensor): OpFn => (i) => f(i.a, i.b);
const reduction = (f: (x: Tensor, axis?: number | readonly number[], keepDims?: boolean) => Tensor): OpFn => (i, a) =>
  f(i.x, opt(a.axis), a.keepDims ?? false);

/** Fixture `op` name → how to call the Switchyard function with the case's named inputs and args. */
const OPS: Record<string, OpFn> = {
  matmul: (i, a) => sy.matmul(i.a, i.b, { transA: a.transA ?? false, transB: a.transB ?? false }),
  linear: (i) => sy.linear(i.x, i.weight, i.bias ?? null),
  add: binary(sy.add),
  sub: binary(sy.sub),
  mul: binary(sy.mul),
  div: binary(sy.div),
  maximum: binaryTensors(sy.maximum),
  minimum: binaryTensors(sy.minimum),
  pow: (i, a) => sy.pow(i.x, a.p),
  exp: unary(sy.exp),
  log: unary(sy.log),
  sqrt: unary(sy.sqrt),
  rsqrt: unary(sy.rsqrt),
  tanh: unary(sy.tanh),
  sigmoid: unary(sy.sigmoid),
  softplus: unary(sy.softplus),
  relu: unary(sy.relu),
  silu: unary(sy.silu),
  neg: unary(sy.neg),
  abs: unary(sy.abs),
  square: unary(sy.square),
  gelu: (i, a) => sy.gelu(i.x, a.approximate ? { approximate: a.approximate } : undefined),
  gatedAct: (i, a) => sy.gatedAct(i.a, i.b, a.act),
  sum: reduction(sy.sum),
  mean: reduction(sy.mean),
  max: reduction(sy.max),
  softmax: (i, a) => sy.softmax(i.x, a.axis),
  logSoftmax: (i, a) => sy.logSoftmax(i.x, a.axis),
  logsumexp: (i, a) => sy.logsumexp(i.x, a.axis, a.keepDims ?? false),
  transpose: (i, a) => sy.transpose(i.x, opt(a.perm)),
  slice: (i, a) => sy.slice(i.x, a.axis, a.start, opt(a.end)),
  // Inputs t0, t1, … in fixture order (JSON object key order is preserved).
  concat: (i, a) => sy.concat(Object.values(i), a.axis),
  gatherRows: (i) => sy.gatherRows(i.src, i.idx),
  scatterAddRows: (i, a) => sy.scatterAddRows(i.src, i.idx, a.numRows, i.weights ?? null),
  topK: (i, a) => {
    const r = sy.topK(i.x, a.k);
    return { output: r.values, extra: { indices: r.indices } };
  },
  oneHot: (i, a) => sy.oneHot(i.idx, a.numClasses),
  layerNorm: (i, a) => sy.layerNorm(i.x, i.weight ?? null, i.bias ?? null, opt(a.eps)),
  rmsNorm: (i, a) => sy.rmsNorm(i.x, i.weight ?? null, opt(a.eps)),
  crossEntropy: (i, a) =>
    sy.crossEntropy(i.logits, i.targets, {
      ignoreIndex: opt(a.ignoreIndex),
      reduction: opt(a.reduction),
      labelSmoothing: opt(a.labelSmoothing),
    }),
  mseLoss: (i, a) => sy.mseLoss(i.a, i.b, { reduction: opt(a.reduction) }),
  scaledDotProductAttention: (i, a) => sy.scaledDotProductAttention(i.q, i.k, i.v, { causal: opt(a.causal), scale: opt(a.scale) }),
};

function maxAbs(xs: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < xs.length; i++) m = Math.max(m, Math.abs(xs[i]));
  return m;
}

function check(actual: Tensor, want: ArrayJson, c: GoldenCase, label: string): void {
  expect([...actual.shape], `${label} shape`).toEqual(want.shape);
  const rtol = c.tol?.rtol ?? DEFAULT_RTOL;
  const atol = (c.tol?.atol ?? DEFAULT_ATOL) * Math.max(1, maxAbs(want.data));
  expectAllClose(actual.data, want.data, { rtol, atol, label: `${c.name}: ${label}` });
}

function runCase(c: GoldenCase): void {
  const fn = OPS[c.op];
  if (!fn) throw new Error(`golden case ${c.name}: no Switchyard mapping for op '${c.op}'`);
  const inputs: Inputs = {};
  for (const [name, arr] of Object.entries(c.inputs)) {
    inputs[name] = arr.dtype === 'int32'
      ? Tensor.indices(arr.data, arr.shape)
      : Tensor.from(Float32Array.from(arr.data), arr.shape, { requiresGrad: name in c.grads });
  }
  const res = fn(inputs, c.args);
  const out = res instanceof Tensor ? res : res.output;
  const extra = res instanceof Tensor ? {} : res.extra;

  check(out, c.output, c, 'output');
  for (const [name, want] of Object.entries(c.extraOutputs ?? {})) {
    const got = extra[name];
    expect(got, `${c.name}: extra output ${name}`).toBeDefined();
    expect([...got.shape], `${c.name}: ${name} shape`).toEqual(want.shape);
    if (got.dtype === 'int32') expect(Array.from(got.data), `${c.name}: ${name}`).toEqual(want.data);
    else check(got, want, c, name);
  }

  const gradNames = Object.keys(c.grads);
  if (gradNames.length === 0) return;
  expect(c.gradOutput, `${c.name}: fixture has a seed gradient`).not.toBeNull();
  const seed = Tensor.from(Float32Array.from(c.gradOutput!.data), c.gradOutput!.shape);
  out.backward(seed);
  for (const name of gradNames) {
    const g = inputs[name].grad;
    expect(g, `${c.name}: d/d${name} exists`).not.toBeNull();
    check(g!, c.grads[name], c, `d/d${name}`);
  }
}

describe('golden op fixture', () => {
  it('comes from make_op_goldens.py and maps every op (golden: make_op_goldens.py)', () => {
    expect(golden.source).toBe('scripts/fixtures/make_op_goldens.py');
    expect(golden.cases.length).toBeGreaterThan(0);
    const unmapped = [...new Set(golden.cases.map((c) => c.op))].filter((op) => !(op in OPS));
    expect(unmapped, 'fixture ops without a Switchyard mapping').toEqual([]);
    const names = golden.cases.map((c) => c.name);
    expect(new Set(names).size, 'case names are unique').toBe(names.length);
    for (const c of golden.cases) if (c.tol) expect(c.tol.why, `${c.name}: tolerance override has a reason`).toBeTruthy();
  });
});

forEachBackend((backend, run) => {
  describe(`golden ops vs PyTorch ${golden.torch} [${backend.name}]`, () => {
    for (const c of golden.cases) {
      it(`${c.op}: ${c.name} (golden: make_op_goldens.py)`, () => run(() => runCase(c)));
    }
  });
});
