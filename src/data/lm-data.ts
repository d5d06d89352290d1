/**
 * Language-model data: a corpus encoded into one token stream with a per-token document label,
 * split into train and eval; a seeded, resumable batch sampler of random windows over the train
 * tokens; and deterministic eval batches.
 */
import { RangeValueError, ValueError } from '../errors.js';
import { Generator } from '../random.js';
import { Tensor } from '../tensor/tensor.js';
import { corpusLabels, type Corpus } from './corpus.js';
import type { Tokenizer } from './tokenizer.js';

/** Tokens with the index (into labelNames) of the document each token came from. */
export interface LabelledTokens {
  tokens: Int32Array;
  /** labels[i] is the label index of tokens[i]. */
  labels: Int32Array;
  labelNames: string[];
}

/** One batch: input windows [B, T], the next-token targets flattened to [B·T], and the inputs' labels when known. */
export interface LMBatch {
  /** int32 [B, T]. */
  input: Tensor;
  /** int32 [B·T]: target[b·T + t] = the token after input[b, t]. */
  target: Tensor;
  /** Label index of each input token, [B·T] (when the tokens carry labels). */
  labels?: Int32Array;
}

/** Where a batcher is in its seeded sequence of windows: enough to resume exactly. */
export interface BatcherState {
  seed: number;
  /** Epochs completed (each epoch is a fresh seeded permutation of window starts). */
  epoch: number;
  /** Windows already drawn from this epoch's permutation. */
  cursor: number;
}

/**
 * Encode every document and concatenate them, each followed by `separator` (encoded too,
 * labelled like the document before it). Labels index corpusLabels(corpus).
 */
export function encodeCorpus(corpus: Corpus, tokenizer: Tokenizer, separator = '\n\n'): LabelledTokens {
  const labelNames = corpusLabels(corpus);
  const labelIndex = new Map(labelNames.map((l, i) => [l, i]));
  return encodeDocuments(corpus.documents, tokenizer, separator, labelIndex, labelNames);
}

function encodeDocuments(
  docs: ReadonlyArray<{ text: string; label: string }>,
  tokenizer: Tokenizer,
  separator: string,
  labelIndex: Map<string, number>,
  labelNames: string[],
): LabelledTokens {
  const sep = separator ? tokenizer.encode(separator) : [];
  const chunks: number[][] = [];
  const chunkLabels: number[] = [];
  let total = 0;
  for (const d of docs) {
    const ids = tokenizer.encode(d.text);
    if (sep.length) ids.push(...sep);
    chunks.push(ids);
    chunkLabels.push(labelIndex.get(d.label) ?? 0);
    total += ids.length;
  }
  const tokens = new Int32Array(total);
  const labels = new Int32Array(total);
  let off = 0;
  chunks.forEach((ids, i) => {
    tokens.set(ids, off);
    labels.fill(chunkLabels[i], off, off + ids.length);
    off += ids.length;
  });
  return { tokens, labels, labelNames };
}

/** Options of TokenStream.fromCorpus. */
export interface TokenStreamOptions {
  /** Fraction of the data held out for evaluation (default 0.05). */
  evalFraction?: number;
  /**
   * 'tail': the last evalFraction of the concatenated tokens (default for ordered corpora such as
   * Moby-Dick or a single .txt file). 'documents': a seeded shuffle of the documents within each
   * label, evalFraction of each label held out (default for collections such as the fortunes).
   */
  split?: 'tail' | 'documents';
  /** Seed of the document shuffle (default 0). */
  seed?: number;
  /** Text appended after every document (default '\n\n'). */
  separator?: string;
}

function checkFraction(f: number): void {
  if (!(typeof f === 'number' && f >= 0 && f < 1)) throw new ValueError('evalFraction', f, 'must be a number in [0, 1)');
}

