/**
 * The safetensors format (huggingface/safetensors), in memory: an 8-byte little-endian u64
 * header length N, N bytes of UTF-8 JSON
 * `{ name: { dtype, shape, data_offsets: [begin, end] }, "__metadata__": { string: string } }`,
 * then the data buffer, which the tensors' byte ranges must cover exactly, without holes or
 * overlaps. The header can be parsed from the first 8+N bytes alone, so a reader can fetch single
 * tensors with positioned reads (see safetensors-file.ts).
 */
import { SafetensorsError } from '../errors.js';
import { Tensor } from '../tensor/tensor.js';
import { decodeBF16, decodeF16 } from './half.js';

/** Headers above this size are rejected (the reference implementation's limit). */
export const MAX_HEADER_BYTES = 100_000_000;

/**
 * Element size in bits of every dtype the format defines, in the reference implementation's
 * order (the writer sorts by this order, descending, so larger alignments come first).
 */
const DTYPE_BITS: ReadonlyArray<readonly [string, number]> = [
  ['BOOL', 8], ['F4', 4], ['F6_E2M3', 6], ['F6_E3M2', 6], ['U8', 8], ['I8', 8],
  ['F8_E5M2', 8], ['F8_E4M3', 8], ['F8_E8M0', 8], ['F8_E4M3FNUZ', 8], ['F8_E5M2FNUZ', 8],
  ['I16', 16], ['U16', 16], ['F16', 16], ['BF16', 16], ['I32', 32], ['U32', 32], ['F32', 32],
  ['C64', 64], ['F64', 64], ['I64', 64], ['U64', 64],
];
const BITS = new Map(DTYPE_BITS);
const ORDER = new Map(DTYPE_BITS.map(([d], i) => [d, i]));

/** Dtypes this library decodes (into float32, or int32 for the integer types). */
export const READABLE_DTYPES = ['F32', 'F16', 'BF16', 'F64', 'U8', 'BOOL', 'I8', 'I16', 'U16', 'I32', 'U32', 'I64'] as const;

/** One tensor's entry in the header. `dataOffsets` are relative to the start of the data buffer. */
export interface SafetensorsTensorInfo {
  dtype: string;
  shape: number[];
  dataOffsets: [number, number];
}

/** A parsed, validated header. */
export interface SafetensorsHeader {
  /** N: the JSON header's byte length (padding included). */
  headerLength: number;
  /** 8 + N: the file offset where the data buffer starts (add dataOffsets for a tensor's bytes). */
  dataStart: number;
  /** Tensors by name. */
  tensors: Record<string, SafetensorsTensorInfo>;
  /** The free-form string→string `__metadata__` (empty if absent). */
  metadata: Record<string, string>;
}

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** Define an own property even for names like `__proto__` (plain assignment would set the prototype). */
function setOwn<T>(obj: Record<string, T>, key: string, value: T): void {
  Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
}

