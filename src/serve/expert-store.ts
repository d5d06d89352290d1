/**
 * ExpertStore: serve an MoE model whose routed experts stay in their safetensors file(s).
 *
 * - Each MoE layer's routed experts are read on demand with positioned reads (one `pread` per
 *   weight, never the whole file) into an LRU cache whose decoded (fp32) bytes never exceed a
 *   budget. Everything else (embeddings, attention, norms, routers, shared experts) stays resident.
 * - A layer's forward asks only for the experts that received tokens. Those experts are pinned
 *   while they run. When one layer's active experts do not fit in the budget together (a long
 *   prompt touching every expert under a tight budget), they run in consecutive groups that do
 *   fit (evicting between groups): the output is the same, only slower, and `splitForwards`
 *   counts it. A budget smaller than one expert is refused when the store is opened.
 * - Optional prefetch: when layer l's experts are requested, layer l+1's router is run on layer
 *   l's router input (re-scaled by the two RMSNorm weights, i.e. the residual stream as it is
 *   now) and the experts it picks are read by a worker thread (synchronous preads there, so they
 *   proceed while the main thread computes) into shared memory. A forward that needs an expert
 *   still in flight waits for it with Atomics.wait. Prefetches reserve budget when issued and
 *   never evict the experts of the layer being computed.
 * - Integrity (`verify`): a CRC-32 of every expert weight is taken when the store opens (which
 *   also proves the file is readable to its end). A read that comes up short (file truncated)
 *   always fails with an ExpertLoadError naming the tensor. Data read is checked against the
 *   CRC on every read ('always'), or (the default, 'changed') only once the file's size, mtime or
 *   ctime differ from when it was opened (one fstat per read): a file rewritten or corrupted
 *   mid-run is caught at the next read of each of its experts, without paying a CRC (~2 GB/s)
 *   per read while the file is unchanged. 'off' skips the open pass and every check but length.
 *
 * Memory: each cached expert lives in one fixed-size slot (a SharedArrayBuffer holding its fp32
 * weights), and evicted slots are reused, so the memory behind the cache is what the budget says,
 * not garbage waiting for the collector. BF16/F16 weights are read into the end of their fp32
 * region and widened in place; only F64 weights need a transient read buffer. Prefetching for a
 * layer pauses while its recent predictions were less than half right (by precision or recall: wrong
 * prefetches evict experts still wanted); they keep being measured, so it resumes when they improve.
 */
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import * as zlib from 'node:zlib';
import { ConfigError, SwitchyardError } from '../errors.js';
import { f16BitsToNumber } from '../io/half.js';
import { decodeSafetensorsTensor, readSafetensorsHeader, readSafetensorsHeaderLength, type SafetensorsTensorInfo } from '../io/safetensors.js';
import { groupedExpertFFN, type ExpertBlockWeights } from '../moe/expert-ffn.js';
import type { ExpertSource, MoELayer } from '../moe/layer.js';
import type { Module } from '../nn/module.js';
import { matmul } from '../ops/matmul.js';
import { noGrad } from '../tensor/autodiff.js';
import { Tensor } from '../tensor/tensor.js';
import { parseByteBudget, resolveByteBudget, type ByteBudgetSpec } from './bytes.js';

/** A weight could not be read (file missing, truncated or corrupted): `tensor` names it. */
export class ExpertLoadError extends SwitchyardError {
  /** The model's name of the weight (e.g. `layers.1.mlp.experts.3.w2.weight`). */
  readonly tensor: string;
  /** The file it lives in. */
  readonly file: string;
  constructor(tensor: string, file: string, message: string, cause?: unknown) {
    super('tensor', tensor, `${message} (in ${file})`);
    this.tensor = tensor;
    this.file = file;
    if (cause !== undefined) (this as { cause?: unknown }).cause = cause;
  }
}

/** Where one of the model's tensors lives on disk. */
export interface TensorLocation {
  /** Path of the safetensors file. */
  file: string;
  /** The tensor's name inside that file. */
  tensor: string;
  /**
   * Absolute byte offset and length of the weight's data, when it is a slice of the stored tensor
   * (one expert of a fused [experts, rows, cols] tensor); default: the whole tensor.
   */
  byteOffset?: number;
  byteLength?: number;
}

/** When reads are checked against the CRC-32 taken at open (see the module doc). */
export type VerifyMode = 'always' | 'changed' | 'off';

export interface ExpertStoreOptions {
  /** The safetensors file(s) holding the expert weights. */
  files: string[];
  /** Map a model tensor name to its file and name there (default: the same name in whichever file has it). */
  locate?: (name: string) => TensorLocation | null;
  /** Budget: '200MB', '1.5GB', a fraction 0.25 / '25%' of the total expert bytes, 'all', or a byte count. */
  budget: string | number | ByteBudgetSpec;
  /** Predict and read the next MoE layer's experts in a worker thread (default false). */
  prefetch?: boolean;
  /** Integrity checks (see the module doc): 'changed' (default; true), 'always', or 'off' (false). */
  verify?: boolean | VerifyMode;
  /**
   * When a layer misses several experts at once, read all but one of them in the worker thread
   * while the main thread reads the other (default true).
   */
  parallelReads?: boolean;
  /** Called after every change to the cache (for tests: the budget invariant). */
  onChange?(store: ExpertStore): void;
}

