/**
 * The router's NATS side, in a worker thread: MoELayer.forward is synchronous, so RemoteExperts
 * (main thread) writes a layer's rows to shared memory, posts one `run` message and blocks in
 * Atomics.wait while this thread sends the requests, writes the replies into the shared output,
 * posts a summary on the sync port and wakes it.
 *
 * Inference forwards are batched per server instance: service discovery ($SRV.INFO) lists each
 * instance and the experts it hosts; every expert block of the layer is given to one live
 * replica (largest blocks first, each to the replica with the fewest rows so far, so replicas
 * share the load), and each instance gets one frame on its own (direct) subject with all its
 * blocks (more only when they exceed NATS' max payload or the server's --max-rows). A round
 * trip costs far more than the bytes at these sizes, so this is one request per instance per
 * layer instead of one per expert. An expert no instance is known for goes to its queue-group
 * subject (one single-block message; NATS picks a live replica) and triggers a discovery.
 *
 * Retry, once, of a failed frame's blocks:
 * - the instance is gone (no subscriber on its direct subject): it leaves the table; its blocks
 *   go to other known replicas, batched, or else to their queue groups, which only live replicas
 *   are in (one started since the last discovery included);
 * - timeout or error (alive but slow or failing): it is set aside for a while and the blocks go
 *   to other known replicas, or else to the queue groups, which may deliver them to the same
 *   replica if that is the only live one.
 * Fine-tuning (train/backward) stays one request per expert block, pinned to one replica (the
 * activations live there). Discovery repeats in the background and after failures.
 */
import { parentPort, workerData, type MessagePort } from 'node:worker_threads';
import { connect, ErrorCode, NatsError, RequestStrategy, ServiceError, type Msg, type NatsConnection } from 'nats';
import { decodeBatch, decodeMessage, encodeBatch, encodeMessage, HEADER_BYTES, KIND_BACKWARD, KIND_BATCH_FORWARD, KIND_BATCH_REPLY, KIND_FORWARD, KIND_FORWARD_TRAIN, KIND_REPLY, type ProtocolLimits } from './protocol.js';
import { directSubject, expertSubject, SERVICE_NAME, stepSubject } from './spec.js';

/** What the main thread passes at start. */
export interface WorkerInit {
  servers: string[];
  modelId: string;
  timeoutMs: number;
  discoveryIntervalMs: number;
  discoveryWaitMs: number;
  name: string;
  syncPort: MessagePort;
}

/** One expert block of a run: rows row0 .. row0+rows-1 of the shared input. */
export interface RunTask {
  expert: number;
  row0: number;
  rows: number;
}

/** Where a training forward's activations wait for their backward: one chunk of one task. */
export interface ChunkRef {
  task: number;
  row0: number;
  rows: number;
  requestId: number;
  instance: string;
}

/** A layer's remote experts, sent by the main thread. */
export interface RunMessage {
  type: 'run';
  id: number;
  /** 'forward' (inference), 'train' (the server keeps activations), 'backward' (input = dY; output = dX). */
  mode: 'forward' | 'train' | 'backward';
  layer: number;
  cols: number;
  tasks: RunTask[];
  /** Backward: the chunks the training forward sent, and where. */
  chunks?: ChunkRef[];
  input: SharedArrayBuffer;
  output: SharedArrayBuffer;
  signal: SharedArrayBuffer;
}

/** Per task outcome: null when answered, else why both attempts failed. */
export interface RunResult {
  id: number;
  failures: Array<{ expert: number; reason: string } | null>;
  requests: number;
  retries: number;
  timeouts: number;
  bytesSent: number;
  bytesReceived: number;
  /** Training forward: where each answered chunk's activations are kept. */
  chunks: ChunkRef[];
}

/** A server instance as discovery saw it. */
export interface InstanceInfo {
  id: string;
  direct: string;
  /** "layer:expert" keys it hosts. */
  experts: string[];
  metadata: Record<string, string>;
}

