/** `switchyard inspect <checkpoint>`: which expert each token of a text went to, per-layer load and drops. */
import { readFileSync } from 'node:fs';
import { Command } from 'commander';
import { ConfigError } from '../errors.js';
import { noGrad } from '../tensor/autodiff.js';
import { Tensor } from '../tensor/tensor.js';
import { loadLanguageModel, routingSample } from '../train/lm-run.js';
import { loadSparkline } from './common.js';
import { adapterRouting, loadAdapted } from './lora.js';
import { colourByExpert } from './summary.js';

export function inspectCommand(): Command {
  return new Command('inspect')
    .description('show the routing of a text: the expert of every token in every MoE layer, load and drops')
    .argument('<checkpoint>', 'run directory (or its checkpoints/ or a step directory)')
    .option('--text <text>', 'text to route', 'Call me Ishmael. Some years ago, never mind how long precisely, I thought I would sail about a little.')
    .option('--file <path>', 'route the contents of a file instead')
    .option('--json', 'print the routing as JSON')
    .option('--mixture <dir>', 'with a LoRA mixture: also show which adapter each token used')
    .action(async (ckpt: string, o: { text: string; file?: string; json?: boolean; mixture?: string }) => {
      let text = o.text;
      if (o.file) {
        try {
          text = readFileSync(o.file, 'utf8');
        } catch (e) {
          throw new ConfigError('--file', o.file, `cannot read the file (${(e as NodeJS.ErrnoException).code ?? 'error'})`);
        }
      }
      const { model, tokenizer } = await loadLanguageModel(ckpt);
      const ids = tokenizer.encode(text).slice(0, model.config.maxSeqLen);
      if (ids.length === 0) throw new ConfigError('--text', text, 'encodes to no tokens');
      // The mixture runs on its own copy of the base; the expert routing below is the base model's own.
      const adapted = o.mixture ? await loadAdapted(ckpt, { mixture: o.mixture }) : null;
      const lora = adapted?.lora ?? null;
      const adapters = lora ? adapterRouting(lora, tokenizer, ids, o.json ? false : undefined) : null;
      if (adapters && lora && !o.json) console.log(`adapters per token (${adapters.legend}):\n  ${adapters.text}\n`);
      const sample = routingSample(model, tokenizer, ids);
      const out = noGrad(() => model.forward(Tensor.indices(ids, [1, ids.length])));
      if (o.json) {
        const adapterInfo = adapters && lora ? { adapters: { names: lora.adapterNames, tokensPerAdapter: adapters.load, text: adapters.text } } : {};
        console.log(JSON.stringify({ ...sample, stats: out.moe.map(({ layer, out: m }) => ({ layer, ...m.stats })), ...adapterInfo }));
        return;
      }
      if (sample.layers.length === 0) {
        console.log('dense model: no routing');
        return;
      }
      sample.layers.forEach((l, i) => {
        const s = out.moe[i].out.stats;
        console.log(`layer ${l.layer}: load ${loadSparkline(s.tokensPerExpert)} [${s.tokensPerExpert.join(' ')}]  dropped ${s.droppedAssignments} assignment(s), ${s.droppedTokens} token(s); entropy ${s.routerEntropy.toFixed(2)}`);
        console.log(`  ${colourByExpert(sample, i)}`);
      });
    });
}
