/**
 * Named model presets shared by the CLI, the benchmarks and the experiments, so "the demo
 * model" means one thing everywhere. Vocabulary size is filled in from the tokenizer.
 */
import type { TransformerLMConfig } from '../nn/transformer.js';

/** Training settings that go with a preset. */
export interface TrainPreset {
  batchSize: number;
  seqLen: number;
  steps: number;
  lr: number;
  warmupSteps: number;
  evalEvery: number;
}

/**
 * The `switchyard demo` model: a 4-layer character-level MoE LM, 8 experts top-2 (Mixtral-style
 * SiLU-gated experts) in every layer, sized to train on Moby-Dick in a few minutes on 2 cores.
 */
export const DEMO_LM: Omit<TransformerLMConfig, 'vocabSize'> = {
  dModel: 128,
  nLayers: 4,
  nHeads: 4,
  dFF: 256,
  maxSeqLen: 128,
  moeEvery: 1,
  moe: {
    numExperts: 8,
    router: { type: 'topk', k: 2 },
    losses: { balance: 0.01, zLoss: 0.001 },
  },
  seed: 0,
};

/** Training settings of the demo run. */
export const DEMO_TRAIN: TrainPreset = {
  batchSize: 16,
  seqLen: 128,
  steps: 600,
  lr: 3e-3,
  warmupSteps: 50,
  evalEvery: 100,
};
