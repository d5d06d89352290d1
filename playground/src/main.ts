/**
 * The playground's UI thread: wires the knobs (native, labelled controls) to the training Worker,
 * keeps the settings in the URL, and redraws the views once per animation frame when new numbers
 * arrive. It imports no engine code: the engine lives in the Worker bundle only.
 */
import { barChart, fit, heatmap, lineChart, scratchCanvas } from './charts.js';
import { DROPPED_COLOR, EXPERT_COLORS, expertRgb, textColorOn } from './palette.js';
import type { FromWorker, ImageView, PlaneView, StepRecord, TaskView, TextView, ToWorker } from './protocol.js';
import { DEFAULTS, SOFT_SLOTS, settingsFromQuery, settingsToQuery, SettingsError, validateSettings, type Settings } from './settings.js';

const $ = <T extends HTMLElement>(id: string): T => {
  const el = document.getElementById(id);
  if (!el) throw new Error(`#${id} missing from index.html`);
  return el as T;
};

const MAX_HISTORY = 50_000;
const HEATMAP_COLUMNS = 120;

const state = {
  settings: { ...DEFAULTS } as Settings,
  version: 0,
  running: true,
  backend: '',
  params: 0,
  stepsPerSecond: 0,
  history: [] as StepRecord[],
  /** Index into history where the current model (last reset) starts. */
  view: null as TaskView | null,
  viewStep: 0,
  dirty: true,
  viewDirty: true,
  firstStepAt: 0,
};

const worker = new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
const send = (m: ToWorker): void => worker.postMessage(m);

// ---- knobs -------------------------------------------------------------------------------------

const form = $<HTMLFormElement>('knobs');
const input = <T extends HTMLInputElement | HTMLSelectElement>(name: string): T => $<T>(name);
const knobs = {
  task: input<HTMLSelectElement>('task'),
  experts: input<HTMLSelectElement>('experts'),
  seed: input<HTMLInputElement>('seed'),
  backend: input<HTMLSelectElement>('backend'),
  lr: input<HTMLInputElement>('lr'),
  router: input<HTMLSelectElement>('router'),
  k: input<HTMLInputElement>('k'),
  capacity: input<HTMLInputElement>('capacity'),
  dropless: input<HTMLInputElement>('dropless'),
  dropPolicy: input<HTMLSelectElement>('dropPolicy'),
  noise: input<HTMLSelectElement>('noise'),
  eps: input<HTMLInputElement>('eps'),
  balance: input<HTMLInputElement>('balance'),
  zLoss: input<HTMLInputElement>('zLoss'),
  bias: input<HTMLInputElement>('bias'),
};
/** The last capacity factor the slider held, restored when "dropless" is unticked. */
let lastCapacity = 1.25;

function showSettings(s: Settings): void {
  knobs.task.value = s.task;
  knobs.experts.value = String(s.experts);
  knobs.seed.value = String(s.seed);
  knobs.backend.value = s.backend;
  knobs.lr.value = String(s.lr);
  knobs.router.value = s.router;
  knobs.k.value = String(s.k);
  knobs.k.max = String(Math.min(4, s.experts));
  if (s.capacity > 0) lastCapacity = s.capacity;
  knobs.capacity.value = String(s.capacity > 0 ? s.capacity : lastCapacity);
  knobs.dropless.checked = s.capacity === 0;
  knobs.dropPolicy.value = s.dropPolicy;
  knobs.noise.value = s.noise;
  knobs.eps.value = String(s.eps);
  knobs.balance.value = String(s.balance);
  knobs.zLoss.value = String(s.zLoss);
  knobs.bias.value = String(s.bias);
  $('capacity-value').textContent = s.router === 'soft' ? 'n/a' : s.capacity === 0 ? 'off' : Number(s.capacity).toFixed(2);
  $('eps-value').textContent = Number(s.eps).toFixed(2);
  // Knobs that mean nothing for this router are disabled (and say so to assistive technology).
  const tokenChoice = s.router === 'topk' || s.router === 'switch';
  knobs.k.disabled = s.router !== 'topk';
  knobs.capacity.disabled = s.router === 'soft' || (s.router === 'topk' && s.capacity === 0);
  knobs.dropless.disabled = s.router !== 'topk';
  knobs.dropPolicy.disabled = !tokenChoice || s.capacity === 0;
  knobs.noise.disabled = !tokenChoice;
  knobs.eps.disabled = !tokenChoice || s.noise !== 'jitter';
  knobs.balance.disabled = s.router === 'soft';
  knobs.bias.disabled = !tokenChoice;
}

