/// <reference lib="dom" />
/// <reference types="@webgpu/types" />
/**
 * WGSL compute kernels for the hot ops, as an ASYNCHRONOUS kernel layer: the same arguments as the
 * `Backend` kernels (caller-allocated Float32Array / Int32Array), but every call returns a Promise
 * that resolves once the results have been read back into the caller's arrays. WebGPU readback
 * (GPUBuffer.mapAsync) is asynchronous and a page cannot block on it, so this layer is async by
 * nature; `WebGpuBackend` (webgpu.ts) turns it into the synchronous `Backend` the engine needs by
 * running it in a dedicated worker and blocking the calling worker on Atomics.wait.
 *
 * Kernels: gemm (the whole task list, MoE grouped case included, in one dispatch), unary for the
 * ops below, gatedAct (relu / silu), affine, binary (add sub mul div max min, any strides),
 * softmax / log-softmax, logsumexp, gatherRows, scatterAddRows. exp / log / tanh / sigmoid are
 * the Cephes-style polynomials of native/ew_impl.h ported to WGSL (built-in WGSL exp/log only
 * promise 3 + 2|x| ULP); NaN/Inf tests use bit patterns, which no compiler may fold away.
 * Every call copies its inputs to GPU memory and its outputs back: correctness first. On
 * SwiftShader (CPU) this is a correctness target, not a speed one.
 */
import type { Activation, BinaryOp, UnaryOp } from './interface.js';
import { checkBinary, checkGemm, checkIndices, count, f32, i32, mul, need, num } from './wasm-args.js';

/** Unary ops with a WGSL kernel (the rest stay on the fallback backend). */
export const GPU_UNARY: ReadonlySet<UnaryOp> = new Set<UnaryOp>(['neg', 'abs', 'exp', 'log', 'sqrt', 'tanh', 'sigmoid', 'relu', 'silu', 'square', 'sign']);
/** Binary ops with a WGSL kernel (pow stays on the fallback backend). */
export const GPU_BINARY: ReadonlySet<BinaryOp> = new Set<BinaryOp>(['add', 'sub', 'mul', 'div', 'max', 'min']);
/** Gated activations with a WGSL kernel. */
export const GPU_GATED: ReadonlySet<Activation> = new Set<Activation>(['relu', 'silu']);

const UNARY_CODE: Partial<Record<UnaryOp, number>> = { neg: 0, abs: 1, exp: 2, log: 3, sqrt: 4, tanh: 6, sigmoid: 7, relu: 9, silu: 12, square: 13, sign: 14 };
const BINARY_CODE: Partial<Record<BinaryOp, number>> = { add: 0, sub: 1, mul: 2, div: 3, max: 4, min: 5 };

