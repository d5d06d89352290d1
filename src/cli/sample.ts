/** `switchyard sample <checkpoint> --prompt <text>`: generate text from a trained model. */
import { Command } from 'commander';
import { loadLanguageModel } from '../train/lm-run.js';
import { intOption, numberOption } from './common.js';

export function sampleCommand(): Command {
  return new Command('sample')
    .description('generate text from a trained checkpoint')
    .argument('<checkpoint>', 'run directory (or its checkpoints/ or a step directory)')
    .option('--prompt <text>', 'text to continue', 'Call me Ishmael. ')
    .option('--max-tokens <n>', 'tokens to generate', intOption('--max-tokens'), 200)
    .option('--temperature <x>', 'sampling temperature (0 = greedy)', numberOption('--temperature', { min: 0 }), 0.8)
    .option('--top-p <x>', 'nucleus sampling mass', numberOption('--top-p', { positive: true }), 0.95)
    .option('--seed <n>', 'sampling seed', intOption('--seed', 0), 0)
    .action(async (ckpt: string, o: { prompt: string; maxTokens: number; temperature: number; topP: number; seed: number }) => {
      const { model, tokenizer } = await loadLanguageModel(ckpt);
      const out = model.generate(tokenizer.encode(o.prompt), o.maxTokens, { temperature: o.temperature, topP: Math.min(1, o.topP), seed: o.seed });
      process.stdout.write(o.prompt + tokenizer.decode(out) + '\n');
    });
}
