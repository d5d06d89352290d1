/**
 * The expert wire format: a 32-byte little-endian header followed by raw little-endian float32
 * rows (no JSON, no base64). One message carries one expert's block of rows:
 *
 *   offset  size  field
 *   0       4     magic 0x58595753 ("SWYX" read as bytes S W Y X)
 *   4       2     version (1)
 *   6       2     kind: 1 = forward request, 2 = reply (rows out), 3 = training forward (the
 *                 server keeps the activations under requestId), 4 = backward (rows = dY of
 *                 that earlier training forward; the reply carries dX)
 *   8       4     requestId (echoed in the reply, so a reply is checked against its request)
 *   12      4     layer (the model's layer index, `layers.<layer>`)
 *   16      4     expert
 *   20      4     rows
 *   24      4     cols (dModel)
 *   28      4     reserved, must be 0
 *   32      4·rows·cols   float32 data, row-major
 *
 * A batched frame (kinds 5 and 6) carries several expert blocks of one layer in one message, so
 * a router sends each server instance one request per layer instead of one per expert (the
 * per-request cost of a NATS round trip dominates at these sizes, not the bytes):
 *
 *   offset  size  field
 *   0       4     magic, as above
 *   4       2     version (1)
 *   6       2     kind: 5 = batched forward request, 6 = batched reply
 *   8       4     requestId
 *   12      4     layer
 *   16      4     blocks (B >= 1)
 *   20      4     rows (total over the blocks)
 *   24      4     cols (dModel)
 *   28      4     reserved, must be 0
 *   32      8·B   block table: (expert u32, rows u32) per block; experts strictly increasing,
 *                 rows >= 1, summing to `rows`
 *   32+8B   4·rows·cols   float32 data, the blocks' rows in table order
 *
 * The server runs all blocks as one grouped expert FFN call and replies with the same table.
 * Errors travel as NATS service errors (Nats-Service-Error headers), not in this format.
 */
import { SwitchyardError } from '../errors.js';

/** A message on an expert subject is malformed or exceeds a limit: `field` names the header field at fault. */
export class ProtocolError extends SwitchyardError {}

export const MAGIC = 0x58595753;
export const VERSION = 1;
export const HEADER_BYTES = 32;
export const KIND_FORWARD = 1;
export const KIND_REPLY = 2;
export const KIND_FORWARD_TRAIN = 3;
export const KIND_BACKWARD = 4;
export const KIND_BATCH_FORWARD = 5;
export const KIND_BATCH_REPLY = 6;

/** Hard caps on what a decoder accepts (on top of the byte limit of the transport). */
export interface ProtocolLimits {
  /** Most rows in one message. */
  maxRows: number;
  /** Most bytes in one message (header included). */
  maxBytes: number;
}

/** Default limits: 65536 rows, 64 MiB (NATS' own max_payload, 1 MiB by default, is usually lower). */
export const DEFAULT_LIMITS: ProtocolLimits = { maxRows: 65536, maxBytes: 64 << 20 };

/** A decoded message. `data` is [rows·cols] float32 (a copy when the payload was not 4-byte aligned). */
export interface ExpertMessage {
  kind: number;
  requestId: number;
  layer: number;
  expert: number;
  rows: number;
  cols: number;
  data: Float32Array;
}

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** Bytes of a message with `rows`×`cols` floats. */
export function messageBytes(rows: number, cols: number): number {
  return HEADER_BYTES + 4 * rows * cols;
}

/** The 32-byte header shared by both formats; word 16 is the expert (single) or the block count (batched). */
function writeHeader(dv: DataView, kind: number, requestId: number, layer: number, word16: number, rows: number, cols: number): void {
  dv.setUint32(0, MAGIC, true);
  dv.setUint16(4, VERSION, true);
  dv.setUint16(6, kind, true);
  dv.setUint32(8, requestId >>> 0, true);
  dv.setUint32(12, layer, true);
  dv.setUint32(16, word16, true);
  dv.setUint32(20, rows, true);
  dv.setUint32(24, cols, true);
  dv.setUint32(28, 0, true);
}

/** Rows as little-endian float32 at byte `at` of buf (one copy on little-endian hosts). */
function writeRows(buf: Uint8Array, dv: DataView, at: number, src: Float32Array): void {
  if (LITTLE_ENDIAN) buf.set(new Uint8Array(src.buffer, src.byteOffset, src.byteLength), at);
  else for (let k = 0; k < src.length; k++) dv.setFloat32(at + 4 * k, src[k], true);
}

/**
 * Encode one message. `data` holds at least rows·cols floats from `dataOffset` (in floats).
 * Into `out` when given (it must be exactly messageBytes(rows, cols) long), else a new buffer.
 */
