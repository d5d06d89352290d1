/**
 * safetensors files on disk: crash-safe saving (temp file in the same directory, fsync, rename,
 * fsync the directory: readers see the old file or the new one, never a torn one), whole-file
 * loading, and an on-demand reader that parses only the header and fetches single tensors with
 * positioned reads (for expert stores that keep most weights on disk).
 */
import { randomBytes } from 'node:crypto';
import { open, readFile, rename, rm, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { SafetensorsError } from '../errors.js';
import type { Tensor } from '../tensor/tensor.js';
import {
  decodeSafetensorsTensor,
  readSafetensors,
  readSafetensorsHeader,
  readSafetensorsHeaderLength,
  writeSafetensors,
  type SafetensorsHeader,
} from './safetensors.js';

/** Write `bytes` to `path` atomically: a same-directory temp file is fsynced, renamed over `path`, then the directory is fsynced. */
export async function writeFileAtomic(path: string, bytes: Uint8Array): Promise<void> {
  const target = resolve(path);
  const dir = dirname(target);
  // Same directory ⇒ same filesystem ⇒ rename is atomic. Dot-prefixed and random: no clashes, hidden from globs.
  const tmp = join(dir, `.${basename(target)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  let fh: FileHandle | null = null;
  try {
    fh = await open(tmp, 'wx', 0o644);
    await fh.writeFile(bytes);
    await fh.sync();
    await fh.close();
    fh = null;
    await rename(tmp, target);
  } catch (e) {
    await fh?.close().catch(() => undefined);
    await rm(tmp, { force: true });
    throw e;
  }
  await syncDirectory(dir);
}

/** fsync a directory so a rename in it survives a crash; platforms that cannot (Windows) are skipped. */
async function syncDirectory(dir: string): Promise<void> {
  let fh: FileHandle | null = null;
  try {
    fh = await open(dir, 'r');
    await fh.sync();
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'EISDIR' && code !== 'EPERM' && code !== 'EINVAL' && code !== 'EBADF' && code !== 'EACCES') throw e;
  } finally {
    await fh?.close();
  }
}

/** Save tensors (and optional string metadata) to a safetensors file, atomically. */
export async function saveSafetensors(path: string, dict: Record<string, Tensor>, metadata?: Record<string, string>): Promise<void> {
  await writeFileAtomic(path, writeSafetensors(dict, metadata));
}

/** Load every tensor of a safetensors file. */
export async function loadSafetensors(path: string): Promise<Record<string, Tensor>> {
  return readSafetensors(await readFile(path));
}

async function readExactly(fh: FileHandle, length: number, position: number, path: string): Promise<Uint8Array> {
  const buf = new Uint8Array(length);
  let done = 0;
  while (done < length) {
    const { bytesRead } = await fh.read(buf, done, length - done, position + done);
    if (bytesRead === 0) throw new SafetensorsError('file.length', position + done, `${path} ended early (file truncated while reading?)`);
    done += bytesRead;
  }
  return buf;
}

/** A safetensors file opened for on-demand reads: the header is parsed, tensors are read one at a time. */
export class SafetensorsFile {
  readonly path: string;
  readonly header: SafetensorsHeader;
  private readonly fh: FileHandle;

  private constructor(path: string, fh: FileHandle, header: SafetensorsHeader) {
    this.path = path;
    this.fh = fh;
    this.header = header;
  }

  /** Open `path` and parse its header with two positioned reads (8 bytes, then N). */
  static async open(path: string): Promise<SafetensorsFile> {
    const fh = await open(path, 'r');
    try {
      const { size } = await fh.stat();
      const prefix = await readExactly(fh, Math.min(8, size), 0, path);
      const n = readSafetensorsHeaderLength(prefix, size);
      const head = new Uint8Array(8 + n);
      head.set(prefix);
      head.set(await readExactly(fh, n, 8, path), 8);
      return new SafetensorsFile(path, fh, readSafetensorsHeader(head, size));
    } catch (e) {
      await fh.close();
      throw e;
    }
  }

  /** Tensor names, in data-buffer order. */
  names(): string[] {
    return Object.entries(this.header.tensors).sort(([, a], [, b]) => a.dataOffsets[0] - b.dataOffsets[0]).map(([k]) => k);
  }

  /** Read and decode one tensor (a single positioned read of its byte range). */
  async read(name: string): Promise<Tensor> {
    const info = Object.prototype.hasOwnProperty.call(this.header.tensors, name) ? this.header.tensors[name] : undefined;
    if (!info) throw new SafetensorsError('name', name, `no such tensor in ${this.path}`);
    const [begin, end] = info.dataOffsets;
    const raw = await readExactly(this.fh, end - begin, this.header.dataStart + begin, this.path);
    return decodeSafetensorsTensor(name, info, raw);
  }

  async close(): Promise<void> {
    await this.fh.close();
  }
}