const field = (name: string, key?: string): string => `header[${JSON.stringify(name)}]${key ? '.' + key : ''}`;

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isCount(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

/**
 * Read and check the u64 header length N from the first 8 bytes. `fileSize` is the whole file's
 * length (the header must fit inside it).
 */
export function readSafetensorsHeaderLength(prefix: Uint8Array, fileSize = prefix.length): number {
  if (prefix.length < 8 || fileSize < 8) {
    throw new SafetensorsError('file.length', Math.min(prefix.length, fileSize), 'a safetensors file needs at least 8 bytes (the u64 header length)');
  }
  const view = new DataView(prefix.buffer, prefix.byteOffset, 8);
  const lo = view.getUint32(0, true), hi = view.getUint32(4, true);
  const n = hi * 2 ** 32 + lo;
  if (n > MAX_HEADER_BYTES) throw new SafetensorsError('headerLength', n, `exceeds the ${MAX_HEADER_BYTES}-byte header limit (corrupt or not a safetensors file)`);
  if (8 + n > fileSize) throw new SafetensorsError('headerLength', n, `8 + headerLength exceeds the file size ${fileSize}`);
  return n;
}

/**
 * Parse and validate the header from `bytes`, which must hold at least the first 8+N bytes of
 * the file; `fileSize` (default bytes.length) is the whole file's length, so a header read on
 * its own can still be checked against the data buffer.
 */
export function readSafetensorsHeader(bytes: Uint8Array, fileSize = bytes.length): SafetensorsHeader {
  const n = readSafetensorsHeaderLength(bytes, fileSize);
  if (bytes.length < 8 + n) throw new SafetensorsError('bytes.length', bytes.length, `need the first 8 + headerLength = ${8 + n} bytes to parse the header`);
  let text: string;
  try {
    // fatal: reject invalid UTF-8; ignoreBOM: keep a BOM so JSON.parse rejects it, as the reference does.
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes.subarray(8, 8 + n));
  } catch {
    throw new SafetensorsError('header', `${n} bytes`, 'is not valid UTF-8');
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new SafetensorsError('header', text, `is not valid JSON (${(e as Error).message})`);
  }
  if (!isPlainObject(json)) throw new SafetensorsError('header', brief(json), 'must be a JSON object of tensor entries');
  const dataLength = fileSize - 8 - n;
  const tensors: Record<string, SafetensorsTensorInfo> = {};
  let metadata: Record<string, string> = {};
  for (const [name, entry] of Object.entries(json)) {
    if (name === '__metadata__') metadata = checkMetadata(entry, 'header.__metadata__');
    else setOwn(tensors, name, checkEntry(name, entry, dataLength));
  }
  checkCoverage(tensors, dataLength);
  return { headerLength: n, dataStart: 8 + n, tensors, metadata };
}

function checkMetadata(v: unknown, at: string): Record<string, string> {
  if (!isPlainObject(v)) throw new SafetensorsError(at, brief(v), 'must be an object of string values');
  const out: Record<string, string> = {};
  for (const [k, s] of Object.entries(v)) {
    if (typeof s !== 'string') throw new SafetensorsError(`${at}[${JSON.stringify(k)}]`, brief(s), 'metadata values must be strings');
    setOwn(out, k, s);
  }
  return out;
}

function checkEntry(name: string, entry: unknown, dataLength: number): SafetensorsTensorInfo {
  if (!isPlainObject(entry)) throw new SafetensorsError(field(name), brief(entry), 'a tensor entry must be an object { dtype, shape, data_offsets }');
  const { dtype, shape, data_offsets: offsets } = entry;
  if (typeof dtype !== 'string' || !BITS.has(dtype)) {
    throw new SafetensorsError(field(name, 'dtype'), brief(dtype), `unknown dtype (known: ${DTYPE_BITS.map(([d]) => d).join(', ')})`);
  }
  if (!Array.isArray(shape) || !shape.every(isCount)) {
    throw new SafetensorsError(field(name, 'shape'), brief(shape), 'must be an array of non-negative integers');
  }
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isCount) || offsets[0] > offsets[1]) {
    throw new SafetensorsError(field(name, 'data_offsets'), brief(offsets), 'must be [begin, end] with 0 <= begin <= end');
  }
  const [begin, end] = offsets as [number, number];
  if (end > dataLength) {
    throw new SafetensorsError(field(name, 'data_offsets'), [begin, end], `end ${end} is beyond the data buffer (${dataLength} bytes)`);
  }
  let elements = 1;
  for (const d of shape as number[]) elements *= d;
  const bits = elements * BITS.get(dtype)!;
  if (!Number.isSafeInteger(bits) || bits % 8 !== 0 || bits / 8 !== end - begin) {
    throw new SafetensorsError(field(name, 'data_offsets'), [begin, end], `spans ${end - begin} bytes but shape [${shape}] of ${dtype} needs ${bits / 8}`);
  }
  return { dtype, shape: [...(shape as number[])], dataOffsets: [begin, end] };
}

