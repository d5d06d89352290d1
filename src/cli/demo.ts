/** `switchyard demo`: train the demo MoE LM on Moby-Dick, show a sample, the routing, a report. */
import { Command } from 'commander';
import { getBackend } from '../backend/index.js';
import { DEMO_LM, DEMO_TRAIN } from '../train/presets.js';
import { trainLanguageModel, type LMRunSpec } from '../train/lm-run.js';
import { intOption, TrainingProgress } from './common.js';
import { colourByExpert, routingSummary } from './summary.js';

export function demoCommand(): Command {
  return new Command('demo')
    .description('train a small MoE language model on Moby-Dick (a few minutes on 2 cores), then show a sample, the routing and a report')
    .option('--steps <n>', 'training steps', intOption('--steps'), DEMO_TRAIN.steps)
    .option('--out <dir>', 'output directory (checkpoints, report.html, charts)', 'switchyard-demo')
    .option('--corpus <name|path>', 'training text', 'moby-dick')
    .action(async (opts: { steps: number; out: string; corpus: string }) => {
      const spec: LMRunSpec = {
        name: 'demo: MoE LM on Moby-Dick',
        corpus: opts.corpus,
        tokenizer: 'char',
        model: DEMO_LM,
        train: { ...DEMO_TRAIN, steps: opts.steps, warmupSteps: Math.min(DEMO_TRAIN.warmupSteps, opts.steps - 1), evalEvery: Math.min(DEMO_TRAIN.evalEvery, opts.steps) },
      };
      await runAndReport(spec, opts.out);
    });
}

/** Train with a progress display, then print the outcome (shared by demo and train). */
export async function runAndReport(spec: LMRunSpec, out: string, resume = false): Promise<void> {
  const b = getBackend();
  const progress = new TrainingProgress(spec.train.steps, 'training');
  const moe = spec.model.moe;
  const res = await trainLanguageModel(spec, {
    outDir: out,
    resume,
    onReady: (info) => {
      console.log(`switchyard ${spec.name ?? 'run'}`);
      console.log(
        `  corpus ${spec.corpus}: ${info.trainTokens.toLocaleString('en-US')} train / ${info.evalTokens.toLocaleString('en-US')} eval tokens, ` +
          `${spec.tokenizer} tokenizer (${info.vocabSize} ids)`,
      );
      console.log(
        `  model: ${spec.model.nLayers} layers, d=${spec.model.dModel}, ` +
          (moe ? `${moe.numExperts} experts ${moe.router.type === 'topk' ? `top-${moe.router.k}` : moe.router.type} every ${spec.model.moeEvery ?? 1} layer(s)` : 'dense') +
          `, ${(info.parameters / 1e6).toFixed(2)}M parameters (${(info.activeParameters / 1e6).toFixed(2)}M active per token)`,
      );
      console.log(`  backend: ${b.name} (${b.threads} thread${b.threads === 1 ? '' : 's'}); ${spec.train.steps} steps of ${spec.train.batchSize}x${spec.train.seqLen} tokens${info.startStep ? `, resuming at step ${info.startStep}` : ''}`);
      progress.start(info.startStep);
    },
    onStep: (m) => progress.update(m),
  });
  progress.stop();
  const log = res.log;
  const ev = log.evals.at(-1);
  const last = log.steps.at(-1);
  const tps = log.steps.length ? log.steps.reduce((s, m) => s + m.tokensPerSecond, 0) / log.steps.length : 0;
  console.log(`\neval loss ${ev ? ev.loss.toFixed(3) : '-'} (perplexity ${ev?.perplexity?.toFixed(2) ?? '-'}), train loss ${last?.loss.toFixed(3) ?? '-'}, ${Math.round(tps).toLocaleString('en-US')} tokens/s`);
  console.log(`\nsample:\n${res.sample}\n`);
  console.log('expert load over the last quarter of training:');
  for (const line of routingSummary(log)) console.log(`  ${line}`);
  if (log.routingSample && log.routingSample.layers.length) {
    console.log(`\nrouting of held-out text (layer ${log.routingSample.layers[0].layer}, colour = top-1 expert):`);
    console.log(colourByExpert(log.routingSample));
  }
  console.log(`\ncheckpoint: ${out}/checkpoints   report: ${res.reportPath ?? '(none)'}`);
}
