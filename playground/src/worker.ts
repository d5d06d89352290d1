/**
 * The training loop, in a Web Worker so the page never blocks: it trains in short slices
 * (~40 ms), posts each slice's step records, posts a task view a few times a second, and yields
 * between slices so pause/step/settings messages are handled at once.
 */
import type { MoELayer } from '../../src/moe/layer.js';
import { crossEntropy } from '../../src/ops/loss.js';
import { add } from '../../src/ops/elementwise.js';
import { AdamW } from '../../src/optim/adamw.js';
import { selectBackend } from './backend.js';
import { forward, reconfigureMoE, Trunk } from './model.js';
import type { FromWorker, StepRecord, ToWorker } from './protocol.js';
import { MODEL_SIZES, moeConfig, needsReset, type Settings } from './settings.js';
import { charTask, imageTask, planeTask, rng, type Task } from './tasks.js';

const ctx = self as unknown as { postMessage(m: FromWorker, transfer?: Transferable[]): void; onmessage: ((e: MessageEvent<ToWorker>) => void) | null };
const post = (m: FromWorker): void => ctx.postMessage(m);

const SLICE_MS = 40;
const VIEW_EVERY_MS = 400;

let backendName = '';
let settings: Settings;
let version = 0;
let task: Task;
let trunk: Trunk;
let moe: MoELayer;
let trunkOpt: AdamW;
let moeOpt: AdamW;
let random: () => number;
let step = 0;
let running = false;
let pendingSteps = 0;
let scheduled = false;
let lastView = 0;
const tasks = new Map<string, Task>();

async function loadTask(s: Settings): Promise<Task> {
  const key = s.task === 'plane' ? `plane:${s.seed}` : s.task;
  const cached = tasks.get(key);
  if (cached) return cached;
  let t: Task;
  if (s.task === 'char') {
    const res = await fetch(new URL('../data/moby-dick.txt', self.location.href));
    if (!res.ok) throw new Error(`data/moby-dick.txt: HTTP ${res.status}`);
    t = charTask(await res.text());
  } else if (s.task === 'images') {
    const [meta, bin] = await Promise.all([
      fetch(new URL('../data/images.json', self.location.href)).then((r) => r.json() as Promise<{ count: number; side: number; classes: string[]; source: string }>),
      fetch(new URL('../data/images.bin', self.location.href)).then((r) => r.arrayBuffer()),
    ]);
    const bytes = new Uint8Array(bin);
    if (bytes.length !== meta.count * (1 + meta.side * meta.side)) throw new Error(`data/images.bin: ${bytes.length} bytes, expected ${meta.count * (1 + meta.side * meta.side)}`);
    t = imageTask({ labels: bytes.subarray(0, meta.count), pixels: bytes.subarray(meta.count), side: meta.side, classes: meta.classes, source: meta.source });
  } else t = planeTask(s.seed);
  tasks.set(key, t);
  return t;
}

function moeOptimizer(): AdamW {
  return new AdamW(moe.parameters(), { lr: settings.lr, weightDecay: 0 });
}

async function reset(s: Settings, v: number): Promise<void> {
  // Load first, then swap everything at once: the loop must never see a half-reset model, and
  // steps still run by the old model keep the old settings version.
  const t = await loadTask(s);
  version = v;
  settings = s;
  task = t;
  trunk = new Trunk({ ...task.trunkSpec, dModel: MODEL_SIZES[s.task].dModel }, s.seed);
  moe = reconfigureMoE(null, moeConfig(s));
  trunkOpt = new AdamW(trunk.parameters(), { lr: s.lr, weightDecay: 0 });
  moeOpt = moeOptimizer();
  random = rng(s.seed * 7919 + 1);
  step = 0;
  lastView = 0;
  post({ type: 'ready', backend: backendName, params: trunk.numParameters() + moe.numParameters(), version });
  postView();
}

/** Apply settings that keep the model: the learning rate in place, router changes by a re-configured MoE layer. */
function applyLive(s: Settings, v: number): void {
  const old = settings;
  version = v;
  settings = s;
  for (const opt of [trunkOpt, moeOpt]) for (const g of opt.paramGroups) g.lr = s.lr;
  const a = JSON.stringify(moeConfig(old)), b = JSON.stringify(moeConfig(s));
  if (a !== b) {
    moe = reconfigureMoE(moe, moeConfig(s));
    moeOpt = moeOptimizer();
  }
}

function trainStep(): StepRecord {
  const { batch } = MODEL_SIZES[settings.task];
  const b = task.batch(random, batch);
  const r = forward(trunk, moe, b.input);
  const ce = crossEntropy(r.logits, b.targets);
  add(ce, r.moe.auxLoss).backward();
  trunkOpt.step();
  moeOpt.step();
  trunk.zeroGrad();
  moe.zeroGrad();
  moe.updateBiasBalancing();
  step++;
  const st = r.moe.stats;
  const total = st.tokensPerExpert.reduce((x, y) => x + y, 0);
  return {
    step,
    loss: ce.item(),
    aux: r.moe.auxLoss.item(),
    dropFraction: st.dropFraction,
    droppedTokens: st.droppedTokens,
    tokens: batch,
    routerEntropy: st.routerEntropy,
    loadImbalance: st.loadImbalance,
    load: st.tokensPerExpert.map((v) => (total > 0 ? v / total : 0)),
    version,
  };
}

function postView(): void {
  lastView = performance.now();
  const view = task.view(trunk, moe);
  post({ type: 'view', view, step });
}

function schedule(): void {
  if (scheduled) return;
  scheduled = true;
  setTimeout(loop, 0);
}

function loop(): void {
  scheduled = false;
  if (!running && pendingSteps === 0) return;
  const t0 = performance.now();
  const records: StepRecord[] = [];
  try {
    while (performance.now() - t0 < SLICE_MS && (running || pendingSteps > 0)) {
      records.push(trainStep());
      if (pendingSteps > 0) pendingSteps--;
    }
    const dt = (performance.now() - t0) / 1000;
    post({ type: 'steps', records, stepsPerSecond: records.length / Math.max(dt, 1e-6), running });
    if (performance.now() - lastView > VIEW_EVERY_MS || (!running && pendingSteps === 0)) postView();
  } catch (e) {
    running = false;
    pendingSteps = 0;
    post({ type: 'error', message: (e as Error).message });
    return;
  }
  schedule();
}

/** Messages are handled one at a time, in order, even when one awaits (a dataset fetch, a backend start). */
let queue: Promise<void> = Promise.resolve();

ctx.onmessage = (e: MessageEvent<ToWorker>) => {
  const m = e.data;
  queue = queue.then(async () => {
    try {
      switch (m.type) {
        case 'init':
          backendName = await selectBackend(m.settings.backend);
          await reset(m.settings, version);
          running = true;
          schedule();
          break;
        case 'reset':
          await reset(m.settings, m.version);
          schedule();
          break;
        case 'settings':
          // Tensors are plain typed arrays, so the engine can change backend between two steps.
          if (m.settings.backend !== settings.backend) {
            backendName = await selectBackend(m.settings.backend);
            post({ type: 'backend', backend: backendName });
          }
          if (needsReset(settings, m.settings)) await reset(m.settings, m.version);
          else applyLive(m.settings, m.version);
          if (!running) postView();
          break;
        case 'run':
          running = true;
          schedule();
          break;
        case 'pause':
          running = false;
          break;
        case 'step':
          pendingSteps += m.steps;
          schedule();
          break;
      }
    } catch (err) {
      post({ type: 'error', message: (err as Error).message });
    }
  });
};
