/** `switchyard compare`: the same run as MoE and as its dense baseline at equal active parameters. */
import { join } from 'node:path';
import { Command } from 'commander';
import { denseBaselineConfig, type TransformerLMConfig } from '../nn/transformer.js';
import { trainLanguageModel, writeJsonAtomic, type LMRunSpec } from '../train/lm-run.js';
import type { RunLog } from '../train/metrics.js';
import { TrainingProgress } from './common.js';
import { addRunFlags, runSpecFrom, type RunFlags } from './lm-options.js';

/** Eval loss of the latest evaluation at or before a wall-clock time. */
function lossAtTime(log: RunLog, seconds: number): number | null {
  let best: number | null = null;
  for (const e of log.evals) if (e.elapsedSeconds <= seconds) best = e.loss;
  return best;
}

export function compareCommand(): Command {
  return addRunFlags(new Command('compare').description('train the MoE model and its dense baseline (same active parameters per token) and compare'))
    .option('--out <dir>', 'output directory (moe/ and dense/ runs inside)', 'switchyard-compare')
    .action(async (flags: RunFlags & { out: string }) => {
      const moeSpec = runSpecFrom({ ...flags, dense: false });
      const dense = denseBaselineConfig({ ...moeSpec.model, vocabSize: 1 } as TransformerLMConfig);
      const { vocabSize: _v, ...denseModel } = dense;
      const runs: Array<[string, LMRunSpec]> = [
        ['moe', { ...moeSpec, name: 'compare: MoE' }],
        ['dense', { ...moeSpec, model: denseModel, name: 'compare: dense baseline' }],
      ];
      const results: Record<string, { log: RunLog; params: number; active: number }> = {};
      for (const [key, spec] of runs) {
        const progress = new TrainingProgress(spec.train.steps, key.padEnd(5));
        let params = 0, active = 0;
        const res = await trainLanguageModel(spec, {
          outDir: join(flags.out, key),
          onReady: (i) => {
            params = i.parameters;
            active = i.activeParameters;
            progress.start(i.startStep);
          },
          onStep: (m) => progress.update(m),
        });
        progress.stop();
        results[key] = { log: res.log, params, active };
      }
      const rows = Object.entries(results).map(([key, r]) => {
        const ev = r.log.evals.at(-1);
        const secs = r.log.steps.at(-1)?.elapsedSeconds ?? 0;
        const tps = r.log.steps.reduce((s, m) => s + m.tokensPerSecond, 0) / Math.max(1, r.log.steps.length);
        return { run: key, params: r.params, activeParams: r.active, evalLoss: ev?.loss ?? NaN, seconds: secs, tokensPerSecond: tps };
      });
      const tMin = Math.min(...rows.map((r) => r.seconds));
      const summary = rows.map((r) => ({ ...r, evalLossAtEqualTime: lossAtTime(results[r.run].log, tMin) }));
      console.log('\nrun    params   active   eval loss (equal steps)   eval loss (@' + tMin.toFixed(0) + 's)   tokens/s');
      for (const r of summary) {
        console.log(
          `${r.run.padEnd(6)} ${(r.params / 1e6).toFixed(2).padStart(5)}M  ${(r.activeParams / 1e6).toFixed(2).padStart(5)}M   ${r.evalLoss.toFixed(4).padStart(10)}              ${r.evalLossAtEqualTime?.toFixed(4) ?? '   -  '}          ${Math.round(r.tokensPerSecond)}`,
        );
      }
      await writeJsonAtomic(join(flags.out, 'compare.json'), summary);
      console.log(`\nreports: ${join(flags.out, 'moe', 'report.html')}, ${join(flags.out, 'dense', 'report.html')}`);
    });
}