const init = workerData as WorkerInit;
const port = parentPort!;
let nc: NatsConnection;
// Random start: request ids key the activations a training server keeps, so routers should not collide.
let requestId = (Math.random() * 0x100000000) >>> 0;
/** "layer:expert" → instances hosting it. */
let table = new Map<string, InstanceInfo[]>();
/** Instances the last discovery found (what discover() reports). */
let instances: InstanceInfo[] = [];
/** Instances requests may go to: those found, plus those missing from up to MISSES_BEFORE_DROP - 1 discoveries in a row. */
let routable: InstanceInfo[] = [];
const missed = new Map<string, number>();
const MISSES_BEFORE_DROP = 3;
/** Instances set aside after a failure, until the time given (or until discovery drops them). */
const suspect = new Map<string, number>();
const turn = new Map<string, number>();
let closed = false;

async function discover(): Promise<InstanceInfo[]> {
  const found: InstanceInfo[] = [];
  const it = await nc.services.client({ strategy: RequestStrategy.Timer, maxWait: init.discoveryWaitMs }).info(SERVICE_NAME);
  const infos = [];
  try {
    for await (const info of it) infos.push(info);
  } catch (e) {
    // No responders: no instance is running (an empty list, not a failed discovery).
    if ((e as NatsError).code !== ErrorCode.NoResponders) throw e;
  }
  for (const info of infos) {
    const md = info.metadata ?? {};
    if (md.model !== init.modelId) continue;
    const direct = directSubject(init.modelId, info.id);
    const experts: string[] = [];
    for (const ep of info.endpoints ?? []) {
      const m = ep.metadata;
      if (m && m.layer !== undefined && m.expert !== undefined) experts.push(`${m.layer}:${m.expert}`);
    }
    found.push({ id: info.id, direct, experts, metadata: md });
  }
  // An instance that answered before but not this time (its event loop busy with a long block,
  // say) stays routable for a few rounds: if it is really gone, the first request to its direct
  // subject finds no subscriber and forget() drops it at once.
  const alive = new Set(found.map((f) => f.id));
  const kept = [...found];
  for (const inst of routable) {
    if (alive.has(inst.id)) continue;
    const n = (missed.get(inst.id) ?? 0) + 1;
    if (n < MISSES_BEFORE_DROP) {
      missed.set(inst.id, n);
      kept.push(inst);
    } else missed.delete(inst.id);
  }
  for (const id of alive) missed.delete(id);
  const next = new Map<string, InstanceInfo[]>();
  for (const inst of kept) {
    for (const k of inst.experts) {
      let list = next.get(k);
      if (!list) next.set(k, (list = []));
      list.push(inst);
    }
  }
  for (const list of next.values()) list.sort((a, b) => (a.id < b.id ? -1 : 1));
  const keptIds = new Set(kept.map((f) => f.id));
  for (const id of [...suspect.keys()]) if (!keptIds.has(id)) suspect.delete(id);
  table = next;
  routable = kept;
  instances = found;
  // Chunks never exceed the smallest row limit any server of this model announced.
  const caps = kept.map((f) => Number(f.metadata.maxRows)).filter((n) => Number.isInteger(n) && n > 0);
  serverMaxRows = caps.length ? Math.min(...caps) : 65536;
  return found;
}

/** The next replica of layer:expert in turn, skipping suspects and `exclude`. */
function pick(key: string, exclude: string | null): InstanceInfo | null {
  const list = table.get(key);
  if (!list || !list.length) return null;
  const now = Date.now();
  const start = turn.get(key) ?? 0;
  turn.set(key, start + 1);
  for (let i = 0; i < list.length; i++) {
    const inst = list[(start + i) % list.length];
    if (inst.id === exclude) continue;
    const until = suspect.get(inst.id);
    if (until !== undefined && until > now) continue;
    return inst;
  }
  return null;
}

