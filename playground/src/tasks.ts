/**
 * The three built-in tasks: batches for training and the per-task view (text panel, 2-D plane,
 * image classes) computed from an evaluation forward pass. Runs in the Worker.
 */
import type { MoELayer, MoEOutput } from '../../src/moe/layer.js';
import { noGrad } from '../../src/tensor/autodiff.js';
import { Tensor } from '../../src/tensor/tensor.js';
import { forward, type ModelInput, type Trunk } from './model.js';
import type { ImageView, PlaneView, TaskView, TextView } from './protocol.js';
import type { TaskName } from './settings.js';

/** mulberry32: a small seeded generator for batches (the engine's Generator seeds the weights). */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface Batch {
  input: ModelInput;
  targets: Int32Array;
}

export interface Task {
  name: TaskName;
  classes: number;
  trunkSpec: { inDim: number; classes: number; vocab?: number; context?: number; embedDim?: number };
  batch(random: () => number, size: number): Batch;
  view(trunk: Trunk, moe: MoELayer): TaskView;
}

/** Router probability per (token, expert) and each token's best kept expert (-1 if all dropped). */
export function routingPerToken(out: MoEOutput, T: number, E: number, moe: MoELayer): { probs: Float32Array; primary: Int8Array; kept: Int32Array } {
  const probs = new Float32Array(T * E);
  const primary = new Int8Array(T).fill(-1);
  const kept = new Int32Array(T);
  const logits = out.routerLogits?.f32;
  if (!logits) return { probs, primary, kept };
  const r = moe.config.router;
  const cols = logits.length / T;
  // Row softmax: over experts (top-k, expert choice) or over the E·p slots (Soft MoE's combine weights).
  for (let t = 0; t < T; t++) {
    let m = -Infinity;
    for (let c = 0; c < cols; c++) m = Math.max(m, logits[t * cols + c]);
    let s = 0;
    for (let c = 0; c < cols; c++) s += Math.exp(logits[t * cols + c] - m);
    for (let c = 0; c < cols; c++) probs[t * E + Math.floor((c * E) / cols)] += Math.exp(logits[t * cols + c] - m) / s;
  }
  if (r.type === 'soft') {
    for (let t = 0; t < T; t++) {
      let best = 0;
      for (let e = 1; e < E; e++) if (probs[t * E + e] > probs[t * E + best]) best = e;
      primary[t] = best;
      kept[t] = (1 << E) - 1; // every expert sees a mix of every token
    }
    return { probs, primary, kept };
  }
  const plan = out.plan;
  if (!plan) return { probs, primary, kept };
  const bestProb = new Float32Array(T).fill(-1);
  if (r.type === 'topk' && out.routing) {
    const k = out.routing.k;
    for (const w of plan.weightIndex) {
      const t = Math.floor(w / k), e = out.routing.experts[w];
      kept[t] |= 1 << e;
      if (probs[t * E + e] > bestProb[t]) { bestProb[t] = probs[t * E + e]; primary[t] = e; }
    }
  } else {
    for (const w of plan.weightIndex) {
      const t = Math.floor(w / E), e = w % E;
      kept[t] |= 1 << e;
      if (probs[t * E + e] > bestProb[t]) { bestProb[t] = probs[t * E + e]; primary[t] = e; }
    }
  }
  return { probs, primary, kept };
}

function argmaxRows(x: Float32Array, rows: number, cols: number): Uint8Array {
  const out = new Uint8Array(rows);
  for (let r = 0; r < rows; r++) {
    let b = 0;
    for (let c = 1; c < cols; c++) if (x[r * cols + c] > x[r * cols + b]) b = c;
    out[r] = b;
  }
  return out;
}

function evalForward(trunk: Trunk, moe: MoELayer, input: ModelInput): { logits: Float32Array; out: MoEOutput } {
  trunk.eval();
  moe.eval();
  try {
    return noGrad(() => {
      const r = forward(trunk, moe, input);
      return { logits: r.logits.f32, out: r.moe };
    });
  } finally {
    trunk.train();
    moe.train();
  }
}

/** Character LM on a Moby-Dick excerpt: predict each character from the previous CONTEXT ones. */
export function charTask(text: string): Task {
  const CONTEXT = 8;
  const chars = [...new Set(text)].sort();
  const index = new Map(chars.map((c, i) => [c, i]));
  const ids = Int32Array.from(text, (c) => index.get(c) as number);
  const split = Math.floor(ids.length * 0.9);
  const panelStart = split + 1, panelLength = 320;
  const windows = (starts: number[]): Batch => {
    const ctx = new Int32Array(starts.length * CONTEXT), targets = new Int32Array(starts.length);
    starts.forEach((s, b) => {
      ctx.set(ids.subarray(s, s + CONTEXT), b * CONTEXT);
      targets[b] = ids[s + CONTEXT];
    });
    return { input: { kind: 'ids', ids: ctx, batch: starts.length }, targets };
  };
  return {
    name: 'char',
    classes: chars.length,
    trunkSpec: { inDim: 0, classes: chars.length, vocab: chars.length, context: CONTEXT, embedDim: 8 },
    batch(random, size) {
      return windows(Array.from({ length: size }, () => Math.floor(random() * (split - CONTEXT - 1))));
    },
    view(trunk, moe): TextView {
      const starts = Array.from({ length: panelLength }, (_, i) => panelStart + i - CONTEXT);
      const b = windows(starts);
      const { out } = evalForward(trunk, moe, b.input);
      const E = moe.config.numExperts;
      const r = routingPerToken(out, panelLength, E, moe);
      const panel = chars.length ? Array.from(b.targets, (t) => chars[t]).join('') : '';
      return { kind: 'char', text: panel, primary: r.primary, probs: r.probs, kept: r.kept, experts: E };
    },
  };
}