/** Shared WGSL: NaN/Inf tests and the ew_impl.h math. */
const MATH = /* wgsl */ `
fn is_nan(x: f32) -> bool { return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u; }
fn is_inf(x: f32) -> bool { return (bitcast<u32>(x) & 0x7fffffffu) == 0x7f800000u; }
// NaN/Inf must not come from a const-expression (a shader-creation error): read the bits from
// private variables instead.
var<private> NAN_BITS: u32 = 0x7fc00000u;
var<private> PINF_BITS: u32 = 0x7f800000u;
var<private> NINF_BITS: u32 = 0xff800000u;
fn qnan() -> f32 { return bitcast<f32>(NAN_BITS); }
fn pinf() -> f32 { return bitcast<f32>(PINF_BITS); }
fn ninf() -> f32 { return bitcast<f32>(NINF_BITS); }

// exp: Cody-Waite reduction, degree-5 polynomial, two-step scaling (as sy_exp2part with b = 0)
fn sy_exp(s: f32) -> f32 {
  let L2E = 1.44269504088896341; let C1 = 0.693359375; let C2 = -2.12194440e-4;
  var sc = clamp(s, -104.0, 89.0);
  if (is_nan(s)) { sc = 0.0; }
  let nf = round(sc * L2E);
  let r = (sc - nf * C1) - nf * C2;
  let r2 = r * r;
  var p = ((((1.9875691500e-4 * r + 1.3981999507e-3) * r + 8.3334519073e-3) * r + 4.1665795894e-2) * r +
           1.6666665459e-1) * r + 5.0000001201e-1;
  p = p * r2 + r + 1.0;
  let n = i32(nf);
  let n1 = n >> 1u;
  let n2 = n - n1;
  var res = p * bitcast<f32>(u32(n1 + 127) << 23u) * bitcast<f32>(u32(n2 + 127) << 23u);
  if (s > 89.0) { res = pinf(); }
  if (is_nan(s)) { res = s; }
  return res;
}

// log: Cephes logf (mantissa in [sqrt(1/2), sqrt(2)), degree-8 polynomial), subnormals rescaled
fn sy_log(x: f32) -> f32 {
  let sub = x < 1.17549435e-38;
  var xs = x;
  if (sub) { xs = x * 8388608.0; }
  let ix = bitcast<i32>(xs);
  var e = ((ix >> 23u) & 0xff) - 126;
  if (sub) { e = e - 23; }
  var m = bitcast<f32>((ix & 0x007fffff) | 0x3f000000);
  if (m < 0.707106781186547524) { e = e - 1; m = m + m - 1.0; } else { m = m - 1.0; }
  let z = m * m;
  var y = ((((((((7.0376836292e-2 * m - 1.1514610310e-1) * m + 1.1676998740e-1) * m - 1.2420140846e-1) * m +
               1.4249322787e-1) * m - 1.6668057665e-1) * m + 2.0000714765e-1) * m - 2.4999993993e-1) * m +
           3.3333331174e-1) * m * z;
  let fe = f32(e);
  y = y + -2.12194440e-4 * fe;
  y = y + -0.5 * z;
  var r = m + y;
  r = r + 0.693359375 * fe;
  if (is_inf(x) && x > 0.0) { r = x; }
  if (x == 0.0) { r = ninf(); }
  if (x < 0.0) { r = qnan(); }
  if (is_nan(x)) { r = x; }
  return r;
}

fn sy_sigmoid(v: f32) -> f32 {
  let e = sy_exp(-abs(v));
  let inv = 1.0 / (1.0 + e);
  var r = e * inv;
  if (v >= 0.0) { r = inv; }
  if (is_nan(v)) { r = v; }
  return r;
}

// silu(v) = v·sigmoid(v). Below -80, exp(v) is near or under the subnormal range, which GPUs may
// flush to zero, while v·exp(v) is still a normal float: form it as exp(v + log|v|) instead.
fn sy_silu(v: f32) -> f32 {
  if (v < -80.0 && !is_inf(v)) {
    let e = sy_exp(v);
    return -sy_exp(v + sy_log(-v)) / (1.0 + e);
  }
  return v * sy_sigmoid(v);
}

fn sy_tanh(x: f32) -> f32 {
  let ax = abs(x);
  let z = x * x;
  let small = ((((-5.70498872745e-3 * z + 2.06390887954e-2) * z - 5.37397155531e-2) * z + 1.33314422036e-1) * z -
               3.33332819422e-1) * z * x + x;
  let e = sy_exp(2.0 * min(ax, 44.0));
  var big = 1.0 - 2.0 / (e + 1.0);
  if (x < 0.0) { big = -big; }
  var r = big;
  if (ax < 0.625) { r = small; }
  if (is_nan(x)) { r = x; }
  return r;
}
`;

