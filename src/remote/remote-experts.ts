/**
 * RemoteExperts: an MoELayer ExpertSource whose experts run in `switchyard expert-server`
 * processes reached over NATS (expert parallelism). After routing, each server instance gets
 * one binary request per layer carrying the contiguous row blocks of all the experts it computes
 * (a batched frame, src/remote/protocol.ts), every instance in parallel; the replies are the
 * exact rows groupedExpertFFN would have produced, so the layer combines them exactly as it does
 * locally. Experts named in `local` run in this
 * process (from the layer's own weights or a given ExpertSource, e.g. an ExpertStore) while the
 * remote ones are in flight.
 *
 * Faults (per request): `timeoutMs`; on a timeout or error its blocks are retried once on
 * other replicas (see nats-worker.ts for how replicas are chosen); when no replica answers,
 * onFailure 'fail' throws a RemoteExpertError naming the layer and the expert, 'drop' leaves
 * that expert's rows at zero, i.e. drops its contribution for those tokens exactly as capacity
 * dropping does (the residual connection carries them), and counts them in stats().
 *
 * Fine-tuning (train()): forwards keep their activations on the servers; backward sends each
 * expert's dY to the replica holding them and gets dX back (the servers accumulate their own
 * weight gradients); step() makes every server apply its optimizer. Otherwise inference only.
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { MessageChannel, receiveMessageOnPort, Worker, type MessagePort } from 'node:worker_threads';
import { ConfigError, SwitchyardError } from '../errors.js';
import { groupedExpertFFN } from '../moe/expert-ffn.js';
import type { ExpertSource, MoELayer } from '../moe/layer.js';
import { Tensor } from '../tensor/tensor.js';
import { isGradEnabled, record } from '../tensor/autodiff.js';
import type { ChunkRef, InstanceInfo, RunMessage, RunResult, WorkerInit } from './nats-worker.js';
import { checkModelId, moeLayerIndex, parseExpertSpec, type ExpertSet } from './spec.js';

/** No replica of a remote expert answered (policy 'fail'): names the layer and the expert. */
export class RemoteExpertError extends SwitchyardError {
  /** Model layer index (`layers.<layer>`). */
  readonly layer: number;
  readonly expert: number;
  constructor(layer: number, expert: number, reason: string) {
    super('expert', `layer ${layer} expert ${expert}`, `no replica answered: ${reason}`);
    this.layer = layer;
    this.expert = expert;
  }
}

/** What happens to an expert's tokens when no replica answers. */
export type RemoteFailurePolicy = 'fail' | 'drop';

export interface RemoteExpertsOptions {
  /** NATS server URL(s), e.g. 'nats://127.0.0.1:4222'. */
  servers: string | string[];
  /** The model id the expert servers registered (see defaultModelId). */
  modelId: string;
  /** Per-request timeout in ms (default 2000). */
  timeoutMs?: number;
  /** When no replica answers: 'fail' (default) or 'drop'. */
  onFailure?: RemoteFailurePolicy;
  /** Experts run in this process (expert spec, e.g. '1:0-3'; default none). */
  local?: string;
  /** Where local experts come from (default: the layer's resident weights). */
  localSource?: ExpertSource;
  /** Background service-discovery period in ms (default 2000). */
  discoveryIntervalMs?: number;
  /** How long one discovery collects answers, ms (default 300). */
  discoveryWaitMs?: number;
  /** NATS connection name (default 'switchyard-router'). */
  name?: string;
}

/** Per remote expert counters. */
export interface RemoteExpertCounters {
  layer: number;
  expert: number;
  /** Token rows sent. */
  rows: number;
  /** Rows whose contribution was dropped (policy 'drop'). */
  droppedRows: number;
  /** Layer forwards in which no replica answered. */
  failures: number;
}

/** Cumulative counters since connect. */
export interface RemoteExpertsStats {
  /** Layer forwards that used remote experts. */
  calls: number;
  /** NATS requests sent (retries and chunks included). */
  requests: number;
  retries: number;
  timeouts: number;
  /** Expert blocks no replica answered. */
  failures: number;
  /** Token-expert assignments whose contribution was dropped (policy 'drop'). */
  droppedAssignments: number;
  bytesSent: number;
  bytesReceived: number;
  /** Token rows that went to remote experts / ran locally. */
  remoteRows: number;
  localRows: number;
  experts: RemoteExpertCounters[];
}

