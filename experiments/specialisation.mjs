#!/usr/bin/env node
// Do experts specialise? Train a character-level MoE language model (8 experts top-2 in every
// layer) on the multilingual fortunes (English, German, Spanish, Italian, Russian), then route
// held-out fortunes and count, per MoE layer, which expert each token's router ranked first,
// per language, and per topic for the English ones. The same counts for the model at
// initialisation (same seed, untrained) are the baseline: mutual information between label and
// expert, trained vs untrained, tests the claim instead of just picturing it. Writes
// docs/results/specialisation/. Needs the Debian fortunes packages (exits with the
// DataUnavailableError message naming them otherwise).
import { join } from 'node:path';
import { DEMO_LM, DEMO_TRAIN, Generator, MoETransformerLM, loadCorpus, noGrad } from '../dist/index.js';
import {
  fmt, fmtDuration, fmtInt, fmtM, fmtPct, machineInfo, mdTable, mean, parseArgs, prepareOutDir, readmeHeader, runMain, since, warnIfReferenceBackend, writeChart, writeJson, writeText,
} from './lib/common.mjs';
import { lmData, makeLMRun, tokensPerStep } from './lib/lm.mjs';
import { evalCurve, trainInterleaved } from './lib/train.mjs';

const NAME = 'specialisation';
const ASSUMED_TOKENS_PER_SECOND = 3500;
const LANGUAGES = ['en', 'de', 'es', 'it', 'ru'];
const PERMUTATIONS = 5;

function settings(quick) {
  if (quick) {
    return {
      charsPerLanguage: 20_000,
      model: { dModel: 32, nLayers: 2, nHeads: 2, dFF: 32, maxSeqLen: 32, seed: 0 },
      train: { batchSize: 4, seqLen: 32, steps: 12, lr: 3e-3, warmupSteps: 3, evalEvery: 6, evalBatches: 2 },
      routeBatches: 8,
      minTopicTokens: 50,
    };
  }
  const { moe: _moe, ...model } = DEMO_LM;
  return {
    charsPerLanguage: 500_000,
    model,
    train: { ...DEMO_TRAIN, steps: 800, warmupSteps: 50, evalEvery: 100, evalBatches: 8 },
    routeBatches: 60,
    minTopicTokens: 1000,
  };
}

/**
 * The multilingual fortunes with English documents labelled by topic ('en:<topic>', from the
 * `fortunes` corpus, whose documents are the multilingual set's English ones in the same order)
 * and the others by language; at most `charsPerLanguage` characters per language (a seeded
 * choice of whole documents), so every language weighs about the same.
 */
function buildCorpus(charsPerLanguage) {
  const multi = loadCorpus('fortunes-multilingual'); // throws DataUnavailableError naming the missing packages
  const topics = loadCorpus('fortunes');
  const en = multi.documents.filter((d) => d.label === 'en');
  const sameOrder = en.length === topics.documents.length && en.every((d, i) => d.text === topics.documents[i].text);
  if (!sameOrder) throw new Error('the English documents of fortunes-multilingual and fortunes differ: cannot label English fortunes by topic');
  const g = new Generator(1234);
  const documents = [];
  const chosen = {};
  for (const lang of LANGUAGES) {
    const docs = lang === 'en' ? topics.documents.map((d) => ({ text: d.text, label: `en:${d.label}` })) : multi.documents.filter((d) => d.label === lang);
    const idx = docs.map((_, i) => i);
    for (let i = idx.length - 1; i > 0; i--) {
      const j = g.int(i + 1);
      [idx[i], idx[j]] = [idx[j], idx[i]];
    }
    const keep = [];
    let chars = 0;
    for (const i of idx) {
      if (chars >= charsPerLanguage) break;
      keep.push(i);
      chars += docs[i].text.length;
    }
    keep.sort((a, b) => a - b); // corpus order
    for (const i of keep) documents.push(docs[i]);
    chosen[lang] = { documents: keep.length, of: docs.length, chars };
  }
  return { corpus: { name: 'fortunes-multilingual', documents, ordered: false }, chosen };
}

