#!/usr/bin/env node
// Dense vs MoE at equal active parameters per token, on Moby-Dick (character tokenizer):
// a dense baseline, 8 experts top-2 (Mixtral-style), and Switch top-1 (capacity factor 1.25,
// jitter noise) with experts twice as wide so that its active parameters match. Eval loss at
// equal steps and at equal training time, and tokens/s. Writes docs/results/dense-vs-moe/.
import { join } from 'node:path';
import { DEMO_LM, DEMO_TRAIN, denseBaselineConfig, evalBatches, loadCorpus } from '../dist/index.js';
import {
  argmin, fmt, fmtDuration, fmtSeconds, fmtInt, fmtM, fmtPct, machineInfo, mdTable, mean, parseArgs, prepareOutDir, readmeHeader, runMain, since, warnIfReferenceBackend, writeChart, writeJson, writeText,
} from './lib/common.mjs';
import { lmData, makeLMRun, tokensPerStep } from './lib/lm.mjs';
import { evalCurve, pairedDifference, perBatchLosses, throughput, trainInterleaved, valueAtTime } from './lib/train.mjs';

const NAME = 'dense-vs-moe';
/** Assumed throughput of the demo-size model on 2 cores, for the time estimate printed at start. */
const ASSUMED_TOKENS_PER_SECOND = 3500;

function settings(quick) {
  if (quick) {
    const model = { dModel: 32, nLayers: 2, nHeads: 2, dFF: 32, maxSeqLen: 32, seed: 0 };
    return { model, expertDFF: 32, train: { batchSize: 4, seqLen: 32, steps: 12, lr: 3e-3, warmupSteps: 3, evalEvery: 4, evalBatches: 2 }, finalEvalBatches: 4 };
  }
  const { moe: _moe, ...model } = DEMO_LM;
  return { model, expertDFF: DEMO_LM.dFF, train: { ...DEMO_TRAIN, steps: 350, warmupSteps: 35, evalEvery: 25, evalBatches: 8 }, finalEvalBatches: undefined };
}

/** The three models: MoE top-2 (the demo model), its dense baseline, Switch top-1 at the same active size. */
function modelConfigs(base, expertDFF) {
  const top2 = {
    ...base,
    dFF: expertDFF,
    moeEvery: 1,
    moe: { numExperts: 8, router: { type: 'topk', k: 2 }, losses: { balance: 0.01, zLoss: 0.001 } },
  };
  const { vocabSize: _v, ...dense } = denseBaselineConfig({ ...top2, vocabSize: 2 });
  const switchTop1 = {
    ...base,
    dFF: 2 * expertDFF,
    moeEvery: 1,
    moe: {
      numExperts: 8,
      router: { type: 'topk', k: 1, capacityFactor: 1.25, noise: { type: 'jitter', eps: 0.01 } },
      losses: { balance: 0.01, zLoss: 0.001 },
    },
  };
  return [
    { key: 'dense', label: `dense (FFN width ${dense.dFF})`, model: dense },
    { key: 'moe-top2', label: `MoE 8 experts top-2 (expert width ${expertDFF})`, model: top2 },
    { key: 'switch-top1', label: `Switch 8 experts top-1, capacity 1.25 (expert width ${2 * expertDFF})`, model: switchTop1 },
  ];
}

function lineSpec(rows, x, xTitle, title, subtitle, rule = null) {
  const line = {
    mark: { type: 'line', point: { size: 30, filled: true } },
    encoding: {
      x: { field: x, type: 'quantitative', title: xTitle },
      y: { field: 'loss', type: 'quantitative', title: 'eval loss (nats/char)', scale: { zero: false } },
      color: { field: 'run', type: 'nominal', title: null, sort: rows.map((r) => r.run).filter((v, i, a) => a.indexOf(v) === i) },
    },
  };
  const layers = [line];
  if (rule) {
    layers.push({
      data: { values: [rule] },
      layer: [
        { mark: { type: 'rule', strokeDash: [4, 4], color: '#8c959f' }, encoding: { x: { field: 'x', type: 'quantitative' } } },
        { mark: { type: 'text', align: 'right', baseline: 'top', dx: -4, y: 4, color: '#57606a', fontSize: 11 }, encoding: { x: { field: 'x', type: 'quantitative' }, text: { field: 'label' } } },
      ],
    });
  }
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: { text: title, subtitle },
    width: 560,
    height: 260,
    data: { values: rows },
    layer: layers,
  };
}

