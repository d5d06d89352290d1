// MoE layer benchmark: Switchyard's MoELayer vs a PyTorch block written like Hugging Face's
// MixtralSparseMoeBlock, side by side, alternating runs, medians (of times, and of the ratios of
// adjacent runs). Not run in CI.
import { execFileSync } from 'node:child_process';
import { MoELayer, Tensor, getBackend, noGrad } from '../dist/index.js';
import { PY, peerEnv } from './peer.mjs';

const REPS = Number(process.env.BENCH_REPS ?? 7);
// Untimed steps before timing, on both sides. A fresh process is not at its steady speed after one
// step: V8 is still compiling our backward's JS, the scratch pool and the .grad buffers fill on
// the first backward, and PyTorch's allocator and OpenBLAS threads settle too. Per-step traces of
// fresh processes in this bench's order (forward steps, then forward+backward), 8 experts,
// fwd+bwd, ms: ours 207 165 132 160 127 138 120 ..., PyTorch 220 186 181 177 181 180 178 ...;
// in one PyTorch trace of four it was 247 275 184 179 163 157 145 139 ... (docs/benchmarks.md,
// session 6).
const WARMUP = Number(process.env.BENCH_WARMUP ?? 3);
// The peer's thread configurations are screened on runs of the peer alone; its two fastest are
// measured on fresh runs next to ours, and the faster of those two is reported. Choosing among all
// six on the very runs reported (as before session 12) reports the luckiest of six medians of three
// runs, an estimate biased the peer's way (winner's curse); choosing one on screening alone can
// pick a configuration that is slower in fact (three runs are few on this host). The faster of two
// medians of nine still leans the peer's way, a little.
const SCREEN_ROUNDS = Number(process.env.BENCH_SCREEN_ROUNDS ?? 3);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 9);

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

function timeIt(fn) {
  for (let i = 0; i < WARMUP; i++) fn();
  const times = [];
  for (let i = 0; i < REPS; i++) {
    const t0 = process.hrtime.bigint();
    fn();
    times.push(Number(process.hrtime.bigint() - t0) / 1e9);
  }
  return median(times);
}

// Each of our runs is a fresh `node` process, as each peer run is a fresh `python3`: a run in the
// bench's own process would share its heap with the layers of earlier runs (at 64 experts ~400 MB
// of weights and gradients each) and pay for collecting them inside its timed steps.
function ours(tokens, dModel, dFF, E, k) {
  const out = execFileSync(process.execPath, [new URL(import.meta.url).pathname, '--ours', ...[tokens, dModel, dFF, E, k].map(String)], {
    encoding: 'utf8',
    env: { ...process.env, BENCH_REPS: String(REPS), BENCH_WARMUP: String(WARMUP) },
  });
  return JSON.parse(out.trim().split('\n').pop());
}

function oursInProcess(tokens, dModel, dFF, E, k) {
  const layer = new MoELayer({ dModel, dFF, numExperts: E, expert: { activation: 'silu', gated: true }, router: { type: 'topk', k, normalize: true }, seed: 0 });
  layer.eval();
  const x = Tensor.randn([tokens, dModel], { seed: 1, requiresGrad: true });
  const g = Tensor.randn([tokens, dModel], { seed: 2 });
  const fwd = () => noGrad(() => layer.forward(x));
  const fwdBwd = () => {
    layer.zeroGrad();
    x.grad = null;
    layer.forward(x).output.backward(g);
  };
  return { forward_s: timeIt(fwd), forward_backward_s: timeIt(fwdBwd) };
}

// PyTorch's intra-op threads and OpenBLAS's own threads can fight on 2 cores: try each split.
// PyTorch's per-expert loop allocates a fresh multi-MB tensor per op, which glibc serves with new
// mmaps that page-fault on first touch; glibc tunables that keep freed blocks in the heap make it
// up to ~20% faster at 64 experts (PyTorch's CPU tuning guide suggests jemalloc or tcmalloc for the
// same reason). The two leading splits also run that way. Our side runs in the default environment.
const TUNED_MALLOC = 'glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=268435456';
const PEER_SPLITS = [
  { torch: 1, blas: 1 },
  { torch: 1, blas: 2 },
  { torch: 2, blas: 1 },
  { torch: 2, blas: 2 },
  { torch: 1, blas: 2, malloc: TUNED_MALLOC },
  { torch: 2, blas: 1, malloc: TUNED_MALLOC },
];
const splitName = (sp) => `torch ${sp.torch}t + openblas ${sp.blas}t${sp.malloc ? ' + tuned malloc' : ''}`;

function torchPeer(tokens, dModel, dFF, E, k, split) {
  const threads = split.torch;
  const env = peerEnv(split.torch, split.blas);
  if (split.malloc && !env.GLIBC_TUNABLES) env.GLIBC_TUNABLES = split.malloc;
  const out = execFileSync(PY, ['bench/moe_torch.py', ...[tokens, dModel, dFF, E, k, threads, REPS, WARMUP].map(String)], { env, encoding: 'utf8' });
  return JSON.parse(out.trim().split('\n').pop());
}

/**
 * Median over rounds of t_peer / t_ours, each peer run against the run of ours right next to it.
 * The host's speed drifts by ±20% over tens of seconds, and both sides of a pair see nearly the
 * same host: the paired ratios spread far less than either side's times.
 */
function pairedRatio(pairs, key) {
  return median(pairs.map(([peer, me]) => peer[key] / me[key]));
}

const KEYS = ['forward_s', 'forward_backward_s'];