const languageOf = (label) => label.split(':')[0];
const topicOf = (label) => (label.includes(':') ? label.split(':')[1] : null);

/**
 * Route `batches` (with per-token labels) through `model` in eval mode; per MoE layer, the top-1
 * expert of every token. Returns { layers: [layerIndex], experts: Int32Array[layer][token], labels, tokens }.
 */
function routeTokens(model, batches) {
  const moeLayers = model.moeLayerIndices();
  const experts = moeLayers.map(() => []);
  const labels = [], tokens = [];
  const was = model.training;
  model.eval();
  try {
    noGrad(() => {
      for (const b of batches) {
        const out = model.forward(b.input);
        out.moe.forEach(({ out: o }, j) => {
          const r = o.routing;
          for (let t = 0; t < r.experts.length / r.k; t++) experts[j].push(r.experts[t * r.k]);
        });
        labels.push(...b.labels);
        tokens.push(...b.input.data);
      }
    });
  } finally {
    model.train(was);
  }
  return { layers: moeLayers, experts: experts.map((e) => Int32Array.from(e)), labels: Int32Array.from(labels), tokens: Int32Array.from(tokens) };
}

/** counts[a][b] from paired integer codes. */
function contingency(a, b, na, nb) {
  const c = Array.from({ length: na }, () => new Array(nb).fill(0));
  for (let i = 0; i < a.length; i++) c[a[i]][b[i]]++;
  return c;
}

/** Plug-in mutual information (bits) of a contingency table. */
function mutualInformation(c) {
  let n = 0;
  const rows = c.map((r) => r.reduce((s, x) => s + x, 0));
  const cols = c[0].map((_, j) => c.reduce((s, r) => s + r[j], 0));
  for (const r of rows) n += r;
  if (n === 0) return 0;
  let mi = 0;
  for (let i = 0; i < c.length; i++) {
    for (let j = 0; j < c[i].length; j++) {
      const x = c[i][j];
      if (x > 0) mi += (x / n) * Math.log2((x * n) / (rows[i] * cols[j]));
    }
  }
  return mi;
}

function entropyBits(counts) {
  const n = counts.reduce((s, x) => s + x, 0);
  let h = 0;
  for (const x of counts) if (x > 0) h -= (x / n) * Math.log2(x / n);
  return h;
}

/** I(A; B | C) in bits: Σ_c p(c) I(A; B | C = c). */
function conditionalMI(a, b, cond, na, nb) {
  const groups = new Map();
  for (let i = 0; i < a.length; i++) {
    let g = groups.get(cond[i]);
    if (!g) groups.set(cond[i], (g = []));
    g.push(i);
  }
  let total = 0;
  for (const idx of groups.values()) {
    const c = Array.from({ length: na }, () => new Array(nb).fill(0));
    for (const i of idx) c[a[i]][b[i]]++;
    total += (idx.length / a.length) * mutualInformation(c);
  }
  return total;
}

/** Shuffle `a` (a copy) within groups of equal `groups[i]` (one group when groups is null). */
function shuffled(a, groups, g) {
  const out = Int32Array.from(a);
  const byGroup = new Map();
  for (let i = 0; i < a.length; i++) {
    const k = groups ? groups[i] : 0;
    let list = byGroup.get(k);
    if (!list) byGroup.set(k, (list = []));
    list.push(i);
  }
  for (const idx of byGroup.values()) {
    for (let i = idx.length - 1; i > 0; i--) {
      const j = g.int(i + 1);
      const t = out[idx[i]];
      out[idx[i]] = out[idx[j]];
      out[idx[j]] = t;
    }
  }
  return out;
}

/**
 * Specialisation measures of one label set (codes 0..L-1) against each layer's top-1 experts:
 * row-normalised table p(expert | label), I(label; expert), the same with labels permuted
 * (estimation bias), I(label; expert | token) and its within-token permutation baseline, and
 * the accuracy of guessing the label from the expert alone vs always guessing the commonest label.
 */