async function main() {
  const opts = parseArgs(NAME, 'Dense vs MoE (top-2) vs Switch (top-1) at equal active parameters on Moby-Dick.');
  const startedAt = new Date().toISOString();
  const t0 = performance.now();
  const machine = machineInfo();
  const s = settings(opts.quick);
  if (opts.steps) s.train.steps = opts.steps;
  const corpus = loadCorpus('moby-dick');
  const { tokenizer, stream } = lmData(corpus, { tokenizer: 'char' });
  const configs = modelConfigs(s.model, s.expertDFF);
  const runs = configs.map((c) => makeLMRun({ ...c, train: s.train, stream }));

  const tps = tokensPerStep(s.train);
  const evalTokens = (s.train.steps / s.train.evalEvery + 1) * s.train.evalBatches * tps;
  const estimate = runs.length * (s.train.steps * tps + evalTokens / 3) / ASSUMED_TOKENS_PER_SECOND;
  console.log(`${NAME}${opts.quick ? ' (quick)' : ''}: Moby-Dick, char tokenizer (vocab ${tokenizer.vocabSize}), ${stream.train.tokens.length} train / ${stream.eval.tokens.length} eval tokens`);
  for (const r of runs) console.log(`  ${r.key.padEnd(12)} ${r.label}: ${fmtM(r.parameters)} parameters, ${fmtM(r.activeParameters)} active per token`);
  console.log(`  ${runs.length} runs x ${s.train.steps} steps x ${tps} tokens, interleaved; expected about ${fmtDuration(estimate)} at ~${ASSUMED_TOKENS_PER_SECOND} tokens/s`);

  warnIfReferenceBackend(machine);

  for (const r of runs) r.trainer.evaluate(); // step 0
  await trainInterleaved(runs, s.train.steps);

  // Paired final evaluation on every held-out window (more than the periodic evaluations use).
  const finalBatches = evalBatches(stream.eval.tokens, s.train.batchSize, s.train.seqLen, s.finalEvalBatches);
  const perBatch = Object.fromEntries(runs.map((r) => [r.key, perBatchLosses(r.model, finalBatches)]));

  const curves = Object.fromEntries(runs.map((r) => [r.key, evalCurve(r.trainer.log)]));
  const totalSeconds = Object.fromEntries(runs.map((r) => [r.key, curves[r.key].at(-1).trainSeconds]));
  const commonTime = Math.min(...Object.values(totalSeconds));
  const results = runs.map((r) => {
    const c = curves[r.key];
    const atTime = valueAtTime(c, commonTime);
    const steps = r.trainer.log.steps;
    const drops = steps.flatMap((m) => m.moe.map((l) => l.dropFraction));
    return {
      key: r.key,
      label: r.label,
      model: r.model.config,
      parameters: r.parameters,
      activeParameters: r.activeParameters,
      steps: s.train.steps,
      tokensSeen: s.train.steps * tps,
      evalLossAtEqualSteps: c.at(-1).loss,
      finalEvalAllWindows: { mean: mean(perBatch[r.key]), batches: finalBatches.length },
      trainSeconds: totalSeconds[r.key],
      tokensPerSecond: throughput(r.trainer.log),
      evalLossAtCommonTime: { seconds: commonTime, latestEvalBefore: atTime.latest, latestEvalStep: atTime.latestStep, interpolated: atTime.interpolated },
      meanDropFraction: drops.length ? mean(drops) : null,
      evalCurve: c,
      /** Training loss of steps 1, 2, ... */
      trainLoss: steps.map((m) => +m.loss.toFixed(5)),
    };
  });
  const byKey = Object.fromEntries(results.map((r) => [r.key, r]));
  const paired = Object.fromEntries(
    results.filter((r) => r.key !== 'dense').map((r) => [r.key, pairedDifference(perBatch[r.key], perBatch.dense)]),
  );

  prepareOutDir(opts.outDir);
  const stepRows = results.flatMap((r) => r.evalCurve.map((p) => ({ run: r.key, step: p.step, seconds: p.trainSeconds, loss: p.loss })));
  const charts = {
    step: await writeChart(opts.outDir, 'eval-loss-vs-step.svg', lineSpec(stepRows, 'step', 'step', 'Eval loss vs step', `Moby-Dick, ${tps} tokens per step; equal active parameters per token`)),
    time: await writeChart(opts.outDir, 'eval-loss-vs-time.svg', lineSpec(stepRows, 'seconds', 'training seconds (forward + backward + optimizer)', 'Eval loss vs training time', 'runs trained interleaved on the same machine; evaluation time excluded', { x: commonTime, label: `equal-time comparison (${fmtSeconds(commonTime)})` })),
  };

  const seconds = since(t0);
  const json = {
    experiment: NAME,
    quick: opts.quick,
    stepsOverride: opts.steps,
    command: opts.command,
    startedAt,
    durationSeconds: +seconds.toFixed(1),
    machine,
    data: { corpus: 'moby-dick', tokenizer: tokenizer.name, vocabSize: tokenizer.vocabSize, trainTokens: stream.train.tokens.length, evalTokens: stream.eval.tokens.length },
    train: s.train,
    commonTrainSeconds: commonTime,
    finalEvalBatches: finalBatches.length,
    pairedDifferenceVsDense: paired,
    runs: results,
    charts,
  };
  writeJson(join(opts.outDir, 'results.json'), json);
  writeText(join(opts.outDir, 'README.md'), readme(json, opts, machine, seconds));
  console.log(`\n${mdTableOf(json)}\n\nwrote ${opts.outDir}`);
}

