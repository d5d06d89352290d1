// Peer (numpy / PyTorch on Debian's OpenBLAS) settings shared by the benchmarks.
// Debian's OpenBLAS 0.3.21 does not recognise this CPU and falls back to its generic 'Prescott'
// kernels (~15 GFLOP/s); the peer's best is an explicit OPENBLAS_CORETYPE. We probe a few
// candidates once and use the fastest, so every ratio is against the peer at its best.
import { execFileSync } from 'node:child_process';

export const PY = '/usr/bin/python3';
const CANDIDATES = ['SapphireRapids', 'Cooperlake', 'SkylakeX', 'Haswell', 'Zen'];
let cached = null;

const PROBE = `
import numpy as np, time
a = np.random.rand(1024, 512).astype(np.float32); b = np.random.rand(512, 1024).astype(np.float32)
ref = a.astype(np.float64) @ b.astype(np.float64)
assert abs(a @ b - ref).max() < 1e-3, 'wrong results'
a @ b; t0 = time.perf_counter()
for _ in range(20): a @ b
print((time.perf_counter() - t0) / 20)
`;

/** Environment for a peer process: best OPENBLAS_CORETYPE (unless the user set one) and thread counts. */
export function peerEnv(threads, blasThreads = threads) {
  const env = { ...process.env, OMP_NUM_THREADS: String(threads), OPENBLAS_NUM_THREADS: String(blasThreads) };
  delete env.OPENBLAS_L2_SIZE;
  env.OPENBLAS_CORETYPE = bestCoreType();
  return env;
}

/** The fastest correct OPENBLAS_CORETYPE among the candidates (env BENCH_OPENBLAS_CORETYPE overrides). */
export function bestCoreType() {
  if (cached) return cached;
  if (process.env.BENCH_OPENBLAS_CORETYPE) return (cached = process.env.BENCH_OPENBLAS_CORETYPE);
  let best = null;
  for (const ct of CANDIDATES) {
    try {
      const env = { ...process.env, OPENBLAS_CORETYPE: ct, OPENBLAS_NUM_THREADS: '2' };
      delete env.OPENBLAS_L2_SIZE;
      const s = Number(execFileSync(PY, ['-c', PROBE], { env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim());
      if (!best || s < best.s) best = { ct, s };
    } catch {
      // that kernel crashed or computed wrong results here: skip it
    }
  }
  cached = best ? best.ct : 'Prescott';
  console.log(`peer OpenBLAS core type: ${cached} (fastest correct of ${CANDIDATES.join(', ')})`);
  return cached;
}