const GEMM = /* wgsl */ `
// One dispatch for the whole task list: z = task, (x, y) = 16x16 tiles of C. All buffers live in
// one storage array; task t's 13 params index into it through base[]. Each workgroup stages 16x16
// tiles of op(A) and op(B) in workgroup memory; every C element is still summed in increasing l
// (one accumulator per invocation), so results do not depend on the tiling.
@group(0) @binding(0) var<storage, read_write> data: array<f32>;
@group(0) @binding(1) var<storage, read> params: array<i32>;
@group(0) @binding(2) var<storage, read> base: array<u32>;

const T = 16u;
var<workgroup> ta: array<array<f32, 16>, 16>;
var<workgroup> tb: array<array<f32, 16>, 16>;

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let p = wg.z * 13u;
  let m = u32(params[p + 9u]); let n = u32(params[p + 10u]); let k = u32(params[p + 11u]);
  let i0 = wg.y * T; let j0 = wg.x * T;
  // whole workgroups leave together (workgroupBarrier must be reached uniformly)
  if (i0 >= m || j0 >= n) { return; }
  let flags = params[p + 12u];
  let ta_ = (flags & 1) != 0; let tb_ = (flags & 2) != 0;
  let a0 = base[u32(params[p + 0u])] + u32(params[p + 1u]); let lda = u32(params[p + 2u]);
  let b0 = base[u32(params[p + 3u])] + u32(params[p + 4u]); let ldb = u32(params[p + 5u]);
  let c0 = base[u32(params[p + 6u])] + u32(params[p + 7u]); let ldc = u32(params[p + 8u]);
  let li = lid.y; let lj = lid.x;
  let i = i0 + li; let j = j0 + lj;
  var acc = 0.0;
  for (var l0 = 0u; l0 < k; l0 = l0 + T) {
    // ta[r][c] = op(A)[i0 + r, l0 + c]; tb[r][c] = op(B)[l0 + r, j0 + c] (zero outside)
    let ar = i0 + li; let ac = l0 + lj;
    var av = 0.0;
    if (ar < m && ac < k) { av = data[select(a0 + ar * lda + ac, a0 + ac * lda + ar, ta_)]; }
    ta[li][lj] = av;
    let br = l0 + li; let bc = j0 + lj;
    var bv = 0.0;
    if (br < k && bc < n) { bv = data[select(b0 + br * ldb + bc, b0 + bc * ldb + br, tb_)]; }
    tb[li][lj] = bv;
    workgroupBarrier();
    let lmax = min(T, k - l0);
    for (var l = 0u; l < lmax; l = l + 1u) { acc = acc + ta[li][l] * tb[l][lj]; }
    workgroupBarrier();
  }
  if (i < m && j < n) {
    let c = c0 + i * ldc + j;
    if ((flags & 4) != 0) { data[c] = data[c] + acc; } else { data[c] = acc; }
  }
}
`;

const ELEMENTWISE = /* wgsl */ `
${MATH}
struct P { op: u32, n: u32, scale: f32, shift: f32, act: u32, pad0: u32, pad1: u32, pad2: u32 }
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> u: P;

fn unary(op: u32, v: f32) -> f32 {
  switch op {
    case 0u: { return -v; }
    case 1u: { return abs(v); }
    case 2u: { return sy_exp(v); }
    case 3u: { return sy_log(v); }
    case 4u: { if (v < 0.0) { return qnan(); } return sqrt(v); }
    case 6u: { return sy_tanh(v); }
    case 7u: { return sy_sigmoid(v); }
    case 9u: { return select(0.0, v, v > 0.0); }
    case 12u: { return sy_silu(v); }
    case 13u: { return v * v; }
    case 14u: { return select(select(0.0, -1.0, v < 0.0), 1.0, v > 0.0); }
    default: { return qnan(); }
  }
}

@compute @workgroup_size(64)
fn unary_main(@builtin(global_invocation_id) g: vec3<u32>) {
  let i = g.x + g.y * 65535u * 64u;
  _ = b[0]; // keep every binding in the 'auto' layout (one bind group shape for all entries)
  if (i >= u.n) { return; }
  out[i] = unary(u.op, x[i]);
}

@compute @workgroup_size(64)
fn gated_main(@builtin(global_invocation_id) g: vec3<u32>) {
  let i = g.x + g.y * 65535u * 64u;
  if (i >= u.n) { return; }
  out[i] = unary(u.op, x[i]) * b[i];
}

@compute @workgroup_size(64)
fn affine_main(@builtin(global_invocation_id) g: vec3<u32>) {
  let i = g.x + g.y * 65535u * 64u;
  _ = b[0];
  if (i >= u.n) { return; }
  out[i] = x[i] * u.scale + u.shift;
}
`;