function measure(routed, labelCodes, labelNames, tokens, E, seed) {
  const L = labelNames.length;
  const g = new Generator(seed);
  const labelCounts = new Array(L).fill(0);
  for (const l of labelCodes) labelCounts[l]++;
  const hLabel = entropyBits(labelCounts);
  return routed.map(({ layer, experts }) => {
    const c = contingency(labelCodes, experts, L, E);
    const mi = mutualInformation(c);
    const perm = [], condPerm = [];
    for (let p = 0; p < PERMUTATIONS; p++) {
      perm.push(mutualInformation(contingency(shuffled(labelCodes, null, g), experts, L, E)));
      condPerm.push(conditionalMI(shuffled(labelCodes, tokens, g), experts, tokens, L, E));
    }
    const cond = conditionalMI(labelCodes, experts, tokens, L, E);
    // Guess the label from the expert: the commonest label among that expert's tokens.
    let correct = 0;
    for (let e = 0; e < E; e++) correct += Math.max(...c.map((row) => row[e]));
    const n = labelCodes.length;
    const rows = c.map((row) => {
      const total = row.reduce((s, x) => s + x, 0);
      return row.map((x) => (total > 0 ? x / total : 0));
    });
    return {
      layer,
      tokens: n,
      labelEntropyBits: hLabel,
      mutualInformationBits: mi,
      normalisedMI: hLabel > 0 ? mi / hLabel : 0,
      permutedMIBits: mean(perm),
      conditionalMIGivenTokenBits: cond,
      permutedConditionalMIBits: mean(condPerm),
      labelFromExpertAccuracy: correct / n,
      majorityAccuracy: Math.max(...labelCounts) / n,
      counts: c,
      shareOfLabelPerExpert: rows.map((r) => r.map((x) => +x.toFixed(5))),
    };
  });
}

/** Heatmap label × expert, one panel per MoE layer, coloured by p(expert | label) around the uniform 1/E. */
function heatmapSpec(title, subtitle, rowsTitle, rowOrder, perLayer, E, showText) {
  const values = [];
  for (const m of perLayer) {
    m.shareOfLabelPerExpert.forEach((row, i) => row.forEach((share, e) => values.push({ layer: `layer ${m.layer}`, label: rowOrder[i], expert: e, share })));
  }
  const uniform = 1 / E;
  const top = Math.max(3 * uniform, ...values.map((v) => v.share));
  const rowPx = rowOrder.length > 20 ? 11 : 22;
  const cell = {
    width: { step: 24 },
    height: { step: rowPx },
    encoding: {
      x: { field: 'expert', type: 'ordinal', title: 'expert', axis: { labelAngle: 0 } },
      y: { field: 'label', type: 'nominal', title: rowsTitle, sort: rowOrder, axis: { labelFontSize: rowPx < 14 ? 9 : 11 } },
    },
    layer: [
      {
        mark: { type: 'rect' },
        encoding: {
          color: {
            field: 'share',
            type: 'quantitative',
            title: 'share',
            scale: { type: 'linear', domain: [0, uniform, top], range: ['#2166ac', '#f7f7f7', '#b2182b'], interpolate: 'lab' },
            legend: { format: '.0%', values: [0, uniform, top] },
          },
        },
      },
    ],
  };
  if (showText) {
    cell.layer.push({
      mark: { type: 'text', fontSize: 8 },
      encoding: {
        text: { field: 'share', type: 'quantitative', format: '.0%' },
        color: { condition: { test: `datum.share > ${(uniform + top) / 2} || datum.share < ${uniform / 3}`, value: 'white' }, value: '#1f2328' },
      },
    });
  }
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: { text: title, subtitle },
    data: { values },
    facet: { column: { field: 'layer', type: 'ordinal', title: null, sort: perLayer.map((m) => `layer ${m.layer}`) } },
    spec: cell,
    resolve: { scale: { color: 'shared' } },
  };
}

