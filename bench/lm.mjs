// Training throughput of the `switchyard demo` model (forward + backward + AdamW + clipping) next
// to the same model in PyTorch (bench/lm_torch.py), alternating runs, medians. Not run in CI.
import { execFileSync } from 'node:child_process';
import { AdamW, DEMO_LM, DEMO_TRAIN, MoETransformerLM, Tensor, clipGradNorm, getBackend } from '../dist/index.js';
import { PY, peerEnv } from './peer.mjs';

const STEPS = Number(process.env.BENCH_STEPS ?? 7);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const VOCAB = 96; // about the character vocabulary of Moby-Dick

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

function ours() {
  const lm = new MoETransformerLM({ ...DEMO_LM, vocabSize: VOCAB });
  const opt = new AdamW(lm.parameters(), { lr: 1e-3 });
  const { batchSize: B, seqLen: T } = DEMO_TRAIN;
  const ids = Tensor.indices(Array.from({ length: B * T }, (_, i) => (i * 7919) % VOCAB), [B, T]);
  const targets = Tensor.indices(Array.from({ length: B * T }, (_, i) => (i * 104729) % VOCAB));
  const step = () => {
    opt.zeroGrad();
    const { loss, out } = lm.loss(ids, targets);
    loss.add(out.auxLoss).backward();
    clipGradNorm(lm.parameters(), 1.0);
    opt.step();
  };
  step();
  const times = [];
  for (let i = 0; i < STEPS; i++) {
    const t0 = process.hrtime.bigint();
    step();
    times.push(Number(process.hrtime.bigint() - t0) / 1e9);
  }
  return { step_s: median(times), params: lm.numParameters() };
}

const SPLITS = [{ torch: 1, blas: 1 }, { torch: 1, blas: 2 }, { torch: 2, blas: 1 }, { torch: 2, blas: 2 }];

function peer(split) {
  const m = DEMO_LM.moe;
  const cfg = { vocabSize: VOCAB, dModel: DEMO_LM.dModel, nLayers: DEMO_LM.nLayers, nHeads: DEMO_LM.nHeads, dFF: DEMO_LM.dFF,
    seqLen: DEMO_TRAIN.seqLen, batchSize: DEMO_TRAIN.batchSize, numExperts: m.numExperts, k: m.router.k };
  const out = execFileSync(PY, ['bench/lm_torch.py', JSON.stringify(cfg), String(split.torch), String(STEPS)], { env: peerEnv(split.torch, split.blas), encoding: 'utf8' });
  return JSON.parse(out.trim().split('\n').pop());
}

export function benchLM() {
  const b = getBackend();
  console.log(`\n== Demo model training step (issue 4): backend ${b.name}, ${b.threads} threads ==`);
  const mine = [], theirs = SPLITS.map(() => []);
  for (let r = 0; r < ROUNDS; r++) {
    SPLITS.forEach((s, i) => {
      theirs[i].push(peer(s).step_s);
      if (i % 2 === 1) mine.push(ours().step_s);
    });
  }
  const meds = theirs.map(median);
  const best = meds.indexOf(Math.min(...meds));
  const tokens = DEMO_TRAIN.batchSize * DEMO_TRAIN.seqLen;
  const me = median(mine);
  console.log(`  batch ${DEMO_TRAIN.batchSize}x${DEMO_TRAIN.seqLen} tokens, ${DEMO_LM.nLayers} layers, ${DEMO_LM.moe.numExperts} experts top-${DEMO_LM.moe.router.k}`);
  console.log(`  switchyard ${Math.round(tokens / me)} tok/s   torch (torch ${SPLITS[best].torch}t + openblas ${SPLITS[best].blas}t) ${Math.round(tokens / meds[best])} tok/s   ratio ${(meds[best] / me).toFixed(2)}x`);
  return { oursStepS: me, torchStepS: meds[best], split: SPLITS[best] };
}

if (import.meta.url === `file://${process.argv[1]}`) benchLM();