const BINARY = /* wgsl */ `
${MATH}
// out[idx] = a[idx·as] op b[idx·bs] over outShape; geom = [shape..., as..., bs...]
struct P { op: u32, n: u32, nd: u32, pad: u32 }
@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> u: P;
@group(0) @binding(4) var<storage, read> geom: array<i32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3<u32>) {
  let i = g.x + g.y * 65535u * 64u;
  if (i >= u.n) { return; }
  var rem = i; var ai = 0i; var bi = 0i;
  for (var d = i32(u.nd) - 1; d >= 0; d = d - 1) {
    let s = u32(geom[d]);
    let q = rem % s;
    rem = rem / s;
    ai = ai + i32(q) * geom[i32(u.nd) + d];
    bi = bi + i32(q) * geom[2 * i32(u.nd) + d];
  }
  let x = a[ai]; let y = b[bi];
  var r: f32;
  switch u.op {
    case 0u: { r = x + y; }
    case 1u: { r = x - y; }
    case 2u: { r = x * y; }
    case 3u: { r = x / y; }
    // as the reference: a >= b || isNaN(a) ? a : b (ties keep a, so max(-0, 0) = -0), NaN propagates
    case 4u: { r = select(y, x, x >= y || is_nan(x)); }
    default: { r = select(y, x, x <= y || is_nan(x)); }
  }
  out[i] = r;
}
`;

const ROWWISE = /* wgsl */ `
${MATH}
struct P { rows: u32, cols: u32, log: u32, pad: u32 }
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<uniform> u: P;

// Σ exp(x - mx) for row r, compensated (Kahan) so the float32 sum is as good as a double one.
fn row_max(r: u32) -> f32 {
  var mx = ninf();
  for (var c = 0u; c < u.cols; c = c + 1u) {
    let v = x[r * u.cols + c];
    if (is_nan(v)) { return v; }
    mx = max(mx, v);
  }
  return mx;
}
fn row_sum(r: u32, mx: f32) -> f32 {
  var s = 0.0; var comp = 0.0;
  for (var c = 0u; c < u.cols; c = c + 1u) {
    let y = sy_exp(x[r * u.cols + c] - mx) - comp;
    let t = s + y;
    comp = (t - s) - y;
    s = t;
  }
  return s;
}

@compute @workgroup_size(64)
fn softmax_main(@builtin(global_invocation_id) g: vec3<u32>) {
  let r = g.x;
  if (r >= u.rows) { return; }
  var mx = row_max(r);
  let allninf = is_inf(mx) && mx < 0.0;
  if (allninf) { mx = 0.0; }
  let s = row_sum(r, mx);
  let ls = sy_log(s);
  for (var c = 0u; c < u.cols; c = c + 1u) {
    let v = x[r * u.cols + c] - mx;
    if (u.log != 0u) { out[r * u.cols + c] = v - ls; } else { out[r * u.cols + c] = sy_exp(v) / s; }
  }
}

@compute @workgroup_size(64)
fn logsumexp_main(@builtin(global_invocation_id) g: vec3<u32>) {
  let r = g.x;
  if (r >= u.rows) { return; }
  var mx = row_max(r);
  if (is_inf(mx)) { out[r] = mx; return; }
  out[r] = mx + sy_log(row_sum(r, mx));
}
`;