/** Drop an instance from the table (its direct subject has no subscriber). */
function forget(id: string): void {
  for (const [k, list] of table) {
    const kept = list.filter((i) => i.id !== id);
    if (kept.length !== list.length) table.set(k, kept);
  }
  instances = instances.filter((i) => i.id !== id);
  routable = routable.filter((i) => i.id !== id);
  missed.delete(id);
}

class AttemptError extends Error {
  constructor(message: string, readonly timeout: boolean, readonly gone: boolean) {
    super(message);
  }
}

const LIMITS: ProtocolLimits = { maxRows: 1 << 30, maxBytes: 1 << 30 };

/** One NATS request/reply, counted, with transport and service errors as AttemptErrors (timeouts retryable). */
async function requestReply(subject: string, payload: Uint8Array, counters: RunResult): Promise<Uint8Array> {
  let msg: Msg;
  counters.requests++;
  counters.bytesSent += payload.length;
  try {
    msg = await nc.request(subject, payload, { timeout: init.timeoutMs });
  } catch (e) {
    const code = (e as NatsError).code;
    if (code === ErrorCode.Timeout) {
      counters.timeouts++;
      throw new AttemptError(`no reply within ${init.timeoutMs} ms`, true, false);
    }
    if (code === ErrorCode.NoResponders) throw new AttemptError('no server is subscribed', false, true);
    throw new AttemptError((e as Error).message, false, false);
  }
  counters.bytesReceived += msg.data.length;
  if (ServiceError.isServiceError(msg)) {
    const se = ServiceError.toServiceError(msg);
    throw new AttemptError(`server error ${se?.code ?? ''}: ${se?.message ?? 'unknown'}`, false, false);
  }
  return msg.data;
}

/** A reply decoded by `decode`; a reply that does not decode fails the attempt. */
function decodeReply<T>(data: Uint8Array, decode: (data: Uint8Array) => T): T {
  try {
    return decode(data);
  } catch (e) {
    throw new AttemptError(`malformed reply (${(e as Error).message})`, false, false);
  }
}

async function send(subject: string, payload: Uint8Array, layer: number, expert: number, rows: number, cols: number, rid: number, counters: RunResult): Promise<Float32Array> {
  const rep = decodeReply(await requestReply(subject, payload, counters), (data) => decodeMessage(data, LIMITS));
  if (rep.kind !== KIND_REPLY || rep.requestId !== rid || rep.layer !== layer || rep.expert !== expert || rep.rows !== rows || rep.cols !== cols) {
    throw new AttemptError(`reply does not match its request (got kind ${rep.kind}, id ${rep.requestId}, ${rep.layer}:${rep.expert}, ${rep.rows}x${rep.cols})`, false, false);
  }
  return rep.data;
}

/**
 * Fine-tuning: the replica that keeps an expert's activations and accumulates its gradients is
 * the first live one by id (every router agrees), so replicas never train apart; no retry
 * elsewhere (the activations live there).
 */
function pinned(key: string): InstanceInfo | null {
  const now = Date.now();
  for (const inst of table.get(key) ?? []) {
    const until = suspect.get(inst.id);
    if (until === undefined || until <= now) return inst;
  }
  return null;
}

async function trainChunk(m: RunMessage, index: number, task: RunTask, r0: number, rows: number, input: Float32Array, output: Float32Array, counters: RunResult): Promise<void> {
  const key = `${m.layer}:${task.expert}`;
  const inst = pinned(key);
  if (!inst) throw new Error('no live replica known to service discovery (fine-tuning needs one)');
  const rid = (requestId = (requestId + 1) >>> 0);
  const payload = encodeMessage({ kind: KIND_FORWARD_TRAIN, requestId: rid, layer: m.layer, expert: task.expert, rows, cols: m.cols }, input, r0 * m.cols);
  try {
    output.set(await send(inst.direct, payload, m.layer, task.expert, rows, m.cols, rid, counters), r0 * m.cols);
  } catch (e) {
    if ((e as AttemptError).gone) forget(inst.id);
    throw new Error(`replica ${inst.id}: ${(e as Error).message}`);
  }
  counters.chunks.push({ task: index, row0: r0, rows, requestId: rid, instance: inst.id });
}