export function encodeMessage(
  m: Omit<ExpertMessage, 'data'>,
  data: Float32Array,
  dataOffset = 0,
  out?: Uint8Array,
): Uint8Array {
  const n = m.rows * m.cols;
  const bytes = messageBytes(m.rows, m.cols);
  const buf = out ?? new Uint8Array(bytes);
  if (buf.length !== bytes) throw new ProtocolError('out', buf.length, `must be ${bytes} bytes for ${m.rows}x${m.cols}`);
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  writeHeader(dv, m.kind, m.requestId, m.layer, m.expert, m.rows, m.cols);
  writeRows(buf, dv, HEADER_BYTES, data.subarray(dataOffset, dataOffset + n));
  return buf;
}

/** The header of a message of either format, after the checks they share: size limits, magic, version. */
function headerView(buf: Uint8Array, limits: ProtocolLimits): DataView {
  if (buf.length > limits.maxBytes) throw new ProtocolError('bytes', buf.length, `exceeds the ${limits.maxBytes}-byte message limit`);
  if (buf.length < HEADER_BYTES) throw new ProtocolError('bytes', buf.length, `is shorter than the ${HEADER_BYTES}-byte header`);
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const magic = dv.getUint32(0, true);
  if (magic !== MAGIC) throw new ProtocolError('magic', `0x${magic.toString(16)}`, `is not a Switchyard expert message (0x${MAGIC.toString(16)})`);
  const version = dv.getUint16(4, true);
  if (version !== VERSION) throw new ProtocolError('version', version, `is not supported (this build speaks version ${VERSION})`);
  return dv;
}

function checkReserved(dv: DataView): void {
  const reserved = dv.getUint32(28, true);
  if (reserved !== 0) throw new ProtocolError('reserved', reserved, 'must be 0');
}

/**
 * Decode and validate one message: magic, version, kind, reserved bits, limits, and that the
 * length is exactly header + 4·rows·cols. Throws ProtocolError naming the field.
 */
export function decodeMessage(buf: Uint8Array, limits: ProtocolLimits = DEFAULT_LIMITS): ExpertMessage {
  const dv = headerView(buf, limits);
  const kind = dv.getUint16(6, true);
  if (kind === KIND_BATCH_FORWARD || kind === KIND_BATCH_REPLY) throw new ProtocolError('kind', kind, 'is a batched frame (decode it with decodeBatch)');
  if (kind < KIND_FORWARD || kind > KIND_BACKWARD) throw new ProtocolError('kind', kind, `must be ${KIND_FORWARD} (forward), ${KIND_REPLY} (reply), ${KIND_FORWARD_TRAIN} (training forward) or ${KIND_BACKWARD} (backward)`);
  checkReserved(dv);
  const rows = dv.getUint32(20, true), cols = dv.getUint32(24, true);
  if (rows > limits.maxRows) throw new ProtocolError('rows', rows, `exceeds the limit of ${limits.maxRows} rows per message`);
  if (cols === 0) throw new ProtocolError('cols', cols, 'must be at least 1');
  const want = HEADER_BYTES + 4 * rows * cols;
  if (buf.length !== want) throw new ProtocolError('bytes', buf.length, `must be ${want} for ${rows} rows x ${cols} cols`);
  const n = rows * cols;
  let data: Float32Array;
  const start = buf.byteOffset + HEADER_BYTES;
  if (LITTLE_ENDIAN && start % 4 === 0) data = new Float32Array(buf.buffer, start, n);
  else if (LITTLE_ENDIAN) {
    // Copy explicitly: a Node Buffer's slice() is a view into its (shared) pool, not a copy.
    const bytes = new Uint8Array(4 * n);
    bytes.set(buf.subarray(HEADER_BYTES));
    data = new Float32Array(bytes.buffer);
  }
  else {
    data = new Float32Array(n);
    for (let i = 0; i < n; i++) data[i] = dv.getFloat32(HEADER_BYTES + 4 * i, true);
  }
  return { kind, requestId: dv.getUint32(8, true), layer: dv.getUint32(12, true), expert: dv.getUint32(16, true), rows, cols, data };
}

/** One expert block of a batched frame. */
export interface BatchBlock {
  expert: number;
  rows: number;
}

/** A decoded batched frame. `data` is [rows·cols] float32, the blocks' rows in table order. */
export interface BatchMessage {
  kind: number;
  requestId: number;
  layer: number;
  rows: number;
  cols: number;
  blocks: BatchBlock[];
  data: Float32Array;
}

/** Bytes of a batched frame with `blocks` blocks and `rows`×`cols` floats in all. */
export function batchBytes(blocks: number, rows: number, cols: number): number {
  return HEADER_BYTES + 8 * blocks + 4 * rows * cols;
}

/** True when `buf` claims to be a batched frame (kind 5 or 6); decodeBatch still validates it. */
export function isBatchFrame(buf: Uint8Array): boolean {
  if (buf.length < 8) return false;
  const kind = buf[6] | (buf[7] << 8);
  return kind === KIND_BATCH_FORWARD || kind === KIND_BATCH_REPLY;
}

