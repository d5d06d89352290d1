// Training several runs side by side, and reading times and losses back out of their RunLogs.
//
// The runs of one experiment are trained interleaved: one optimizer step of each in turn. On a
// shared machine any background load then slows every run alike, so their throughputs and
// equal-wall-clock losses stay comparable. Each run's time is its own steps' time (the
// Trainer's per-step forward + backward + optimizer seconds), never the others'.
import { noGrad } from '../../dist/index.js';
import { fmt, fmtDuration, progressPrinter, since } from './common.mjs';

/**
 * Wrap `model.loss` so that every training forward records, per MoE layer, how many of the
 * step's token→expert assignments each expert was *chosen* for (before capacity drops), from
 * out.moe[i].out.routing. Evaluation forwards (model in eval mode) are not recorded.
 * Returns { steps }: steps[s][layerIdx] = counts per expert (token-choice routers only).
 */
export function captureRouting(model) {
  const record = { steps: [], layers: null };
  const original = model.loss.bind(model);
  model.loss = (input, target) => {
    const res = original(input, target);
    if (model.training) {
      const perLayer = [];
      for (const { layer, out } of res.out.moe) {
        const r = out.routing;
        if (!r) continue;
        const E = out.stats.tokensPerExpert.length;
        const counts = new Array(E).fill(0);
        for (let i = 0; i < r.experts.length; i++) counts[r.experts[i]]++;
        perLayer.push({ layer, counts });
      }
      record.layers ??= perLayer.map((p) => p.layer);
      record.steps.push(perLayer.map((p) => p.counts));
    }
    return res;
  };
  return record;
}

/**
 * Train runs [{ key, trainer }] for `steps` steps each, one step of each in turn (see module
 * doc). Prints a progress line about every 15 s; `unit` names what tokens/s counts.
 */
export async function trainInterleaved(runs, steps, { unit = 'tok/s' } = {}) {
  const t0 = performance.now();
  const print = progressPrinter(15);
  for (let s = 1; s <= steps; s++) {
    for (const r of runs) await r.trainer.run(1);
    const elapsed = since(t0);
    const eta = (elapsed / s) * (steps - s);
    const parts = runs.map((r) => {
      const log = r.trainer.log;
      const st = log.steps.at(-1);
      const ev = log.evals.at(-1);
      return `${r.key} loss ${fmt(st.loss, 3)}${ev ? ` (eval ${fmt(ev.loss, 3)})` : ''} ${Math.round(st.tokensPerSecond)} ${unit}`;
    });
    print(`  step ${s}/${steps}  ${fmtDuration(elapsed)} elapsed, ~${fmtDuration(eta)} left | ${parts.join(' | ')}`, s === steps || s === 1);
  }
  // Every run ends with an evaluation after its last step (the periodic ones may not fall on it).
  for (const r of runs) if (r.trainer.log.evals.at(-1)?.step !== r.trainer.completedSteps) r.trainer.evaluate();
  return since(t0);
}

/** Cumulative training seconds after each step (index = step number; [0] = 0), from a RunLog. */
export function cumulativeStepSeconds(log) {
  const out = [0];
  for (const s of [...log.steps].sort((a, b) => a.step - b.step)) {
    const dt = s.tokensPerSecond > 0 ? s.tokens / s.tokensPerSecond : 0;
    out[s.step] = out[out.length - 1] + dt;
  }
  return out;
}

/** Throughput over the steps after `skip` warm-up steps: Σ tokens / Σ step seconds. */
export function throughput(log, skip = 3) {
  const steps = log.steps.filter((s) => s.step > Math.min(skip, log.steps.length - 1));
  let tokens = 0, secs = 0;
  for (const s of steps) {
    if (!(s.tokensPerSecond > 0)) continue;
    tokens += s.tokens;
    secs += s.tokens / s.tokensPerSecond;
  }
  return secs > 0 ? tokens / secs : NaN;
}

/** Evaluations with their cumulative training seconds: [{ step, loss, accuracy?, trainSeconds }]. */
export function evalCurve(log) {
  const cum = cumulativeStepSeconds(log);
  return [...log.evals]
    .sort((a, b) => a.step - b.step)
    .map((e) => {
      const p = { step: e.step, loss: e.loss, trainSeconds: +(cum[e.step] ?? NaN).toFixed(3) };
      if (e.accuracy !== undefined) p.accuracy = e.accuracy;
      return p;
    });
}

/**
 * A curve's value at training time `t`: the latest evaluation at or before t ('latest'), and the
 * linear interpolation between the evaluations around t ('interpolated'; the latest when t is past
 * the end). `field` is 'loss' or 'accuracy'.
 */
export function valueAtTime(curve, t, field = 'loss') {
  let latest = null, next = null;
  for (const p of curve) {
    if (p.trainSeconds <= t + 1e-9) latest = p;
    else if (next === null) next = p;
  }
  if (latest === null) return { latest: null, latestStep: null, interpolated: null };
  let interpolated = latest[field];
  if (next !== null && next.trainSeconds > latest.trainSeconds) {
    const w = (t - latest.trainSeconds) / (next.trainSeconds - latest.trainSeconds);
    interpolated = latest[field] + w * (next[field] - latest[field]);
  }
  return { latest: latest[field], latestStep: latest.step, interpolated };
}

/**
 * Per-batch mean losses of `model` over `batches` (eval mode, no gradients): for paired
 * comparisons of runs evaluated on the same batches.
 */
export function perBatchLosses(model, batches) {
  const out = [];
  const was = model.training;
  model.eval();
  try {
    noGrad(() => {
      for (const b of batches) out.push(model.loss(b.input, b.target).loss.item());
    });
  } finally {
    model.train(was);
  }
  return out;
}

/** Mean and standard error of the paired differences a[i] − b[i]. */
export function pairedDifference(a, b) {
  const d = a.map((x, i) => x - b[i]);
  const n = d.length;
  const m = d.reduce((s, x) => s + x, 0) / n;
  const v = n > 1 ? d.reduce((s, x) => s + (x - m) ** 2, 0) / (n - 1) : NaN;
  return { mean: m, stderr: Math.sqrt(v / n), n };
}