async function backwardChunk(m: RunMessage, c: ChunkRef, input: Float32Array, output: Float32Array, counters: RunResult): Promise<void> {
  const expert = m.tasks[c.task].expert;
  const payload = encodeMessage({ kind: KIND_BACKWARD, requestId: c.requestId, layer: m.layer, expert, rows: c.rows, cols: m.cols }, input, c.row0 * m.cols);
  try {
    output.set(await send(directSubject(init.modelId, c.instance), payload, m.layer, expert, c.rows, m.cols, c.requestId, counters), c.row0 * m.cols);
  } catch (e) {
    throw new Error(`backward on replica ${c.instance}: ${(e as Error).message}`);
  }
}

/** One chunk of one expert's block: first replica, then once more on another. */
async function chunk(m: RunMessage, task: RunTask, r0: number, rows: number, input: Float32Array, output: Float32Array, counters: RunResult): Promise<void> {
  const key = `${m.layer}:${task.expert}`;
  const rid = (requestId = (requestId + 1) >>> 0);
  const payload = encodeMessage({ kind: KIND_FORWARD, requestId: rid, layer: m.layer, expert: task.expert, rows, cols: m.cols }, input, r0 * m.cols);
  const shared = expertSubject(init.modelId, m.layer, task.expert);
  const first = pick(key, null);
  let data: Float32Array;
  try {
    data = await send(first?.direct ?? shared, payload, m.layer, task.expert, rows, m.cols, rid, counters);
  } catch (e1) {
    const err1 = e1 as AttemptError;
    let second: InstanceInfo | null = null;
    if (first && err1.gone) {
      // Nobody listens on its direct subject: the instance is gone. The queue group reaches every
      // live replica (the dead one cannot be among them), including any started since discovery.
      forget(first.id);
    } else {
      // Alive but slow or failing: set it aside and try another known replica.
      if (first) suspect.set(first.id, Date.now() + Math.max(5000, 2 * init.discoveryIntervalMs));
      second = pick(key, first?.id ?? null);
    }
    if (err1.gone || err1.timeout) void refresh();
    counters.retries++;
    try {
      data = await send(second?.direct ?? shared, payload, m.layer, task.expert, rows, m.cols, rid, counters);
    } catch (e2) {
      const where = (i: InstanceInfo | null): string => (i ? `replica ${i.id}` : 'queue group');
      throw new Error(`${where(first)}: ${err1.message}; retry on ${where(second)}: ${(e2 as Error).message}`);
    }
  }
  output.set(data, r0 * m.cols);
}

/** A piece of a task's block: rows r0 .. r0+rows-1 of the shared input (absolute). */
interface Piece {
  task: number;
  expert: number;
  r0: number;
  rows: number;
}

/** Send one batched frame and check its reply against it; the reply's rows, blocks back to back. */
async function sendBatch(subject: string, layer: number, cols: number, pieces: Piece[], input: Float32Array, counters: RunResult): Promise<Float32Array> {
  const rid = (requestId = (requestId + 1) >>> 0);
  const blocks = pieces.map((p) => ({ expert: p.expert, rows: p.rows, row0: p.r0 }));
  const payload = encodeBatch({ kind: KIND_BATCH_FORWARD, requestId: rid, layer, cols }, blocks, input);
  const rep = decodeReply(await requestReply(subject, payload, counters), (data) => decodeBatch(data, LIMITS));
  const same = rep.blocks.length === pieces.length && rep.blocks.every((b, i) => b.expert === pieces[i].expert && b.rows === pieces[i].rows);
  if (rep.kind !== KIND_BATCH_REPLY || rep.requestId !== rid || rep.layer !== layer || rep.cols !== cols || !same) {
    throw new AttemptError(`reply does not match its request (got kind ${rep.kind}, id ${rep.requestId}, layer ${rep.layer}, blocks ${rep.blocks.map((b) => `${b.expert}x${b.rows}`).join(',')}, cols ${rep.cols})`, false, false);
  }
  return rep.data;
}

