/**
 * Write a freshly initialised (untrained) language model as a Switchyard checkpoint, in exactly
 * the layout `switchyard train` writes and `switchyard serve` / loadLanguageModel read: for tests
 * and benchmarks that need a servable model of a chosen size without training one.
 */
import { join } from 'node:path';
import { buildTokenizer } from '../data/tokenizer.js';
import { MoETransformerLM, type TransformerLMConfig } from '../nn/transformer.js';
import { AdamW } from '../optim/adamw.js';
import { defaultGenerator } from '../random.js';
import { saveCheckpoint } from '../train/checkpoint.js';

export interface RandomCheckpointOptions {
  /** Model config without the vocabulary (a character tokenizer fitted on `text` sets it). */
  model: Omit<TransformerLMConfig, 'vocabSize'>;
  /** Text whose characters form the vocabulary (default: printable ASCII). */
  text?: string;
  /** Run name recorded in the log. */
  name?: string;
  /**
   * Standard deviation of the token embeddings (default 0.02, the model's own init). With 0.02 an
   * untrained model's residual stream is dominated by attention output, so it routes nearly
   * every token to the same experts; 1 (torch.nn.Embedding's default) gives token-dependent,
   * near-uniform routing, the pessimistic case for an expert cache.
   */
  embeddingStd?: number;
}

const ASCII = Array.from({ length: 95 }, (_, i) => String.fromCharCode(32 + i)).join('') + '\n';

/** Save an initialised model and a char tokenizer under `runDir/checkpoints/step-0`; returns runDir. */
export async function writeRandomCheckpoint(runDir: string, opts: RandomCheckpointOptions): Promise<string> {
  const tokenizer = buildTokenizer('char', opts.text ?? ASCII);
  const model = new MoETransformerLM({ ...opts.model, vocabSize: tokenizer.vocabSize });
  if (opts.embeddingStd !== undefined) {
    const w = model.embed_tokens.weight.data as Float32Array;
    for (let i = 0; i < w.length; i++) w[i] *= opts.embeddingStd / 0.02;
  }
  const optimizer = new AdamW(model.parameters());
  const spec = {
    name: opts.name ?? 'random model',
    corpus: 'none',
    tokenizer: 'char' as const,
    model: opts.model,
    train: { batchSize: 1, seqLen: opts.model.maxSeqLen, steps: 0, lr: 0, warmupSteps: 0, evalEvery: 1 },
  };
  const config = { spec, tokenizer: tokenizer.toJSON() };
  await saveCheckpoint(join(runDir, 'checkpoints'), {
    model,
    optimizer,
    trainerState: {
      step: 0,
      rng: { global: defaultGenerator().getState(), moe: model.moeLayers().map((l) => l.noiseGenerator.getState()) },
      data: null,
      log: { name: spec.name, config, startedAt: new Date().toISOString(), steps: [], evals: [] },
      config: { extra: config },
    },
  });
  return runDir;
}
