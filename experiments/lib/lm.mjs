// Language-model runs for the experiments: the same pipeline as trainLanguageModel (corpus →
// tokenizer → token stream → MoETransformerLM → Trainer) without checkpoints or report pages,
// so several runs can share one token stream and be trained interleaved, and their results
// directories hold only numbers and charts.
import { buildTokenizer, evalBatches, LMBatcher, MoETransformerLM, TokenStream, Trainer } from '../../dist/index.js';
import { captureRouting } from './train.mjs';

/** Tokenize a corpus (a Corpus object from loadCorpus or built by hand) and split it. */
export function lmData(corpus, { tokenizer = 'char', maxVocab, evalFraction = 0.05, seed = 0 } = {}) {
  const tok = buildTokenizer(tokenizer, corpus.documents.map((d) => d.text), { maxVocab });
  const stream = TokenStream.fromCorpus(corpus, tok, { seed, evalFraction });
  return { tokenizer: tok, stream };
}

/**
 * One LM run on `stream`: model config without vocabSize, train settings { batchSize, seqLen,
 * steps, lr, warmupSteps, evalEvery, evalBatches, weightDecay?, clipNorm? }. Every run of an
 * experiment gets the same seed, so the same data order and evaluation batches.
 */
export function makeLMRun({ key, label, model: modelConfig, train: t, stream, seed = 0, capture = false }) {
  const model = new MoETransformerLM({ ...modelConfig, vocabSize: stream.tokenizer.vocabSize });
  const routing = capture ? captureRouting(model) : null;
  const batcher = new LMBatcher({ tokens: stream.train.tokens, batchSize: t.batchSize, seqLen: t.seqLen, seed });
  const evalSet = evalBatches(stream.eval.tokens, t.batchSize, t.seqLen, t.evalBatches);
  const trainer = new Trainer(model, batcher, {
    lr: t.lr,
    weightDecay: t.weightDecay ?? 0.1,
    warmupSteps: t.warmupSteps,
    totalSteps: t.steps,
    clipNorm: t.clipNorm ?? 1.0,
    evalEvery: t.evalEvery,
    evalBatches: t.evalBatches,
    evalData: () => evalSet,
    seed,
    name: label ?? key,
  });
  return { key, label: label ?? key, model, trainer, routing, parameters: model.numParameters(), activeParameters: model.activeParameters() };
}

/** Tokens per step of a train config. */
export const tokensPerStep = (t) => t.batchSize * t.seqLen;