/**
 * Cut an instance's pieces into frames: experts strictly increasing within a frame (the wire
 * format's rule), at most `cap` rows per frame (a piece larger than the room left is split).
 */
function pack(pieces: Piece[], cap: number): Piece[][] {
  const sorted = [...pieces].sort((a, b) => a.expert - b.expert || a.r0 - b.r0);
  const frames: Piece[][] = [];
  let cur: Piece[] = [], rows = 0;
  const flush = (): void => {
    if (cur.length) frames.push(cur);
    cur = [];
    rows = 0;
  };
  for (const p of sorted) {
    let r0 = p.r0, left = p.rows;
    while (left > 0) {
      if (rows >= cap || (cur.length && cur[cur.length - 1].expert >= p.expert)) flush();
      const n = Math.min(left, cap - rows);
      cur.push({ ...p, r0, rows: n });
      rows += n;
      r0 += n;
      left -= n;
    }
  }
  flush();
  return frames;
}

/** Rows already given to each instance in this layer; spreads experts over their replicas. */
function assign(pieces: Piece[], layer: number, exclude: string | null): { groups: Map<InstanceInfo, Piece[]>; orphans: Piece[] } {
  const groups = new Map<InstanceInfo, Piece[]>();
  const load = new Map<string, number>();
  const orphans: Piece[] = [];
  const now = Date.now();
  // Largest blocks first, each to its least loaded live replica (ties: in turn across calls).
  const order = [...pieces].sort((a, b) => b.rows - a.rows);
  const spin = rotation++;
  for (const p of order) {
    const list = table.get(`${layer}:${p.expert}`) ?? [];
    let best: InstanceInfo | null = null, bestLoad = Infinity;
    for (let i = 0; i < list.length; i++) {
      const inst = list[(spin + i) % list.length];
      if (inst.id === exclude) continue;
      const until = suspect.get(inst.id);
      if (until !== undefined && until > now) continue;
      const l = load.get(inst.id) ?? 0;
      if (l < bestLoad) [best, bestLoad] = [inst, l];
    }
    if (!best) {
      orphans.push(p);
      continue;
    }
    load.set(best.id, bestLoad + p.rows);
    let g = groups.get(best);
    if (!g) groups.set(best, (g = []));
    g.push(p);
  }
  return { groups, orphans };
}
let rotation = 0;
let lastMissRefresh = 0;

/**
 * Inference forward of a layer: every known server instance gets one batched frame (or a few,
 * when its rows exceed the frame cap) with all the expert blocks it computes; an expert no
 * instance is known for goes to its queue-group subject (one request per expert). A frame that
 * fails is retried once, its pieces spread over other replicas (or their queue groups).
 */