function readSettings(): Settings {
  const num = (el: HTMLInputElement | HTMLSelectElement): number => (el.value.trim() === '' ? NaN : Number(el.value));
  const router = knobs.router.value as Settings['router'];
  let capacity = knobs.dropless.checked && router === 'topk' ? 0 : num(knobs.capacity);
  if (router !== 'topk' && knobs.dropless.checked) capacity = lastCapacity;
  return {
    task: knobs.task.value as Settings['task'],
    router,
    k: num(knobs.k),
    experts: num(knobs.experts),
    capacity,
    dropPolicy: knobs.dropPolicy.value as Settings['dropPolicy'],
    noise: knobs.noise.value as Settings['noise'],
    eps: num(knobs.eps),
    balance: router === 'soft' ? state.settings.balance : num(knobs.balance),
    zLoss: num(knobs.zLoss),
    bias: num(knobs.bias),
    lr: num(knobs.lr),
    seed: num(knobs.seed),
    backend: knobs.backend.value as Settings['backend'],
  };
}

function showErrors(errors: string[]): void {
  const el = $('errors');
  el.hidden = errors.length === 0;
  el.textContent = errors.join('; ');
}

function onKnob(): void {
  let next = readSettings();
  // Switch needs a capacity; so does expert choice. Coming from dropless top-k, start from Switch's 1.25.
  if (next.router !== 'topk' && next.router !== 'soft' && !(next.capacity > 0)) next.capacity = lastCapacity;
  if (next.k > next.experts) next.k = next.experts;
  try {
    next = validateSettings(next);
  } catch (e) {
    if (!(e instanceof SettingsError)) throw e;
    showErrors([e.message]);
    return;
  }
  showErrors([]);
  const structural = next.task !== state.settings.task || next.experts !== state.settings.experts || next.seed !== state.settings.seed;
  state.settings = next;
  state.version++;
  if (structural) resetHistory();
  showSettings(next);
  history.replaceState(null, '', `${location.pathname}${settingsToQuery(next) ? `?${settingsToQuery(next)}` : ''}`);
  send({ type: 'settings', settings: next, version: state.version });
  state.dirty = true;
}

form.addEventListener('change', onKnob);
// Sliders update their number while dragging; the model changes when the value is let go ('change').
for (const el of [knobs.capacity, knobs.eps]) {
  el.addEventListener('input', () => {
    $('capacity-value').textContent = knobs.dropless.checked ? 'off' : Number(knobs.capacity.value).toFixed(2);
    $('eps-value').textContent = Number(knobs.eps.value).toFixed(2);
  });
}

// ---- toolbar ------------------------------------------------------------------------------------

const runButton = $<HTMLButtonElement>('run');
function setRunning(on: boolean): void {
  state.running = on;
  runButton.textContent = on ? 'Pause' : 'Run';
  runButton.setAttribute('aria-pressed', String(on));
  send({ type: on ? 'run' : 'pause' });
}
runButton.addEventListener('click', () => setRunning(!state.running));
$('step').addEventListener('click', () => {
  if (state.running) setRunning(false);
  send({ type: 'step', steps: 1 });
});
$('reset').addEventListener('click', () => {
  state.version++;
  resetHistory();
  send({ type: 'reset', settings: state.settings, version: state.version });
});
$('share').addEventListener('click', () => {
  const url = location.href;
  $('share-url').textContent = url;
  void navigator.clipboard?.writeText(url).then(
    () => ($('share-url').textContent = `Copied: ${url}`),
    () => undefined,
  );
});

/** Per-step chart series, appended as records arrive (so a frame does not re-derive them from the history). */
const series = { loss: [] as number[], lossEma: [] as number[], drop: [] as number[], entropy: [] as number[] };
let lossEma = NaN;

/** Settings version of the last reset: older step records belong to the previous model. */
let resetVersion = 0;

function resetHistory(): void {
  resetVersion = state.version;
  state.history = [];
  for (const a of Object.values(series)) a.length = 0;
  lossEma = NaN;
  state.view = null;
  state.dirty = true;
  state.viewDirty = true;
}

