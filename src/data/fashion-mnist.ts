/**
 * Fashion-MNIST from the Debian package `dataset-fashion-mnist` (gzipped IDX files in
 * /usr/share/datasets/fashion-mnist), and a validating reader of the IDX format.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { ValueError } from '../errors.js';
import { DataFormatError, DataUnavailableError, installHint } from './errors.js';

/** Where Debian's dataset-fashion-mnist puts its files. */
export const DEFAULT_FASHION_MNIST_DIR = '/usr/share/datasets/fashion-mnist';

/** The ten Fashion-MNIST classes, indexed by label. */
export const FASHION_MNIST_CLASSES: readonly string[] = Object.freeze([
  'T-shirt/top',
  'Trouser',
  'Pullover',
  'Dress',
  'Coat',
  'Sandal',
  'Shirt',
  'Sneaker',
  'Bag',
  'Ankle boot',
]);

/** An IDX array: element type, dimensions and the raw big-endian-decoded values. */
export interface IdxArray {
  /** 'uint8' | 'int8' | 'int16' | 'int32' | 'float32' | 'float64'. */
  type: IdxType;
  dims: number[];
  data: Uint8Array | Int8Array | Int16Array | Int32Array | Float32Array | Float64Array;
}

/** Element types of the IDX format. */
export type IdxType = 'uint8' | 'int8' | 'int16' | 'int32' | 'float32' | 'float64';

const IDX_TYPES: Record<number, { type: IdxType; size: number }> = {
  0x08: { type: 'uint8', size: 1 },
  0x09: { type: 'int8', size: 1 },
  0x0b: { type: 'int16', size: 2 },
  0x0c: { type: 'int32', size: 4 },
  0x0d: { type: 'float32', size: 4 },
  0x0e: { type: 'float64', size: 8 },
};

/**
 * Parse an IDX file (gzip-compressed or not). Validates the magic number (two zero bytes, a
 * known type code, 1–4 dimensions), the header length and that the body holds exactly the
 * product of the dimensions; a DataFormatError names the file (`name`) and what is wrong.
 */
export function parseIdx(bytes: Uint8Array, name = 'idx'): IdxArray {
  let buf = bytes;
  if (buf.length >= 2 && buf[0] === 0x1f && buf[1] === 0x8b) {
    try {
      buf = new Uint8Array(gunzipSync(buf));
    } catch (e) {
      throw new DataFormatError(name, `${bytes.length} bytes`, `corrupt gzip stream: ${(e as Error).message}`);
    }
  }
  if (buf.length < 4) throw new DataFormatError(name, `${buf.length} bytes`, 'too short for an IDX header (4-byte magic number)');
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const magic = view.getUint32(0, false);
  const typeCode = buf[2], ndim = buf[3];
  const t = IDX_TYPES[typeCode];
  if (buf[0] !== 0 || buf[1] !== 0 || t === undefined || ndim < 1 || ndim > 4) {
    throw new DataFormatError(name, `0x${magic.toString(16).padStart(8, '0')}`, 'bad IDX magic number: expected 0x0000TTNN with type TT in 08,09,0b,0c,0d,0e and 1–4 dimensions NN');
  }
  const header = 4 + 4 * ndim;
  if (buf.length < header) throw new DataFormatError(name, `${buf.length} bytes`, `truncated IDX header: ${ndim} dimensions need ${header} bytes`);
  const dims: number[] = [];
  let count = 1;
  for (let i = 0; i < ndim; i++) {
    const d = view.getUint32(4 + 4 * i, false);
    dims.push(d);
    count *= d;
  }
  const expected = header + count * t.size;
  if (buf.length !== expected) {
    throw new DataFormatError(name, `${buf.length} bytes`, `IDX body size mismatch: dimensions [${dims.join(', ')}] of ${t.type} need ${expected} bytes (${buf.length < expected ? 'truncated' : 'trailing data'})`);
  }
  const body = buf.subarray(header);
  let data: IdxArray['data'];
  switch (t.type) {
    case 'uint8':
      data = Uint8Array.from(body);
      break;
    case 'int8':
      data = new Int8Array(Uint8Array.from(body).buffer);
      break;
    default: {
      const bv = new DataView(body.buffer, body.byteOffset, body.byteLength);
      const n = count;
      if (t.type === 'int16') {
        const a = new Int16Array(n);
        for (let i = 0; i < n; i++) a[i] = bv.getInt16(2 * i, false);
        data = a;
      } else if (t.type === 'int32') {
        const a = new Int32Array(n);
        for (let i = 0; i < n; i++) a[i] = bv.getInt32(4 * i, false);
        data = a;
      } else if (t.type === 'float32') {
        const a = new Float32Array(n);
        for (let i = 0; i < n; i++) a[i] = bv.getFloat32(4 * i, false);
        data = a;
      } else {
        const a = new Float64Array(n);
        for (let i = 0; i < n; i++) a[i] = bv.getFloat64(8 * i, false);
        data = a;
      }
    }
  }
  return { type: t.type, dims, data };
}