/** The spec requires the byte ranges to tile the data buffer: sorted, each starting where the previous ended. */
function checkCoverage(tensors: Record<string, SafetensorsTensorInfo>, dataLength: number): void {
  const sorted = Object.entries(tensors).sort(([, a], [, b]) => a.dataOffsets[0] - b.dataOffsets[0] || a.dataOffsets[1] - b.dataOffsets[1]);
  let cursor = 0, prev = '';
  for (const [name, info] of sorted) {
    const [begin, end] = info.dataOffsets;
    if (begin < cursor) {
      throw new SafetensorsError(field(name, 'data_offsets'), [begin, end], `overlaps tensor ${JSON.stringify(prev)}, which ends at ${cursor}`);
    }
    if (begin > cursor) throw new SafetensorsError(field(name, 'data_offsets'), [begin, end], `leaves a gap: bytes [${cursor}, ${begin}) of the data buffer belong to no tensor`);
    cursor = end;
    prev = name;
  }
  if (cursor !== dataLength) {
    throw new SafetensorsError('data.length', dataLength, `the tensors cover only bytes [0, ${cursor}) of the data buffer; the rest belongs to no tensor`);
  }
}

/** A fresh, aligned copy of raw bytes (typed-array views need aligned offsets). */
function aligned(raw: Uint8Array): ArrayBuffer {
  // new Uint8Array(view) always copies (Buffer#slice would not: it returns a view).
  return new Uint8Array(raw).buffer;
}

/**
 * Decode one tensor's raw little-endian bytes (exactly its data_offsets range). Floating types
 * and U8/BOOL become float32; integer types become int32 (I64/U32 values must fit in int32).
 */
export function decodeSafetensorsTensor(name: string, info: SafetensorsTensorInfo, raw: Uint8Array): Tensor {
  const { dtype, shape } = info;
  const bits = BITS.get(dtype);
  if (bits === undefined || raw.length * 8 !== shape.reduce((p, d) => p * d, 1) * bits) {
    throw new SafetensorsError(field(name), raw.length, `raw byte length does not match ${dtype}[${shape}]`);
  }
  const n = (raw.length * 8) / bits;
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  switch (dtype) {
    case 'F32':
      if (LITTLE_ENDIAN) return new Tensor(new Float32Array(aligned(raw)), shape);
      return new Tensor(Float32Array.from({ length: n }, (_, i) => view.getFloat32(4 * i, true)), shape);
    case 'F16':
      return new Tensor(decodeF16(raw, n), shape);
    case 'BF16':
      return new Tensor(decodeBF16(raw, n), shape);
    case 'F64':
      return new Tensor(Float32Array.from({ length: n }, (_, i) => view.getFloat64(8 * i, true)), shape);
    case 'U8':
    case 'BOOL':
      return new Tensor(Float32Array.from(raw), shape);
    case 'I8':
      return new Tensor(Int32Array.from(new Int8Array(raw.buffer, raw.byteOffset, n)), shape);
    case 'I16':
      return new Tensor(Int32Array.from({ length: n }, (_, i) => view.getInt16(2 * i, true)), shape);
    case 'U16':
      return new Tensor(Int32Array.from({ length: n }, (_, i) => view.getUint16(2 * i, true)), shape);
    case 'I32':
      if (LITTLE_ENDIAN) return new Tensor(new Int32Array(aligned(raw)), shape);
      return new Tensor(Int32Array.from({ length: n }, (_, i) => view.getInt32(4 * i, true)), shape);
    case 'U32':
    case 'I64': {
      const out = new Int32Array(n);
      for (let i = 0; i < n; i++) {
        // In int32 range iff (U32) the top bit is clear, or (I64) the high word is the low word's sign extension.
        const lo = dtype === 'U32' ? view.getUint32(4 * i, true) : view.getInt32(8 * i, true);
        const ok = dtype === 'U32' ? lo <= 0x7fffffff : view.getInt32(8 * i + 4, true) === lo >> 31;
        if (!ok) {
          const v = dtype === 'U32' ? String(lo) : String(view.getBigInt64(8 * i, true));
          throw new SafetensorsError(`${JSON.stringify(name)}[${i}]`, v, `${dtype} value does not fit in int32 (index tensors are int32)`);
        }
        out[i] = lo;
      }
      return new Tensor(out, shape);
    }
    default:
      throw new SafetensorsError(field(name, 'dtype'), dtype, `is valid safetensors but not supported here (readable: ${READABLE_DTYPES.join(', ')})`);
  }
}