// ---- worker messages ---------------------------------------------------------------------------

worker.onmessage = (e: MessageEvent<FromWorker>) => {
  const m = e.data;
  if (m.type === 'ready') {
    state.backend = m.backend;
    state.params = m.params;
    if (m.version === state.version) resetHistory();
  } else if (m.type === 'backend') {
    state.backend = m.backend;
  } else if (m.type === 'steps') {
    if (!state.firstStepAt && m.records.length) state.firstStepAt = performance.now();
    for (const r of m.records) {
      if (r.version < resetVersion) continue; // a step of the model before the last reset, still in flight
      state.history.push(r);
      series.loss.push(r.loss);
      lossEma = Number.isFinite(lossEma) ? lossEma + 0.05 * (r.loss - lossEma) : r.loss;
      series.lossEma.push(lossEma);
      series.drop.push(r.dropFraction);
      series.entropy.push(r.routerEntropy);
    }
    if (state.history.length > MAX_HISTORY) {
      const extra = state.history.length - MAX_HISTORY;
      state.history.splice(0, extra);
      for (const a of Object.values(series)) a.splice(0, extra);
    }
    if (m.records.length) state.stepsPerSecond = state.stepsPerSecond ? 0.8 * state.stepsPerSecond + 0.2 * m.stepsPerSecond : m.stepsPerSecond;
  } else if (m.type === 'view') {
    state.view = m.view;
    state.viewStep = m.step;
    state.viewDirty = true;
  } else if (m.type === 'error') {
    showErrors([`training stopped: ${m.message}`]);
    setRunning(false);
  }
  state.dirty = true;
};
worker.onerror = (e) => showErrors([`worker: ${e.message}`]);

// ---- drawing -----------------------------------------------------------------------------------

/** Mean of the last ≤ n records run with the current settings (so a knob change shows at once). */
function recent(n: number, f: (r: StepRecord) => number): number {
  let s = 0, c = 0;
  for (let i = state.history.length - 1; i >= 0 && c < n; i--) {
    const r = state.history[i];
    if (r.version !== state.version) break;
    s += f(r);
    c++;
  }
  return c ? s / c : NaN;
}

function drawCharts(): void {
  const h = state.history;
  const E = state.settings.experts;
  lineChart($<HTMLCanvasElement>('chart-loss'), [
    { values: series.loss, color: '#bbbbbb', width: 1 },
    { values: series.lossEma, color: '#0072B2', width: 2 },
  ], { steps: Math.max(h.length, 2), first: h[0]?.step ?? 0, yMin: 0 });
  const lossNow = recent(20, (r) => r.loss);
  $('loss-value').textContent = Number.isFinite(lossNow) ? `${lossNow.toFixed(3)} (aux ${recent(20, (r) => r.aux).toFixed(4)})` : '';

  const shares = Array.from({ length: E }, (_, e) => recent(20, (r) => r.load[e] ?? 0));
  barChart($<HTMLCanvasElement>('chart-load'), shares.map((v) => (Number.isFinite(v) ? v : 0)));
  const cols = Math.min(HEATMAP_COLUMNS, Math.max(1, h.length));
  const per = Math.max(1, Math.ceil(h.length / cols));
  const used = Math.ceil(h.length / per);
  const grid = new Float32Array(E * Math.max(1, used)).fill(NaN);
  for (let c = 0; c < used; c++) {
    for (let e = 0; e < E; e++) {
      let s = 0, n = 0;
      for (let i = c * per; i < Math.min(h.length, (c + 1) * per); i++) if (h[i].load.length === E) { s += h[i].load[e]; n++; }
      grid[e * used + c] = n ? s / n : NaN;
    }
  }
  heatmap($<HTMLCanvasElement>('chart-heatmap'), grid, E, Math.max(1, used), { max: Math.min(1, 2.5 / E) });

  lineChart($<HTMLCanvasElement>('chart-drop'), [{ values: series.drop, color: '#D55E00', width: 1.5 }], { steps: Math.max(h.length, 2), first: h[0]?.step ?? 0, yMin: 0, yMax: 1, percent: true });
  const drop = recent(10, (r) => r.dropFraction);
  const dropTok = recent(10, (r) => r.droppedTokens / r.tokens);
  const dropEl = $('drop-rate');
  dropEl.dataset.value = Number.isFinite(drop) ? String(drop) : '';
  dropEl.dataset.tokens = Number.isFinite(dropTok) ? String(dropTok) : '';
  const pct = (v: number): string => `${(v * 100).toFixed(1)}%`;
  const router = state.settings.router;
  dropEl.textContent = !Number.isFinite(drop)
    ? ''
    : router === 'soft'
      ? `${pct(drop)}: Soft MoE mixes every token into every slot`
      : router === 'expert-choice'
        ? `${pct(dropTok)} of tokens chosen by no expert`
        : `${pct(drop)} of assignments, ${pct(dropTok)} of tokens lost every expert`;

  // Soft MoE's entropy is over its E·p slots, the other routers' over the E experts.
  const maxEntropy = Math.log(state.settings.router === 'soft' ? E * SOFT_SLOTS : E);
  lineChart($<HTMLCanvasElement>('chart-entropy'), [
    { values: series.entropy, color: '#009E73', width: 1.5 },
    { values: [maxEntropy, maxEntropy], color: '#000', width: 1, dash: [4, 3], span: true },
  ], { steps: Math.max(h.length, 2), first: h[0]?.step ?? 0, yMin: 0, yMax: maxEntropy * 1.05 });
  const ent = recent(20, (r) => r.routerEntropy);
  $('entropy-value').textContent = Number.isFinite(ent) ? `${ent.toFixed(3)} nats (max ${maxEntropy.toFixed(3)})` : '';

  const last = h[h.length - 1];
  $('status').textContent = state.backend
    ? `step ${last?.step ?? 0} · ${state.stepsPerSecond.toFixed(1)} steps/s · ${state.running ? 'training' : 'paused'} · backend: ${state.backend} · ${state.params.toLocaleString('en')} parameters`
    : 'Loading…';
}

