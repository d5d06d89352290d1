// Paired in-process A/B of two builds of the native kernels on the MoE layer's grouped GEMM calls.
// Not part of `npm run bench`: a developer tool for deciding whether a kernel change is faster
// on a host whose speed drifts ±20% over seconds, where timing one build and then the other
// cannot resolve a 5% change.
//
// Each build is a package root with its own dist/ and build/Release/ (so its own addon and thread
// pool). To make one from a modified tree:
//   mkdir /tmp/variant && cp -r native binding.gyp package.json scripts dist /tmp/variant/
//   ln -s "$PWD/node_modules" /tmp/variant/node_modules
//   (edit /tmp/variant/native/...) && (cd /tmp/variant && node scripts/build-native.mjs --strict)
//
// usage: node bench/ab-gemm.mjs ROOT_A ROOT_B
//   env E=8|64 (experts), SHAPES=up,gup,down,dgrad,gdg,dW2,dX,dW13,bwd, R (rounds, default 30)
// Both builds run the same call in turn, call by call (order alternating), with a 1 ms sleep so the
// idle pool's worker is asleep; each call is timed after a warm-up call. Prints, per shape, A's
// median time and rate and the median and quartiles of the paired ratios time(A) / time(B):
// above 1 means B is faster. Two identical builds give 0.99-1.01 with quartiles of about ±4%.
import path from 'node:path';

const [rootA, rootB] = process.argv.slice(2).map((p) => path.resolve(p ?? ''));
if (!process.argv[3]) {
  console.error('usage: node bench/ab-gemm.mjs ROOT_A ROOT_B');
  process.exit(2);
}
const A = await import(path.join(rootA, 'dist/ops/gemm-tasks.js'));
const B = await import(path.join(rootB, 'dist/ops/gemm-tasks.js'));
const TRANS_A = 1, TRANS_B = 2, ACCUMULATE = 4, CHAIN = 8;

const sleep = (ms) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
let seed = 1;
const rand = (n) => {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32) - 0.5;
  return a;
};

// The layer's shapes: 2048 tokens, top-2, dModel 256, dFF 1024; rows per expert as routed.
const E = Number(process.env.E ?? 8), d = 256, f = 1024;
const rows = E === 8 ? [570, 539, 521, 456, 516, 519, 472, 503] : Array.from({ length: E }, (_, e) => 64 + ((e * 37) % 9) - 4);
const off = [0];
for (const c of rows) off.push(off.at(-1) + c);
const N = off.at(-1);
const X = rand(N * d), DY = rand(N * d), DX = rand(N * d), Y = rand(N * d);
const H1 = rand(N * f), H3 = rand(N * f), HID = rand(N * f), DH1 = rand(N * f), DH3 = rand(N * f);
const per = () => Array.from({ length: E }, () => rand(f * d));
const W1 = per(), W3 = per(), W2 = per(), dW1 = per(), dW3 = per(), dW2 = per();