/** 2-D toy classification: points in [-1, 1]² labelled by a 3×3 checkerboard. */
export function planeTask(seed: number): Task {
  const label = (x: number, y: number): number => (Math.floor((x + 1) * 1.5) + Math.floor((y + 1) * 1.5)) % 2;
  const random = rng(seed + 17);
  const nPoints = 300;
  const points = new Float32Array(nPoints * 2), labels = new Uint8Array(nPoints);
  for (let i = 0; i < nPoints; i++) {
    points[2 * i] = random() * 2 - 1;
    points[2 * i + 1] = random() * 2 - 1;
    labels[i] = label(points[2 * i], points[2 * i + 1]);
  }
  const G = 48;
  const grid = new Float32Array(G * G * 2);
  for (let r = 0; r < G; r++) for (let c = 0; c < G; c++) {
    grid[2 * (r * G + c)] = ((c + 0.5) / G) * 2 - 1;
    grid[2 * (r * G + c) + 1] = 1 - ((r + 0.5) / G) * 2;
  }
  return {
    name: 'plane',
    classes: 2,
    trunkSpec: { inDim: 2, classes: 2 },
    batch(rand, size) {
      const x = new Float32Array(size * 2), targets = new Int32Array(size);
      for (let i = 0; i < size; i++) {
        x[2 * i] = rand() * 2 - 1;
        x[2 * i + 1] = rand() * 2 - 1;
        targets[i] = label(x[2 * i], x[2 * i + 1]);
      }
      return { input: { kind: 'features', x: Tensor.from(x, [size, 2]) }, targets };
    },
    view(trunk, moe): PlaneView {
      const E = moe.config.numExperts;
      const { logits, out } = evalForward(trunk, moe, { kind: 'features', x: Tensor.from(grid, [G * G, 2]) });
      const r = routingPerToken(out, G * G, E, moe);
      // The region map shows the router's choice (its highest-probability expert), before capacity.
      const winner = argmaxRows(r.probs, G * G, E);
      const predicted = argmaxRows(logits, G * G, 2);
      const ev = evalForward(trunk, moe, { kind: 'features', x: Tensor.from(points, [nPoints, 2]) });
      const pred = argmaxRows(ev.logits, nPoints, 2);
      let right = 0;
      for (let i = 0; i < nPoints; i++) if (pred[i] === labels[i]) right++;
      return { kind: 'plane', grid: G, winner, predicted, points, labels, accuracy: right / nPoints, experts: E };
    },
  };
}

/** Small images (Fashion-MNIST 14×14, or the synthetic set): class from pixels. */
export function imageTask(data: { pixels: Uint8Array; labels: Uint8Array; side: number; classes: string[]; source: string }): Task {
  const px = data.side * data.side;
  const n = data.labels.length;
  const nTrain = Math.floor(n * 0.8);
  const features = (idx: number[]): Tensor => {
    const x = new Float32Array(idx.length * px);
    idx.forEach((i, b) => {
      for (let p = 0; p < px; p++) x[b * px + p] = data.pixels[i * px + p] / 255;
    });
    return Tensor.from(x, [idx.length, px]);
  };
  const held = Array.from({ length: n - nTrain }, (_, i) => nTrain + i);
  const thumbIdx = held.slice(0, 16);
  const thumbs = new Uint8Array(thumbIdx.length * px);
  thumbIdx.forEach((i, b) => thumbs.set(data.pixels.subarray(i * px, (i + 1) * px), b * px));
  const C = data.classes.length;
  return {
    name: 'images',
    classes: C,
    trunkSpec: { inDim: px, classes: C },
    batch(random, size) {
      const idx = Array.from({ length: size }, () => Math.floor(random() * nTrain));
      return { input: { kind: 'features', x: features(idx) }, targets: Int32Array.from(idx, (i) => data.labels[i]) };
    },
    view(trunk, moe): ImageView {
      const E = moe.config.numExperts;
      const { logits, out } = evalForward(trunk, moe, { kind: 'features', x: features(held) });
      const r = routingPerToken(out, held.length, E, moe);
      const counts = new Float32Array(C * E);
      const pred = argmaxRows(logits, held.length, C);
      let right = 0;
      held.forEach((i, b) => {
        const c = data.labels[i];
        if (pred[b] === c) right++;
        for (let e = 0; e < E; e++) if (r.kept[b] & (1 << e)) counts[c * E + e] += out.routing || moe.config.router.type !== 'soft' ? 1 : r.probs[b * E + e];
      });
      for (let c = 0; c < C; c++) {
        let s = 0;
        for (let e = 0; e < E; e++) s += counts[c * E + e];
        if (s > 0) for (let e = 0; e < E; e++) counts[c * E + e] /= s;
      }
      const thumbExpert = Int8Array.from(thumbIdx, (_, b) => r.primary[b]);
      return { kind: 'images', classes: data.classes, classByExpert: counts, thumbs, thumbExpert, side: data.side, accuracy: right / held.length, experts: E, source: data.source };
    },
  };
}
