/** `switchyard train`: train a language model from a JSON config and/or flags. */
import { Command } from 'commander';
import { denseBaselineConfig, type TransformerLMConfig } from '../nn/transformer.js';
import { runAndReport } from './demo.js';
import { addRunFlags, runSpecFrom, type RunFlags } from './lm-options.js';

export function trainCommand(): Command {
  return addRunFlags(new Command('train').description('train an MoE (or dense) language model; flags override --config'))
    .option('--out <dir>', 'output directory', 'switchyard-run')
    .option('--resume', 'continue from the latest checkpoint in --out')
    .action(async (flags: RunFlags & { out: string; resume?: boolean }) => {
      const spec = runSpecFrom(flags);
      if (flags.dense) {
        const dense = denseBaselineConfig({ ...spec.model, vocabSize: 1 } as TransformerLMConfig);
        const { vocabSize: _v, ...rest } = dense;
        spec.model = rest;
      }
      await runAndReport(spec, flags.out, !!flags.resume);
    });
}
