/**
 * A synthetic, deterministic RunLog that looks like a small MoE language-model run: for previewing
 * the report, for docs and for tests. No model is trained; the numbers follow plausible curves.
 */
import type { LayerRoutingMetrics, RoutingSample, RunLog, StepMetrics } from '../train/metrics.js';

/** Options of `exampleRunLog`. */
export interface ExampleRunLogOptions {
  /** Optimizer steps to record (default 50). */
  steps?: number;
  /** Transformer-layer indices of the MoE layers; [] for a dense run (default [1, 3]). */
  moeLayers?: number[];
  /** Experts per MoE layer (default 8). */
  experts?: number;
  /** Evaluate every this many steps, and at the last step (default 10). */
  evalEvery?: number;
  /** Seed of the noise (default 1). */
  seed?: number;
  /** The sample text's tokens (default: a short text with markup-like characters). */
  sampleTokens?: string[];
}

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The default sample tokens: prose plus `<script>`, `&` and quotes, to exercise escaping. */
export const EXAMPLE_SAMPLE_TOKENS: readonly string[] = [
  'Call', ' me', ' Ish', 'mael', '.', ' Some', ' years', ' ago', ' &', ' never', ' mind', ' how', ' long',
  ' <script>', 'alert', '(', '"x"', ')', '</script>', ' precisely', ',', ' having', ' little', ' or', ' no',
  ' money', ' in', ' my', ' purse', ' &amp;', ' nothing', '\n', 'particular', ' to', ' interest', ' me', ' on',
  ' shore', ',', ' I', ' thought', ' I', ' would', ' sail', ' about', ' a', ' little', '.',
];

/** Build a synthetic RunLog: loss falls, expert load goes from skewed to balanced, drops fall, entropy rises. */
export function exampleRunLog(opts: ExampleRunLogOptions = {}): RunLog {
  const nSteps = opts.steps ?? 50;
  const layers = opts.moeLayers ?? [1, 3];
  const E = opts.experts ?? 8;
  const evalEvery = opts.evalEvery ?? 10;
  const rand = mulberry32(opts.seed ?? 1);
  const tokensPerStep = 2048;
  const topK = 2;
  const steps: StepMetrics[] = [];
  const evals = [];
  let elapsed = 0;
  for (let i = 0; i < nSteps; i++) {
    const step = i + 1;
    const progress = nSteps > 1 ? i / (nSteps - 1) : 1;
    const loss = 1.6 + 3.9 * Math.exp(-4 * progress) + 0.12 * (rand() - 0.5);
    const tps = 5200 + 900 * (rand() - 0.5) - (i === 0 ? 2000 : 0);
    elapsed += tokensPerStep / tps;
    const moe: LayerRoutingMetrics[] = layers.map((layer, li) => {
      // Skewed towards a "favourite" expert early on, balanced later.
      const fav = (li * 3) % Math.max(1, E);
      const skew = 3.5 * Math.exp(-5 * progress);
      const w = Array.from({ length: E }, (_, e) => Math.exp((e === fav ? skew : 0) + 0.25 * (rand() - 0.5) + (e % 3 === 1 ? -0.15 : 0)));
      const sum = w.reduce((a, b) => a + b, 0);
      const assignments = tokensPerStep * topK;
      const dropFraction = Math.max(0, 0.25 * Math.exp(-5 * progress) + 0.02 * rand());
      const kept = Math.round(assignments * (1 - dropFraction));
      const tokensPerExpert = w.map((x) => Math.round((kept * x) / sum));
      const maxEntropy = Math.log(Math.max(1, E));
      return {
        layer,
        tokensPerExpert,
        dropFraction,
        droppedTokens: assignments - kept,
        routerEntropy: maxEntropy * (0.55 + 0.35 * progress) + 0.03 * (rand() - 0.5) - 0.05 * li,
        loadImbalance: (Math.max(...tokensPerExpert) * E) / Math.max(1, kept),
        balanceLoss: 1 + 0.5 * Math.exp(-5 * progress),
        zLoss: 0.3 * Math.exp(-2 * progress),
      };
    });
    const auxLoss = moe.reduce((a, m) => a + 0.01 * m.balanceLoss + 0.001 * m.zLoss, 0);
    steps.push({
      step,
      loss,
      auxLoss,
      lr: 3e-3 * Math.min(1, step / 5) * (0.5 + 0.5 * Math.cos(Math.PI * progress)),
      gradNorm: 1.5 * Math.exp(-2 * progress) + 0.2 * rand(),
      tokens: tokensPerStep,
      tokensPerSecond: tps,
      elapsedSeconds: elapsed,
      moe,
    });
    if (step % evalEvery === 0 || step === nSteps) {
      const el = 1.75 + 3.8 * Math.exp(-3.6 * progress);
      evals.push({ step, loss: el, perplexity: Math.exp(el), elapsedSeconds: elapsed });
    }
  }
  const tokens = [...(opts.sampleTokens ?? EXAMPLE_SAMPLE_TOKENS)];
  let routingSample: RoutingSample | undefined;
  if (layers.length > 0) {
    routingSample = {
      tokens,
      numExperts: E,
      layers: layers.map((layer, li) => {
        const experts: number[][] = [];
        const gates: number[][] = [];
        tokens.forEach((tok, t) => {
          // Loosely "specialised": punctuation/markup to one expert, words hashed to others.
          const h = [...tok].reduce((a, c) => (a * 31 + c.charCodeAt(0)) >>> 0, 7 + li);
          const first = /^[\s.,()&<>"/]/.test(tok) && !/^\s\w/.test(tok) ? (li + 5) % E : (h + t * li) % E;
          const second = (first + 1 + (h % Math.max(1, E - 1))) % E;
          const g = 0.5 + 0.45 * rand();
          experts.push(E > 1 ? [first, second] : [first]);
          gates.push(E > 1 ? [g, 1 - g] : [1]);
        });
        return { layer, experts, gates };
      }),
    };
  }
  const config = {
    model: {
      kind: layers.length > 0 ? 'MoETransformerLM' : 'TransformerLM (dense)',
      vocabSize: 256,
      dModel: 128,
      nLayers: 4,
      nHeads: 4,
      moeEvery: layers.length > 0 ? 2 : 0,
      moe: layers.length > 0 ? { numExperts: E, topK, router: 'top-k', capacityFactor: 1.25, losses: { balance: 0.01, z: 0.001 } } : null,
    },
    train: { steps: nSteps, batchSize: 16, seqLen: 128, lr: 3e-3, warmupSteps: 5, weightDecay: 0.1, clipGradNorm: 1, seed: opts.seed ?? 1 },
    data: { corpus: 'moby-dick', tokenizer: 'byte' },
  };
  return {
    name: layers.length > 0 ? `Example MoE LM (${E} experts, top-${topK}) on Moby-Dick` : 'Example dense LM on Moby-Dick',
    config,
    startedAt: '2025-01-01T12:00:00.000Z',
    steps,
    evals,
    ...(routingSample ? { routingSample } : {}),
    sampleText: tokens.join(''),
  };
}
