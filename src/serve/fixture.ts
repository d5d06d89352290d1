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
}

const ASCII = Array.from({ length: 95 }, (_, i) => String.fromCharCode(32 + i)).join('') + '\n';

/** Save an initialised model and a char tokenizer under `runDir/checkpoints/step-0`; returns runDir. */
export async function writeRandomCheckpoint(runDir: string, opts: RandomCheckpointOptions): Promise<string> {
  const tokenizer = buildTokenizer('char', opts.text ?? ASCII);
  const model = new MoETransformerLM({ ...opts.model, vocabSize: tokenizer.vocabSize });
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