const INDEXING = /* wgsl */ `
struct P { n: u32, cols: u32, weighted: u32, nidx: u32 }
@group(0) @binding(0) var<storage, read> src: array<f32>;
@group(0) @binding(1) var<storage, read> idx: array<i32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<uniform> u: P;

@compute @workgroup_size(64)
fn gather_main(@builtin(global_invocation_id) g: vec3<u32>) {
  let e = g.x + g.y * 65535u * 64u;
  _ = w[0];
  _ = u.weighted;
  _ = u.nidx;
  if (e >= u.n) { return; }
  let i = e / u.cols; let c = e % u.cols;
  out[e] = src[u32(idx[i]) * u.cols + c];
}

fn split(a: f32) -> vec2<f32> {
  let c = 4097.0 * a;
  let hi = c - (c - a);
  return vec2<f32>(hi, a - hi);
}
// round(acc + a·b) with a·b exact: two-product, then two-sum with the error terms.
fn add_prod(acc: f32, a: f32, b: f32) -> f32 {
  let p = a * b;
  if ((bitcast<u32>(p) & 0x7f800000u) == 0x7f800000u || abs(a) > 1e30 || abs(b) > 1e30) { return acc + p; }
  let sa = split(a); let sb = split(b);
  let pe = ((sa.x * sb.x - p) + sa.x * sb.y + sa.y * sb.x) + sa.y * sb.y;
  let s = acc + p;
  let bb = s - acc;
  let se = (acc - (s - bb)) + (p - bb);
  return s + (se + pe);
}

// One invocation per output element, adding its rows in increasing i: deterministic, no atomics.
@compute @workgroup_size(64)
fn scatter_main(@builtin(global_invocation_id) g: vec3<u32>) {
  let e = g.x + g.y * 65535u * 64u;
  if (e >= u.n) { return; }
  let r = i32(e / u.cols); let c = e % u.cols;
  var acc = out[e];
  for (var i = 0u; i < u.nidx; i = i + 1u) {
    if (idx[i] == r) {
      // as the reference: the exact product w·s added with one rounding (fma is not guaranteed to be
      // fused, so the product is split exactly, Dekker/Veltkamp, and summed with its error term)
      if (u.weighted != 0u) { acc = add_prod(acc, src[i * u.cols + c], w[i]); } else { acc = acc + src[i * u.cols + c]; }
    }
  }
  out[e] = acc;
}
`;

type Arr = Float32Array | Int32Array;

/** Round a byte size up to a multiple of 16 (and at least 16: zero-sized bindings are invalid). */
function padBytes(n: number): number {
  return Math.max(16, Math.ceil(n / 16) * 16);
}

/** Workgroup grid for n items at 64 per group, folding x beyond the 65535 limit into y. */
function grid(n: number): [number, number] {
  const groups = Math.max(1, Math.ceil(n / 64));
  return groups <= 65535 ? [groups, 1] : [65535, Math.ceil(groups / 65535)];
}

/** Why WebGPU is unavailable here, or null if an adapter can be requested. */
export async function webgpuUnavailableReason(): Promise<string | null> {
  const gpu = (globalThis as { navigator?: { gpu?: GPU } }).navigator?.gpu;
  if (!gpu) return 'navigator.gpu is missing (no WebGPU in this browser/context; it needs a secure context)';
  try {
    const adapter = await gpu.requestAdapter();
    return adapter ? null : 'navigator.gpu.requestAdapter() returned null (no adapter)';
  } catch (e) {
    return `requestAdapter() failed: ${e instanceof Error ? e.message : String(e)}`;
  }
}

/** The asynchronous WGSL kernel layer on one GPUDevice. Create with `createWebGpuKernels()`. */
export class WebGpuKernels {
  readonly device: GPUDevice;
  /** Adapter description for logs ("google swiftshader", ...). */
  readonly adapterName: string;
  readonly #pipelines = new Map<string, GPUComputePipeline>();

  constructor(device: GPUDevice, adapterName: string) {
    this.device = device;
    this.adapterName = adapterName;
  }