/** Options of loadFashionMnist. */
export interface FashionMnistOptions {
  split: 'train' | 'test';
  /** Keep only the first `limit` examples. */
  limit?: number;
  /** Directory of the IDX files (default: $SWITCHYARD_FASHION_MNIST_DIR, else /usr/share/datasets/fashion-mnist). */
  dir?: string;
}

/** Fashion-MNIST images and labels. */
export interface FashionMnist {
  /** N·28·28 pixels, row-major per image, scaled to [0, 1]. */
  images: Float32Array;
  /** N labels in [0, 10). */
  labels: Int32Array;
  /** Class names indexed by label. */
  classes: string[];
  /** N. */
  count: number;
  /** 28. */
  rows: number;
  /** 28. */
  cols: number;
}

function findIdx(dir: string, base: string): string | null {
  for (const name of [`${base}.gz`, base]) {
    const p = join(dir, name);
    if (existsSync(p)) return p;
  }
  return null;
}

/**
 * Load a Fashion-MNIST split from the Debian package `dataset-fashion-mnist`. Throws
 * DataUnavailableError naming the package when its files are missing, DataFormatError when a
 * file is corrupt or the images and labels disagree.
 */
export function loadFashionMnist(options: FashionMnistOptions): FashionMnist {
  const split = options?.split;
  if (split !== 'train' && split !== 'test') throw new ValueError('split', split, 'expected "train" or "test"');
  if (options.limit !== undefined && (!Number.isInteger(options.limit) || options.limit < 1)) {
    throw new ValueError('limit', options.limit, 'must be a positive integer');
  }
  const dir = resolve(options.dir ?? process.env.SWITCHYARD_FASHION_MNIST_DIR ?? DEFAULT_FASHION_MNIST_DIR);
  const prefix = split === 'train' ? 'train' : 't10k';
  const imagesPath = findIdx(dir, `${prefix}-images-idx3-ubyte`);
  const labelsPath = findIdx(dir, `${prefix}-labels-idx1-ubyte`);
  if (imagesPath === null || labelsPath === null) {
    const missing = imagesPath === null ? `${prefix}-images-idx3-ubyte.gz` : `${prefix}-labels-idx1-ubyte.gz`;
    throw new DataUnavailableError(
      'dataset',
      'fashion-mnist',
      `Fashion-MNIST is not installed (no ${missing} in ${dir}): ${installHint(['dataset-fashion-mnist'])}`,
      ['dataset-fashion-mnist'],
    );
  }
  const images = parseIdx(new Uint8Array(readFileSync(imagesPath)), imagesPath);
  const labels = parseIdx(new Uint8Array(readFileSync(labelsPath)), labelsPath);
  if (images.type !== 'uint8' || images.dims.length !== 3) {
    throw new DataFormatError(imagesPath, `${images.type} [${images.dims.join(', ')}]`, 'expected uint8 images of shape [N, rows, cols]');
  }
  if (labels.type !== 'uint8' || labels.dims.length !== 1) {
    throw new DataFormatError(labelsPath, `${labels.type} [${labels.dims.join(', ')}]`, 'expected uint8 labels of shape [N]');
  }
  const [n, rows, cols] = images.dims;
  if (labels.dims[0] !== n) throw new DataFormatError(labelsPath, labels.dims[0], `label count differs from the image count ${n} in ${imagesPath}`);
  const count = Math.min(n, options.limit ?? n);
  const px = rows * cols;
  const out = new Float32Array(count * px);
  const src = images.data;
  for (let i = 0; i < out.length; i++) out[i] = src[i] / 255;
  const lab = new Int32Array(count);
  for (let i = 0; i < count; i++) {
    const v = labels.data[i];
    if (v >= FASHION_MNIST_CLASSES.length) throw new DataFormatError(`${labelsPath}[${i}]`, v, `label out of range [0, ${FASHION_MNIST_CLASSES.length})`);
    lab[i] = v;
  }
  return { images: out, labels: lab, classes: [...FASHION_MNIST_CLASSES], count, rows, cols };
}