/** A corpus encoded and split into train and eval token streams (with per-token labels). */
export class TokenStream {
  /** The tokenizer that encoded the corpus. */
  readonly tokenizer: Tokenizer;
  /** Training tokens and their labels. */
  readonly train: LabelledTokens;
  /** Held-out tokens and their labels. */
  readonly eval: LabelledTokens;
  /** Label names (topic, language, chapter or file name), indexed by the label values. */
  readonly labelNames: string[];

  /** Prefer fromCorpus / fromTokens. */
  constructor(tokenizer: Tokenizer, train: LabelledTokens, evalSplit: LabelledTokens) {
    this.tokenizer = tokenizer;
    this.train = train;
    this.eval = evalSplit;
    this.labelNames = train.labelNames;
  }

  /** Encode a corpus and split it (see TokenStreamOptions). */
  static fromCorpus(corpus: Corpus, tokenizer: Tokenizer, options: TokenStreamOptions = {}): TokenStream {
    const frac = options.evalFraction ?? 0.05;
    checkFraction(frac);
    const separator = options.separator ?? '\n\n';
    let split = options.split ?? (corpus.ordered ? 'tail' : 'documents');
    if (split !== 'tail' && split !== 'documents') throw new ValueError('split', split, 'expected "tail" or "documents"');
    if (split === 'documents' && corpus.documents.length < 2) split = 'tail';
    const labelNames = corpusLabels(corpus);
    const labelIndex = new Map(labelNames.map((l, i) => [l, i]));
    if (split === 'tail') {
      return TokenStream.fromTokens(encodeDocuments(corpus.documents, tokenizer, separator, labelIndex, labelNames), tokenizer, frac);
    }
    // Stratified: within each label, a seeded shuffle picks round(frac · n) documents (at least one when the label has two or more).
    const byLabel = new Map<string, number[]>();
    corpus.documents.forEach((d, i) => {
      const l = byLabel.get(d.label);
      if (l) l.push(i);
      else byLabel.set(d.label, [i]);
    });
    const isEval = new Uint8Array(corpus.documents.length);
    const g = new Generator(options.seed ?? 0);
    for (const idx of byLabel.values()) {
      for (let i = idx.length - 1; i > 0; i--) {
        const j = g.int(i + 1);
        [idx[i], idx[j]] = [idx[j], idx[i]];
      }
      const n = idx.length;
      const k = frac > 0 && n >= 2 ? Math.min(n - 1, Math.max(1, Math.round(frac * n))) : 0;
      for (const i of idx.slice(0, k)) isEval[i] = 1;
    }
    const trainDocs = corpus.documents.filter((_, i) => isEval[i] === 0);
    const evalDocs = corpus.documents.filter((_, i) => isEval[i] === 1);
    return new TokenStream(
      tokenizer,
      encodeDocuments(trainDocs, tokenizer, separator, labelIndex, labelNames),
      encodeDocuments(evalDocs, tokenizer, separator, labelIndex, labelNames),
    );
  }

  /** Split already-encoded tokens: the last evalFraction (default 0.05) is the eval set. */
  static fromTokens(data: LabelledTokens | Int32Array, tokenizer: Tokenizer, evalFraction = 0.05): TokenStream {
    checkFraction(evalFraction);
    const all: LabelledTokens = data instanceof Int32Array ? { tokens: data, labels: new Int32Array(data.length), labelNames: ['all'] } : data;
    if (all.labels.length !== all.tokens.length) throw new ValueError('labels.length', all.labels.length, `must equal tokens.length (${all.tokens.length})`);
    const nEval = Math.ceil(evalFraction * all.tokens.length);
    const cut = all.tokens.length - nEval;
    const part = (a: number, b: number): LabelledTokens => ({ tokens: all.tokens.subarray(a, b), labels: all.labels.subarray(a, b), labelNames: all.labelNames });
    return new TokenStream(tokenizer, part(0, cut), part(cut, all.tokens.length));
  }

  /** A seeded batch sampler over the training tokens (labels included). */
  batcher(options: { batchSize: number; seqLen: number; seed?: number; stride?: number }): LMBatcher {
    return new LMBatcher({ ...options, tokens: this.train.tokens, labels: this.train.labels });
  }