function drawLegend(E: number): void {
  const el = $('legend');
  if (el.childElementCount === E + 1) return;
  el.replaceChildren(
    ...Array.from({ length: E }, (_, e) => {
      const s = document.createElement('span');
      const i = document.createElement('i');
      i.style.background = EXPERT_COLORS[e % EXPERT_COLORS.length];
      s.append(i, `expert ${e}`);
      return s;
    }),
    (() => {
      const s = document.createElement('span');
      const i = document.createElement('i');
      i.style.background = DROPPED_COLOR;
      i.style.outline = '1px dashed #999';
      s.append(i, 'dropped');
      return s;
    })(),
  );
}

/** The expert each text-panel character is currently drawn with (-2: not drawn yet). */
let shownPrimary = new Int8Array(0);

function drawText(v: TextView): void {
  const el = $('text-view');
  if (el.childElementCount !== v.text.length) {
    shownPrimary = new Int8Array(0);
    el.replaceChildren(...Array.from(v.text, (ch, i) => {
      const s = document.createElement('span');
      s.textContent = ch;
      s.dataset.i = String(i);
      return s;
    }));
  }
  const spans = el.children;
  if (shownPrimary.length !== v.text.length) shownPrimary = new Int8Array(v.text.length).fill(-2);
  for (let i = 0; i < v.text.length; i++) {
    const s = spans[i] as HTMLSpanElement;
    const e = v.primary[i];
    // Restyle only the characters whose expert changed: style writes are the costly part.
    if (e === shownPrimary[i]) continue;
    shownPrimary[i] = e;
    if (e < 0) {
      s.className = 'dropped';
      s.style.background = '';
      s.style.color = '';
    } else {
      const c = EXPERT_COLORS[e % EXPERT_COLORS.length];
      s.className = '';
      s.style.background = c;
      s.style.color = textColorOn(c);
    }
  }
  const counts = new Array<number>(v.experts).fill(0);
  let dropped = 0;
  for (const e of v.primary) if (e < 0) dropped++; else counts[e]++;
  $('task-note').textContent = `Held-out text at step ${state.viewStep}: each character is coloured by the expert it went to (its most probable kept one)${dropped ? `; ${dropped} dropped` : ''}. Hover or focus a character for the router's probabilities.`;
}

