/** Terminal summaries of a run: routing per layer, sample text coloured by expert. */
import type { RoutingSample, RunLog } from '../train/metrics.js';
import { loadSparkline } from './common.js';

const COLOURS = [31, 32, 33, 34, 35, 36, 91, 92, 93, 94, 95, 96];

/** ANSI-colour each token of a routing sample by its top-1 expert in one layer. */
export function colourByExpert(sample: RoutingSample, layerIdx = 0, useColour = !!process.stdout.isTTY): string {
  const layer = sample.layers[layerIdx];
  if (!layer) return sample.tokens.join('');
  return sample.tokens
    .map((tok, t) => {
      const e = layer.experts[t]?.[0] ?? 0;
      const shown = tok.replace(/\\n/g, '↵');
      return useColour ? `\x1b[${COLOURS[e % COLOURS.length]}m${shown}\x1b[0m` : `${shown}[${e}]`;
    })
    .join('');
}

/** Per-layer expert load averaged over the last quarter of training, as percentages, with drops and entropy. */
export function routingSummary(log: RunLog): string[] {
  const steps = log.steps;
  if (steps.length === 0 || steps[0].moe.length === 0) return ['dense model: no routing'];
  const tail = steps.slice(Math.floor(steps.length * 0.75));
  const lines: string[] = [];
  for (let li = 0; li < steps[0].moe.length; li++) {
    const layer = steps[0].moe[li].layer;
    const E = steps[0].moe[li].tokensPerExpert.length;
    const load = new Array<number>(E).fill(0);
    let drop = 0, ent = 0;
    for (const s of tail) {
      const m = s.moe[li];
      m.tokensPerExpert.forEach((v, e) => (load[e] += v));
      drop += m.dropFraction;
      ent += m.routerEntropy;
    }
    const total = load.reduce((a, b) => a + b, 0) || 1;
    const pct = load.map((v) => `${((100 * v) / total).toFixed(0).padStart(2)}%`).join(' ');
    lines.push(
      `layer ${layer}: ${loadSparkline(load)}  ${pct}  | drop ${((100 * drop) / tail.length).toFixed(1)}% | entropy ${(ent / tail.length).toFixed(2)} nats (max ${Math.log(E).toFixed(2)})`,
    );
  }
  return lines;
}
