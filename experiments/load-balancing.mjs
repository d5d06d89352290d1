#!/usr/bin/env node
// Load balancing: the same 8-expert top-2 MoE language model (Moby-Dick, characters, capacity
// factor 1.25 so imbalance costs dropped assignments) trained with (a) no balancing, (b) the
// Switch/Mixtral balance loss, (c) noisy top-k gating with Shazeer's load loss, (d) DeepSeek-V3
// bias balancing (no auxiliary loss). Records every step's expert load per layer (which experts the
// router chose, before capacity), imbalance, drops and final eval loss. Writes
// docs/results/load-balancing/.
import { join } from 'node:path';
import { DEMO_LM, DEMO_TRAIN, evalBatches, expertLoadSpec, loadCorpus } from '../dist/index.js';
import {
  argmin, fmt, fmtDuration, fmtInt, fmtM, fmtPct, machineInfo, mdTable, mean, parseArgs, prepareOutDir, readmeHeader, runMain, since, warnIfReferenceBackend, writeChart, writeJson, writeText,
} from './lib/common.mjs';
import { lmData, makeLMRun, tokensPerStep } from './lib/lm.mjs';
import { evalCurve, pairedDifference, perBatchLosses, throughput, trainInterleaved } from './lib/train.mjs';

const NAME = 'load-balancing';
const ASSUMED_TOKENS_PER_SECOND = 3500;
const CAPACITY_FACTOR = 1.25;

function settings(quick) {
  if (quick) {
    return {
      model: { dModel: 32, nLayers: 2, nHeads: 2, dFF: 32, maxSeqLen: 32, seed: 0 },
      train: { batchSize: 4, seqLen: 32, steps: 12, lr: 3e-3, warmupSteps: 3, evalEvery: 4, evalBatches: 2 },
      finalEvalBatches: 4,
      biasRate: 1e-3,
    };
  }
  const { moe: _moe, ...model } = DEMO_LM;
  return { model, train: { ...DEMO_TRAIN, steps: 250, warmupSteps: 25, evalEvery: 50, evalBatches: 8 }, finalEvalBatches: undefined, biasRate: 1e-3 };
}

/** The four variants: identical but for how (and whether) the router is balanced. */
function variants(base, biasRate) {
  const router = { type: 'topk', k: 2, capacityFactor: CAPACITY_FACTOR };
  const mk = (key, label, moe) => ({ key, label, model: { ...base, moeEvery: 1, moe: { numExperts: 8, ...moe } } });
  return [
    mk('none', 'no balancing', { router, losses: {} }),
    mk('balance-loss', 'balance loss 0.01 (Switch / Mixtral)', { router, losses: { balance: 0.01 } }),
    mk('noisy-topk', 'noisy top-k gating + load loss 0.1 (Shazeer et al. 2017)', { router: { ...router, noise: { type: 'gaussian' } }, losses: { load: 0.1 } }),
    mk('bias', `bias balancing, rate ${biasRate}, no aux loss (DeepSeek-V3)`, { router: { ...router, biasBalancing: { rate: biasRate } }, losses: {} }),
  ];
}

/** max / mean of a load vector (1 = perfectly balanced; E/k = one expert chosen by every token). */
const imbalance = (counts) => {
  const m = counts.reduce((a, b) => a + b, 0) / counts.length;
  return m > 0 ? Math.max(...counts) / m : NaN;
};

/** A RunLog-shaped object whose tokensPerExpert are the router's choices before capacity (for expertLoadSpec). */
function chosenLoadLog(name, routing) {
  return {
    name,
    config: null,
    startedAt: '',
    evals: [],
    steps: routing.steps.map((perLayer, i) => ({ step: i + 1, moe: perLayer.map((counts, j) => ({ layer: routing.layers[j], tokensPerExpert: counts })) })),
  };
}