export function benchMoE() {
  const backend = getBackend();
  console.log(`\n== MoE layer (issue 3): backend ${backend.name}, ${backend.threads} threads ==`);
  const cases = [
    { tokens: 2048, dModel: 256, dFF: 1024, E: 8, k: 2 },
    { tokens: 2048, dModel: 256, dFF: 1024, E: 64, k: 2 },
  ];
  console.log(`peer configurations, in the order of the screening medians below: ${PEER_SPLITS.map(splitName).join(' / ')}`);
  const run = (c, split) => torchPeer(c.tokens, c.dModel, c.dFF, c.E, c.k, split);
  const mine = (c) => ours(c.tokens, c.dModel, c.dFF, c.E, c.k);
  const med = (list, key) => median(list.map((v) => v[key]));
  const tps = (c, s) => Math.round(c.tokens / s).toLocaleString('en-US');
  // 1) Screening: every peer configuration alone, SCREEN_ROUNDS times per case, interleaved.
  const screen = cases.map(() => PEER_SPLITS.map(() => []));
  for (let r = 0; r < SCREEN_ROUNDS; r++) {
    PEER_SPLITS.forEach((split, i) => cases.forEach((c, ci) => screen[ci][i].push(run(c, split))));
  }
  // Per case and metric, the two configurations with the lowest median screening times.
  const finalists = cases.map((_, ci) => {
    const pick = {};
    for (const key of KEYS) {
      const meds = screen[ci].map((runs) => med(runs, key));
      pick[key] = meds.map((t, i) => [t, i]).sort((a, b) => a[0] - b[0]).slice(0, 2).map(([, i]) => i);
    }
    return pick;
  });
  // 2) Measurement: per round, the finalists at 8 experts, ours at 8, ours at 64, the finalists at
  // 64. Every peer run sits near one of ours (its pair) and ours at the two expert counts sit next
  // to each other, so the host's drift hits both sides of every ratio alike. Each run is a fresh
  // process that builds its own layer and warms up.
  const measured = cases.map(() => ({ ours: [], peer: new Map() }));
  const scaling = [];
  const peerRuns = (ci) => {
    for (const i of new Set(KEYS.flatMap((key) => finalists[ci][key]))) {
      const list = measured[ci].peer.get(i) ?? [];
      list.push(run(cases[ci], PEER_SPLITS[i]));
      measured[ci].peer.set(i, list);
    }
  };
  for (let r = 0; r < ROUNDS; r++) {
    peerRuns(0);
    const o8 = mine(cases[0]);
    const o64 = mine(cases[1]);
    peerRuns(1);
    measured[0].ours.push(o8);
    measured[1].ours.push(o64);
    scaling.push([o8, o64]);
  }
  const results = [];
  for (const [ci, c] of cases.entries()) {
    const m = measured[ci];
    // This host's speed drifts from minute to minute: show each side's spread over its runs too.
    const spread = (list, key) => {
      const v = list.map((x) => c.tokens / x[key]);
      return `${Math.round(Math.min(...v)).toLocaleString('en-US')}-${Math.round(Math.max(...v)).toLocaleString('en-US')}`;
    };
    const me = { forward_s: med(m.ours, 'forward_s'), forward_backward_s: med(m.ours, 'forward_backward_s') };
    const peer = {};
    const paired = {};
    const chosen = {};
    for (const key of KEYS) {
      // The finalist with the lower measured median is the peer's figure, for both statistics.
      const [a, b] = finalists[ci][key];
      chosen[key] = b === undefined || med(m.peer.get(a), key) <= med(m.peer.get(b), key) ? a : b;
      const runs = m.peer.get(chosen[key]);
      peer[key] = med(runs, key);
      peer[`${key}_threads`] = splitName(PEER_SPLITS[chosen[key]]);
      paired[key] = pairedRatio(runs.map((p, r) => [p, m.ours[r]]), key);
    }
    results.push({ ...c, ours: me, torch: peer, paired, peerName: screen[0][0][0].peer });
    console.log(`tokens=${c.tokens} dModel=${c.dModel} dFF=${c.dFF} experts=${c.E} top-${c.k} gated SiLU`);
    for (const key of KEYS) {
      const name = key === 'forward_s' ? 'forward         ' : 'forward+backward';
      const meds = screen[ci].map((runs) => tps(c, med(runs, key))).join(' / ');
      const runs = m.peer.get(chosen[key]);
      const fin = finalists[ci][key].map((i) => `${splitName(PEER_SPLITS[i])} ${tps(c, med(m.peer.get(i), key))}`).join(', ');
      console.log(`  ${name}  peer screening (${SCREEN_ROUNDS} runs per configuration, median tok/s): ${meds}; finalists measured (tok/s): ${fin}`);
      console.log(
        `  ${name}  switchyard ${tps(c, me[key])} tok/s  torch ${tps(c, peer[key])} tok/s  ratio of medians ${(peer[key] / me[key]).toFixed(2)}x` +
          `  paired ratio ${paired[key].toFixed(2)}x  [${ROUNDS} rounds; runs: switchyard ${spread(m.ours, key)}, torch ${spread(runs, key)} tok/s]`,
      );
    }
  }
  const [e8, e64] = results;
  const pairedScaling = median(scaling.map(([a, b]) => b.forward_backward_s / a.forward_backward_s));
  console.log(
    `  64 vs 8 experts, same k: switchyard fwd+bwd time x${(e64.ours.forward_backward_s / e8.ours.forward_backward_s).toFixed(2)} ` +
      `(paired: x${pairedScaling.toFixed(2)}, median of ${scaling.length} back-to-back runs), ` +
      `torch x${(e64.torch.forward_backward_s / e8.torch.forward_backward_s).toFixed(2)}`,
  );
  return results;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  if (process.argv[2] === '--ours') console.log(JSON.stringify(oursInProcess(...process.argv.slice(3, 8).map(Number))));
  else benchMoE();
}