async function forwardBatched(m: RunMessage, input: Float32Array, output: Float32Array, counters: RunResult): Promise<void> {
  const pieces: Piece[] = m.tasks.map((t, i) => ({ task: i, expert: t.expert, r0: t.row0, rows: t.rows }));
  const cap = Math.max(1, Math.min(serverMaxRows, Math.floor((maxPayload - HEADER_BYTES - 8 * m.tasks.length) / (4 * m.cols))));
  const fail = (p: Piece, reason: string): void => {
    counters.failures[p.task] ??= { expert: p.expert, reason };
  };
  const write = (frame: Piece[], data: Float32Array): void => {
    let at = 0;
    for (const p of frame) {
      output.set(data.subarray(at, at + p.rows * m.cols), p.r0 * m.cols);
      at += p.rows * m.cols;
    }
  };
  /** The queue group of each orphan piece's expert (no known replica): the per-expert path, with its own retry. */
  const viaQueueGroup = (ps: Piece[]): Promise<void>[] =>
    ps.map((p) => chunk(m, m.tasks[p.task], p.r0, p.rows, input, output, counters).catch((e: Error) => fail(p, e.message)));
  const { groups, orphans } = assign(pieces, m.layer, null);
  if (orphans.length && Date.now() - lastMissRefresh > 1000) {
    lastMissRefresh = Date.now();
    void refresh();
  }
  const jobs: Promise<void>[] = viaQueueGroup(orphans.flatMap((p) => pack([p], maxChunkRows).flat()));
  for (const [inst, ps] of groups) {
    for (const frame of pack(ps, cap)) {
      jobs.push(
        sendBatch(inst.direct, m.layer, m.cols, frame, input, counters).then(
          (data) => write(frame, data),
          async (e1: AttemptError) => {
            if (e1.gone) forget(inst.id);
            else suspect.set(inst.id, Date.now() + Math.max(5000, 2 * init.discoveryIntervalMs));
            if (e1.gone || e1.timeout) void refresh();
            counters.retries++;
            const retry = assign(frame, m.layer, inst.id);
            const again: Promise<void>[] = [];
            // Gone: the queue group reaches only live replicas (any started since discovery too).
            // Slow or failing with no other known replica: the queue group may reach it again.
            for (const p of retry.orphans) {
              const rid = (requestId = (requestId + 1) >>> 0);
              const payload = encodeMessage({ kind: KIND_FORWARD, requestId: rid, layer: m.layer, expert: p.expert, rows: p.rows, cols: m.cols }, input, p.r0 * m.cols);
              again.push(
                send(expertSubject(init.modelId, m.layer, p.expert), payload, m.layer, p.expert, p.rows, m.cols, rid, counters).then(
                  (data) => output.set(data, p.r0 * m.cols),
                  (e2: Error) => fail(p, `replica ${inst.id}: ${e1.message}; retry on queue group: ${e2.message}`),
                ),
              );
            }
            for (const [other, ops] of retry.groups) {
              for (const f2 of pack(ops, cap)) {
                again.push(
                  sendBatch(other.direct, m.layer, m.cols, f2, input, counters).then(
                    (data) => write(f2, data),
                    (e2: Error) => {
                      for (const p of f2) fail(p, `replica ${inst.id}: ${e1.message}; retry on replica ${other.id}: ${e2.message}`);
                    },
                  ),
                );
              }
            }
            await Promise.all(again);
          },
        ),
      );
    }
  }
  await Promise.all(jobs);
}

let maxChunkRows = 1;
let serverMaxRows = 65536;
let maxPayload = 1 << 20;

async function run(m: RunMessage): Promise<void> {
  const counters: RunResult = { id: m.id, failures: m.tasks.map(() => null), requests: 0, retries: 0, timeouts: 0, bytesSent: 0, bytesReceived: 0, chunks: [] };
  const input = new Float32Array(m.input);
  const output = new Float32Array(m.output);
  const jobs: Promise<void>[] = [];
  if (m.mode === 'forward') jobs.push(forwardBatched(m, input, output, counters));
  else m.tasks.forEach((task, i) => {
    const parts: Promise<void>[] = [];
    if (m.mode === 'backward') {
      for (const c of m.chunks ?? []) if (c.task === i) parts.push(backwardChunk(m, c, input, output, counters));
    } else {
      for (let r = 0; r < task.rows; r += maxChunkRows) {
        const rows = Math.min(maxChunkRows, task.rows - r);
        parts.push(m.mode === 'train' ? trainChunk(m, i, task, task.row0 + r, rows, input, output, counters) : chunk(m, task, task.row0 + r, rows, input, output, counters));
      }
    }
    jobs.push(
      Promise.all(parts).then(
        () => undefined,
        (e: Error) => {
          counters.failures[i] = { expert: task.expert, reason: e.message };
        },
      ),
    );
  });
  await Promise.all(jobs);
  init.syncPort.postMessage(counters);
  const sig = new Int32Array(m.signal);
  Atomics.store(sig, 0, m.id);
  Atomics.notify(sig, 0);
}

