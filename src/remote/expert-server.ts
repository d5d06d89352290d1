/**
 * ExpertServer: answer expert requests for some of a model's routed experts over NATS.
 *
 * One NATS service (`switchyard-experts`, metadata: model id, dModel, hosted experts) per
 * process, with one endpoint per hosted expert on `switchyard.experts.<model>.<layer>.<expert>`
 * in the queue group `switchyard-experts` (replicas share the load; NATS delivers each request
 * to one of them), a `direct` endpoint only this instance listens on (routers send it one
 * batched frame per layer with all the blocks they chose this instance for, run as one grouped
 * FFN call; single-expert messages are accepted there too, layer and expert from the header),
 * and a `stats` endpoint (JSON).
 * Health, load and per-endpoint timings are also visible through the NATS service API
 * ($SRV.PING / $SRV.INFO / $SRV.STATS).
 *
 * Each request is decoded and validated (src/remote/protocol.ts) and, if well formed and for a
 * hosted expert of this model's width, answered with exactly groupedExpertFFN over its rows
 * (the same kernel a local forward runs). Anything else is answered with a NATS service error
 * (400 malformed, 404 expert not hosted, 500 weights unreadable) and logged; the server stays up.
 */
import { connect, type NatsConnection, type Service, type ServiceMsg } from 'nats';
import { ConfigError } from '../errors.js';
import { groupedExpertFFN } from '../moe/expert-ffn.js';
import type { ExpertSource, MoELayer } from '../moe/layer.js';
import { AdamW } from '../optim/adamw.js';
import { SGD } from '../optim/sgd.js';
import { enableGrad, noGrad } from '../tensor/autodiff.js';
import { Tensor } from '../tensor/tensor.js';
import { decodeBatch, decodeMessage, DEFAULT_LIMITS, encodeBatch, encodeMessage, isBatchFrame, KIND_BACKWARD, KIND_BATCH_FORWARD, KIND_BATCH_REPLY, KIND_FORWARD, KIND_FORWARD_TRAIN, KIND_REPLY, messageBytes, ProtocolError, type BatchMessage, type ProtocolLimits } from './protocol.js';
import { checkModelId, directSubject, expertSubject, formatExpertSet, moeLayerIndex, QUEUE_GROUP, SERVICE_NAME, statsSubject, stepSubject, type ExpertSet } from './spec.js';

export interface ExpertServerOptions {
  /** NATS server URL(s). */
  servers: string | string[];
  /** Model id routers address (see defaultModelId). */
  modelId: string;
  /** The (layer, expert) pairs this process hosts (parseExpertSpec). */
  experts: ExpertSet;
  /** Where expert weights come from (an ExpertStore); default: the layers' resident weights. */
  source?: ExpertSource | null;
  /** Message limits (rows per message; bytes, capped by the NATS server's max_payload). */
  limits?: Partial<ProtocolLimits>;
  /** One line per rejected message or failure (default: stderr). */
  log?: (line: string) => void;
  /** NATS connection name. */
  name?: string;
  /**
   * Fine-tuning (needs the hosted experts' weights resident, source null): training forwards keep
   * their activations under the request id, backward requests return dX and accumulate the
   * weight gradients, and the `step` endpoint applies the optimizer and clears the gradients.
   */
  train?: { optimizer: 'sgd' | 'adamw'; lr: number; maxSaved?: number } | null;
}

/** Counters of one expert server (its `stats` endpoint answers with these). */
export interface ExpertServerStats {
  id: string;
  model: string;
  experts: string;
  /** Requests answered with rows. */
  requests: number;
  rows: number;
  bytesIn: number;
  bytesOut: number;
  /** Malformed, oversized or misaddressed messages answered with an error. */
  rejected: number;
  /** Requests that failed while computing (unreadable weights). */
  errors: number;
  /** Per hosted expert "layer:expert": requests and rows. */
  load: Record<string, { requests: number; rows: number }>;
  /** Fine-tuning: backward requests answered, optimizer steps applied, activations kept now. */
  backwards: number;
  steps: number;
  saved: number;
  startedAt: string;
}