function tooltipFor(v: TextView, i: number): string {
  const E = v.experts;
  const rows = Array.from({ length: E }, (_, e) => ({ e, p: v.probs[i * E + e] })).sort((a, b) => b.p - a.p);
  const k = state.settings.router === 'topk' ? state.settings.k : 1;
  const shown = rows.slice(0, Math.max(3, k));
  const ch = v.text[i] === ' ' ? '␣' : v.text[i];
  const body = shown
    .map((r) => `<tr><td><span style="display:inline-block;width:.8em;height:.8em;background:${EXPERT_COLORS[r.e % EXPERT_COLORS.length]}"></span> expert ${r.e}</td><td>${(r.p * 100).toFixed(1)}%</td><td>${v.kept[i] & (1 << r.e) ? 'kept' : ''}</td></tr>`)
    .join('');
  return `<strong>“${ch.replace(/[<&]/g, (c) => (c === '<' ? '&lt;' : '&amp;'))}”</strong> router probabilities (top ${shown.length})<table>${body}</table>`;
}

const tooltip = $('tooltip');
function showTooltip(target: EventTarget | null, x: number, y: number): void {
  const v = state.view;
  const span = target instanceof HTMLElement ? target.closest<HTMLElement>('#text-view span') : null;
  if (!span || !v || v.kind !== 'char') {
    tooltip.hidden = true;
    return;
  }
  tooltip.innerHTML = tooltipFor(v, Number(span.dataset.i));
  tooltip.hidden = false;
  tooltip.style.left = `${Math.min(x + 12, window.innerWidth - 260)}px`;
  tooltip.style.top = `${y + 14}px`;
}
$('text-view').addEventListener('mousemove', (e) => showTooltip(e.target, e.clientX, e.clientY));
$('text-view').addEventListener('mouseleave', () => (tooltip.hidden = true));
// Keyboard: arrow keys move a highlighted character through the text and show its tooltip.
let cursor = 0;
$('text-view').addEventListener('keydown', (e) => {
  const el = $('text-view');
  const n = el.childElementCount;
  if (!n || !['ArrowLeft', 'ArrowRight', 'Home', 'End'].includes(e.key)) return;
  e.preventDefault();
  cursor = e.key === 'Home' ? 0 : e.key === 'End' ? n - 1 : Math.max(0, Math.min(n - 1, cursor + (e.key === 'ArrowRight' ? 1 : -1)));
  el.querySelectorAll('.cursor').forEach((s) => s.classList.remove('cursor'));
  const span = el.children[cursor] as HTMLElement;
  span.classList.add('cursor');
  const box = span.getBoundingClientRect();
  showTooltip(span, box.left, box.bottom);
});
$('text-view').addEventListener('blur', () => (tooltip.hidden = true));

function drawPlane(v: PlaneView): void {
  const canvas = $<HTMLCanvasElement>('plane-view');
  const { g, w } = fit(canvas);
  const G = v.grid;
  const img = g.createImageData(G, G);
  for (let i = 0; i < G * G; i++) {
    const [r, gg, b] = expertRgb(v.winner[i]);
    // The predicted class darkens or lightens the expert colour, so the decision boundary shows too.
    const f = v.predicted[i] ? 0.78 : 1;
    img.data[4 * i] = r * f; img.data[4 * i + 1] = gg * f; img.data[4 * i + 2] = b * f; img.data[4 * i + 3] = 255;
  }
  const off = scratchCanvas(G, G);
  (off.getContext('2d') as CanvasRenderingContext2D).putImageData(img, 0, 0);
  g.imageSmoothingEnabled = false;
  g.drawImage(off, 0, 0, G, G, 0, 0, w, w);
  for (let i = 0; i < v.labels.length; i++) {
    const x = ((v.points[2 * i] + 1) / 2) * w, y = ((1 - v.points[2 * i + 1]) / 2) * w;
    g.beginPath();
    g.arc(x, y, 3, 0, 2 * Math.PI);
    if (v.labels[i]) { g.fillStyle = '#000'; g.fill(); } else { g.strokeStyle = '#000'; g.lineWidth = 1.2; g.fillStyle = '#fff'; g.fill(); g.stroke(); }
  }
  const shares = new Array<number>(v.experts).fill(0);
  for (const e of v.winner) shares[e]++;
  $('task-note').textContent = `Each cell of the plane is coloured by its winning expert (the router's top choice), darker where the model predicts class ●. Points: training samples (● and ○). Accuracy ${(v.accuracy * 100).toFixed(1)}%; experts own ${shares.map((s, e) => `${e}: ${((s / (G * G)) * 100).toFixed(0)}%`).join(', ')} of the plane.`;
}