  /** Deterministic eval batches over the held-out tokens (see evalBatches). */
  evalBatches(batchSize: number, seqLen: number, maxBatches?: number): LMBatch[] {
    return evalBatches(this.eval.tokens, batchSize, seqLen, maxBatches, this.eval.labels);
  }
}

function checkPositiveInt(field: string, v: number): void {
  if (!Number.isInteger(v) || v < 1) throw new ValueError(field, v, 'must be a positive integer');
}

function makeBatch(tokens: Int32Array, labels: Int32Array | undefined, starts: ArrayLike<number>, seqLen: number): LMBatch {
  const b = starts.length;
  const input = new Int32Array(b * seqLen);
  const target = new Int32Array(b * seqLen);
  const lab = labels ? new Int32Array(b * seqLen) : undefined;
  for (let i = 0; i < b; i++) {
    const s = starts[i];
    input.set(tokens.subarray(s, s + seqLen), i * seqLen);
    target.set(tokens.subarray(s + 1, s + seqLen + 1), i * seqLen);
    if (lab && labels) lab.set(labels.subarray(s, s + seqLen), i * seqLen);
  }
  const batch: LMBatch = { input: new Tensor(input, [b, seqLen]), target: new Tensor(target, [b * seqLen]) };
  if (lab) batch.labels = lab;
  return batch;
}

/** Options of LMBatcher. */
export interface LMBatcherOptions {
  tokens: Int32Array;
  batchSize: number;
  seqLen: number;
  /** Seed of the window order (default 0). */
  seed?: number;
  /** Per-token labels (same length as tokens): batches then carry their inputs' labels. */
  labels?: Int32Array;
  /** Distance between window starts within an epoch (default seqLen: an epoch sees each token about once). */
  stride?: number;
}

/**
 * Seeded sampler of random training windows. Epoch e uses the window starts offset_e + k·stride
 * (offset_e seeded, in [0, stride)) in a seeded random order; both depend only on (seed, e), so
 * the state { seed, epoch, cursor } is all a checkpoint needs: a batcher given setState(state)
 * draws exactly the batches the original would have drawn next.
 */
export class LMBatcher {
  /** Windows per batch. */
  readonly batchSize: number;
  /** Tokens per window. */
  readonly seqLen: number;
  /** Distance between window starts within an epoch. */
  readonly stride: number;
  private readonly tokens: Int32Array;
  private readonly labels: Int32Array | undefined;
  private seed: number;
  private epoch = 0;
  private cursor = 0;
  private perm: Int32Array | null = null;

  /** Validates sizes: the tokens must hold at least one window of seqLen + 1 tokens. */
  constructor(options: LMBatcherOptions) {
    checkPositiveInt('batchSize', options.batchSize);
    checkPositiveInt('seqLen', options.seqLen);
    const stride = options.stride ?? options.seqLen;
    checkPositiveInt('stride', stride);
    if (!(options.tokens instanceof Int32Array)) throw new ValueError('tokens', options.tokens, 'expected an Int32Array');
    if (options.tokens.length < options.seqLen + 1) {
      throw new ValueError('tokens.length', options.tokens.length, `too few tokens for one window: need seqLen + 1 = ${options.seqLen + 1}`);
    }
    if (options.labels !== undefined && options.labels.length !== options.tokens.length) {
      throw new ValueError('labels.length', options.labels.length, `must equal tokens.length (${options.tokens.length})`);
    }
    const seed = options.seed ?? 0;
    if (!Number.isFinite(seed)) throw new ValueError('seed', seed, 'must be a finite number');
    this.tokens = options.tokens;
    this.labels = options.labels;
    this.batchSize = options.batchSize;
    this.seqLen = options.seqLen;
    this.stride = stride;
    this.seed = seed;
  }

