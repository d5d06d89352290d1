/**
 * Tokenizers: character level and byte level built in, BPE through the npm package
 * `gpt-tokenizer` (which bundles the OpenAI vocabularies, so nothing is downloaded). Every
 * tokenizer serialises to a small JSON spec (`toJSON`) that `tokenizerFromJSON` turns back into
 * an identical tokenizer, so a checkpoint can carry its tokenizer.
 */
import { createRequire } from 'node:module';
import { ConfigError, RangeValueError, ValueError } from '../errors.js';

/** The BPE vocabularies that `gpt-tokenizer` bundles ('gpt2' is an alias of 'r50k_base'). */
export const BPE_ENCODINGS = ['r50k_base', 'p50k_base', 'cl100k_base', 'o200k_base'] as const;

/** A bundled BPE vocabulary's name. */
export type BpeEncodingName = (typeof BPE_ENCODINGS)[number];

/** The JSON form of a tokenizer (what `toJSON` returns and `tokenizerFromJSON` accepts). */
export type TokenizerSpec =
  | { type: 'char'; codePoints: number[] }
  | { type: 'byte' }
  | { type: 'bpe'; encoding: BpeEncodingName; keptIds: number[] | null };

/** Maps text to token ids in [0, vocabSize) and back. */
export interface Tokenizer {
  /** A short name for logs and reports (e.g. 'char', 'byte', 'bpe-r50k_base/remapped-4096'). */
  readonly name: string;
  /** Number of distinct ids: the embedding table's row count. */
  readonly vocabSize: number;
  /** The id that stands for anything outside the vocabulary, or null when every input is representable. */
  readonly unknownId: number | null;
  /** Text to ids. */
  encode(text: string): number[];
  /** Ids to text (the unknown id decodes to U+FFFD). Throws RangeValueError on an id outside [0, vocabSize). */
  decode(ids: ArrayLike<number>): string;
  /** One token for display: control characters and partial UTF-8 bytes escaped, '<unk>' for the unknown id. */
  tokenString(id: number): string;
  /** The serialisable spec. */
  toJSON(): TokenizerSpec;
}

const REPLACEMENT = '\uFFFD';
const utf8Lenient = new TextDecoder('utf-8');
const utf8Strict = new TextDecoder('utf-8', { fatal: true });
const utf8Encoder = new TextEncoder();

function checkId(id: number, vocabSize: number, field = 'id'): void {
  if (!Number.isInteger(id) || id < 0 || id >= vocabSize) {
    throw new RangeValueError(field, id, `token id must be an integer in [0, ${vocabSize})`);
  }
}

/** Escape a decoded token for display: newlines, tabs and other control characters become visible. */
function displayString(s: string): string {
  let out = '';
  for (const ch of s) {
    const cp = ch.codePointAt(0) ?? 0;
    if (ch === '\n') out += '\\n';
    else if (ch === '\t') out += '\\t';
    else if (ch === '\r') out += '\\r';
    else if (cp < 0x20 || cp === 0x7f || (cp >= 0x80 && cp < 0xa0)) out += `\\u{${cp.toString(16)}}`;
    else out += ch;
  }
  return out;
}