function miBarSpec(rows) {
  const order = ['initialisation', 'trained'];
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: { text: 'Mutual information between label and top-1 expert', subtitle: 'bits per MoE layer, trained model vs the same model at initialisation; black ticks: labels shuffled (the estimate\'s bias)' },
    data: { values: rows },
    facet: { column: { field: 'labels', type: 'nominal', title: null, sort: ['languages', 'English topics'] } },
    spec: {
      width: { step: 36 },
      height: 200,
      encoding: {
        x: { field: 'layer', type: 'ordinal', title: 'MoE layer', axis: { labelAngle: 0 } },
        xOffset: { field: 'model', type: 'nominal', sort: order },
      },
      layer: [
        {
          mark: { type: 'bar' },
          encoding: {
            y: { field: 'bits', type: 'quantitative', title: 'I(label; top-1 expert), bits' },
            color: { field: 'model', type: 'nominal', title: null, sort: order, scale: { domain: order, range: ['#bab0ac', '#4c78a8'] } },
          },
        },
        { mark: { type: 'tick', color: '#1f2328', thickness: 2 }, encoding: { y: { field: 'permuted', type: 'quantitative' } } },
      ],
    },
    resolve: { scale: { y: 'independent' } },
  };
}

async function main() {
  const opts = parseArgs(NAME, 'Language x expert and topic x expert routing of an MoE LM trained on the multilingual fortunes, with mutual information vs an untrained model.');
  const startedAt = new Date().toISOString();
  const t0 = performance.now();
  const machine = machineInfo();
  const s = settings(opts.quick);
  if (opts.steps) s.train.steps = opts.steps;
  const { corpus, chosen } = buildCorpus(s.charsPerLanguage);
  const { tokenizer, stream } = lmData(corpus, { tokenizer: 'char', evalFraction: 0.1 });
  const modelConfig = { ...s.model, moeEvery: 1, moe: { numExperts: 8, router: { type: 'topk', k: 2 }, losses: { balance: 0.01, zLoss: 0.001 } } };
  const run = makeLMRun({ key: 'moe', label: 'MoE 8 experts top-2', model: modelConfig, train: s.train, stream });
  const E = 8;

  const tps = tokensPerStep(s.train);
  const routeTokensCount = s.routeBatches * tps;
  const estimate = (s.train.steps * tps + ((s.train.steps / s.train.evalEvery + 1) * s.train.evalBatches * tps + 2 * routeTokensCount) / 3) / ASSUMED_TOKENS_PER_SECOND;
  console.log(`${NAME}${opts.quick ? ' (quick)' : ''}: fortunes in ${LANGUAGES.join(', ')} (${LANGUAGES.map((l) => `${l} ${fmtInt(chosen[l].chars)} chars`).join(', ')}); char tokenizer, vocab ${tokenizer.vocabSize}`);
  console.log(`  ${fmtInt(stream.train.tokens.length)} train / ${fmtInt(stream.eval.tokens.length)} held-out tokens; model ${fmtM(run.parameters)} parameters (${fmtM(run.activeParameters)} active)`);
  console.log(`  ${s.train.steps} steps x ${tps} tokens, then routing ${fmtInt(routeTokensCount)} held-out tokens through the trained and the untrained model; expected about ${fmtDuration(estimate)} at ~${ASSUMED_TOKENS_PER_SECOND} tokens/s`);
  warnIfReferenceBackend(machine);

  run.trainer.evaluate();
  await trainInterleaved([run], s.train.steps);

  // Route held-out text: windows spread evenly over the held-out split, with per-token labels.
  const batches = stream.evalBatches(s.train.batchSize, s.train.seqLen, s.routeBatches);
  const initModel = new MoETransformerLM({ ...modelConfig, vocabSize: tokenizer.vocabSize }); // same seed: the trained model's starting point
  const routedTrained = routeTokens(run.model, batches);
  const routedInit = routeTokens(initModel, batches);
  const perLayer = (r) => r.layers.map((layer, j) => ({ layer, experts: r.experts[j] }));

  // Language codes for every routed token; topic codes for the English ones.
  const names = stream.labelNames;
  const langCode = names.map((n) => LANGUAGES.indexOf(languageOf(n)));
  const languages = Int32Array.from(routedTrained.labels, (l) => langCode[l]);
  const langResults = {
    trained: measure(perLayer(routedTrained), languages, LANGUAGES, routedTrained.tokens, E, 1),
    initialisation: measure(perLayer(routedInit), languages, LANGUAGES, routedInit.tokens, E, 1),
  };

  const enIdx = [];
  const topicTokenCounts = new Map();
  routedTrained.labels.forEach((l, i) => {
    const t = topicOf(names[l]);
    if (t !== null) topicTokenCounts.set(t, (topicTokenCounts.get(t) ?? 0) + 1);
  });
  const topics = [...topicTokenCounts].filter(([, n]) => n >= s.minTopicTokens).map(([t]) => t).sort();
  routedTrained.labels.forEach((l, i) => {
    if (topics.includes(topicOf(names[l]))) enIdx.push(i);
  });
  const topicCodes = Int32Array.from(enIdx, (i) => topics.indexOf(topicOf(names[routedTrained.labels[i]])));
  const pick = (r) => r.layers.map((layer, j) => ({ layer, experts: Int32Array.from(enIdx, (i) => r.experts[j][i]) }));
  const enTokens = Int32Array.from(enIdx, (i) => routedTrained.tokens[i]);
  const topicResults = topics.length >= 2
    ? { trained: measure(pick(routedTrained), topicCodes, topics, enTokens, E, 2), initialisation: measure(pick(routedInit), topicCodes, topics, enTokens, E, 2) }
    : null;

  prepareOutDir(opts.outDir);
  const charts = {};
  charts.languages = await writeChart(opts.outDir, 'language-expert.svg', heatmapSpec('Language × expert (trained)', `share of each language's held-out tokens whose top-1 expert is e, per MoE layer; white = uniform ${fmtPct(1 / E)}`, 'language', LANGUAGES, langResults.trained, E, true));
  charts.languagesInit = await writeChart(opts.outDir, 'language-expert-init.svg', heatmapSpec('Language × expert (same model at initialisation)', 'the untrained baseline: routing by character identity alone', 'language', LANGUAGES, langResults.initialisation, E, true));
  if (topicResults) {
    charts.topics = await writeChart(opts.outDir, 'topic-expert.svg', heatmapSpec('English topic × expert (trained)', `held-out English fortunes by topic file (topics with ≥ ${s.minTopicTokens} routed tokens); share of each topic's tokens per top-1 expert`, 'topic', topics, topicResults.trained, E, false));
  }
  const miRows = [];
  for (const [labels, res] of [['languages', langResults], ['English topics', topicResults]]) {
    if (!res) continue;
    for (const model of ['initialisation', 'trained']) {
      for (const m of res[model]) miRows.push({ labels, layer: m.layer, model, bits: m.mutualInformationBits, permuted: m.permutedMIBits });
    }
  }
  charts.mutualInformation = await writeChart(opts.outDir, 'mutual-information.svg', miBarSpec(miRows));

  const seconds = since(t0);
  const json = {
    experiment: NAME,
    quick: opts.quick,
    stepsOverride: opts.steps,
    command: opts.command,
    startedAt,
    durationSeconds: +seconds.toFixed(1),
    machine,
    data: {
      corpus: 'fortunes-multilingual (English documents labelled by topic from the fortunes corpus)',
      languages: LANGUAGES,
      chosen,
      tokenizer: tokenizer.name,
      vocabSize: tokenizer.vocabSize,
      trainTokens: stream.train.tokens.length,
      evalTokens: stream.eval.tokens.length,
      routedTokens: routedTrained.labels.length,
      routedTokensPerLanguage: Object.fromEntries(LANGUAGES.map((l, i) => [l, languages.filter((x) => x === i).length])),
      topics,
      minTopicTokens: s.minTopicTokens,
      routedTokensPerTopic: Object.fromEntries(topics.map((t) => [t, topicTokenCounts.get(t)])),
    },
    model: run.model.config,
    parameters: run.parameters,
    activeParameters: run.activeParameters,
    train: s.train,
    evalCurve: evalCurve(run.trainer.log),
    permutations: PERMUTATIONS,
    languages: langResults,
    topics: topicResults,
    charts,
  };
  writeJson(join(opts.outDir, 'results.json'), json);
  writeText(join(opts.outDir, 'README.md'), readme(json, opts, machine, seconds));
  console.log(`\n${miTable(json.languages)}\n\nwrote ${opts.outDir}`);
}