type ModelLike = { moeLayers(): MoELayer[]; layers?: { items: unknown[] } };

/** Serve some experts of a model over NATS (see the module doc). */
export class ExpertServer {
  readonly id: string;
  readonly modelId: string;
  private readonly nc: NatsConnection;
  private readonly service: Service;
  private readonly counters: ExpertServerStats;
  private logged = 0;

  private constructor(nc: NatsConnection, service: Service, modelId: string, counters: ExpertServerStats) {
    this.nc = nc;
    this.service = service;
    this.id = service.info().id;
    this.modelId = modelId;
    this.counters = counters;
  }

  /** Connect, register the service and its endpoints, and start answering. */
  static async start(model: ModelLike, opts: ExpertServerOptions): Promise<ExpertServer> {
    const modelId = checkModelId(opts.modelId);
    const byIndex = new Map<number, MoELayer>();
    for (const [l, i] of moeLayerIndex(model)) byIndex.set(i, l);
    if (!opts.experts.size) throw new ConfigError('experts', '', 'names no experts to serve');
    for (const [li, set] of opts.experts) {
      const l = byIndex.get(li);
      if (!l) throw new ConfigError('experts', li, 'is not an MoE layer index of this model');
      for (const e of set) if (!(e >= 0 && e < l.config.numExperts)) throw new ConfigError('experts', `${li}:${e}`, `layer ${li} has experts 0-${l.config.numExperts - 1}`);
    }
    const dModel = [...byIndex.values()][0].config.dModel;
    const log = opts.log ?? ((line: string) => process.stderr.write(`switchyard expert-server: ${line}\n`));
    const servers = Array.isArray(opts.servers) ? opts.servers : [opts.servers];
    let nc: NatsConnection;
    try {
      nc = await connect({ servers, name: opts.name ?? 'switchyard-expert-server', maxReconnectAttempts: -1, reconnectTimeWait: 250 });
    } catch (e) {
      throw new ConfigError('nats', servers.join(','), `cannot connect: ${(e as Error).message}`);
    }
    const maxPayload = nc.info?.max_payload ?? 1 << 20;
    const limits: ProtocolLimits = {
      maxRows: opts.limits?.maxRows ?? DEFAULT_LIMITS.maxRows,
      maxBytes: Math.min(opts.limits?.maxBytes ?? DEFAULT_LIMITS.maxBytes, maxPayload),
    };
    const spec = formatExpertSet(opts.experts);
    const counters: ExpertServerStats = { id: '', model: modelId, experts: spec, requests: 0, rows: 0, bytesIn: 0, bytesOut: 0, rejected: 0, errors: 0, load: {}, backwards: 0, steps: 0, saved: 0, startedAt: new Date().toISOString() };
    for (const [li, set] of opts.experts) for (const e of set) counters.load[`${li}:${e}`] = { requests: 0, rows: 0 };
    let service: Service;
    try {
      service = await nc.services.add({
        name: SERVICE_NAME,
        version: '1.0.0',
        description: `Switchyard experts ${spec} of model ${modelId}`,
        queue: QUEUE_GROUP,
        metadata: { model: modelId, dModel: String(dModel), experts: spec, maxRows: String(limits.maxRows), maxBytes: String(limits.maxBytes), train: opts.train ? opts.train.optimizer : 'off' },
      });
    } catch (e) {
      await nc.close();
      throw e;
    }
    const server = new ExpertServer(nc, service, modelId, counters);
    counters.id = server.id;
    const source = opts.source ?? null;
    const train = opts.train ?? null;
    let optimizer: { step(): void; zeroGrad(): void } | null = null;
    /** Training forwards awaiting their backward: requestId → rows in (requiring grad) and out. */
    const saved = new Map<number, { x: Tensor; y: Tensor; layer: number; expert: number }>();
    if (train) {
      if (source) throw new ConfigError('train', 'source', 'fine-tuning needs the hosted experts resident (no expert store)');
      const params: Tensor[] = [];
      for (const [li, set] of opts.experts) {
        for (const e of set) {
          const ex = byIndex.get(li)!.experts.items[e];
          if (ex.w1.weight.size === 0) throw new ConfigError('train', `${li}:${e}`, "has no resident weights (the model was built with deferred experts)");
          for (const p of ex.parameters()) {
            p.requiresGrad = true;
            params.push(p);
          }
        }
      }
      if (!(train.lr > 0)) throw new ConfigError('train.lr', train.lr, 'must be a positive learning rate');
      optimizer = train.optimizer === 'sgd' ? new SGD(params, { lr: train.lr }) : new AdamW(params, { lr: train.lr });
    }
    const maxSaved = train?.maxSaved ?? 4096;

    /** Refuse a message: counted as rejected (4xx, the sender's fault) or as an error (5xx, ours). */
    const reject = (msg: ServiceMsg, code: number, text: string): void => {
      if (code >= 500) counters.errors++;
      else counters.rejected++;
      if (server.logged < 100 || server.logged % 1000 === 0) log(`rejected a ${msg.data.length}-byte message on ${msg.subject}: ${text}`);
      server.logged++;
      if (!msg.reply) return;
      try {
        msg.respondError(code, text);
      } catch {
        /* the requester is gone */
      }
    };

    /** Send a reply and count it: one request, its rows, and each expert block's load. */
    const answer = (msg: ServiceMsg, out: Uint8Array, layer: number, blocks: ReadonlyArray<{ expert: number; rows: number }>, rows: number): void => {
      counters.requests++;
      counters.rows += rows;
      counters.bytesOut += out.length;
      for (const b of blocks) {
        const l = counters.load[`${layer}:${b.expert}`];
        l.requests++;
        l.rows += b.rows;
      }
      msg.respond(out);
    };

    /** Whatever goes wrong with one message stays with that message: the server keeps serving. */
    const safely = (msg: ServiceMsg, fixed: [number, number] | null): void => {
      try {
        handle(msg, fixed);
      } catch (e) {
        reject(msg, 500, `internal error: ${(e as Error).message}`);
      }
    };

    /** A batched frame (direct subject only): all its blocks in one grouped FFN call, one reply. */
    const handleBatch = (msg: ServiceMsg, fixed: [number, number] | null): void => {
      let m: BatchMessage;
      try {
        if (fixed) throw new ProtocolError('kind', KIND_BATCH_FORWARD, `batched frames go to the instance's direct subject, not to expert ${fixed[0]}:${fixed[1]}'s`);
        m = decodeBatch(msg.data, limits);
        if (m.kind !== KIND_BATCH_FORWARD) throw new ProtocolError('kind', m.kind, `must be a request (${KIND_BATCH_FORWARD}), not a reply`);
        if (m.cols !== dModel) throw new ProtocolError('cols', m.cols, `must be this model's dModel ${dModel}`);
      } catch (e) {
        reject(msg, 400, e instanceof ProtocolError ? e.message : `malformed message: ${(e as Error).message}`);
        return;
      }
      const layer = byIndex.get(m.layer);
      const hosted = opts.experts.get(m.layer);
      const missing = m.blocks.find((b) => !hosted?.has(b.expert));
      if (!layer || missing) {
        reject(msg, 404, `expert ${m.layer}:${missing?.expert ?? m.blocks[0].expert} is not hosted here (hosted: ${spec})`);
        return;
      }
      if (!msg.reply) {
        reject(msg, 400, 'a request needs a reply subject');
        return;
      }
      const E = layer.config.numExperts;
      const offsets = new Int32Array(E + 1);
      for (const b of m.blocks) offsets[b.expert + 1] = b.rows;
      for (let e = 0; e < E; e++) offsets[e + 1] += offsets[e];
      let y: Tensor;
      try {
        y = noGrad(() => runBlocks(layer, offsets, new Tensor(m.data, [m.rows, m.cols]), source));
      } catch (e) {
        reject(msg, 500, `layer ${m.layer} experts ${m.blocks.map((b) => b.expert).join(',')}: ${(e as Error).message}`);
        return;
      }
      answer(msg, encodeBatch({ kind: KIND_BATCH_REPLY, requestId: m.requestId, layer: m.layer, cols: m.cols }, m.blocks, y.f32), m.layer, m.blocks, m.rows);
    };

    /** Answer one request; `fixed` is the (layer, expert) of a per-expert subject, null on the direct subject. */
    const handle = (msg: ServiceMsg, fixed: [number, number] | null): void => {
      counters.bytesIn += msg.data.length;
      if (isBatchFrame(msg.data)) {
        handleBatch(msg, fixed);
        return;
      }
      let m;
      try {
        m = decodeMessage(msg.data, limits);
        if (m.kind === KIND_REPLY) throw new ProtocolError('kind', m.kind, `must be a request (${KIND_FORWARD}, ${KIND_FORWARD_TRAIN} or ${KIND_BACKWARD}), not a reply`);
        if (m.kind !== KIND_FORWARD && !train) throw new ProtocolError('kind', m.kind, 'is a fine-tuning request; this server was not started with --train');
        if (m.cols !== dModel) throw new ProtocolError('cols', m.cols, `must be this model's dModel ${dModel}`);
        if (fixed && (m.layer !== fixed[0] || m.expert !== fixed[1])) throw new ProtocolError('expert', `${m.layer}:${m.expert}`, `does not match the subject's expert ${fixed[0]}:${fixed[1]}`);
      } catch (e) {
        reject(msg, 400, e instanceof ProtocolError ? e.message : `malformed message: ${(e as Error).message}`);
        return;
      }
      const layer = byIndex.get(m.layer);
      if (!layer || !opts.experts.get(m.layer)?.has(m.expert)) {
        reject(msg, 404, `expert ${m.layer}:${m.expert} is not hosted here (hosted: ${spec})`);
        return;
      }
      if (!msg.reply) {
        reject(msg, 400, 'a request needs a reply subject');
        return;
      }
      let y: Tensor;
      try {
        if (m.kind === KIND_FORWARD_TRAIN) {
          // Own copies: m.data may be a view into the message buffer.
          const x = new Tensor(Float32Array.from(m.data), [m.rows, m.cols], true);
          const ex = layer.experts.items[m.expert];
          const out = enableGrad(() => ex.forward(x, layer.config.expert.activation));
          saved.delete(m.requestId);
          saved.set(m.requestId, { x, y: out, layer: m.layer, expert: m.expert });
          while (saved.size > maxSaved) saved.delete(saved.keys().next().value as number);
          counters.saved = saved.size;
          y = out;
        } else if (m.kind === KIND_BACKWARD) {
          const s0 = saved.get(m.requestId);
          if (!s0 || s0.layer !== m.layer || s0.expert !== m.expert || s0.y.shape[0] !== m.rows) {
            reject(msg, 404, `no saved activations for request ${m.requestId} of expert ${m.layer}:${m.expert} with ${m.rows} rows (never sent, already used, or evicted past ${maxSaved})`);
            return;
          }
          saved.delete(m.requestId);
          counters.saved = saved.size;
          enableGrad(() => s0.y.backward(new Tensor(Float32Array.from(m.data), [m.rows, m.cols])));
          y = s0.x.grad ?? new Tensor(new Float32Array(m.rows * m.cols), [m.rows, m.cols]);
          counters.backwards++;
        } else {
          y = noGrad(() => runOne(layer, m.expert, new Tensor(m.data, [m.rows, m.cols]), source));
        }
      } catch (e) {
        reject(msg, 500, `layer ${m.layer} expert ${m.expert}: ${(e as Error).message}`);
        return;
      }
      answer(msg, encodeMessage({ kind: KIND_REPLY, requestId: m.requestId, layer: m.layer, expert: m.expert, rows: m.rows, cols: m.cols }, y.f32, 0, new Uint8Array(messageBytes(m.rows, m.cols))), m.layer, [m], m.rows);
    };

    for (const [li, set] of [...opts.experts].sort((a, b) => a[0] - b[0])) {
      for (const e of [...set].sort((a, b) => a - b)) {
        service.addEndpoint(`${li}-${e}`, { subject: expertSubject(modelId, li, e), metadata: { layer: String(li), expert: String(e) }, handler: (err, msg) => (err ? log(`endpoint ${li}:${e}: ${err.message}`) : safely(msg, [li, e])) });
      }
    }
    service.addEndpoint('direct', { subject: directSubject(modelId, server.id), handler: (err, msg) => (err ? log(`direct endpoint: ${err.message}`) : safely(msg, null)) });
    service.addEndpoint('stats', {
      subject: statsSubject(modelId, server.id),
      handler: (err, msg) => {
        if (err) return;
        msg.respond(new TextEncoder().encode(JSON.stringify(server.stats())));
      },
    });
    // Every instance receives `step` (a queue group of its own), so one request reaches them all.
    service.addEndpoint('step', {
      subject: stepSubject(modelId),
      queue: server.id,
      handler: (err, msg) => {
        if (err) return;
        if (!optimizer) {
          msg.respondError(400, 'this server was not started with --train');
          return;
        }
        try {
          optimizer.step();
          optimizer.zeroGrad();
          saved.clear();
          counters.saved = 0;
          counters.steps++;
          msg.respond(new TextEncoder().encode(JSON.stringify({ id: server.id, steps: counters.steps })));
        } catch (e) {
          msg.respondError(500, `optimizer step failed: ${(e as Error).message}`);
        }
      },
    });
    await nc.flush();
    return server;
  }