function mdTableOf(json) {
  return mdTable(
    ['run', 'parameters', 'active / token', `eval loss @ step ${json.train.steps}`, 'eval loss, all held-out windows', `eval loss @ ${fmtSeconds(json.commonTrainSeconds)} (latest eval)`, '(interpolated)', 'tokens/s', 'training time', 'drop fraction'],
    json.runs.map((r) => [
      r.key,
      fmtM(r.parameters),
      fmtM(r.activeParameters),
      fmt(r.evalLossAtEqualSteps, 4),
      fmt(r.finalEvalAllWindows.mean, 4),
      `${fmt(r.evalLossAtCommonTime.latestEvalBefore, 4)} (step ${r.evalLossAtCommonTime.latestEvalStep})`,
      fmt(r.evalLossAtCommonTime.interpolated, 4),
      fmtInt(r.tokensPerSecond),
      fmtSeconds(r.trainSeconds),
      r.meanDropFraction === null ? '–' : fmtPct(r.meanDropFraction, 2),
    ]),
  );
}

function readme(json, opts, machine, seconds) {
  const runs = json.runs;
  const by = Object.fromEntries(runs.map((r) => [r.key, r]));
  const dense = by.dense;
  const lines = [readmeHeader('Dense vs MoE at equal active parameters (Moby-Dick)', opts, machine, json.startedAt, seconds)];
  lines.push(
    '## Setup',
    '',
    `Character-level language models (vocabulary ${json.data.vocabSize}) on Moby-Dick: ${fmtInt(json.data.trainTokens)} training and ${fmtInt(json.data.evalTokens)} held-out characters (the tail of the book).`,
    `Every run: ${runs[0].model.nLayers} layers, d_model ${runs[0].model.dModel}, ${runs[0].model.nHeads} heads, context ${json.train.seqLen}; ${json.train.steps} steps of ${json.train.batchSize}×${json.train.seqLen} tokens, AdamW lr ${json.train.lr} (warmup ${json.train.warmupSteps}, cosine), same seed and data order.`,
    'The runs were trained interleaved (one step of each in turn), so background load on the machine slows all of them alike.',
    '',
    ...runs.map((r) => `- **${r.key}**: ${r.label}; ${fmtM(r.parameters)} parameters, ${fmtM(r.activeParameters)} active per token.`),
    '',
    '## Results',
    '',
    mdTableOf(json),
    '',
    `"eval loss @ step" is the periodic evaluation (${json.train.evalBatches} batches of held-out text) after the last step; "all held-out windows" re-evaluates every run on the same ${json.finalEvalBatches} batches (paired). `,
    `"@ ${fmtSeconds(json.commonTrainSeconds)}" is each run's eval loss at the training time of the run that finished first: the latest evaluation at or before that time, and the linear interpolation between evaluations. Training time is the sum of the runs' own step times (forward + backward + optimizer), evaluations excluded.`,
    '',
    '![eval loss vs step](eval-loss-vs-step.svg)',
    '',
    '![eval loss vs time](eval-loss-vs-time.svg)',
    '',
    '## What the numbers say',
    '',
  );
  const facts = [];
  const eqSteps = runs.map((r) => r.finalEvalAllWindows.mean);
  const best = runs[argmin(eqSteps)];
  facts.push(`At equal steps (${json.train.steps} steps, ${fmtInt(runs[0].tokensSeen)} tokens each), the lowest held-out loss is **${best.key}** (${fmt(best.finalEvalAllWindows.mean, 4)} nats/char).`);
  for (const r of runs.filter((x) => x.key !== 'dense')) {
    const p = json.pairedDifferenceVsDense[r.key];
    const sig = Math.abs(p.mean) > 2 * p.stderr;
    const dir = p.mean < 0 ? 'lower' : 'higher';
    facts.push(
      `${r.key} vs dense at equal steps: ${fmt(p.mean, 4)} nats/char (${dir}${p.mean < 0 ? ', MoE better' : ', MoE worse'}), paired standard error ${fmt(p.stderr, 4)} over ${p.n} eval batches: ` +
        (sig ? 'more than two standard errors from zero.' : 'within two standard errors of zero, so not distinguishable from evaluation noise.'),
    );
  }
  const atTime = runs.map((r) => r.evalLossAtCommonTime.interpolated);
  const bestT = runs[argmin(atTime)];
  facts.push(`At equal training time (${fmtSeconds(json.commonTrainSeconds)}, interpolated), the lowest eval loss is **${bestT.key}** (${fmt(bestT.evalLossAtCommonTime.interpolated, 4)}).`);
  for (const r of runs.filter((x) => x.key !== 'dense')) {
    const ratio = r.tokensPerSecond / dense.tokensPerSecond;
    facts.push(
      `${r.key} trains at ${fmtInt(r.tokensPerSecond)} tokens/s, ${fmt(ratio, 2)}× the dense model's ${fmtInt(dense.tokensPerSecond)}` +
        (ratio < 1 ? `: at equal time it sees ${fmtPct(1 - ratio, 0)} fewer tokens.` : '.'),
    );
    const winSteps = r.finalEvalAllWindows.mean < dense.finalEvalAllWindows.mean;
    const winTime = r.evalLossAtCommonTime.interpolated < dense.evalLossAtCommonTime.interpolated;
    if (winSteps && !winTime) {
      facts.push(`${r.key} beats dense per step but not per second on this machine: its throughput deficit outweighs its per-step gain at this scale.`);
    } else if (!winSteps && !winTime) {
      facts.push(
        `${r.key} does not beat dense here, neither per step nor per second. A likely reason (not tested by this script): with ${fmtInt(runs[0].tokensSeen)} training tokens the models are far from using the capacity the dense model already has, so the MoE's extra parameters (${fmtM(r.parameters)} in all vs ${fmtM(dense.parameters)}) have little to add yet, while each expert sees only a fraction of the tokens; MoE's advantage in the literature grows with training tokens and model size.`,
      );
    } else if (winSteps && winTime) {
      facts.push(`${r.key} beats dense both per step and per second.`);
    } else {
      facts.push(`${r.key} is behind dense at equal steps but ahead at equal time (it is faster per token).`);
    }
  }
  const sw = by['switch-top1'];
  if (sw && sw.meanDropFraction !== null) facts.push(`Switch top-1 dropped ${fmtPct(sw.meanDropFraction, 2)} of its token assignments on average (capacity factor 1.25); a dropped token skips the feed-forward block (residual only).`);
  facts.push('One seed per configuration: differences between seeds are not measured here, so small gaps should not be over-read.');
  lines.push(...facts.map((f) => `- ${f}`), '');
  return lines.join('\n');
}

runMain(main);