  #pipeline(key: string, code: string, entry: string): GPUComputePipeline {
    let p = this.#pipelines.get(key);
    if (!p) {
      // shader/pipeline errors surface through the validation scope of the #run that uses it
      const module = this.device.createShaderModule({ code });
      p = this.device.createComputePipeline({ layout: 'auto', compute: { module, entryPoint: entry } });
      this.#pipelines.set(key, p);
    }
    return p;
  }

  #upload(a: Arr | ArrayBuffer, usage: number, minBytes = 0): GPUBuffer {
    const bytes = a instanceof ArrayBuffer ? a.byteLength : a.byteLength;
    const buf = this.device.createBuffer({ size: padBytes(Math.max(bytes, minBytes)), usage: usage | GPUBufferUsage.COPY_DST });
    if (bytes > 0) {
      if (a instanceof ArrayBuffer) this.device.queue.writeBuffer(buf, 0, a);
      else this.device.queue.writeBuffer(buf, 0, a.buffer, a.byteOffset, a.byteLength);
    }
    return buf;
  }

  #storage(a: Arr): GPUBuffer {
    return this.#upload(a, GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC);
  }

  #uniform(words: ArrayBuffer): GPUBuffer {
    return this.#upload(words, GPUBufferUsage.UNIFORM);
  }

  /** Encode one dispatch, copy `result` (bytes [0, bytes)) to a staging buffer, submit, read back. */
  async #run(pipeline: GPUComputePipeline, bindings: GPUBuffer[], groups: [number, number, number], result: GPUBuffer, bytes: number, into: Uint8Array): Promise<void> {
    const scratch = [...bindings];
    this.device.pushErrorScope('validation');
    try {
      const enc = this.device.createCommandEncoder();
      const bind = this.device.createBindGroup({
        layout: pipeline.getBindGroupLayout(0),
        entries: bindings.map((buffer, binding) => ({ binding, resource: { buffer } })),
      });
      if (groups[0] > 0 && groups[1] > 0 && groups[2] > 0) {
        const pass = enc.beginComputePass();
        pass.setPipeline(pipeline);
        pass.setBindGroup(0, bind);
        pass.dispatchWorkgroups(groups[0], groups[1], groups[2]);
        pass.end();
      }
      if (bytes === 0) {
        this.device.queue.submit([enc.finish()]);
        await this.#checkErrors();
        return;
      }
      const staging = this.device.createBuffer({ size: padBytes(bytes), usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
      scratch.push(staging);
      enc.copyBufferToBuffer(result, 0, staging, 0, padBytes(bytes));
      this.device.queue.submit([enc.finish()]);
      await this.#checkErrors();
      await staging.mapAsync(GPUMapMode.READ);
      into.set(new Uint8Array(staging.getMappedRange(0, padBytes(bytes)), 0, bytes));
      staging.unmap();
    } finally {
      for (const b of scratch) b.destroy();
    }
  }

  /** Pop the validation scope pushed by #run: a GPU validation error becomes an exception. */
  async #checkErrors(): Promise<void> {
    const err = await this.device.popErrorScope();
    if (err) throw new Error(`WebGPU validation error: ${err.message}`);
  }

  /** Batched/grouped GEMM over a task list (see Backend.gemm): one dispatch for every task. */
  async gemm(buffers: readonly Float32Array[], params: Int32Array): Promise<void> {
    const ntasks = checkGemm(buffers, params);
    if (ntasks === 0) return;
    // one storage array holding every distinct buffer; base[i] = element offset of buffers[i]
    const base = new Uint32Array(buffers.length);
    const first = new Map<Float32Array, number>();
    let total = 0;
    buffers.forEach((b, i) => {
      const seen = first.get(b);
      if (seen !== undefined) base[i] = base[seen];
      else {
        first.set(b, i);
        base[i] = total;
        total += Math.ceil(b.length / 4) * 4;
      }
    });
    const all = new Float32Array(Math.max(total, 4));
    for (const [b, i] of first) all.set(b, base[i]);
    let maxM = 0, maxN = 0;
    for (let t = 0; t < ntasks; t++) {
      maxM = Math.max(maxM, params[t * 13 + 9]);
      maxN = Math.max(maxN, params[t * 13 + 10]);
    }
    const data = this.#storage(all);
    const pbuf = this.#storage(params), bbuf = this.#upload(base.buffer, GPUBufferUsage.STORAGE);
    const out = new Uint8Array(all.buffer);
    if (ntasks > 65535) throw new RangeError(`gemm: ${ntasks} tasks exceed the WebGPU grid (65535)`);
    await this.#run(this.#pipeline('gemm', GEMM, 'main'), [data, pbuf, bbuf], [Math.ceil(maxN / 16), Math.ceil(maxM / 16), ntasks], data, all.byteLength, out);
    const written = new Set<number>();
    for (let t = 0; t < ntasks; t++) written.add(params[t * 13 + 6]);
    for (const [b, i] of first) if ([...written].some((w) => buffers[w] === b)) b.set(all.subarray(base[i], base[i] + b.length));
  }

  async #elementwise(entry: string, op: number, x: Float32Array, b: Float32Array | null, out: Float32Array, scale = 0, shift = 0): Promise<void> {
    const n = x.length;
    const u = new ArrayBuffer(32);
    new Uint32Array(u, 0, 2).set([op, n]);
    new Float32Array(u, 8, 2).set([scale, shift]);
    const xb = this.#storage(x), bb = this.#storage(b ?? new Float32Array(0));
    const ob = this.device.createBuffer({ size: padBytes(n * 4), usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
    const [gx, gy] = grid(n);
    const res = new Float32Array(n);
    await this.#run(this.#pipeline(`ew:${entry}`, ELEMENTWISE, entry), [xb, bb, ob, this.#uniform(u)], [n ? gx : 0, gy, 1], ob, n * 4, new Uint8Array(res.buffer));
    out.set(res);
  }

  /** out[i] = op(x[i]) for the ops in GPU_UNARY. */
  async unary(op: UnaryOp, x: Float32Array, out: Float32Array): Promise<void> {
    const c = UNARY_CODE[op];
    if (c === undefined) throw new RangeError(`op: ${op} has no WebGPU kernel`);
    f32(x, 'x');
    f32(out, 'out');
    need('out', out.length, x.length);
    await this.#elementwise('unary_main', c, x, null, out);
  }

  /** out = act(a) ⊙ b for the activations in GPU_GATED. */
  async gatedAct(act: Activation, a: Float32Array, b: Float32Array, out: Float32Array): Promise<void> {
    const c = UNARY_CODE[act];
    if (c === undefined || !GPU_GATED.has(act)) throw new RangeError(`act: ${act} has no WebGPU kernel`);
    f32(a, 'a');
    f32(b, 'b');
    f32(out, 'out');
    need('b', b.length, a.length);
    need('out', out.length, a.length);
    await this.#elementwise('gated_main', c, a, b, out);
  }

  /** out[i] = x[i]·scale + shift. */
  async affine(x: Float32Array, scale: number, shift: number, out: Float32Array): Promise<void> {
    f32(x, 'x');
    num(scale, 'scale');
    num(shift, 'shift');
    f32(out, 'out');
    need('out', out.length, x.length);
    await this.#elementwise('affine_main', 0, x, null, out, scale, shift);
  }

  /** Strided/broadcast binary op (see Backend.binary) for the ops in GPU_BINARY. */
  async binary(op: BinaryOp, a: Float32Array, aStrides: Int32Array, b: Float32Array, bStrides: Int32Array, out: Float32Array, outShape: Int32Array): Promise<void> {
    const c = BINARY_CODE[op];
    if (c === undefined) throw new RangeError(`op: ${op} has no WebGPU kernel`);
    const n = checkBinary(a, aStrides, b, bStrides, out, outShape);
    const nd = outShape.length;
    const meta = new Int32Array(Math.max(3 * nd, 1));
    meta.set(outShape, 0);
    meta.set(aStrides, nd);
    meta.set(bStrides, 2 * nd);
    const u = new Uint32Array([c, n, nd, 0]);
    const ob = this.device.createBuffer({ size: padBytes(n * 4), usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
    const [gx, gy] = grid(n);
    const res = new Float32Array(n);
    await this.#run(
      this.#pipeline('binary', BINARY, 'main'),
      [this.#storage(a), this.#storage(b), ob, this.#uniform(u.buffer), this.#storage(meta)],
      [n ? gx : 0, gy, 1], ob, n * 4, new Uint8Array(res.buffer),
    );
    out.set(res);
  }

  async #rowwise(entry: string, x: Float32Array, rows: number, cols: number, log: boolean, outLen: number): Promise<Float32Array> {
    const u = new Uint32Array([rows, cols, log ? 1 : 0, 0]);
    const ob = this.device.createBuffer({ size: padBytes(outLen * 4), usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
    const res = new Float32Array(outLen);
    await this.#run(this.#pipeline(`row:${entry}`, ROWWISE, entry), [this.#storage(x.subarray(0, rows * cols)), ob, this.#uniform(u.buffer)], [rows ? Math.ceil(rows / 64) : 0, 1, 1], ob, outLen * 4, new Uint8Array(res.buffer));
    return res;
  }

  /** Row-wise stable softmax / log-softmax of x [rows, cols]. */
  async softmax(x: Float32Array, rows: number, cols: number, log: boolean, out: Float32Array): Promise<void> {
    f32(x, 'x');
    const tot = mul(count(rows, 'rows'), count(cols, 'cols'));
    f32(out, 'out');
    need('x', x.length, tot);
    need('out', out.length, tot);
    if (rows > 65535 * 64) throw new RangeError(`rows=${rows} exceeds the WebGPU grid`);
    out.set(await this.#rowwise('softmax_main', x, rows, cols, log, tot));
  }

  /** out[r] = log Σ_c exp(x[r, c]). */
  async logsumexp(x: Float32Array, rows: number, cols: number, out: Float32Array): Promise<void> {
    f32(x, 'x');
    const tot = mul(count(rows, 'rows'), count(cols, 'cols'));
    f32(out, 'out');
    need('x', x.length, tot);
    need('out', out.length, rows);
    if (rows > 65535 * 64) throw new RangeError(`rows=${rows} exceeds the WebGPU grid`);
    out.set(await this.#rowwise('logsumexp_main', x, rows, cols, false, rows));
  }

  async #indexing(entry: string, src: Float32Array, idx: Int32Array, w: Float32Array | null, cols: number, out: Float32Array, n: number): Promise<void> {
    const u = new Uint32Array([n, cols, w ? 1 : 0, idx.length]);
    const ob = this.#storage(out.subarray(0, n));
    const res = new Float32Array(n);
    const [gx, gy] = grid(n);
    await this.#run(
      this.#pipeline(`idx:${entry}`, INDEXING, entry),
      [this.#storage(src), this.#storage(idx), this.#storage(w ?? new Float32Array(0)), ob, this.#uniform(u.buffer)],
      [n ? gx : 0, gy, 1], ob, n * 4, new Uint8Array(res.buffer),
    );
    out.set(res);
  }

  /** out[i, :] = src[idx[i], :]. */
  async gatherRows(src: Float32Array, idx: Int32Array, cols: number, out: Float32Array): Promise<void> {
    f32(src, 'src');
    i32(idx, 'idx');
    count(cols, 'cols');
    f32(out, 'out');
    const n = mul(idx.length, cols);
    need('out', out.length, n);
    if (cols === 0 || n === 0) return;
    checkIndices(idx, Math.floor(src.length / cols));
    await this.#indexing('gather_main', src, idx, null, cols, out, n);
  }

  /** out[idx[i], :] += w[i]·src[i, :], rows added in increasing i for every output element. */
  async scatterAddRows(src: Float32Array, idx: Int32Array, w: Float32Array | null, cols: number, out: Float32Array): Promise<void> {
    f32(src, 'src');
    i32(idx, 'idx');
    f32(w, 'w', true);
    count(cols, 'cols');
    f32(out, 'out');
    need('src', src.length, mul(idx.length, cols));
    if (w) need('w', w.length, idx.length);
    if (cols === 0) return;
    const rows = Math.floor(out.length / cols);
    checkIndices(idx, rows);
    if (idx.length === 0 || rows === 0) return;
    await this.#indexing('scatter_main', src, idx, w, cols, out, rows * cols);
  }

  /** Release the device. */
  destroy(): void {
    this.device.destroy();
  }
}

/** Request an adapter and device; throws with the reason when WebGPU is unavailable. */
export async function createWebGpuKernels(): Promise<WebGpuKernels> {
  const gpu = (globalThis as { navigator?: { gpu?: GPU } }).navigator?.gpu;
  if (!gpu) throw new Error('switchyard: WebGPU unavailable: navigator.gpu is missing');
  const adapter = await gpu.requestAdapter();
  if (!adapter) throw new Error('switchyard: WebGPU unavailable: requestAdapter() returned null');
  const limits = adapter.limits;
  const device = await adapter.requestDevice({
    requiredLimits: {
      maxStorageBufferBindingSize: limits.maxStorageBufferBindingSize,
      maxBufferSize: limits.maxBufferSize,
      maxStorageBuffersPerShaderStage: Math.min(limits.maxStorageBuffersPerShaderStage, 8),
    },
  });
  const info = adapter.info;
  const name = [info?.vendor, info?.architecture, info?.device, info?.description].filter((s) => s).join(' ') || 'unknown adapter';
  return new WebGpuKernels(device, name);
}