function miTable(res) {
  return mdTable(
    ['MoE layer', 'I(label; expert) trained', 'at initialisation', 'labels shuffled', 'normalised (trained)', 'I(label; expert | token) trained', 'at init.', 'shuffled within token', 'label from expert: accuracy (trained)', 'at init.', 'majority label'],
    res.trained.map((m, j) => {
      const i = res.initialisation[j];
      return [
        m.layer,
        fmt(m.mutualInformationBits, 3),
        fmt(i.mutualInformationBits, 3),
        fmt(m.permutedMIBits, 4),
        fmtPct(m.normalisedMI),
        fmt(m.conditionalMIGivenTokenBits, 3),
        fmt(i.conditionalMIGivenTokenBits, 3),
        fmt(m.permutedConditionalMIBits, 3),
        fmtPct(m.labelFromExpertAccuracy),
        fmtPct(i.labelFromExpertAccuracy),
        fmtPct(m.majorityAccuracy),
      ];
    }),
  );
}

function facts(res, what, E) {
  const out = [];
  const tr = res.trained, init = res.initialisation;
  const up = tr.filter((m, j) => m.mutualInformationBits > init[j].mutualInformationBits && m.mutualInformationBits > 2 * m.permutedMIBits);
  const best = tr.reduce((a, b) => (b.mutualInformationBits > a.mutualInformationBits ? b : a));
  const bestInit = init.find((m) => m.layer === best.layer);
  out.push(
    `${what}: in ${up.length} of ${tr.length} MoE layers the trained router carries more information about the label than the same router at initialisation (and more than twice the shuffled-label bias). ` +
      `The largest is layer ${best.layer}: ${fmt(best.mutualInformationBits, 3)} bits (${fmtPct(best.normalisedMI)} of the label entropy ${fmt(best.labelEntropyBits, 2)} bits) vs ${fmt(bestInit.mutualInformationBits, 3)} bits at initialisation; ` +
      `knowing only that layer's top-1 expert, the label is guessed right ${fmtPct(best.labelFromExpertAccuracy)} of the time (${fmtPct(best.majorityAccuracy)} by always guessing the commonest).`,
  );
  const condUp = tr.filter((m, j) => m.conditionalMIGivenTokenBits > init[j].conditionalMIGivenTokenBits && m.conditionalMIGivenTokenBits > 2 * m.permutedConditionalMIBits);
  out.push(
    `Given the token itself, the expert still tells the label apart beyond the within-token shuffle baseline in ${condUp.length} of ${tr.length} layers for the trained model ` +
      `(I(label; expert | token) up to ${fmt(Math.max(...tr.map((m) => m.conditionalMIGivenTokenBits)), 3)} bits vs up to ${fmt(Math.max(...init.map((m) => m.conditionalMIGivenTokenBits)), 3)} at initialisation): ` +
      (condUp.length > 0 ? 'the same character is routed differently depending on its context, not only by what character it is.' : 'no evidence here that the trained router uses context beyond the character itself.'),
  );
  if (up.length === 0) out.push(`So on these numbers, training did not make the ${what.toLowerCase()} more specialised than the random initial routing, which already sorts by character.`);
  return out;
}