/** Display bytes: valid UTF-8 as text, otherwise printable ASCII as is and the rest as <0xNN>. */
function displayBytes(bytes: Uint8Array): string {
  try {
    return displayString(utf8Strict.decode(bytes));
  } catch {
    let out = '';
    for (const b of bytes) {
      out += b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`;
    }
    return out;
  }
}

// ---------------------------------------------------------------------------------------------
// Character level

/** Options of CharTokenizer.fromText. */
export interface CharTokenizerOptions {
  /** Keep only the most frequent maxVocab − 1 characters (ties: lower code point); the rest map to the unknown id. */
  maxVocab?: number;
}

/**
 * Character-level tokenizer: id 0 is the unknown character, ids 1.. are the kept Unicode code
 * points in ascending order.
 */
export class CharTokenizer implements Tokenizer {
  /** Always 'char'. */
  readonly name = 'char';
  /** Always 0. */
  readonly unknownId = 0;
  /** The kept code points, ascending; code point codePoints[i] has id i + 1. */
  readonly codePoints: readonly number[];
  private readonly ids: Map<number, number>;

  /** From a list of distinct code points (sorted here). */
  constructor(codePoints: readonly number[]) {
    const sorted = [...codePoints].sort((a, b) => a - b);
    for (let i = 0; i < sorted.length; i++) {
      const cp = sorted[i];
      if (!Number.isInteger(cp) || cp < 0 || cp > 0x10ffff) throw new ValueError(`codePoints[${i}]`, cp, 'a code point must be an integer in [0, 0x10FFFF]');
      if (i > 0 && cp === sorted[i - 1]) throw new ValueError(`codePoints[${i}]`, cp, 'code points must be distinct');
    }
    this.codePoints = Object.freeze(sorted);
    this.ids = new Map(sorted.map((cp, i) => [cp, i + 1]));
  }

  /** The characters of `text` (or of every text of an array), sorted by code point, optionally capped by frequency. */
  static fromText(text: string | readonly string[], options: CharTokenizerOptions = {}): CharTokenizer {
    const counts = new Map<number, number>();
    for (const t of typeof text === 'string' ? [text] : text) {
      for (const ch of t) {
        const cp = ch.codePointAt(0) ?? 0;
        counts.set(cp, (counts.get(cp) ?? 0) + 1);
      }
    }
    let cps = [...counts.keys()];
    if (options.maxVocab !== undefined) {
      if (!Number.isInteger(options.maxVocab) || options.maxVocab < 2) throw new ValueError('maxVocab', options.maxVocab, 'must be an integer ≥ 2 (the unknown id plus at least one character)');
      cps = cps.sort((a, b) => (counts.get(b) ?? 0) - (counts.get(a) ?? 0) || a - b).slice(0, options.maxVocab - 1);
    }
    return new CharTokenizer(cps);
  }

  /** Number of kept characters + 1 (the unknown id). */
  get vocabSize(): number {
    return this.codePoints.length + 1;
  }

  /** One id per code point; unseen characters get id 0. */
  encode(text: string): number[] {
    const out: number[] = [];
    for (const ch of text) out.push(this.ids.get(ch.codePointAt(0) ?? 0) ?? 0);
    return out;
  }

  /** The characters of the ids (id 0 → U+FFFD). */
  decode(ids: ArrayLike<number>): string {
    const n = this.vocabSize;
    const parts: string[] = [];
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      checkId(id, n, `ids[${i}]`);
      parts.push(id === 0 ? REPLACEMENT : String.fromCodePoint(this.codePoints[id - 1]));
    }
    return parts.join('');
  }

  /** The character, escaped for display; '<unk>' for id 0. */
  tokenString(id: number): string {
    checkId(id, this.vocabSize);
    return id === 0 ? '<unk>' : displayString(String.fromCodePoint(this.codePoints[id - 1]));
  }

  /** { type: 'char', codePoints }. */
  toJSON(): TokenizerSpec {
    return { type: 'char', codePoints: [...this.codePoints] };
  }
}

// ---------------------------------------------------------------------------------------------
// Byte level

/** Byte-level tokenizer: the 256 byte values of the UTF-8 encoding; every text is representable. */
export class ByteTokenizer implements Tokenizer {
  /** Always 'byte'. */
  readonly name = 'byte';
  /** Always 256. */
  readonly vocabSize = 256;
  /** None: every text is representable. */
  readonly unknownId = null;

  /** The UTF-8 bytes of the text. */
  encode(text: string): number[] {
    return Array.from(utf8Encoder.encode(text));
  }

  /** UTF-8 decoding of the bytes (invalid sequences → U+FFFD). */
  decode(ids: ArrayLike<number>): string {
    const bytes = new Uint8Array(ids.length);
    for (let i = 0; i < ids.length; i++) {
      checkId(ids[i], 256, `ids[${i}]`);
      bytes[i] = ids[i];
    }
    return utf8Lenient.decode(bytes);
  }

  /** Printable ASCII as is, \n and \t escaped, other bytes as <0xNN>. */
  tokenString(id: number): string {
    checkId(id, 256);
    if (id === 0x0a) return '\\n';
    if (id === 0x09) return '\\t';
    return displayBytes(Uint8Array.of(id));
  }

  /** { type: 'byte' }. */
  toJSON(): TokenizerSpec {
    return { type: 'byte' };
  }
}

// ---------------------------------------------------------------------------------------------
// BPE (gpt-tokenizer)

interface GptEncodingModule {
  encode(text: string, options?: { allowedSpecial?: Set<string>; disallowedSpecial?: Set<string> }): number[];
}

interface BpeTables {
  api: GptEncodingModule;
  /** Bytes of each rank (undefined for unused ranks). */
  bytes: Array<Uint8Array | undefined>;
  /** Rank of the single-byte token of each byte value (-1 if none). */
  byteRank: Int32Array;
}

const bpeTables = new Map<BpeEncodingName, BpeTables>();

/** Normalise a BPE encoding name ('gpt2' → 'r50k_base'); throws ConfigError on an unknown one. */
export function bpeEncodingName(name: string): BpeEncodingName {
  if (name === 'gpt2') return 'r50k_base';
  if ((BPE_ENCODINGS as readonly string[]).includes(name)) return name as BpeEncodingName;
  throw new ConfigError('encoding', name, `unknown BPE encoding; expected one of gpt2, ${BPE_ENCODINGS.join(', ')}`);
}

function loadBpe(encoding: BpeEncodingName): BpeTables {
  const cached = bpeTables.get(encoding);
  if (cached) return cached;
  // Synchronous, lazy: each vocabulary is large, so only the one asked for is loaded.
  const require = createRequire(import.meta.url);
  const api = require(`gpt-tokenizer/cjs/encoding/${encoding}`) as GptEncodingModule;
  const ranksModule = require(`gpt-tokenizer/cjs/bpeRanks/${encoding}`) as { default: Array<string | number[] | undefined> };
  const ranks = ranksModule.default;
  const bytes: Array<Uint8Array | undefined> = new Array(ranks.length);
  const byteRank = new Int32Array(256).fill(-1);
  for (let r = 0; r < ranks.length; r++) {
    const v = ranks[r];
    if (v === undefined || v === null) continue;
    const b = typeof v === 'string' ? utf8Encoder.encode(v) : Uint8Array.from(v);
    bytes[r] = b;
    if (b.length === 1 && byteRank[b[0]] < 0) byteRank[b[0]] = r;
  }
  const tables = { api, bytes, byteRank };
  bpeTables.set(encoding, tables);
  return tables;
}

/** Options of BpeTokenizer.remap. */
export interface BpeRemapOptions {
  /** Keep only ids seen at least this often (default 1). */
  minCount?: number;
  /** Cap the vocabulary (unknown id included): the most frequent ids are kept (ties: lower id). */
  maxVocab?: number;
  /** Also keep the 256 single-byte tokens, so unseen tokens fall back to bytes instead of the unknown id (default false). */
  keepBytes?: boolean;
}

/**
 * Byte-pair encoding with one of the vocabularies bundled by `gpt-tokenizer` (r50k_base = GPT-2's
 * by default). Special tokens are not used: text such as "<|endoftext|>" is encoded as plain text.
 *
 * The full vocabularies (50 k to 200 k ids) make the embedding of a tiny model huge, so `remap`
 * keeps only the ids seen in a training corpus and maps them to a dense range: id 0 is the
 * unknown token, ids 1..K are the kept original ids in ascending order. A token outside the kept
 * set is spelled with single-byte tokens where those are kept, otherwise it becomes id 0.
 */
export class BpeTokenizer implements Tokenizer {
  /** The bundled vocabulary. */
  readonly encoding: BpeEncodingName;
  /** The kept original ids (ascending) of a remapped tokenizer; null = the full vocabulary. */
  readonly keptIds: readonly number[] | null;
  private readonly tables: BpeTables;
  /** Original id → dense id (remapped only; 0 = not kept). */
  private readonly dense: Int32Array | null;

  /** Prefer BpeTokenizer.create(...) and .remap(...). `keptIds`: ascending original ids to keep, or null for all. */
  constructor(encoding: BpeEncodingName | 'gpt2' = 'r50k_base', keptIds: readonly number[] | null = null) {
    this.encoding = bpeEncodingName(encoding);
    this.tables = loadBpe(this.encoding);
    if (keptIds === null) {
      this.keptIds = null;
      this.dense = null;
    } else {
      const n = this.tables.bytes.length;
      const dense = new Int32Array(n);
      for (let i = 0; i < keptIds.length; i++) {
        const id = keptIds[i];
        if (!Number.isInteger(id) || id < 0 || id >= n || this.tables.bytes[id] === undefined) {
          throw new ValueError(`keptIds[${i}]`, id, `not a token id of ${this.encoding} (valid: integers in [0, ${n}))`);
        }
        if (i > 0 && id <= keptIds[i - 1]) throw new ValueError(`keptIds[${i}]`, id, 'kept ids must be strictly ascending');
        dense[id] = i + 1;
      }
      this.keptIds = Object.freeze([...keptIds]);
      this.dense = dense;
    }
  }

  /** The full vocabulary of a bundled encoding ('r50k_base' = GPT-2's, the smallest). */
  static create(encoding: BpeEncodingName | 'gpt2' = 'r50k_base'): BpeTokenizer {
    return new BpeTokenizer(encoding, null);
  }

  /** 'bpe-<encoding>', with '/remapped-<vocabSize>' when remapped. */
  get name(): string {
    return this.keptIds === null ? `bpe-${this.encoding}` : `bpe-${this.encoding}/remapped-${this.vocabSize}`;
  }

  /** Full: the encoding's ordinary tokens. Remapped: kept ids + 1. */
  get vocabSize(): number {
    return this.keptIds === null ? this.tables.bytes.length : this.keptIds.length + 1;
  }

  /** 0 when remapped, null for the full vocabulary. */
  get unknownId(): number | null {
    return this.keptIds === null ? null : 0;
  }

  /** The ids of the full vocabulary (ignores any remap). */
  encodeOriginal(text: string): number[] {
    return this.tables.api.encode(text, { disallowedSpecial: new Set() });
  }

  /** Text to ids (dense ids when remapped). */
  encode(text: string): number[] {
    const ids = this.encodeOriginal(text);
    const dense = this.dense;
    if (dense === null) return ids;
    const out: number[] = [];
    for (const id of ids) {
      const d = dense[id];
      if (d > 0) {
        out.push(d);
        continue;
      }
      // Not kept: spell it in single-byte tokens if all of those are kept.
      const bytes = this.tables.bytes[id] ?? new Uint8Array(0);
      const spelled: number[] = [];
      for (const b of bytes) {
        const r = this.tables.byteRank[b];
        const db = r >= 0 ? dense[r] : 0;
        if (db === 0) break;
        spelled.push(db);
      }
      if (spelled.length === bytes.length && bytes.length > 0) out.push(...spelled);
      else out.push(0);
    }
    return out;
  }

  /** The original id of a (possibly remapped) id; -1 for the unknown id. */
  originalId(id: number): number {
    checkId(id, this.vocabSize);
    if (this.keptIds === null) return id;
    return id === 0 ? -1 : this.keptIds[id - 1];
  }

  private tokenBytes(id: number, field: string): Uint8Array {
    checkId(id, this.vocabSize, field);
    const orig = this.keptIds === null ? id : id === 0 ? -1 : this.keptIds[id - 1];
    if (orig < 0) return utf8Encoder.encode(REPLACEMENT);
    const b = this.tables.bytes[orig];
    if (b === undefined) throw new RangeValueError(field, id, `id ${orig} is unused in ${this.encoding}`);
    return b;
  }

  /** The UTF-8 text of the ids' bytes (pure: no decoder state carries over between calls). */
  decode(ids: ArrayLike<number>): string {
    const parts: Uint8Array[] = [];
    let total = 0;
    for (let i = 0; i < ids.length; i++) {
      const b = this.tokenBytes(ids[i], `ids[${i}]`);
      parts.push(b);
      total += b.length;
    }
    const all = new Uint8Array(total);
    let off = 0;
    for (const p of parts) {
      all.set(p, off);
      off += p.length;
    }
    return utf8Lenient.decode(all);
  }

  /** The token's text; bytes that are part of a multi-byte character shown as <0xNN>. */
  tokenString(id: number): string {
    if (this.keptIds !== null && id === 0) return '<unk>';
    return displayBytes(this.tokenBytes(id, 'id'));
  }

  /**
   * A tokenizer restricted to the ids seen in `texts` (see the class comment). Always remaps
   * from the full vocabulary, so remapping a remapped tokenizer starts afresh.
   */
  remap(texts: string | readonly string[], options: BpeRemapOptions = {}): BpeTokenizer {
    const minCount = options.minCount ?? 1;
    if (!Number.isInteger(minCount) || minCount < 1) throw new ValueError('minCount', options.minCount, 'must be a positive integer');
    const n = this.tables.bytes.length;
    const counts = new Float64Array(n);
    for (const t of typeof texts === 'string' ? [texts] : texts) {
      for (const id of this.encodeOriginal(t)) counts[id]++;
    }
    const forced = new Set<number>();
    if (options.keepBytes) for (const r of this.tables.byteRank) if (r >= 0) forced.add(r);
    let seen: number[] = [];
    for (let id = 0; id < n; id++) if (counts[id] >= minCount && !forced.has(id)) seen.push(id);
    if (options.maxVocab !== undefined) {
      const room = options.maxVocab - 1 - forced.size;
      if (!Number.isInteger(options.maxVocab) || room < 1) {
        throw new ValueError('maxVocab', options.maxVocab, `must be an integer ≥ ${forced.size + 2} (unknown id${forced.size ? ', the 256 byte tokens' : ''} and at least one token)`);
      }
      seen = seen.sort((a, b) => counts[b] - counts[a] || a - b).slice(0, room);
    }
    const kept = [...forced, ...seen].sort((a, b) => a - b);
    if (kept.length === 0) throw new ValueError('texts', texts, 'no tokens to keep: the texts are empty');
    return new BpeTokenizer(this.encoding, kept);
  }

  /** { type: 'bpe', encoding, keptIds } (keptIds null for the full vocabulary). */
  toJSON(): TokenizerSpec {
    return { type: 'bpe', encoding: this.encoding, keptIds: this.keptIds === null ? null : [...this.keptIds] };
  }
}

// ---------------------------------------------------------------------------------------------

/** Rebuild a tokenizer from its spec (validated: a ConfigError names the bad field). */
export function tokenizerFromJSON(spec: unknown): Tokenizer {
  if (typeof spec !== 'object' || spec === null || Array.isArray(spec)) {
    throw new ConfigError('tokenizer', spec, 'expected an object { type: "char" | "byte" | "bpe", ... }');
  }
  const s = spec as Record<string, unknown>;
  switch (s.type) {
    case 'char': {
      if (!Array.isArray(s.codePoints)) throw new ConfigError('tokenizer.codePoints', s.codePoints, 'expected an array of code points');
      return new CharTokenizer(s.codePoints as number[]);
    }
    case 'byte':
      return new ByteTokenizer();
    case 'bpe': {
      if (typeof s.encoding !== 'string') throw new ConfigError('tokenizer.encoding', s.encoding, `expected one of ${BPE_ENCODINGS.join(', ')}`);
      const kept = s.keptIds ?? null;
      if (kept !== null && !Array.isArray(kept)) throw new ConfigError('tokenizer.keptIds', kept, 'expected an array of token ids or null');
      return new BpeTokenizer(bpeEncodingName(s.encoding), kept as number[] | null);
    }
    default:
      throw new ConfigError('tokenizer.type', s.type, 'expected "char", "byte" or "bpe"');
  }
}

/** The tokenizer kinds buildTokenizer accepts. */
export type TokenizerKind = 'char' | 'byte' | 'bpe';

/** Options of buildTokenizer. */
export interface BuildTokenizerOptions {
  /** char: cap on characters; bpe: cap on kept ids (both include the unknown id). */
  maxVocab?: number;
  /** bpe: the bundled vocabulary (default 'r50k_base'). */
  encoding?: BpeEncodingName | 'gpt2';
  /** bpe: restrict to the ids seen in the texts (default true: keeps a small model's embedding small). */
  remap?: boolean;
}

/** A tokenizer of the given kind fitted to training texts (char: their characters; bpe: remapped to their ids). */
export function buildTokenizer(kind: TokenizerKind, texts: string | readonly string[], options: BuildTokenizerOptions = {}): Tokenizer {
  switch (kind) {
    case 'char':
      return CharTokenizer.fromText(texts, { maxVocab: options.maxVocab });
    case 'byte':
      return new ByteTokenizer();
    case 'bpe': {
      const full = BpeTokenizer.create(options.encoding ?? 'r50k_base');
      return options.remap === false ? full : full.remap(texts, { maxVocab: options.maxVocab });
    }
    default:
      throw new ConfigError('tokenizer', kind, 'expected "char", "byte" or "bpe"');
  }
}