function summaryBarSpec(rows) {
  // Loss bars start near the smallest loss (differences are small next to the loss itself); the others at zero.
  const losses = rows.map((r) => r.evalLoss);
  const lo = Math.min(...losses), hi = Math.max(...losses);
  const pad = Math.max((hi - lo) * 0.5, 0.005);
  const bar = (field, title, format) => ({
    title,
    width: 200,
    height: 150,
    mark: { type: 'bar', clip: true },
    encoding: {
      x: { field: 'variant', type: 'nominal', title: null, sort: rows.map((r) => r.variant), axis: { labelAngle: -35, labelOverlap: false } },
      y: { field, type: 'quantitative', title: null, axis: { format }, scale: field === 'evalLoss' ? { domain: [lo - pad, hi + pad / 2], zero: false, nice: false } : { zero: true } },
      color: { field: 'variant', type: 'nominal', legend: null, sort: rows.map((r) => r.variant) },
    },
  });
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: { text: 'Load balancing: summary', subtitle: 'imbalance and drops averaged over the last 20% of steps and all MoE layers' },
    data: { values: rows },
    hconcat: [bar('evalLoss', 'final eval loss (nats/char; axis not from 0)', '.3f'), bar('imbalance', 'load imbalance (max / mean)', '.2f'), bar('dropFraction', 'dropped assignments', '.1%')],
  };
}

function imbalanceLineSpec(rows) {
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: { text: 'Load imbalance over training', subtitle: 'max / mean of the experts\' chosen load, mean over MoE layers, averaged over buckets of steps (1 = balanced; 4 = every token picks the same two experts)' },
    width: 560,
    height: 240,
    data: { values: rows },
    mark: { type: 'line', point: { size: 24, filled: true } },
    encoding: {
      x: { field: 'step', type: 'quantitative', title: 'step' },
      y: { field: 'imbalance', type: 'quantitative', title: 'max / mean load', scale: { zero: false } },
      color: { field: 'variant', type: 'nominal', title: null, sort: [...new Set(rows.map((r) => r.variant))] },
    },
  };
}

