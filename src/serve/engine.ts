/**
 * The generation engine behind the server: one request generates at a time (the model runs on
 * this process's main thread), the others wait in a bounded FIFO queue. Decoding is incremental
 * with the model's KV cache (one prefill forward over the prompt, then one forward per token),
 * and the engine yields to the event loop between tokens so streams flush, other requests are
 * queued or refused, and disconnects are noticed. Stop sequences are matched on the decoded
 * text; text that could still become a stop sequence is held back from streams until it cannot.
 */
import { SwitchyardError } from '../errors.js';
import { KVCache, sampleToken } from '../nn/transformer.js';
import { Generator } from '../random.js';
import { noGrad } from '../tensor/autodiff.js';
import { Tensor } from '../tensor/tensor.js';
import type { ServingModel } from './model-loader.js';

/** Longest run of decoding between two turns of the event loop. */
const YIELD_MS = 8;

/** The queue is full: answer 429 with Retry-After. */
export class QueueFullError extends SwitchyardError {
  readonly retryAfterSeconds: number;
  constructor(capacity: number, retryAfterSeconds: number) {
    super('queue', capacity, `is full (${capacity} waiting requests); retry after ${retryAfterSeconds} s`);
    this.retryAfterSeconds = retryAfterSeconds;
  }
}

/** The engine is shutting down and takes no new requests (503). */
export class ShuttingDownError extends SwitchyardError {
  constructor() {
    super('server', 'shutting down', 'is shutting down and accepts no new requests');
  }
}

/** The request was cancelled (client gone) before it finished. */
export class AbortedError extends SwitchyardError {
  constructor() {
    super('request', 'aborted', 'was cancelled by the client');
  }
}

export interface GenerateRequest {
  promptIds: number[];
  maxTokens: number;
  /** 0 = greedy. */
  temperature: number;
  topP: number;
  stop: string[];
  seed: number;
  /** Abort (client disconnected): a queued request leaves the queue, a running one stops at the next token. */
  signal?: AbortSignal;
  /** Streamed text as it becomes final (stop sequences never appear in it). */
  onText?(delta: string): void;
}

export interface GenerateResult {
  text: string;
  promptTokens: number;
  completionTokens: number;
  finishReason: 'stop' | 'length';
}

interface Job {
  req: GenerateRequest;
  resolve(r: GenerateResult): void;
  reject(e: unknown): void;
  onAbort: () => void;
}

/** Counters the server exports as metrics. */
export interface EngineCounters {
  tokensGenerated: number;
  promptTokens: number;
  requestsCompleted: number;
  requestsFailed: number;
  requestsAborted: number;
  /** Seconds spent in forwards (prefill + decode). */
  busySeconds: number;
  /** Seconds spent in decode steps only (tokens/s = decodeTokens / decodeSeconds). */
  decodeSeconds: number;
  decodeTokens: number;
  /** Per MoE layer (model layer index): token assignments per expert. */
  expertLoad: Map<number, number[]>;
}

export class Engine {
  readonly served: ServingModel;
  readonly maxQueue: number;
  private readonly queue: Job[] = [];
  private running: Job | null = null;
  private accepting = true;
  private idleWaiters: Array<() => void> = [];
  /** Mean wall time of recent requests (for Retry-After). */
  private meanSeconds = 1;
  readonly counters: EngineCounters = {
    tokensGenerated: 0, promptTokens: 0, requestsCompleted: 0, requestsFailed: 0, requestsAborted: 0,
    busySeconds: 0, decodeSeconds: 0, decodeTokens: 0, expertLoad: new Map(),
  };

  /** Awaited before every forward (tests use it to hold a generation at a known point). */
  private readonly beforeStep: (() => Promise<void> | void) | null;

  constructor(served: ServingModel, opts: { maxQueue?: number; beforeStep?: () => Promise<void> | void } = {}) {
    this.served = served;
    this.maxQueue = opts.maxQueue ?? 16;
    this.beforeStep = opts.beforeStep ?? null;
  }

  /** Requests waiting (not counting the one generating). */
  get queueDepth(): number {
    return this.queue.length;
  }

  get busy(): boolean {
    return this.running !== null;
  }

  get isAccepting(): boolean {
    return this.accepting;
  }

  /** Why a new request would be refused right now (queue full, shutting down), or null. */
  refusal(): QueueFullError | ShuttingDownError | null {
    if (!this.accepting) return new ShuttingDownError();
    if (this.queue.length >= this.maxQueue && (this.running || this.queue.length > 0)) {
      return new QueueFullError(this.maxQueue, Math.max(1, Math.ceil((this.queue.length + 1) * this.meanSeconds)));
    }
    return null;
  }

  /** Queue a request; rejects at once with QueueFullError / ShuttingDownError. */
  generate(req: GenerateRequest): Promise<GenerateResult> {
    const refused = this.refusal();
    if (refused) return Promise.reject(refused);
    if (req.signal?.aborted) return Promise.reject(new AbortedError());
    return new Promise<GenerateResult>((resolve, reject) => {
      const job: Job = {
        req,
        resolve,
        reject,
        onAbort: () => {
          const i = this.queue.indexOf(job);
          if (i >= 0) {
            // Still waiting: leave the queue now (the running job notices the signal itself).
            this.queue.splice(i, 1);
            this.counters.requestsAborted++;
            reject(new AbortedError());
            this.checkIdle();
          }
        },
      };
      req.signal?.addEventListener('abort', job.onAbort, { once: true });
      this.queue.push(job);
      this.pump();
    });
  }