const calls = (M) => {
  const grouped = (add) => () => {
    const t = new M.GemmTasks();
    for (let e = 0; e < E; e++) add(t, e, off[e], rows[e]);
    t.run();
  };
  const gated = (mode, add) => () => {
    const t = new M.GatedGemmTasks(mode, 'silu');
    for (let e = 0; e < E; e++) t.add(add(e, off[e], rows[e]));
    t.run();
  };
  const dW2task = (t, e, r0, m) => t.add(DY, r0 * d, d, HID, r0 * f, f, dW2[e], 0, f, d, f, m, TRANS_A);
  const dXtasks = (t, e, r0, m) => {
    t.add(DH1, r0 * f, f, W1[e], 0, d, DX, r0 * d, d, m, d, f, 0);
    t.add(DH3, r0 * f, f, W3[e], 0, d, DX, r0 * d, d, m, d, f, ACCUMULATE | CHAIN);
  };
  const dW13tasks = (t, e, r0, m) => {
    t.add(DH1, r0 * f, f, X, r0 * d, d, dW1[e], 0, d, f, d, m, TRANS_A);
    t.add(DH3, r0 * f, f, X, r0 * d, d, dW3[e], 0, d, f, d, m, TRANS_A);
  };
  return {
    up: grouped((t, e, r0, m) => {
      t.add(X, r0 * d, d, W1[e], 0, d, H1, r0 * f, f, m, f, d, TRANS_B);
      t.add(X, r0 * d, d, W3[e], 0, d, H3, r0 * f, f, m, f, d, TRANS_B);
    }),
    gup: gated('up', (e, r0, m) => ({ a: X, aOff: r0 * d, lda: d, b1: W1[e], b3: W3[e], ldb: d, transB: true, c1: H1, c1Off: r0 * f, c3: H3, c3Off: r0 * f, o1: HID, o1Off: r0 * f, o3: null, o3Off: 0, ld: f, m, n: f, k: d })),
    down: grouped((t, e, r0, m) => t.add(HID, r0 * f, f, W2[e], 0, f, Y, r0 * d, d, m, d, f, TRANS_B)),
    dgrad: grouped((t, e, r0, m) => t.add(DY, r0 * d, d, W2[e], 0, f, HID, r0 * f, f, m, f, d, 0)),
    gdg: gated('down-grad', (e, r0, m) => ({ a: DY, aOff: r0 * d, lda: d, b1: W2[e], b3: null, ldb: f, transB: false, c1: H1, c1Off: r0 * f, c3: H3, c3Off: r0 * f, o1: DH1, o1Off: r0 * f, o3: DH3, o3Off: r0 * f, ld: f, m, n: f, k: d })),
    dW2: grouped(dW2task),
    dX: grouped(dXtasks),
    dW13: grouped(dW13tasks),
    bwd: grouped((t, e, r0, m) => {
      dW2task(t, e, r0, m);
      dXtasks(t, e, r0, m);
      dW13tasks(t, e, r0, m);
    }),
  };
};
const flops = { up: 4, gup: 4, down: 2, dgrad: 2, gdg: 2, dW2: 2, dX: 4, dW13: 4, bwd: 10 };

const fa = calls(A), fb = calls(B);
const shapes = (process.env.SHAPES ?? 'gup,down,gdg,bwd').split(',');
for (const s of shapes) if (!(s in flops)) throw new Error(`SHAPES: unknown shape '${s}' (known: ${Object.keys(flops).join(', ')})`);
const R = Number(process.env.R ?? 30);
const ratio = Object.fromEntries(shapes.map((s) => [s, []]));
const timeA = Object.fromEntries(shapes.map((s) => [s, []]));
for (let i = 0; i < R; i++) {
  for (const s of shapes) {
    const t = {};
    for (const [name, F] of i % 2 ? [['a', fa], ['b', fb]] : [['b', fb], ['a', fa]]) {
      F[s]();
      sleep(1);
      const t0 = performance.now();
      F[s]();
      t[name] = performance.now() - t0;
      sleep(1);
    }
    ratio[s].push(t.a / t.b);
    timeA[s].push(t.a);
  }
}
const quantile = (xs, q) => [...xs].sort((x, y) => x - y)[Math.min(xs.length - 1, Math.floor(xs.length * q))];
console.log(`E=${E}, ${R} rounds; ratio = time(A) / time(B), above 1: B is faster`);
for (const s of shapes) {
  const ms = quantile(timeA[s], 0.5);
  console.log(
    `${s.padEnd(6)} A ${ms.toFixed(2)} ms (${((flops[s] * N * f * d) / ms / 1e6).toFixed(0)} GFLOP/s)  ` +
      `ratio ${quantile(ratio[s], 0.5).toFixed(3)} [q1 ${quantile(ratio[s], 0.25).toFixed(3)}, q3 ${quantile(ratio[s], 0.75).toFixed(3)}]`,
  );
}