  /** The window starts of an epoch, in draw order (pure function of seed and epoch). */
  epochOrder(epoch: number): Int32Array {
    const g = new Generator(this.seed);
    const g2 = new Generator((g.nextUint32() ^ Math.imul(epoch + 1, 0x9e3779b9)) >>> 0);
    const lastStart = this.tokens.length - this.seqLen - 1; // windows need seqLen + 1 tokens
    const offset = g2.int(Math.min(this.stride, lastStart + 1));
    const n = Math.floor((lastStart - offset) / this.stride) + 1;
    const perm = new Int32Array(n);
    for (let k = 0; k < n; k++) perm[k] = offset + k * this.stride;
    for (let i = n - 1; i > 0; i--) {
      const j = g2.int(i + 1);
      const t = perm[i];
      perm[i] = perm[j];
      perm[j] = t;
    }
    return perm;
  }

  private order(): Int32Array {
    if (this.perm === null) this.perm = this.epochOrder(this.epoch);
    return this.perm;
  }

  /** The next batch of batchSize random windows (continuing into the next epoch as needed). */
  next(): LMBatch {
    const starts = new Int32Array(this.batchSize);
    for (let i = 0; i < this.batchSize; i++) {
      if (this.cursor >= this.order().length) {
        this.epoch++;
        this.cursor = 0;
        this.perm = null;
      }
      starts[i] = this.order()[this.cursor++];
    }
    return makeBatch(this.tokens, this.labels, starts, this.seqLen);
  }

  /** Where the sampler is: pass to setState to continue from exactly here. */
  state(): BatcherState {
    return { seed: this.seed, epoch: this.epoch, cursor: this.cursor };
  }

  /** Resume from a state() snapshot (validated). */
  setState(s: BatcherState): void {
    if (typeof s !== 'object' || s === null) throw new ValueError('state', s, 'expected { seed, epoch, cursor }');
    if (!Number.isFinite(s.seed)) throw new ValueError('state.seed', s.seed, 'must be a finite number');
    if (!Number.isInteger(s.epoch) || s.epoch < 0) throw new ValueError('state.epoch', s.epoch, 'must be a non-negative integer');
    const seedChanged = s.seed !== this.seed || s.epoch !== this.epoch;
    this.seed = s.seed;
    this.epoch = s.epoch;
    if (seedChanged) this.perm = null;
    const n = this.order().length;
    if (!Number.isInteger(s.cursor) || s.cursor < 0 || s.cursor > n) {
      throw new RangeValueError('state.cursor', s.cursor, `must be an integer in [0, ${n}] (windows in epoch ${s.epoch})`);
    }
    this.cursor = s.cursor;
  }

  /** Number of windows in the current epoch. */
  get windowsPerEpoch(): number {
    return this.order().length;
  }
}

/**
 * Deterministic eval batches: non-overlapping windows starting at multiples of seqLen (the last
 * batch may hold fewer than batchSize windows). With maxBatches, at most batchSize·maxBatches
 * windows are used, spread evenly over the tokens rather than taken from the start.
 */
export function evalBatches(tokens: Int32Array, batchSize: number, seqLen: number, maxBatches?: number, labels?: Int32Array): LMBatch[] {
  checkPositiveInt('batchSize', batchSize);
  checkPositiveInt('seqLen', seqLen);
  if (maxBatches !== undefined) checkPositiveInt('maxBatches', maxBatches);
  if (labels !== undefined && labels.length !== tokens.length) throw new ValueError('labels.length', labels.length, `must equal tokens.length (${tokens.length})`);
  const total = Math.floor((tokens.length - 1) / seqLen);
  if (total < 1) throw new ValueError('tokens.length', tokens.length, `too few eval tokens for one window: need seqLen + 1 = ${seqLen + 1}`);
  const want = maxBatches === undefined ? total : Math.min(total, batchSize * maxBatches);
  const starts: number[] = [];
  for (let i = 0; i < want; i++) starts.push(Math.floor((i * total) / want) * seqLen);
  const out: LMBatch[] = [];
  for (let i = 0; i < starts.length; i += batchSize) out.push(makeBatch(tokens, labels, starts.slice(i, i + batchSize), seqLen));
  return out;
}