async function main() {
  const opts = parseArgs(NAME, 'Expert load over time with no balancing, balance loss, noisy top-k + load loss, and bias balancing.');
  const startedAt = new Date().toISOString();
  const t0 = performance.now();
  const machine = machineInfo();
  const s = settings(opts.quick);
  if (opts.steps) s.train.steps = opts.steps;
  const corpus = loadCorpus('moby-dick');
  const { tokenizer, stream } = lmData(corpus, { tokenizer: 'char' });
  const vs = variants(s.model, s.biasRate);
  const runs = vs.map((v) => makeLMRun({ ...v, train: s.train, stream, capture: true }));

  const tps = tokensPerStep(s.train);
  const evalTokens = (s.train.steps / s.train.evalEvery + 1) * s.train.evalBatches * tps;
  const estimate = runs.length * (s.train.steps * tps + evalTokens / 3) / ASSUMED_TOKENS_PER_SECOND;
  console.log(`${NAME}${opts.quick ? ' (quick)' : ''}: Moby-Dick, char tokenizer (vocab ${tokenizer.vocabSize}); 8 experts top-2, capacity factor ${CAPACITY_FACTOR}, ${runs[0].model.moeLayers().length} MoE layers`);
  for (const r of runs) console.log(`  ${r.key.padEnd(13)} ${r.label}: ${fmtM(r.parameters)} parameters, ${fmtM(r.activeParameters)} active`);
  console.log(`  ${runs.length} runs x ${s.train.steps} steps x ${tps} tokens, interleaved; expected about ${fmtDuration(estimate)} at ~${ASSUMED_TOKENS_PER_SECOND} tokens/s`);
  warnIfReferenceBackend(machine);

  for (const r of runs) r.trainer.evaluate();
  await trainInterleaved(runs, s.train.steps);

  const finalBatches = evalBatches(stream.eval.tokens, s.train.batchSize, s.train.seqLen, s.finalEvalBatches);
  const perBatch = Object.fromEntries(runs.map((r) => [r.key, perBatchLosses(r.model, finalBatches)]));
  const tailFrom = Math.floor(s.train.steps * 0.8); // last 20% of steps: steps > tailFrom

  const perStepByRun = new Map();
  const results = runs.map((r) => {
    const log = r.trainer.log;
    const routing = r.routing;
    const layers = routing.layers;
    // Per step, per layer: chosen-load fractions, imbalance; drops from the trainer's step metrics.
    const perStep = routing.steps.map((perLayer, i) => {
      const st = log.steps[i];
      return {
        step: i + 1,
        layers: perLayer.map((counts, j) => {
          const total = counts.reduce((a, b) => a + b, 0);
          return {
            layer: layers[j],
            chosenFraction: counts.map((c) => +(c / total).toFixed(5)),
            imbalance: +imbalance(counts).toFixed(4),
            processedTokensPerExpert: st.moe[j].tokensPerExpert,
            dropFraction: +st.moe[j].dropFraction.toFixed(5),
            routerEntropy: +st.moe[j].routerEntropy.toFixed(4),
          };
        }),
      };
    });
    perStepByRun.set(r.key, perStep);
    const tail = perStep.filter((p) => p.step > tailFrom);
    const layerTail = layers.map((layer, j) => {
      const frac = new Array(8).fill(0);
      for (const p of tail) p.layers[j].chosenFraction.forEach((f, e) => (frac[e] += f / tail.length));
      return {
        layer,
        meanImbalance: mean(tail.map((p) => p.layers[j].imbalance)),
        meanDropFraction: mean(tail.map((p) => p.layers[j].dropFraction)),
        meanChosenFraction: frac.map((f) => +f.toFixed(4)),
        busiestExpert: frac.indexOf(Math.max(...frac)),
        busiestShare: Math.max(...frac),
        idlestShare: Math.min(...frac),
      };
    });
    const curve = evalCurve(log);
    return {
      key: r.key,
      label: r.label,
      model: r.model.config,
      parameters: r.parameters,
      activeParameters: r.activeParameters,
      finalEvalLoss: curve.at(-1).loss,
      finalEvalAllWindows: mean(perBatch[r.key]),
      tokensPerSecond: throughput(log),
      imbalance: { allSteps: mean(perStep.flatMap((p) => p.layers.map((l) => l.imbalance))), lastFifth: mean(layerTail.map((l) => l.meanImbalance)) },
      dropFraction: { allSteps: mean(perStep.flatMap((p) => p.layers.map((l) => l.dropFraction))), lastFifth: mean(layerTail.map((l) => l.meanDropFraction)) },
      layersLastFifth: layerTail,
      evalCurve: curve,
      // Per MoE layer, one entry per step: the router's chosen counts per expert, imbalance, drops, entropy.
      perLayerSeries: layers.map((layer, j) => ({
        layer,
        chosenCounts: routing.steps.map((pl) => pl[j]),
        imbalance: perStep.map((p) => p.layers[j].imbalance),
        dropFraction: perStep.map((p) => p.layers[j].dropFraction),
        routerEntropy: perStep.map((p) => p.layers[j].routerEntropy),
      })),
    };
  });
  const base = results.find((r) => r.key === 'none');
  const paired = Object.fromEntries(results.filter((r) => r !== base).map((r) => [r.key, pairedDifference(perBatch[r.key], perBatch.none)]));

  prepareOutDir(opts.outDir);
  const charts = { load: {} };
  for (const r of runs) {
    const spec = expertLoadSpec(chosenLoadLog(r.key, r.routing));
    spec.title = {
      text: `Expert load over time: ${r.key}`,
      subtitle: `${r.label}. Share of each layer's top-2 choices per expert, before capacity: blue under, white at the fair 12.5%, red over`,
    };
    charts.load[r.key] = await writeChart(opts.outDir, `load-${r.key}.svg`, spec);
  }
  const bucket = Math.max(1, Math.round(s.train.steps / 30));
  const lineRows = results.flatMap((r) => {
    const out = [];
    const perStep = perStepByRun.get(r.key);
    for (let b = 0; b * bucket < perStep.length; b++) {
      const chunk = perStep.slice(b * bucket, (b + 1) * bucket);
      out.push({ variant: r.key, step: chunk.at(-1).step, imbalance: mean(chunk.flatMap((p) => p.layers.map((l) => l.imbalance))) });
    }
    return out;
  });
  charts.imbalance = await writeChart(opts.outDir, 'imbalance-vs-step.svg', imbalanceLineSpec(lineRows));
  charts.summary = await writeChart(
    opts.outDir,
    'summary.svg',
    summaryBarSpec(results.map((r) => ({ variant: r.key, evalLoss: r.finalEvalAllWindows, imbalance: r.imbalance.lastFifth, dropFraction: r.dropFraction.lastFifth }))),
  );

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
    capacityFactor: CAPACITY_FACTOR,
    lastFifthFromStep: tailFrom + 1,
    finalEvalBatches: finalBatches.length,
    pairedDifferenceVsNone: paired,
    runs: results,
    charts,
  };
  writeJson(join(opts.outDir, 'results.json'), json);
  writeText(join(opts.outDir, 'README.md'), readme(json, opts, machine, seconds));
  console.log(`\n${summaryTable(json)}\n\nwrote ${opts.outDir}`);
}