/** Fine-tuning: ask every instance of the model to apply its optimizer step; the ids that did. */
async function step(): Promise<Array<{ id: string; steps?: number; error?: string }>> {
  await refresh();
  // Servers without --train answer `step` with an error; only the training ones are waited for.
  const expected = new Set(instances.filter((i) => i.metadata.train && i.metadata.train !== 'off').map((i) => i.id));
  if (!expected.size) throw new Error('no expert server of this model runs with --train');
  const out: Array<{ id: string; steps?: number; error?: string }> = [];
  try {
    const it = await nc.requestMany(stepSubject(init.modelId), new Uint8Array(0), { strategy: RequestStrategy.Count, maxMessages: instances.length, maxWait: init.timeoutMs });
    for await (const msg of it) {
      if (ServiceError.isServiceError(msg)) {
        const text = ServiceError.toServiceError(msg)?.message ?? 'error';
        if (!/not started with --train/.test(text)) out.push({ id: '?', error: text });
        continue;
      }
      out.push(JSON.parse(new TextDecoder().decode(msg.data)) as { id: string; steps: number });
    }
  } catch (e) {
    if ((e as NatsError).code !== ErrorCode.NoResponders) throw e;
  }
  const answered = new Set(out.map((r) => r.id));
  for (const id of expected) if (!answered.has(id)) out.push({ id, error: `no answer within ${init.timeoutMs} ms` });
  return out;
}

let refreshing: Promise<void> | null = null;
function refresh(): Promise<void> {
  if (closed) return Promise.resolve();
  refreshing ??= discover().then(
    () => {
      refreshing = null;
    },
    () => {
      refreshing = null;
    },
  );
  return refreshing;
}

async function main(): Promise<void> {
  try {
    nc = await connect({ servers: init.servers, name: init.name, maxReconnectAttempts: -1, reconnectTimeWait: 250, timeout: 5000 });
  } catch (e) {
    port.postMessage({ type: 'error', message: `cannot connect to NATS at ${init.servers.join(', ')}: ${(e as Error).message}` });
    return;
  }
  maxPayload = nc.info?.max_payload ?? 1 << 20;
  port.on('message', (m: { type: string; id?: number } & Partial<RunMessage>) => {
    if (m.type === 'run') {
      maxChunkRows = Math.max(1, Math.min(serverMaxRows, Math.floor((maxPayload - HEADER_BYTES) / (4 * (m.cols ?? 1)))));
      void run(m as RunMessage);
    } else if (m.type === 'discover') {
      void refresh().then(() => port.postMessage({ type: 'discovered', id: m.id, instances }));
    } else if (m.type === 'step') {
      void step().then(
        (replies) => port.postMessage({ type: 'stepped', id: m.id, replies }),
        (e: Error) => port.postMessage({ type: 'stepped', id: m.id, error: e.message }),
      );
    } else if (m.type === 'close') {
      closed = true;
      void nc.drain().then(
        () => port.postMessage({ type: 'closed' }),
        () => port.postMessage({ type: 'closed' }),
      );
    }
  });
  try {
    await discover();
  } catch {
    /* no instances yet: requests use the queue groups */
  }
  const timer = setInterval(() => void refresh(), init.discoveryIntervalMs);
  void nc.closed().then(() => clearInterval(timer));
  port.postMessage({ type: 'ready', maxPayload, instances });
}

void main();