  /** Stop taking requests; resolves when the queue is empty and nothing is generating. */
  drain(): Promise<void> {
    this.accepting = false;
    return this.whenIdle();
  }

  whenIdle(): Promise<void> {
    if (!this.running && this.queue.length === 0) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  private checkIdle(): void {
    if (this.running || this.queue.length) return;
    const w = this.idleWaiters;
    this.idleWaiters = [];
    for (const r of w) r();
  }

  private pump(): void {
    if (this.running) return;
    const job = this.queue.shift();
    if (!job) {
      this.checkIdle();
      return;
    }
    this.running = job;
    const t0 = performance.now();
    this.run(job.req)
      .then(
        (r) => {
          this.counters.requestsCompleted++;
          job.resolve(r);
        },
        (e) => {
          if (e instanceof AbortedError) this.counters.requestsAborted++;
          else this.counters.requestsFailed++;
          job.reject(e);
        },
      )
      .finally(() => {
        job.req.signal?.removeEventListener('abort', job.onAbort);
        const s = (performance.now() - t0) / 1000;
        this.meanSeconds = 0.8 * this.meanSeconds + 0.2 * s;
        this.running = null;
        // Next job on a fresh macrotask, so I/O (new requests, disconnects) interleaves.
        setImmediate(() => this.pump());
      });
  }

  private async run(req: GenerateRequest): Promise<GenerateResult> {
    const { model, tokenizer } = this.served;
    const V = model.config.vocabSize;
    const gen = new Generator(req.seed);
    const cache = new KVCache(model.config.nLayers);
    const generated: number[] = [];
    const eos = new Set(this.served.eosIds);
    let emitted = 0;
    let next = req.promptIds;
    let finish: GenerateResult['finishReason'] = 'length';
    let text = '';
    // Start on a fresh macrotask: the caller's handler finishes setting up (stream headers, abort hooks) first.
    await new Promise<void>((r) => setImmediate(r));
    this.counters.promptTokens += req.promptIds.length;
    let lastYield = performance.now();
    for (let step = 0; step < req.maxTokens; step++) {
      if (this.beforeStep) await this.beforeStep();
      if (req.signal?.aborted) throw new AbortedError();
      const t0 = performance.now();
      const out = noGrad(() => model.forward(Tensor.indices(next, [1, next.length]), { cache }));
      const dt = (performance.now() - t0) / 1000;
      this.counters.busySeconds += dt;
      if (step > 0) {
        this.counters.decodeSeconds += dt;
        this.counters.decodeTokens++;
      }
      for (const { layer, out: o } of out.moe) {
        let acc = this.counters.expertLoad.get(layer);
        if (!acc) this.counters.expertLoad.set(layer, (acc = new Array<number>(o.stats.tokensPerExpert.length).fill(0)));
        o.stats.tokensPerExpert.forEach((n, e) => (acc![e] += n));
      }
      const last = out.logits.f32.subarray((next.length - 1) * V, next.length * V);
      const tok = sampleToken(last, req.temperature, req.topP, gen);
      this.counters.tokensGenerated++;
      if (eos.has(tok)) {
        finish = 'stop';
        break;
      }
      generated.push(tok);
      text = tokenizer.decode(generated);
      // A stop sequence anywhere in the not-yet-final text ends the completion just before it.
      let cut = -1;
      for (const s of req.stop) {
        const i = text.indexOf(s, Math.max(0, emitted - s.length));
        if (i >= 0 && (cut < 0 || i < cut)) cut = i;
      }
      if (cut >= 0) {
        if (cut > emitted) req.onText?.(text.slice(emitted, cut));
        emitted = cut;
        text = text.slice(0, cut);
        finish = 'stop';
        break;
      }
      // Hold back a tail that may still grow into a stop sequence, or an incomplete UTF-8 character.
      let hold = 0;
      for (const s of req.stop) for (let k = Math.min(s.length - 1, text.length); k > hold; k--) if (text.endsWith(s.slice(0, k))) hold = k;
      if (text.endsWith('\uFFFD')) hold = Math.max(hold, 1);
      const safe = text.length - hold;
      if (safe > emitted) {
        req.onText?.(text.slice(emitted, safe));
        emitted = safe;
      }
      next = [tok];
      // Yield to the event loop every few milliseconds (not every token): each turn also serves
      // whatever is pending (new requests, 429s, metrics), which under load would dominate.
      if (performance.now() - lastYield >= YIELD_MS) {
        await new Promise<void>((r) => setImmediate(r));
        lastYield = performance.now();
      }
    }
    if (finish === 'length' && text.length > emitted) req.onText?.(text.slice(emitted));
    return { text, promptTokens: req.promptIds.length, completionTokens: generated.length, finishReason: finish };
  }
}
