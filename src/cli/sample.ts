/** `switchyard sample <checkpoint> --prompt <text>`: generate text from a trained model. */
import { Command } from 'commander';
import { intOption, numberOption } from './common.js';
import { adapterRouting, loadAdapted } from './lora.js';

export function sampleCommand(): Command {
  return new Command('sample')
    .description('generate text from a trained checkpoint')
    .argument('<checkpoint>', 'run directory (or its checkpoints/ or a step directory)')
    .option('--prompt <text>', 'text to continue', 'Call me Ishmael. ')
    .option('--max-tokens <n>', 'tokens to generate', intOption('--max-tokens'), 200)
    .option('--temperature <x>', 'sampling temperature (0 = greedy)', numberOption('--temperature', { min: 0 }), 0.8)
    .option('--top-p <x>', 'nucleus sampling mass', numberOption('--top-p', { positive: true }), 0.95)
    .option('--seed <n>', 'sampling seed', intOption('--seed', 0), 0)
    .option('--mixture <dir>', 'run with a LoRA mixture (switchyard lora mix) and show which adapter each token used')
    .option('--adapter <dir>', 'run with one LoRA adapter folder (switchyard lora train, or PEFT)')
    .action(async (ckpt: string, o: { prompt: string; maxTokens: number; temperature: number; topP: number; seed: number; mixture?: string; adapter?: string }) => {
      const { generate, tokenizer, lora, maxSeqLen } = await loadAdapted(ckpt, o);
      const promptIds = tokenizer.encode(o.prompt);
      const out = generate(promptIds, o.maxTokens, { temperature: o.temperature, topP: Math.min(1, o.topP), seed: o.seed });
      process.stdout.write(o.prompt + tokenizer.decode(out) + '\n');
      if (lora && lora.adapterNames.length > 1) {
        // The adapter each token used: route the text (its last maxSeqLen tokens) through the mixture.
        const r = adapterRouting(lora, tokenizer, [...promptIds, ...out].slice(-maxSeqLen));
        process.stdout.write(`\nadapters per token (${r.legend}):\n${r.text}\n`);
      }
    });
}