function summaryTable(json) {
  return mdTable(
    ['variant', 'final eval loss', 'Δ vs none (± s.e.)', 'imbalance, all steps', 'imbalance, last 20%', 'drops, all steps', 'drops, last 20%', 'busiest expert: share of assignments (worst layer, last 20%)', 'tokens/s'],
    json.runs.map((r) => {
      const worst = r.layersLastFifth.reduce((a, b) => (b.busiestShare > a.busiestShare ? b : a));
      const p = json.pairedDifferenceVsNone[r.key];
      return [
        r.key,
        fmt(r.finalEvalAllWindows, 4),
        p ? `${p.mean >= 0 ? '+' : ''}${fmt(p.mean, 4)} ± ${fmt(p.stderr, 4)}` : '–',
        fmt(r.imbalance.allSteps, 2),
        fmt(r.imbalance.lastFifth, 2),
        fmtPct(r.dropFraction.allSteps, 2),
        fmtPct(r.dropFraction.lastFifth, 2),
        `${fmtPct(worst.busiestShare, 1)} (layer ${worst.layer}, expert ${worst.busiestExpert})`,
        fmtInt(r.tokensPerSecond),
      ];
    }),
  );
}

function readme(json, opts, machine, seconds) {
  const runs = json.runs;
  const E = 8;
  const lines = [readmeHeader('Load balancing: does one expert take all the work?', opts, machine, json.startedAt, seconds)];
  const m = runs[0].model;
  lines.push(
    '## Setup',
    '',
    `One character-level MoE language model on Moby-Dick (${m.nLayers} layers, all MoE; d_model ${m.dModel}; ${E} experts of width ${m.dFF}, top-2; capacity factor ${json.capacityFactor}, so an expert takes at most ${json.capacityFactor}× its fair share of a batch's assignments and the rest are dropped), trained ${json.train.steps} steps of ${json.train.batchSize}×${json.train.seqLen} tokens with the same seed and data, in four variants:`,
    '',
    ...runs.map((r) => `- **${r.key}**: ${r.label}`),
    '',
    'Load is what the router *chose* (each token\'s top-2 experts) before capacity: capacity caps what an expert processes, so the processed load would hide an imbalance; the drops show its cost.',
    `Imbalance is max / mean of the chosen load per layer and step (1 = balanced; with top-2 an expert gets at most half of the assignments, when every token picks it, so the maximum is ${E / 2}). "Last 20%" averages steps ${json.lastFifthFromStep}–${json.train.steps}.`,
    `The final eval loss re-evaluates every variant on the same ${json.finalEvalBatches} batches of held-out text; Δ is the paired difference from the unbalanced run with its standard error over batches.`,
    '',
    '## Results',
    '',
    summaryTable(json),
    '',
    '![summary](summary.svg)',
    '',
    '![imbalance vs step](imbalance-vs-step.svg)',
    '',
    ...runs.flatMap((r) => [`![expert load: ${r.key}](load-${r.key}.svg)`, '']),
    '## What the numbers say',
    '',
  );
  const facts = [];
  const none = runs.find((r) => r.key === 'none');
  const worst = (r) => r.layersLastFifth.reduce((a, b) => (b.busiestShare > a.busiestShare ? b : a));
  const wn = worst(none);
  facts.push(
    `Without balancing, the busiest expert in the worst layer (layer ${wn.layer}) got ${fmtPct(wn.busiestShare)} of that layer's assignments over the last 20% of training (fair share ${fmtPct(1 / E)}): ` +
      `${fmtPct(2 * wn.busiestShare, 0)} of tokens had it among their top 2. Mean imbalance ${fmt(none.imbalance.lastFifth, 2)}; ${fmtPct(none.dropFraction.lastFifth, 2)} of assignments were dropped by capacity.` +
      (2 * wn.busiestShare >= 0.8 ? ' Nearly every token went to the same expert in that layer: the router collapsed onto it.' : wn.busiestShare > 2 / E ? ' The load is skewed (the busiest expert has more than twice its fair share) but the router did not collapse onto one expert.' : ' The load stayed within twice the fair share even without balancing.'),
  );
  const others = runs.filter((r) => r !== none);
  const balancedMost = others[argmin(others.map((r) => r.imbalance.lastFifth))];
  facts.push(`The most balanced variant over the last 20% of steps is **${balancedMost.key}** (imbalance ${fmt(balancedMost.imbalance.lastFifth, 2)}, drops ${fmtPct(balancedMost.dropFraction.lastFifth, 2)}).`);
  for (const r of others) {
    const ratio = none.imbalance.lastFifth > 0 ? r.imbalance.lastFifth / none.imbalance.lastFifth : NaN;
    const p = json.pairedDifferenceVsNone[r.key];
    const sig = Math.abs(p.mean) > 2 * p.stderr;
    facts.push(
      `${r.key}: imbalance ${fmt(r.imbalance.lastFifth, 2)} (${ratio < 1 ? `${fmtPct(1 - ratio, 0)} lower than` : ratio > 1 ? `${fmtPct(ratio - 1, 0)} higher than` : 'equal to'} no balancing), drops ${fmtPct(r.dropFraction.lastFifth, 2)}; ` +
        `eval loss ${p.mean < 0 ? 'lower' : 'higher'} by ${fmt(Math.abs(p.mean), 4)} nats/char (± ${fmt(p.stderr, 4)}), ${sig ? 'more than two standard errors' : 'within two standard errors of zero: no measurable effect on quality'}.`,
    );
  }
  const bestLoss = runs[argmin(runs.map((r) => r.finalEvalAllWindows))];
  facts.push(`Lowest final eval loss: **${bestLoss.key}** (${fmt(bestLoss.finalEvalAllWindows, 4)}).` + (bestLoss === none ? ' Balancing did not lower the loss here. Its main purpose is even work across experts (fewer drops, no straggler expert when experts run in parallel on separate devices), which the loss does not measure.' : ''));
  facts.push('One seed per variant; differences between seeds are not measured.');
  lines.push(...facts.map((f) => `- ${f}`), '');
  return lines.join('\n');
}

runMain(main);