/** Result of a discovery: live server instances and remote experts no instance hosts. */
export interface DiscoveryReport {
  instances: InstanceInfo[];
  /** "layer:expert" keys of remote experts with no live replica. */
  missing: string[];
}

/** The compiled worker (dist/remote/nats-worker.js); from the TypeScript sources (tests), the built copy. */
function workerPath(): string {
  const here = new URL('./nats-worker.js', import.meta.url);
  const candidates = [fileURLToPath(here), fileURLToPath(new URL('../../dist/remote/nats-worker.js', import.meta.url))];
  const found = candidates.find((p) => existsSync(p));
  if (!found) throw new ConfigError('worker', candidates[0], 'is missing: run `npm run build` (RemoteExperts runs its NATS client in this worker)');
  return found;
}

type ModelLike = { moeLayers(): MoELayer[]; layers?: { items: unknown[] } };

/** Route MoE layers' experts to expert servers over NATS (see the module doc). */
export class RemoteExperts implements ExpertSource {
  readonly modelId: string;
  readonly timeoutMs: number;
  readonly onFailure: RemoteFailurePolicy;
  /** The largest NATS message the connected server accepts. */
  readonly maxPayload: number;
  private readonly layers: Map<MoELayer, number>;
  private readonly local: ExpertSet;
  private readonly localSource: ExpertSource | null;
  private readonly worker: Worker;
  private readonly port: MessagePort;
  private readonly signal = new SharedArrayBuffer(8);
  private input = new SharedArrayBuffer(4096);
  private output = new SharedArrayBuffer(4096);
  private callId = 0;
  private controlId = 0;
  private readonly pending = new Map<number, (m: unknown) => void>();
  private closedPromise: Promise<void> | null = null;
  private training = false;
  /** Makes a training forward part of the graph even when nothing upstream requires grad (its own gradient is null). */
  private readonly trainHandle = new Tensor(new Float32Array(1), [1], true);
  /** Why the worker is gone, if it is (every later forward fails at once instead of waiting). */
  private dead: string | null = null;
  private attachedTo: MoELayer[] = [];
  private readonly counters = { calls: 0, requests: 0, retries: 0, timeouts: 0, failures: 0, droppedAssignments: 0, bytesSent: 0, bytesReceived: 0, remoteRows: 0, localRows: 0 };
  private readonly perExpert = new Map<string, RemoteExpertCounters>();

  private constructor(model: ModelLike, opts: RemoteExpertsOptions, worker: Worker, port: MessagePort, maxPayload: number) {
    this.modelId = opts.modelId;
    this.timeoutMs = opts.timeoutMs ?? 2000;
    this.onFailure = opts.onFailure ?? 'fail';
    this.layers = moeLayerIndex(model);
    const sizes = new Map([...this.layers].map(([l, i]) => [i, l.config.numExperts]));
    this.local = opts.local ? parseExpertSpec(opts.local, sizes, 'local') : new Map();
    this.localSource = opts.localSource ?? null;
    this.worker = worker;
    this.port = port;
    this.maxPayload = maxPayload;
    worker.once('exit', (code) => {
      this.dead ??= `the NATS worker thread exited (code ${code})`;
      this.pending.get(-1)?.(null);
    });
    worker.on('error', (e) => {
      this.dead = `the NATS worker thread failed: ${e.message}`;
    });
    worker.on('message', (m: { type: string; id?: number }) => {
      if ((m.type === 'discovered' || m.type === 'stepped') && m.id !== undefined) this.pending.get(m.id)?.(m);
      if (m.type === 'closed') this.pending.get(-1)?.(m);
    });
  }

