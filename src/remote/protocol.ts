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
  dv.setUint32(0, MAGIC, true);
  dv.setUint16(4, VERSION, true);
  dv.setUint16(6, m.kind, true);
  dv.setUint32(8, m.requestId >>> 0, true);
  dv.setUint32(12, m.layer, true);
  dv.setUint32(16, m.expert, true);
  dv.setUint32(20, m.rows, true);
  dv.setUint32(24, m.cols, true);
  dv.setUint32(28, 0, true);
  const src = data.subarray(dataOffset, dataOffset + n);
  if (LITTLE_ENDIAN) buf.set(new Uint8Array(src.buffer, src.byteOffset, 4 * n), HEADER_BYTES);
  else for (let i = 0; i < n; i++) dv.setFloat32(HEADER_BYTES + 4 * i, src[i], true);
  return buf;
}

/**
 * Decode and validate one message: magic, version, kind, reserved bits, limits, and that the
 * length is exactly header + 4·rows·cols. Throws ProtocolError naming the field.
 */
export function decodeMessage(buf: Uint8Array, limits: ProtocolLimits = DEFAULT_LIMITS): ExpertMessage {
  if (buf.length > limits.maxBytes) throw new ProtocolError('bytes', buf.length, `exceeds the ${limits.maxBytes}-byte message limit`);
  if (buf.length < HEADER_BYTES) throw new ProtocolError('bytes', buf.length, `is shorter than the ${HEADER_BYTES}-byte header`);
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const magic = dv.getUint32(0, true);
  if (magic !== MAGIC) throw new ProtocolError('magic', `0x${magic.toString(16)}`, `is not a Switchyard expert message (0x${MAGIC.toString(16)})`);
  const version = dv.getUint16(4, true);
  if (version !== VERSION) throw new ProtocolError('version', version, `is not supported (this build speaks version ${VERSION})`);
  const kind = dv.getUint16(6, true);
  if (kind < KIND_FORWARD || kind > KIND_BACKWARD) throw new ProtocolError('kind', kind, `must be ${KIND_FORWARD} (forward), ${KIND_REPLY} (reply), ${KIND_FORWARD_TRAIN} (training forward) or ${KIND_BACKWARD} (backward)`);
  const reserved = dv.getUint32(28, true);
  if (reserved !== 0) throw new ProtocolError('reserved', reserved, 'must be 0');
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