/** Parse a whole safetensors file held in memory into tensors by name (metadata: readSafetensorsHeader). */
export function readSafetensors(bytes: Uint8Array): Record<string, Tensor> {
  const header = readSafetensorsHeader(bytes);
  const out: Record<string, Tensor> = {};
  for (const [name, info] of Object.entries(header.tensors)) {
    const [begin, end] = info.dataOffsets;
    setOwn(out, name, decodeSafetensorsTensor(name, info, bytes.subarray(header.dataStart + begin, header.dataStart + end)));
  }
  return out;
}

const utf8 = new TextEncoder();

/** UTF-8 byte order (Rust's String ordering), which differs from JS's UTF-16 order for some characters. */
function compareUtf8(a: string, b: string): number {
  const x = utf8.encode(a), y = utf8.encode(b);
  const n = Math.min(x.length, y.length);
  for (let i = 0; i < n; i++) if (x[i] !== y[i]) return x[i] - y[i];
  return x.length - y.length;
}

/**
 * Serialise tensors (float32 → F32, int32 → I32) and optional string metadata to safetensors
 * bytes, laid out like the reference writer: tensors sorted by dtype (larger alignment first)
 * then name, `__metadata__` first in the header, header padded with spaces to a multiple of 8.
 */
export function writeSafetensors(dict: Record<string, Tensor>, metadata?: Record<string, string>): Uint8Array {
  if (!isPlainObject(dict)) throw new SafetensorsError('dict', brief(dict), 'must be an object of tensors by name');
  const entries = Object.entries(dict).map(([name, t]) => {
    if (name === '__metadata__') throw new SafetensorsError('dict["__metadata__"]', 'tensor', '__metadata__ is reserved for metadata; rename the tensor');
    if (!(t instanceof Tensor)) throw new SafetensorsError(`dict[${JSON.stringify(name)}]`, brief(t), 'must be a Tensor');
    return { name, t, dtype: t.dtype === 'int32' ? 'I32' : 'F32' };
  });
  entries.sort((a, b) => ORDER.get(b.dtype)! - ORDER.get(a.dtype)! || compareUtf8(a.name, b.name));
  const parts: string[] = [];
  if (metadata !== undefined) {
    const meta = checkMetadata(metadata, 'metadata');
    const keys = Object.keys(meta).sort(compareUtf8);
    parts.push(`"__metadata__":{${keys.map((k) => `${JSON.stringify(k)}:${JSON.stringify(meta[k])}`).join(',')}}`);
  }
  let offset = 0;
  for (const e of entries) {
    const size = e.t.data.byteLength;
    // Written by hand to keep this key order: a JS object would move integer-like names to the front.
    parts.push(`${JSON.stringify(e.name)}:{"dtype":"${e.dtype}","shape":${JSON.stringify(e.t.shape)},"data_offsets":[${offset},${offset + size}]}`);
    offset += size;
  }
  const json = utf8.encode(`{${parts.join(',')}}`);
  const n = Math.ceil(json.length / 8) * 8;
  if (n > MAX_HEADER_BYTES) throw new SafetensorsError('headerLength', n, `exceeds the ${MAX_HEADER_BYTES}-byte header limit (too much metadata?)`);
  const out = new Uint8Array(8 + n + offset);
  const view = new DataView(out.buffer);
  view.setUint32(0, n, true); // u64 LE; n < 2³², so the high word stays 0
  out.set(json, 8);
  out.fill(0x20, 8 + json.length, 8 + n);
  let at = 8 + n;
  for (const { t } of entries) {
    const d = t.data;
    if (LITTLE_ENDIAN) out.set(new Uint8Array(d.buffer, d.byteOffset, d.byteLength), at);
    else if (d instanceof Float32Array) d.forEach((v, i) => view.setFloat32(at + 4 * i, v, true));
    else d.forEach((v, i) => view.setInt32(at + 4 * i, v, true));
    at += d.byteLength;
  }
  return out;
}

/** A value for an error message: primitives and short arrays as they are, larger values summarised. */
function brief(v: unknown): unknown {
  if (Array.isArray(v)) return v.length <= 8 ? v : `array of ${v.length}`;
  if (ArrayBuffer.isView(v)) return v;
  if (typeof v === 'object' && v !== null) return `object with keys ${JSON.stringify(Object.keys(v).slice(0, 8))}`;
  return v;
}
