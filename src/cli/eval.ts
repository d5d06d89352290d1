/** `switchyard eval <checkpoint>`: held-out loss and perplexity of a trained language model. */
import { Command } from 'commander';
import { loadCorpus } from '../data/corpus.js';
import { evalBatches, TokenStream } from '../data/lm-data.js';
import { noGrad } from '../tensor/autodiff.js';
import { loadLanguageModel } from '../train/lm-run.js';
import { intOption } from './common.js';

export function evalCommand(): Command {
  return new Command('eval')
    .description("evaluate a checkpoint on its corpus's held-out split (or another corpus)")
    .argument('<checkpoint>', 'run directory (or its checkpoints/ or a step directory)')
    .option('--corpus <name|path>', "corpus to evaluate on (default: the run's)")
    .option('--batches <n>', 'eval batches', intOption('--batches'), 16)
    .option('--json', 'print JSON')
    .action(async (ckpt: string, o: { corpus?: string; batches: number; json?: boolean }) => {
      const { model, tokenizer, spec, step } = await loadLanguageModel(ckpt);
      const corpus = loadCorpus(o.corpus ?? spec.corpus);
      const stream = TokenStream.fromCorpus(corpus, tokenizer, { seed: spec.train.seed ?? 0 });
      const batches = evalBatches(stream.eval.tokens, spec.train.batchSize, spec.train.seqLen, o.batches);
      let sum = 0, count = 0;
      noGrad(() => {
        for (const b of batches) {
          const { loss } = model.loss(b.input, b.target);
          sum += loss.item() * b.target.size;
          count += b.target.size;
        }
      });
      const loss = sum / Math.max(1, count);
      const res = { checkpointStep: step, corpus: corpus.name, tokens: count, loss, perplexity: Math.exp(loss) };
      if (o.json) console.log(JSON.stringify(res));
      else console.log(`step ${step} on ${corpus.name} (held out, ${count.toLocaleString('en-US')} tokens): loss ${loss.toFixed(4)}, perplexity ${res.perplexity.toFixed(3)}`);
    });
}