function readme(json, opts, machine, seconds) {
  const E = 8;
  const lines = [readmeHeader('Expert specialisation: language × expert and topic × expert', opts, machine, json.startedAt, seconds)];
  const m = json.model;
  lines.push(
    '## Setup',
    '',
    `A character-level MoE language model (vocabulary ${json.data.vocabSize}, ${m.nLayers} layers all MoE, d_model ${m.dModel}, ${E} experts of width ${m.dFF}, top-2, balance loss 0.01; ${fmtM(json.parameters)} parameters) trained ${json.train.steps} steps of ${json.train.batchSize}×${json.train.seqLen} characters on the Debian fortunes in five languages, ` +
      `about ${fmtInt(json.data.chosen.en.chars)} characters each (a seeded choice of whole fortunes per language: ${json.data.languages.map((l) => `${l} ${json.data.chosen[l].documents} of ${json.data.chosen[l].of}`).join(', ')}). ` +
      'English fortunes are labelled by their topic file (the `fortunes` corpus: the same documents in the same order), the others by language. 10% of the fortunes of every label are held out.',
    '',
    `After training, ${fmtInt(json.data.routedTokens)} held-out characters (${json.data.languages.map((l) => `${l} ${fmtInt(json.data.routedTokensPerLanguage[l])}`).join(', ')}) are routed through the model, and, per MoE layer, the expert its router ranks first is counted per label. ` +
      'The baseline is the same model before training (same seed): a random router already separates scripts, since Cyrillic characters have their own embeddings, so specialisation means more than that.',
    '',
    'Measures, per layer: I(label; expert), the mutual information in bits between a token\'s label and its top-1 expert (0 = the expert says nothing about the language, log2(5) = 2.32 bits = it identifies it); the same with the labels shuffled over tokens (the estimate\'s bias, averaged over ' +
      `${json.permutations} shuffles); I(label; expert | token), the information left once the character itself is known (does the router use context?), with labels shuffled among occurrences of the same character as its baseline; and the accuracy of guessing the label from the expert alone.`,
    '',
    '## Languages',
    '',
    miTable(json.languages),
    '',
    '![language x expert](language-expert.svg)',
    '',
    '![language x expert at initialisation](language-expert-init.svg)',
    '',
  );
  if (json.topics) {
    lines.push(
      '## English topics',
      '',
      `The English held-out tokens only, labelled by the ${json.data.topics.length} topic files with at least ${fmtInt(json.data.minTopicTokens)} routed tokens (${json.data.topics.join(', ')}). For a character-level model topic should be a much weaker signal than language (the same alphabet and mostly the same words).`,
      '',
      miTable(json.topics),
      '',
      '![topic x expert](topic-expert.svg)',
      '',
    );
  }
  lines.push('![mutual information](mutual-information.svg)', '', '## What the numbers say', '');
  const f = facts(json.languages, 'Languages', E);
  // The most language-specific expert: the largest p(language | expert) over experts that get at least 2% of the routed tokens first.
  let best = null;
  for (const m of json.languages.trained) {
    const c = m.counts;
    const n = c.flat().reduce((a, b) => a + b, 0);
    for (let e = 0; e < E; e++) {
      const col = c.map((row) => row[e]);
      const total = col.reduce((a, b) => a + b, 0);
      if (total < 0.02 * n) continue;
      col.forEach((x, i) => {
        const purity = x / total;
        if (!best || purity > best.purity) best = { layer: m.layer, expert: e, language: json.data.languages[i], purity, expertShare: total / n, languageShare: c[i].reduce((a, b) => a + b, 0) / n };
      });
    }
  }
  if (best) {
    f.push(
      `The most language-specific expert (among experts that are first choice for at least 2% of tokens): layer ${best.layer}, expert ${best.expert}, first choice for ${fmtPct(best.expertShare)} of all routed tokens, ${fmtPct(best.purity)} of which are ${best.language} (${best.language} is ${fmtPct(best.languageShare)} of the routed tokens).`,
    );
  }
  if (json.topics) f.push(...facts(json.topics, 'English topics', E));
  f.push('One trained model and one seed; the routed tokens come from held-out fortunes never trained on.');
  lines.push(...f.map((x) => `- ${x}`), '');
  return lines.join('\n');
}

runMain(main);