  /** A copy of the counters. */
  stats(): ExpertServerStats {
    const c = this.counters;
    return { ...c, load: Object.fromEntries(Object.entries(c.load).map(([k, v]) => [k, { ...v }])) };
  }

  /** How many experts this instance hosts. */
  get expertCount(): number {
    return Object.keys(this.counters.load).length;
  }

  /** Stop the service and drain the connection (requests in flight are answered first). */
  async stop(): Promise<void> {
    try {
      await this.service.stop();
    } catch {
      /* already stopped */
    }
    try {
      await this.nc.drain();
    } catch {
      /* already closed */
    }
  }
}

/** Expert `e` of `layer` on rows x: groupedExpertFFN over one block, from `source` or the resident weights. */
function runOne(layer: MoELayer, e: number, x: Tensor, source: ExpertSource | null): Tensor {
  const E = layer.config.numExperts;
  const offsets = new Int32Array(E + 1);
  for (let i = e + 1; i <= E; i++) offsets[i] = x.shape[0];
  return runBlocks(layer, offsets, x, source);
}

/** The experts of `layer` on their blocks of x (prefix `offsets`, as MoELayer passes them): one grouped FFN call. */
function runBlocks(layer: MoELayer, offsets: Int32Array, x: Tensor, source: ExpertSource | null): Tensor {
  if (source) return source.runExperts(layer, x, offsets, x);
  const c = layer.config;
  const items = layer.experts.items;
  return groupedExpertFFN(x, offsets, { w1: items.map((i) => i.w1.weight), w2: items.map((i) => i.w2.weight), w3: c.expert.gated ? items.map((i) => i.w3!.weight) : null }, c.expert.activation);
}