  /**
   * Connect to NATS (in a worker thread) and discover the expert servers of `opts.modelId`.
   * Does not attach: call attach() to route the model's MoE layers here.
   */
  static async connect(model: ModelLike, opts: RemoteExpertsOptions): Promise<RemoteExperts> {
    checkModelId(opts.modelId);
    const timeoutMs = opts.timeoutMs ?? 2000;
    if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) throw new ConfigError('timeoutMs', opts.timeoutMs, 'must be a positive number of milliseconds');
    const policy = opts.onFailure ?? 'fail';
    if (policy !== 'fail' && policy !== 'drop') throw new ConfigError('onFailure', policy, "must be 'fail' or 'drop'");
    if (!model.moeLayers().length) throw new ConfigError('model', 'dense', 'has no MoE layers: nothing to serve remotely');
    const servers = Array.isArray(opts.servers) ? opts.servers : [opts.servers];
    if (!servers.length || servers.some((s) => typeof s !== 'string' || !s)) throw new ConfigError('servers', opts.servers, 'must be one or more NATS URLs');
    const { port1, port2 } = new MessageChannel();
    const init: WorkerInit = {
      servers,
      modelId: opts.modelId,
      timeoutMs,
      discoveryIntervalMs: opts.discoveryIntervalMs ?? 2000,
      discoveryWaitMs: opts.discoveryWaitMs ?? 300,
      name: opts.name ?? 'switchyard-router',
      syncPort: port2,
    };
    const worker = new Worker(workerPath(), { workerData: init, transferList: [port2] });
    const ready = await new Promise<{ type: string; message?: string; maxPayload?: number }>((resolve, reject) => {
      const onMsg = (m: { type: string }): void => {
        if (m.type === 'ready' || m.type === 'error') {
          worker.off('message', onMsg);
          worker.off('error', reject);
          resolve(m);
        }
      };
      worker.on('message', onMsg);
      worker.once('error', reject);
    });
    if (ready.type === 'error') {
      await worker.terminate();
      port1.close();
      throw new ConfigError('servers', servers.join(','), ready.message ?? 'cannot connect');
    }
    const remote = new RemoteExperts(model, { ...opts, timeoutMs, onFailure: policy }, worker, port1, ready.maxPayload ?? 1 << 20);
    worker.unref();
    return remote;
  }

  /** Route every MoE layer of the model here. */
  attach(): this {
    this.attachedTo = [...this.layers.keys()];
    for (const l of this.attachedTo) l.setExpertSource(this);
    return this;
  }

  /** Give the layers back their previous behaviour (resident weights). */
  detach(): this {
    for (const l of this.attachedTo) l.setExpertSource(null);
    this.attachedTo = [];
    return this;
  }

  /** Run discovery now; report live instances and remote experts without a replica. */
  async discover(): Promise<DiscoveryReport> {
    const id = ++this.controlId;
    const m = await new Promise<{ instances: InstanceInfo[] }>((resolve) => {
      this.pending.set(id, resolve as (m: unknown) => void);
      this.worker.ref();
      this.worker.postMessage({ type: 'discover', id });
    }).finally(() => {
      this.pending.delete(id);
      this.worker.unref();
    });
    const hosted = new Set(m.instances.flatMap((i) => i.experts));
    const missing: string[] = [];
    for (const [layer, li] of this.layers) {
      for (let e = 0; e < layer.config.numExperts; e++) if (!this.isLocal(li, e) && !hosted.has(`${li}:${e}`)) missing.push(`${li}:${e}`);
    }
    return { instances: m.instances, missing };
  }

  /** Poll discovery until every remote expert has a live replica, or throw after `timeoutMs`. */
  async waitForExperts(timeoutMs = 10_000): Promise<DiscoveryReport> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const rep = await this.discover();
      if (!rep.missing.length) return rep;
      if (Date.now() > deadline) throw new ConfigError('experts', rep.missing.slice(0, 8).join(','), `${rep.missing.length} remote expert(s) have no expert server after ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  stats(): RemoteExpertsStats {
    return { ...this.counters, experts: [...this.perExpert.values()].map((c) => ({ ...c })) };
  }

  /** Detach, drain the NATS connection and stop the worker. */
  async close(): Promise<void> {
    this.closedPromise ??= (async () => {
      this.detach();
      this.worker.ref();
      await Promise.race([
        new Promise<void>((resolve) => {
          this.pending.set(-1, () => resolve());
          this.worker.postMessage({ type: 'close' });
        }),
        new Promise<void>((resolve) => setTimeout(resolve, 2000)),
      ]);
      await this.worker.terminate();
      this.port.close();
    })();
    return this.closedPromise;
  }

  private isLocal(layer: number, expert: number): boolean {
    return this.local.get(layer)?.has(expert) ?? false;
  }

  private counter(layer: number, expert: number): RemoteExpertCounters {
    const k = `${layer}:${expert}`;
    let c = this.perExpert.get(k);
    if (!c) this.perExpert.set(k, (c = { layer, expert, rows: 0, droppedRows: 0, failures: 0 }));
    return c;
  }

  // ---- ExpertSource ----

  runExperts(layer: MoELayer, xs: Tensor, offsets: Int32Array, input: Tensor): Tensor {
    const li = this.layers.get(layer);
    if (li === undefined) throw new ConfigError('layer', 'MoELayer', 'is not a layer of the model RemoteExperts was connected with');
    if (this.closedPromise) throw new ConfigError('remote', this.modelId, 'RemoteExperts is closed');
    if (this.dead) throw new ConfigError('remote', this.modelId, this.dead);
    const E = offsets.length - 1;
    const N = xs.shape[0], d = xs.shape[1];
    const x = xs.f32;
    const y = new Float32Array(N * d);
    const remote: Array<{ expert: number; row0: number; rows: number }> = [];
    const local: number[] = [];
    for (let e = 0; e < E; e++) {
      const rows = offsets[e + 1] - offsets[e];
      if (rows === 0) continue;
      if (this.isLocal(li, e)) local.push(e);
      else remote.push({ expert: e, row0: offsets[e], rows });
    }
    const training = this.training && isGradEnabled();
    if (training && local.length) throw new ConfigError('local', `${li}:${local[0]}`, 'experts run in the router cannot be fine-tuned through RemoteExperts; host them on an expert server');
    const id = remote.length ? this.post(training ? 'train' : 'forward', li, d, remote, x, N) : 0;
    // Local experts run while the remote ones are in flight.
    if (local.length) this.runLocal(layer, li, local, x, offsets, d, y, input);
    if (!remote.length) return new Tensor(y, [N, d]);
    const result = this.collect(id, li, remote);
    const out = new Float32Array(this.output, 0, N * d);
    let failed: { expert: number; reason: string } | null = null;
    remote.forEach((t, i) => {
      const c = this.counter(li, t.expert);
      c.rows += t.rows;
      this.counters.remoteRows += t.rows;
      const f = result.failures[i];
      if (f) {
        c.failures++;
        this.counters.failures++;
        if (this.onFailure === 'drop') {
          c.droppedRows += t.rows;
          this.counters.droppedAssignments += t.rows;
        }
        failed ??= f;
        return; // rows stay 0: the contribution is dropped
      }
      y.set(out.subarray(t.row0 * d, (t.row0 + t.rows) * d), t.row0 * d);
    });
    if (failed && this.onFailure === 'fail') {
      const f = failed as { expert: number; reason: string };
      throw new RemoteExpertError(li, f.expert, f.reason);
    }
    const yt = new Tensor(y, [N, d]);
    if (!training) return yt;
    // Backward: each answered chunk's dY goes to the replica that kept its activations; dX comes back.
    const chunks = result.chunks.filter((c) => !result.failures[c.task]);
    return record('remoteExperts', [xs, this.trainHandle], yt, (g) => {
      const bid = this.post('backward', li, d, remote, g.f32, N, chunks);
      const back = this.collect(bid, li, remote);
      const bad = back.failures.findIndex((f) => f !== null);
      if (bad >= 0) throw new RemoteExpertError(li, remote[bad].expert, back.failures[bad]!.reason);
      const dx = new Float32Array(N * d);
      const src = new Float32Array(this.output, 0, N * d);
      for (const c of chunks) dx.set(src.subarray(c.row0 * d, (c.row0 + c.rows) * d), c.row0 * d);
      return [new Tensor(dx, [N, d]), null];
    });
  }

  /** Copy `data` (N×d) to shared memory and send the worker a run; returns its id. */
  private post(mode: RunMessage['mode'], li: number, d: number, tasks: RunMessage['tasks'], data: Float32Array, N: number, chunks?: ChunkRef[]): number {
    if (this.input.byteLength < 4 * N * d) {
      this.input = new SharedArrayBuffer(4 * N * d);
      this.output = new SharedArrayBuffer(4 * N * d);
    }
    new Float32Array(this.input, 0, N * d).set(data.subarray(0, N * d));
    const id = ++this.callId;
    const msg: RunMessage = { type: 'run', id, mode, layer: li, cols: d, tasks, chunks, input: this.input, output: this.output, signal: this.signal };
    this.worker.postMessage(msg);
    return id;
  }

  /** Wait for run `id` and add its counters. */
  private collect(id: number, li: number, tasks: Array<{ expert: number }>): RunResult {
    const result = this.wait(id, li, tasks);
    this.counters.calls++;
    this.counters.requests += result.requests;
    this.counters.retries += result.retries;
    this.counters.timeouts += result.timeouts;
    this.counters.bytesSent += result.bytesSent;
    this.counters.bytesReceived += result.bytesReceived;
    return result;
  }

  /**
   * Fine-tuning mode (the servers must run with --train): while on and gradients are enabled,
   * forwards keep activations on the servers and backward() sends them dY; step() applies the
   * servers' optimizers. Each expert trains on one replica (the first live one by id).
   */
  train(on = true): this {
    this.training = on;
    return this;
  }

  /** Fine-tuning: every expert server of the model applies its optimizer step and clears its gradients. */
  async step(): Promise<{ instances: string[] }> {
    const id = ++this.controlId;
    const m = await new Promise<{ replies?: Array<{ id: string; error?: string }>; error?: string }>((resolve) => {
      this.pending.set(id, resolve as (m: unknown) => void);
      this.worker.ref();
      this.worker.postMessage({ type: 'step', id });
    }).finally(() => {
      this.pending.delete(id);
      this.worker.unref();
    });
    if (m.error) throw new ConfigError('step', this.modelId, m.error);
    const bad = (m.replies ?? []).find((r) => r.error);
    if (bad) throw new ConfigError('step', this.modelId, `an expert server refused the step: ${bad.error}`);
    return { instances: (m.replies ?? []).map((r) => r.id) };
  }

  /** Block until the worker reports run `id` (bounded by two timeouts plus slack). */
  private wait(id: number, li: number, remote: Array<{ expert: number }>): RunResult {
    const sig = new Int32Array(this.signal);
    const deadline = Date.now() + 2 * this.timeoutMs + 5000;
    for (;;) {
      const cur = Atomics.load(sig, 0);
      if (cur === id) {
        for (let tries = 0; tries < 1000; tries++) {
          const got = receiveMessageOnPort(this.port);
          if (got) {
            const r = got.message as RunResult;
            if (r.id === id) return r;
            continue; // a late result of an abandoned call
          }
          Atomics.wait(sig, 1, 0, 1);
        }
      }
      const left = deadline - Date.now();
      if (left <= 0) {
        // Abandon the buffers the worker may still write to.
        this.input = new SharedArrayBuffer(this.input.byteLength);
        this.output = new SharedArrayBuffer(this.output.byteLength);
        throw new RemoteExpertError(li, remote[0].expert, `the NATS worker did not finish the layer's ${remote.length} request(s) within ${2 * this.timeoutMs + 5000} ms`);
      }
      Atomics.wait(sig, 0, cur, left);
    }
  }

  private runLocal(layer: MoELayer, li: number, experts: number[], x: Float32Array, offsets: Int32Array, d: number, y: Float32Array, input: Tensor): void {
    const E = offsets.length - 1;
    const off = new Int32Array(E + 1);
    let rows = 0;
    for (let e = 0; e < E; e++) {
      off[e] = rows;
      if (experts.includes(e)) rows += offsets[e + 1] - offsets[e];
    }
    off[E] = rows;
    const xl = new Float32Array(rows * d);
    for (const e of experts) xl.set(x.subarray(offsets[e] * d, offsets[e + 1] * d), off[e] * d);
    const xt = new Tensor(xl, [rows, d]);
    const c = layer.config;
    let yl: Tensor;
    if (this.localSource) yl = this.localSource.runExperts(layer, xt, off, input);
    else {
      const items = layer.experts.items;
      if (items[experts[0]].w1.weight.shape[0] === 0) throw new ConfigError('local', `${li}:${experts[0]}`, 'has no resident weights (the model was built with deferred experts): pass localSource');
      yl = groupedExpertFFN(xt, off, { w1: items.map((i) => i.w1.weight), w2: items.map((i) => i.w2.weight), w3: c.expert.gated ? items.map((i) => i.w3!.weight) : null }, c.expert.activation);
    }
    const yf = yl.f32;
    for (const e of experts) y.set(yf.subarray(off[e] * d, off[e + 1] * d), offsets[e] * d);
    this.counters.localRows += rows;
  }
}