/** One weight of one expert on disk. */
interface WeightRef {
  /** Model name. */
  name: string;
  file: OpenFile;
  info: SafetensorsTensorInfo;
  /** Absolute byte position and length in the file. */
  position: number;
  length: number;
  shape: number[];
  crc: number | null;
}

interface ExpertRef {
  layer: number;
  expert: number;
  weights: WeightRef[]; // w1, w2, (w3)
  /** Byte offset of each weight's fp32 data in the expert's slot (8-aligned). */
  offsets: number[];
  /** Slot size: the weights' fp32 bytes (each rounded up to 8). */
  bytes: number;
  /** Whether every weight's stored bytes fit in its fp32 region (F32, BF16, F16), so a worker can read it straight into the slot. */
  inPlace: boolean;
}

interface OpenFile {
  path: string;
  fd: number;
  dataStart: number;
  tensors: Record<string, SafetensorsTensorInfo>;
  /** size, mtime and ctime (ns) when opened. */
  stamp: string;
  /** The file has changed since it was opened (sticky): verify 'changed' checks every read from now on. */
  changed: boolean;
}

function stampOf(fd: number): string {
  const st = fstatSync(fd, { bigint: true });
  return `${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
}

interface Pending {
  /** [state (0 pending, 1 done, 2 failed), CRC-32 of each weight]. */
  status: Int32Array;
  /** Whether the worker computed the CRCs. */
  crc: boolean;
}

interface Entry {
  ref: ExpertRef;
  state: 'ready' | 'loading';
  /** The expert's memory: every weight's fp32 data at ref.offsets. */
  slot: SharedArrayBuffer;
  weights: Tensor[] | null;
  pending: Pending | null;
  pins: number;
  prefetched: boolean;
  /** Read by the worker for the layer now running (a miss, not a prefetch). */
  demand: boolean;
  used: boolean;
}

/** Per MoE layer counters. */
export interface ExpertLayerStats {
  /** Index of the layer in the model (`layers.<i>`). */
  layer: number;
  hits: number;
  misses: number;
  /** Token assignments each expert processed (cumulative). */
  load: number[];
}

/** Counters (cumulative since open, except residentBytes). */
export interface ExpertStoreStats {
  budgetBytes: number;
  totalExpertBytes: number;
  residentBytes: number;
  /** The most the cache ever held (never above budgetBytes). */
  peakResidentBytes: number;
  residentExperts: number;
  hits: number;
  misses: number;
  /** Bytes read from disk (on demand and prefetched). */
  bytesRead: number;
  evictions: number;
  /** Layer forwards whose active experts did not fit together and ran in several groups. */
  splitForwards: number;
  prefetchIssued: number;
  /** Prefetched experts used before they were evicted. */
  prefetchUseful: number;
  /** Prefetched experts evicted unused. */
  prefetchWasted: number;
  /** Forwards that waited for a worker read still in flight. */
  prefetchWaits: number;
  /** Missed experts read by the worker alongside the main thread's read (parallelReads). */
  parallelReads: number;
  /** Of the experts layers actually used, how many the previous layer's prediction had named. */
  predictedCorrect: number;
  predictedTotal: number;
  /** Experts predicted. */
  predictedCount: number;
  loadErrors: number;
  layers: ExpertLayerStats[];
}

const CRC: ((data: Uint8Array, value?: number) => number) | null = typeof (zlib as { crc32?: unknown }).crc32 === 'function' ? (zlib as unknown as { crc32(d: Uint8Array, v?: number): number }).crc32 : null;

/** The prefetch worker: synchronous preads into shared memory, CRC-32 of each weight, then notify. */
const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const fs = require('node:fs');
const zlib = require('node:zlib');
parentPort.on('message', (m) => {
  const status = new Int32Array(m.status);
  try {
    m.reads.forEach((r, i) => {
      const u8 = new Uint8Array(m.slot, r.offset, r.length);
      let done = 0;
      while (done < r.length) {
        const n = fs.readSync(r.fd, u8, done, r.length - done, r.position + done);
        if (n === 0) throw new Error('short read');
        done += n;
      }
      if (m.crc && typeof zlib.crc32 === 'function') status[1 + i] = zlib.crc32(u8) | 0;
    });
    Atomics.store(status, 0, 1);
  } catch (e) {
    Atomics.store(status, 0, 2);
  }
  Atomics.notify(status, 0);
});
`;

function readFully(fd: number, buf: Uint8Array, position: number): number {
  let done = 0;
  while (done < buf.length) {
    const n = readSync(fd, buf, done, buf.length - done, position + done);
    if (n === 0) break;
    done += n;
  }
  return done;
}

function openSafetensors(path: string): OpenFile {
  const fd = openSync(path, 'r');
  try {
    const prefix = new Uint8Array(8);
    readFully(fd, prefix, 0);
    const { size } = fstatSync(fd);
    const n = readSafetensorsHeaderLength(prefix, size);
    const head = new Uint8Array(8 + n);
    if (readFully(fd, head, 0) !== 8 + n) throw new ConfigError('file', path, 'ended inside its safetensors header');
    const header = readSafetensorsHeader(head, size);
    return { path, fd, dataStart: header.dataStart, tensors: header.tensors, stamp: stampOf(fd), changed: false };
  } catch (e) {
    closeSync(fd);
    throw e;
  }
}

const align8 = (n: number): number => Math.ceil(n / 8) * 8;

/** Prefetching for a layer pauses while the running min(precision, recall) of its predictions is below this. */
const PREFETCH_MIN_PRECISION = 0.5;

const DTYPE_BYTES: Record<string, number> = { F32: 4, BF16: 2, F16: 2, F64: 8 };
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/**
 * Decode a weight whose stored bytes sit at the end of its fp32 region into that region, in
 * place: element i's fp32 bytes [4i, 4i+4) never reach a stored element j >= i (at 4n - b·(n-j),
 * b = stored bytes per element), so an ascending loop reads each before overwriting it.
 */
function decodeInPlace(slot: SharedArrayBuffer, offset: number, n: number, dtype: string): void {
  if (dtype === 'F32') return;
  const out32 = new Uint32Array(slot, offset, n);
  const src = new Uint16Array(slot, offset + 2 * n, n);
  if (dtype === 'BF16') {
    for (let i = 0; i < n; i++) out32[i] = src[i] << 16;
    return;
  }
  const out = new Float32Array(slot, offset, n);
  for (let i = 0; i < n; i++) out[i] = f16BitsToNumber(src[i]);
}

/** The routed experts of a model's MoE layers, served from disk through a byte-budgeted LRU cache. */
export class ExpertStore implements ExpertSource {
  readonly budgetBytes: number;
  readonly totalExpertBytes: number;
  readonly prefetch: boolean;
  readonly verify: VerifyMode;
  readonly parallelReads: boolean;
  /** The MoE layers served, in depth order, with their model layer index. */
  readonly layers: Array<{ layer: MoELayer; index: number; norm: Tensor | null }>;
  private readonly refs: ExpertRef[][];
  private readonly files: OpenFile[];
  private readonly cache = new Map<number, Entry>();
  private readonly layerOf = new Map<MoELayer, number>();
  private readonly predicted = new Map<number, Set<number>>();
  private readonly onChange: ((s: ExpertStore) => void) | null;
  private worker: Worker | null = null;
  private resident = 0;
  private peak = 0;
  /** Free expert slots by size, and the bytes of all slots in existence (in use or free). */
  private readonly freeSlots = new Map<number, SharedArrayBuffer[]>();
  private slotBytes = 0;
  /** Per served layer: running min(precision, recall) of its predictions (prefetch pauses below PREFETCH_MIN_PRECISION). */
  private readonly precision: number[];
  private attached = false;
  private readonly maxExperts: number;
  private readonly counters = {
    hits: 0, misses: 0, bytesRead: 0, evictions: 0, splitForwards: 0, prefetchIssued: 0, prefetchUseful: 0,
    prefetchWasted: 0, prefetchWaits: 0, predictedCorrect: 0, predictedTotal: 0, predictedCount: 0, loadErrors: 0, parallelReads: 0,
  };
  private readonly layerStats: ExpertLayerStats[];
  /** Weights whose last read failed, with the error message (cleared by a later good read). */
  private readonly failures = new Map<string, string>();
  /** Model tensor names of every routed-expert weight (the rest of the model is resident). */
  readonly expertTensorNames: ReadonlySet<string>;

  private constructor(
    layers: ExpertStore['layers'],
    refs: ExpertRef[][],
    files: OpenFile[],
    budget: number,
    opts: ExpertStoreOptions,
  ) {
    this.layers = layers;
    this.refs = refs;
    this.files = files;
    this.totalExpertBytes = refs.flat().reduce((s, r) => s + r.bytes, 0);
    this.budgetBytes = budget;
    this.prefetch = opts.prefetch ?? false;
    const v = opts.verify ?? 'changed';
    this.verify = CRC === null || v === false || v === 'off' ? 'off' : v === true ? 'changed' : v;
    this.parallelReads = opts.parallelReads ?? true;
    this.onChange = opts.onChange ?? null;
    this.maxExperts = Math.max(1, ...refs.map((r) => r.length));
    layers.forEach((l, i) => this.layerOf.set(l.layer, i));
    this.precision = layers.map(() => 1);
    this.layerStats = layers.map((l, i) => ({ layer: l.index, hits: 0, misses: 0, load: new Array<number>(refs[i].length).fill(0) }));
    this.expertTensorNames = new Set(refs.flat().flatMap((r) => r.weights.map((w) => w.name)));
  }

  /**
   * Index the expert weights of `model`'s MoE layers in `opts.files` (headers only, plus one
   * CRC pass over the expert bytes when verifying). The model may have been built with
   * withDeferredExperts (its expert parameters empty); call attach() to route its forwards here.
   */
  static async open(model: Module & { moeLayers(): MoELayer[]; layers?: { items: unknown[] } }, opts: ExpertStoreOptions): Promise<ExpertStore> {
    if (!opts.files.length) throw new ConfigError('files', opts.files, 'needs at least one safetensors file');
    const files: OpenFile[] = [];
    try {
      for (const f of opts.files) files.push(openSafetensors(f));
      const byName = new Map<string, OpenFile>();
      for (const f of files) for (const name of Object.keys(f.tensors)) if (!byName.has(name)) byName.set(name, f);
      const locate = (name: string): { file: OpenFile; tensor: string; byteOffset?: number; byteLength?: number } | null => {
        if (opts.locate) {
          const loc = opts.locate(name);
          if (!loc) return null;
          const file = files.find((f) => f.path === loc.file);
          if (!file) throw new ConfigError('locate', loc.file, `names a file that is not in files (${opts.files.join(', ')})`);
          return { file, tensor: loc.tensor, byteOffset: loc.byteOffset, byteLength: loc.byteLength };
        }
        const file = byName.get(name);
        return file ? { file, tensor: name } : null;
      };
      const names = new Map<Tensor, string>();
      for (const [n, t] of model.namedParameters()) names.set(t, n);
      const items = (model.layers?.items ?? []) as Array<{ mlp?: unknown; post_attention_layernorm?: { weight?: Tensor } }>;
      const layers: ExpertStore['layers'] = [];
      const refs: ExpertRef[][] = [];
      for (const moe of model.moeLayers()) {
        const index = items.findIndex((l) => l.mlp === moe);
        const norm = index >= 0 ? items[index].post_attention_layernorm?.weight ?? null : null;
        layers.push({ layer: moe, index, norm: norm instanceof Tensor ? norm : null });
        const c = moe.config;
        const li = refs.length;
        refs.push(
          moe.experts.items.map((ex, e) => {
            const parts: Array<[Tensor, number[]]> = [[ex.w1.weight, [c.dFF, c.dModel]], [ex.w2.weight, [c.dModel, c.dFF]]];
            if (ex.w3) parts.push([ex.w3.weight, [c.dFF, c.dModel]]);
            const weights = parts.map(([t, shape]) => {
              const name = names.get(t);
              if (!name) throw new ConfigError('model', 'expert weight', `layer ${index} expert ${e}: a weight is not among the model's named parameters`);
              const loc = locate(name);
              if (!loc) throw new ExpertLoadError(name, opts.files.join(', '), 'is not in the safetensors file(s)');
              const stored = loc.file.tensors[loc.tensor];
              if (!stored) throw new ExpertLoadError(name, loc.file.path, `has no tensor ${JSON.stringify(loc.tensor)}`);
              const size = DTYPE_BYTES[stored.dtype];
              if (size === undefined) throw new ExpertLoadError(name, loc.file.path, `tensor ${JSON.stringify(loc.tensor)} has dtype ${stored.dtype}; expert weights must be F32, BF16, F16 or F64`);
              if (loc.byteOffset !== undefined) {
                // A slice of a larger (fused) tensor: its bytes must be exactly the model's shape.
                const length = loc.byteLength ?? shape[0] * shape[1] * size;
                if (length !== shape[0] * shape[1] * size) throw new ExpertLoadError(name, loc.file.path, `slice of ${loc.tensor} is ${length} bytes, [${shape}] of ${stored.dtype} needs ${shape[0] * shape[1] * size}`);
                const info: SafetensorsTensorInfo = { dtype: stored.dtype, shape, dataOffsets: [0, length] };
                return { name, file: loc.file, info, position: loc.byteOffset, length, shape, crc: null } as WeightRef;
              }
              if (stored.shape.length !== 2 || stored.shape[0] !== shape[0] || stored.shape[1] !== shape[1]) {
                throw new ExpertLoadError(name, loc.file.path, `has shape [${stored.shape}], the model needs [${shape}]`);
              }
              const [b, end] = stored.dataOffsets;
              return { name, file: loc.file, info: stored, position: loc.file.dataStart + b, length: end - b, shape, crc: null } as WeightRef;
            });
            const offsets: number[] = [];
            let bytes = 0;
            for (const w of weights) {
              offsets.push(bytes);
              bytes += align8(w.shape[0] * w.shape[1] * 4);
            }
            return { layer: li, expert: e, weights, offsets, bytes, inPlace: weights.every((w) => w.length <= w.shape[0] * w.shape[1] * 4) && LITTLE_ENDIAN };
          }),
        );
      }
      if (!layers.length) throw new ConfigError('model', 'dense', 'has no MoE layers: nothing to serve from an expert store');
      const total = refs.flat().reduce((s, r) => s + r.bytes, 0);
      const spec = typeof opts.budget === 'object' ? opts.budget : parseByteBudget(opts.budget);
      const budget = Math.min(resolveByteBudget(spec, total), total);
      const largest = Math.max(...refs.flat().map((r) => r.bytes));
      if (budget < largest) {
        throw new ConfigError('expertMemory', typeof opts.budget === 'object' ? budget : opts.budget, `is ${budget} bytes, less than one expert (${largest} bytes; all experts total ${total})`);
      }
      const store = new ExpertStore(layers, refs, files, budget, opts);
      if (store.verify !== 'off') store.checksumAll();
      if (store.prefetch || store.parallelReads) {
        store.worker = new Worker(WORKER_SOURCE, { eval: true });
        store.worker.unref();
      }
      return store;
    } catch (e) {
      for (const f of files) closeSync(f.fd);
      throw e;
    }
  }

  /** CRC-32 of every expert weight, in file order, with a reused 8 MiB buffer. */
  private checksumAll(): void {
    const all = this.refs.flat().flatMap((r) => r.weights).sort((a, b) => (a.file.path < b.file.path ? -1 : a.file.path > b.file.path ? 1 : a.position - b.position));
    const buf = new Uint8Array(8 << 20);
    for (const w of all) {
      let crc = 0, done = 0;
      while (done < w.length) {
        const n = Math.min(buf.length, w.length - done);
        const got = readFully(w.file.fd, buf.subarray(0, n), w.position + done);
        if (got !== n) throw new ExpertLoadError(w.name, w.file.path, `is truncated: the file ends at byte ${w.position + done + got}, the tensor at ${w.position + w.length}`);
        crc = CRC!(buf.subarray(0, n), crc);
        done += n;
      }
      w.crc = crc >>> 0;
    }
  }

  /** Route every served MoE layer's forwards through this store. */
  attach(): this {
    for (const { layer } of this.layers) layer.setExpertSource(this);
    this.attached = true;
    return this;
  }

  /** Back to the layers' resident parameters. */
  detach(): this {
    for (const { layer } of this.layers) layer.setExpertSource(null);
    this.attached = false;
    return this;
  }

  get isAttached(): boolean {
    return this.attached;
  }

  /** Bytes of expert weights the cache holds now (prefetches in flight included). */
  get residentBytes(): number {
    return this.resident;
  }

  stats(): ExpertStoreStats {
    return {
      budgetBytes: this.budgetBytes,
      totalExpertBytes: this.totalExpertBytes,
      residentBytes: this.resident,
      peakResidentBytes: this.peak,
      residentExperts: this.cache.size,
      ...this.counters,
      layers: this.layerStats.map((l) => ({ ...l, load: [...l.load] })),
    };
  }

  /** Weights whose most recent read failed (name → message); empty when all is well. */
  failedTensors(): Map<string, string> {
    return new Map(this.failures);
  }

  /** Drop every cached expert (counters stay). */
  clear(): void {
    for (const [k, ent] of this.cache) if (ent.pins === 0) this.evict(k, ent);
  }

  /** Detach, stop the prefetch worker and close the files. */
  async close(): Promise<void> {
    if (this.attached) this.detach();
    for (const ent of this.cache.values()) {
      if (!ent.pending) continue;
      try {
        this.waitPending(ent);
      } catch {
        /* closing anyway */
      }
    }
    this.cache.clear();
    this.resident = 0;
    if (this.worker) await this.worker.terminate();
    this.worker = null;
    for (const f of this.files) {
      try {
        closeSync(f.fd);
      } catch {
        /* already closed */
      }
    }
    this.files.length = 0;
  }

  // ---- ExpertSource ----

  runExperts(layer: MoELayer, xs: Tensor, offsets: Int32Array, input: Tensor): Tensor {
    const li = this.layerOf.get(layer);
    if (li === undefined) throw new ConfigError('layer', 'MoELayer', 'is not served by this expert store');
    const E = offsets.length - 1;
    const N = xs.shape[0], d = xs.shape[1];
    const act = layer.config.expert.activation;
    const gated = layer.config.expert.gated;
    const used: number[] = [];
    const load = this.layerStats[li].load;
    for (let e = 0; e < E; e++) {
      const m = offsets[e + 1] - offsets[e];
      if (m > 0) {
        used.push(e);
        load[e] += m;
      }
    }
    const prediction = this.predicted.get(li);
    if (prediction) {
      this.predicted.delete(li);
      this.counters.predictedTotal += used.length;
      this.counters.predictedCount += prediction.size;
      let correct = 0;
      for (const e of used) if (prediction.has(e)) correct++;
      this.counters.predictedCorrect += correct;
      // Both must hold: precision (prefetches used) and recall (needed experts that were predicted:
      // the unpredicted ones are what a prefetch's evictions hit).
      if (prediction.size && used.length) this.precision[li] = 0.8 * this.precision[li] + 0.2 * Math.min(correct / prediction.size, correct / used.length);
    }
    if (this.prefetch && this.worker && li + 1 < this.layers.length) this.prefetchNext(li, input, used);
    if (used.length === 0) return groupedExpertFFN(xs, Int32Array.of(0), { w1: [], w2: [], w3: gated ? [] : null }, act);

    // Consecutive groups of the active experts whose weights fit in the budget together.
    const groups: number[][] = [];
    let cur: number[] = [], curBytes = 0;
    for (const e of used) {
      const b = this.refs[li][e].bytes;
      if (cur.length && curBytes + b > this.budgetBytes) {
        groups.push(cur);
        cur = [];
        curBytes = 0;
      }
      cur.push(e);
      curBytes += b;
    }
    groups.push(cur);
    if (groups.length > 1) this.counters.splitForwards++;

    const runGroup = (group: number[]): { ys: Tensor; r0: number; r1: number } => {
      const got: Entry[] = [];
      try {
        if (this.worker && this.parallelReads) this.readAhead(li, group);
        for (const e of group) got.push(this.acquire(li, e));
        const r0 = offsets[group[0]], r1 = offsets[group[group.length - 1] + 1];
        const local = new Int32Array(group.length + 1);
        group.forEach((e, i) => (local[i] = offsets[e] - r0));
        local[group.length] = r1 - r0;
        const w: ExpertBlockWeights = {
          w1: got.map((g) => g.weights![0]),
          w2: got.map((g) => g.weights![1]),
          w3: gated ? got.map((g) => g.weights![2]) : null,
        };
        const x = groups.length === 1 ? xs : new Tensor(xs.f32.slice(r0 * d, r1 * d), [r1 - r0, d]);
        return { ys: groupedExpertFFN(x, local, w, act), r0, r1 };
      } finally {
        for (const g of got) g.pins--;
        this.changed();
      }
    };
    if (groups.length === 1) return runGroup(groups[0]).ys;
    const y = new Float32Array(N * d);
    for (const g of groups) {
      const { ys, r0 } = runGroup(g);
      y.set(ys.f32, r0 * d);
    }
    return new Tensor(y, [N, d]);
  }

  // ---- cache ----

  private key(li: number, e: number): number {
    return li * this.maxExperts + e;
  }

  private changed(): void {
    if (this.resident > this.peak) this.peak = this.resident;
    this.onChange?.(this);
  }

  /**
   * A slot of `bytes` for an expert: a free one of that size, or a new one. Slots are reused
   * after eviction, so the memory behind the cache is what it holds (plus free slots, dropped
   * when a new size would push the total over the budget), not garbage awaiting collection.
   */
  private takeSlot(bytes: number): SharedArrayBuffer {
    const free = this.freeSlots.get(bytes);
    if (free && free.length) return free.pop()!;
    for (const [size, list] of this.freeSlots) {
      while (list.length && this.slotBytes + bytes > this.budgetBytes) {
        list.pop();
        this.slotBytes -= size;
      }
    }
    this.slotBytes += bytes;
    return new SharedArrayBuffer(bytes);
  }

  private giveSlot(slot: SharedArrayBuffer): void {
    const list = this.freeSlots.get(slot.byteLength);
    if (list) list.push(slot);
    else this.freeSlots.set(slot.byteLength, [slot]);
  }

  /** Get expert e of layer li resident and pinned (hit, prefetch in flight, or a synchronous read). */
  private acquire(li: number, e: number): Entry {
    const k = this.key(li, e);
    const stats = this.layerStats[li];
    let ent = this.cache.get(k);
    if (ent) {
      if (ent.state === 'loading') {
        try {
          this.waitPending(ent);
          if (ent.state === 'loading') {
            const w = ent.ref.weights[0];
            throw this.fail(new ExpertLoadError(w.name, w.file.path, 'could not be read within a minute (prefetch read stuck)'));
          }
        } catch (err) {
          this.evict(k, ent);
          this.counters.loadErrors++;
          throw err;
        }
      }
      if (ent.prefetched && !ent.used) this.counters.prefetchUseful++;
      ent.used = true;
      if (ent.demand) {
        ent.demand = false;
        this.counters.misses++;
        stats.misses++;
      } else {
        this.counters.hits++;
        stats.hits++;
      }
      this.cache.delete(k);
      this.cache.set(k, ent); // most recently used
      ent.pins++;
      this.changed();
      return ent;
    }
    this.counters.misses++;
    stats.misses++;
    const ref = this.refs[li][e];
    this.makeRoom(ref.bytes, null);
    ent = { ref, state: 'ready', slot: this.takeSlot(ref.bytes), weights: null, pending: null, pins: 1, prefetched: false, demand: false, used: true };
    this.cache.set(k, ent);
    this.resident += ref.bytes;
    try {
      const slot = ent.slot;
      ent.weights = ref.weights.map((w, i) => this.readWeight(w, slot, ref.offsets[i]));
    } catch (err) {
      this.cache.delete(k);
      this.resident -= ref.bytes;
      this.giveSlot(ent.slot);
      this.counters.loadErrors++;
      this.changed();
      throw err;
    }
    this.changed();
    return ent;
  }

  /** Evict least recently used unpinned entries (never those in `protect`) until `bytes` more fit. */
  private makeRoom(bytes: number, protect: Set<number> | null): boolean {
    if (this.resident + bytes <= this.budgetBytes) return true;
    for (const [k, ent] of this.cache) {
      if (this.resident + bytes <= this.budgetBytes) break;
      if (ent.pins > 0 || ent.state === 'loading' || protect?.has(k)) continue;
      this.evict(k, ent);
    }
    if (this.resident + bytes <= this.budgetBytes) return true;
    if (protect) return false; // a prefetch does not wait
    // Only worker reads in flight are left to make room: wait for them (oldest first, prefetches
    // before the running layer's own reads) and evict.
    for (const demand of [false, true]) {
      for (const [k, ent] of this.cache) {
        if (this.resident + bytes <= this.budgetBytes) break;
        if (ent.pins > 0 || ent.state !== 'loading' || ent.demand !== demand) continue;
        try {
          this.waitPending(ent);
        } catch {
          /* a failed read is simply dropped */
        }
        this.evict(k, ent);
      }
    }
    if (this.resident + bytes > this.budgetBytes) {
      throw new ConfigError('expertMemory', this.budgetBytes, `cannot hold ${bytes} more bytes: ${this.resident} bytes are pinned by the running layer`);
    }
    return true;
  }

  private evict(k: number, ent: Entry): void {
    if (this.cache.get(k) !== ent) return;
    this.cache.delete(k);
    this.resident -= ent.ref.bytes;
    this.counters.evictions++;
    if (ent.prefetched && !ent.used) this.counters.prefetchWasted++;
    ent.weights = null;
    if (ent.state === 'ready') this.giveSlot(ent.slot); // a slot a worker may still write to is never reused
    this.changed();
  }

  /** One weight, synchronously: a positioned read into its region of the slot, checked, decoded to fp32 in place. */
  private readWeight(w: WeightRef, slot: SharedArrayBuffer, offset: number): Tensor {
    const n = w.shape[0] * w.shape[1];
    const inPlace = w.length <= 4 * n && LITTLE_ENDIAN;
    // Stored bytes go to the end of the weight's fp32 region (or a scratch buffer for F64).
    const raw = inPlace ? new Uint8Array(slot, offset + 4 * n - w.length, w.length) : new Uint8Array(w.length);
    let got: number;
    try {
      got = readFully(w.file.fd, raw, w.position);
    } catch (e) {
      throw this.fail(new ExpertLoadError(w.name, w.file.path, `cannot be read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, e));
    }
    this.counters.bytesRead += got;
    if (got !== w.length) throw this.fail(new ExpertLoadError(w.name, w.file.path, `is truncated: the file ends ${w.length - got} bytes before the end of this tensor`));
    if (w.crc !== null && this.crcNeeded(w.file)) {
      const crc = CRC!(raw) >>> 0;
      if (crc !== w.crc) throw this.fail(new ExpertLoadError(w.name, w.file.path, `is corrupted: CRC-32 ${crc.toString(16)} differs from ${w.crc.toString(16)} taken when the store opened`));
    }
    const out = new Float32Array(slot, offset, n);
    if (inPlace) decodeInPlace(slot, offset, n, w.info.dtype);
    else {
      try {
        out.set(decodeSafetensorsTensor(w.name, w.info, raw).f32);
      } catch (e) {
        throw this.fail(new ExpertLoadError(w.name, w.file.path, `cannot be decoded (${(e as Error).message})`, e));
      }
    }
    this.failures.delete(w.name);
    return new Tensor(out, w.shape);
  }

  /** Whether data just read from `file` must be checked against its CRC (call after the read). */
  private crcNeeded(file: OpenFile): boolean {
    if (this.verify === 'off') return false;
    if (this.verify === 'always' || file.changed) return true;
    try {
      if (stampOf(file.fd) !== file.stamp) file.changed = true;
    } catch {
      file.changed = true;
    }
    return file.changed;
  }

  private fail(err: ExpertLoadError): ExpertLoadError {
    this.failures.set(err.tensor, err.message);
    return err;
  }

  // ---- prefetch ----

  /** Predict layer li+1's experts from layer li's router input and start reading the missing ones. */
  private prefetchNext(li: number, input: Tensor, used: number[]): void {
    const next = this.layers[li + 1];
    const r = next.layer.config.router;
    if (r.type !== 'topk') return;
    const T = input.shape[0], d = input.shape[1];
    if (T === 0) return;
    const predicted = noGrad(() => {
      let x = input;
      const cur = this.layers[li].norm, nxt = next.norm;
      if (cur && nxt && cur.size === d && nxt.size === d) {
        // input = rms(h)⁻¹·h⊙γ_l; the next layer's router sees rms(h')⁻¹·h'⊙γ_{l+1}: swap γ (h' ≈ h).
        const a = cur.f32, b = nxt.f32, src = input.f32;
        const scaled = new Float32Array(src.length);
        for (let t = 0; t < T; t++) for (let j = 0; j < d; j++) scaled[t * d + j] = a[j] !== 0 ? (src[t * d + j] / a[j]) * b[j] : 0;
        x = new Tensor(scaled, [T, d]);
      }
      const logits = matmul(x, next.layer.gate.weight, { transB: true }).f32;
      const E = next.layer.config.numExperts;
      const sigmoid = (r as { scoring?: string }).scoring === 'sigmoid';
      const bias = next.layer.gate.bias?.f32 ?? null;
      const set = new Set<number>();
      const score = new Float64Array(E);
      for (let t = 0; t < T; t++) {
        let mx = -Infinity;
        for (let e = 0; e < E; e++) mx = Math.max(mx, logits[t * E + e]);
        let z = 0;
        for (let e = 0; e < E; e++) {
          const l = logits[t * E + e];
          score[e] = sigmoid ? 1 / (1 + Math.exp(-l)) : Math.exp(l - mx);
          z += score[e];
        }
        for (let e = 0; e < E; e++) {
          if (!sigmoid) score[e] /= z;
          if (bias) score[e] += bias[e];
        }
        const order = Array.from(score.keys()).sort((a, b) => score[b] - score[a] || a - b);
        for (let i = 0; i < r.k; i++) set.add(order[i]);
        if (set.size === E) break;
      }
      return set;
    });
    this.predicted.set(li + 1, predicted);
    // Read ahead only while this layer's predictions have been mostly right: wrong ones evict
    // experts that are still wanted (the prediction itself keeps being measured either way).
    if (this.precision[li + 1] < PREFETCH_MIN_PRECISION) return;
    const nl = li + 1;
    const protect = new Set(used.map((e) => this.key(li, e)));
    for (const e of predicted) protect.add(this.key(nl, e));
    for (const e of [...predicted].sort((a, b) => a - b)) {
      const k = this.key(nl, e);
      if (this.cache.has(k)) continue;
      const ref = this.refs[nl][e];
      if (!ref.inPlace) continue;
      if (!this.makeRoom(ref.bytes, protect)) break;
      this.issue(k, ref);
    }
  }

  /** Several experts of this group missing: the worker reads all but the first while the main thread reads that one. */
  private readAhead(li: number, group: number[]): void {
    const missing = group.filter((e) => !this.cache.has(this.key(li, e)) && this.refs[li][e].inPlace);
    if (missing.length < 2) return;
    const protect = new Set(group.map((e) => this.key(li, e)));
    for (const e of missing.slice(1)) {
      const ref = this.refs[li][e];
      if (!this.makeRoom(ref.bytes, protect)) break;
      this.issue(this.key(li, e), ref, 'demand');
      this.counters.parallelReads++;
    }
  }

  private issue(k: number, ref: ExpertRef, kind: 'prefetch' | 'demand' = 'prefetch'): void {
    const slot = this.takeSlot(ref.bytes);
    const status = new Int32Array(new SharedArrayBuffer(16));
    // Each weight's stored bytes go to the end of its fp32 region (decoded in place when used).
    const reads = ref.weights.map((w, i) => ({ fd: w.file.fd, position: w.position, length: w.length, offset: ref.offsets[i] + 4 * w.shape[0] * w.shape[1] - w.length }));
    const crc = this.verify === 'always' || (this.verify === 'changed' && ref.weights.some((w) => w.file.changed));
    const ent: Entry = { ref, state: 'loading', slot, weights: null, pending: { status, crc }, pins: 0, prefetched: kind === 'prefetch', demand: kind === 'demand', used: false };
    this.cache.set(k, ent);
    this.resident += ref.bytes;
    if (kind === 'prefetch') this.counters.prefetchIssued++;
    this.worker!.postMessage({ slot, status: status.buffer, reads, crc });
    this.changed();
  }

  /** Block until a prefetch completes and decode it in its slot (or read synchronously if the worker failed). */
  private waitPending(ent: Entry): void {
    const p = ent.pending!;
    if (Atomics.load(p.status, 0) === 0) {
      this.counters.prefetchWaits++;
      Atomics.wait(p.status, 0, 0, 60_000);
    }
    const state = Atomics.load(p.status, 0);
    if (state === 0) return; // still in flight after a minute: leave it loading (its slot is never reused)
    ent.pending = null;
    ent.state = 'ready';
    const ref = ent.ref;
    if (state !== 1) {
      // The worker failed: the synchronous path says what is wrong, naming the tensor.
      ent.weights = ref.weights.map((w, i) => this.readWeight(w, ent.slot, ref.offsets[i]));
      return;
    }
    ent.weights = ref.weights.map((w, i) => {
      this.counters.bytesRead += w.length;
      let got = p.status[1 + i] >>> 0;
      if (w.crc !== null && !p.crc && this.crcNeeded(w.file)) {
        // The file changed after the worker was sent: check here, on the bytes as read.
        const n = w.shape[0] * w.shape[1];
        got = CRC!(new Uint8Array(ent.slot, ref.offsets[i] + 4 * n - w.length, w.length)) >>> 0;
      }
      if ((p.crc || this.crcNeeded(w.file)) && w.crc !== null && got !== w.crc) {
        throw this.fail(new ExpertLoadError(w.name, w.file.path, `is corrupted: CRC-32 ${got.toString(16)} differs from ${w.crc.toString(16)} taken when the store opened`));
      }
      const n = w.shape[0] * w.shape[1];
      decodeInPlace(ent.slot, ref.offsets[i], n, w.info.dtype);
      this.failures.delete(w.name);
      return new Tensor(new Float32Array(ent.slot, ref.offsets[i], n), w.shape);
    });
  }
}