/**
 * Encode a batched frame. Block i's rows are read from `data` at row `blocks[i].row0` (in rows
 * of `cols` floats; default: the blocks lie back to back from row 0), so a router sends blocks
 * straight from its layer input without gathering them first.
 */
export function encodeBatch(
  m: { kind: number; requestId: number; layer: number; cols: number },
  blocks: ReadonlyArray<BatchBlock & { row0?: number }>,
  data: Float32Array,
): Uint8Array {
  if (!blocks.length) throw new ProtocolError('blocks', 0, 'a batched frame needs at least one block');
  let rows = 0;
  for (const b of blocks) rows += b.rows;
  const cols = m.cols;
  const buf = new Uint8Array(batchBytes(blocks.length, rows, cols));
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  writeHeader(dv, m.kind, m.requestId, m.layer, blocks.length, rows, cols);
  let at = HEADER_BYTES + 8 * blocks.length;
  let next = 0;
  blocks.forEach((b, i) => {
    dv.setUint32(HEADER_BYTES + 8 * i, b.expert, true);
    dv.setUint32(HEADER_BYTES + 8 * i + 4, b.rows, true);
    const r0 = b.row0 ?? next;
    if (!Number.isInteger(r0) || r0 < 0) throw new ProtocolError('row0', r0, `block ${i} (expert ${b.expert}) must start at a row index >= 0`);
    next = r0 + b.rows;
    const src = data.subarray(r0 * cols, (r0 + b.rows) * cols);
    if (src.length !== b.rows * cols) throw new ProtocolError('data', data.length, `holds no rows ${r0}..${r0 + b.rows - 1} of ${cols} floats`);
    writeRows(buf, dv, at, src);
    at += src.byteLength;
  });
  return buf;
}

/**
 * Decode and validate a batched frame: magic, version, kind (5 or 6), reserved bits, the block
 * table (count, strictly increasing experts, rows >= 1 summing to the total), limits (maxRows
 * applies to the total) and the exact length. Throws ProtocolError naming the field.
 */
export function decodeBatch(buf: Uint8Array, limits: ProtocolLimits = DEFAULT_LIMITS): BatchMessage {
  const dv = headerView(buf, limits);
  const kind = dv.getUint16(6, true);
  if (kind !== KIND_BATCH_FORWARD && kind !== KIND_BATCH_REPLY) throw new ProtocolError('kind', kind, `must be ${KIND_BATCH_FORWARD} (batched forward) or ${KIND_BATCH_REPLY} (batched reply)`);
  checkReserved(dv);
  const nBlocks = dv.getUint32(16, true), rows = dv.getUint32(20, true), cols = dv.getUint32(24, true);
  if (rows > limits.maxRows) throw new ProtocolError('rows', rows, `exceeds the limit of ${limits.maxRows} rows per message`);
  if (cols === 0) throw new ProtocolError('cols', cols, 'must be at least 1');
  if (nBlocks === 0) throw new ProtocolError('blocks', nBlocks, 'must be at least 1');
  if (HEADER_BYTES + 8 * nBlocks > buf.length) throw new ProtocolError('blocks', nBlocks, `needs a ${8 * nBlocks}-byte block table; the message has ${buf.length} bytes`);
  const blocks: BatchBlock[] = new Array(nBlocks);
  let sum = 0;
  for (let i = 0; i < nBlocks; i++) {
    const expert = dv.getUint32(HEADER_BYTES + 8 * i, true), r = dv.getUint32(HEADER_BYTES + 8 * i + 4, true);
    if (i > 0 && expert <= blocks[i - 1].expert) throw new ProtocolError('expert', expert, `block ${i}: experts must be strictly increasing (previous ${blocks[i - 1].expert})`);
    if (r === 0) throw new ProtocolError('rows', r, `block ${i} (expert ${expert}) must have at least 1 row`);
    sum += r;
    blocks[i] = { expert, rows: r };
  }
  if (sum !== rows) throw new ProtocolError('rows', rows, `must equal the blocks' rows (${sum})`);
  const want = batchBytes(nBlocks, rows, cols);
  if (buf.length !== want) throw new ProtocolError('bytes', buf.length, `must be ${want} for ${nBlocks} blocks, ${rows} rows x ${cols} cols`);
  const n = rows * cols;
  const startByte = HEADER_BYTES + 8 * nBlocks;
  const start = buf.byteOffset + startByte;
  let data: Float32Array;
  if (LITTLE_ENDIAN && start % 4 === 0) data = new Float32Array(buf.buffer, start, n);
  else if (LITTLE_ENDIAN) {
    const bytes = new Uint8Array(4 * n);
    bytes.set(buf.subarray(startByte));
    data = new Float32Array(bytes.buffer);
  } else {
    data = new Float32Array(n);
    for (let i = 0; i < n; i++) data[i] = dv.getFloat32(startByte + 4 * i, true);
  }
  return { kind, requestId: dv.getUint32(8, true), layer: dv.getUint32(12, true), rows, cols, blocks, data };
}