function drawImages(v: ImageView): void {
  const E = v.experts;
  heatmap($<HTMLCanvasElement>('image-matrix'), v.classByExpert, v.classes.length, E, { max: 1, rowLabels: v.classes, colLabels: Array.from({ length: E }, (_, e) => String(e)) });
  const box = $('thumbs');
  const n = v.thumbExpert.length;
  if (box.childElementCount !== n) {
    box.replaceChildren(...Array.from({ length: n }, () => document.createElement('canvas')));
  }
  const px = v.side * v.side;
  for (let i = 0; i < n; i++) {
    const c = box.children[i] as HTMLCanvasElement;
    if (c.width !== v.side) {
      c.width = v.side;
      c.height = v.side;
      const g = c.getContext('2d') as CanvasRenderingContext2D;
      const img = g.createImageData(v.side, v.side);
      for (let p = 0; p < px; p++) {
        const val = 255 - v.thumbs[i * px + p];
        img.data.set([val, val, val, 255], 4 * p);
      }
      g.putImageData(img, 0, 0);
    }
    const e = v.thumbExpert[i];
    c.style.borderColor = e < 0 ? '#fff' : EXPERT_COLORS[e % EXPERT_COLORS.length];
    c.style.borderStyle = e < 0 ? 'dashed' : 'solid';
    c.title = e < 0 ? 'dropped' : `expert ${e}`;
  }
  $('task-note').textContent = `Rows: classes of ${v.source === 'fashion-mnist' ? 'Fashion-MNIST (14×14)' : 'a synthetic shape set'}; columns: experts; colour: share of the class's held-out images each expert processed. Below: held-out images framed in their expert's colour. Accuracy ${(v.accuracy * 100).toFixed(1)}%.`;
}

function drawView(): void {
  const v = state.view;
  const kind = v?.kind ?? state.settings.task;
  $('text-view').hidden = kind !== 'char';
  $('plane-view').hidden = kind !== 'plane';
  $('image-view').hidden = kind !== 'images';
  $('h-task').textContent = kind === 'char' ? 'Which expert each character went to' : kind === 'plane' ? 'Which expert owns each region of the plane' : 'Which expert each image class goes to';
  if (!v) return;
  drawLegend(v.experts);
  if (v.kind === 'char') drawText(v);
  else if (v.kind === 'plane') drawPlane(v);
  else drawImages(v);
}

let lastFrame = 0;
let longestGap = 0;
let longestDraw = 0;
function frame(now: number): void {
  if (lastFrame) longestGap = Math.max(longestGap, now - lastFrame);
  lastFrame = now;
  const t0 = performance.now();
  if (state.dirty) {
    state.dirty = false;
    drawCharts();
  }
  if (state.viewDirty) {
    state.viewDirty = false;
    drawView();
  }
  longestDraw = Math.max(longestDraw, performance.now() - t0);
  requestAnimationFrame(frame);
}

// ---- start -------------------------------------------------------------------------------------

const fromUrl = settingsFromQuery(location.search);
state.settings = fromUrl.settings;
showErrors(fromUrl.errors.map((e) => `ignored in the link: ${e}`));
showSettings(state.settings);
window.addEventListener('resize', () => { state.dirty = true; state.viewDirty = true; });
send({ type: 'init', settings: state.settings });
requestAnimationFrame(frame);
const interactiveAt = performance.now();

/** Read-only hooks for the browser tests and the benchmark (numbers shown on the page, nothing else). */
(window as unknown as { __playground: unknown }).__playground = {
  history: () => state.history.map((r) => ({ ...r })),
  settings: () => ({ ...state.settings }),
  version: () => state.version,
  /** Milliseconds since navigation start: controls wired (interactive) and first training step shown. */
  timing: () => ({ interactiveMs: interactiveAt, firstStepMs: state.firstStepAt || null }),
  /** Longest gap between animation frames since the last call (ms): a blocked UI thread shows here. */
  takeLongestFrameGap: () => {
    const g = longestGap;
    longestGap = 0;
    return g;
  },
  /** Longest time one frame spent drawing since the last call (ms): the page's own work on the UI thread. */
  takeLongestDraw: () => {
    const d = longestDraw;
    longestDraw = 0;
    return d;
  },
  stepsPerSecond: () => state.stepsPerSecond,
};
