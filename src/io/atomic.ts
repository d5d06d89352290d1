/**
 * Durable-write helpers for crash-safe multi-file saves (checkpoints): write a file and fsync it,
 * fsync a directory so the renames and creations in it survive a power loss, and atomically
 * replace a small pointer file. (Single files: `writeFileAtomic` in safetensors-file.ts.)
 */
import { randomBytes } from 'node:crypto';
import { open, rename, rm, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';

/** Create `path` (it must not exist), write `bytes`, fsync and close it. */
export async function writeFileDurable(path: string, bytes: Uint8Array | string): Promise<void> {
  const fh = await open(path, 'wx', 0o644);
  try {
    await fh.writeFile(bytes);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** fsync a directory so creations and renames in it are durable; platforms that cannot (Windows) are skipped. */
export async function syncDirectory(dir: string): Promise<void> {
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

/**
 * Replace `path` atomically with `bytes`: a same-directory temp file is written and fsynced, renamed
 * over `path`, and the directory fsynced. Readers see the old content or the new, never a mix.
 */
export async function replaceFileAtomic(path: string, bytes: Uint8Array | string): Promise<void> {
  const target = resolve(path);
  const dir = dirname(target);
  const tmp = join(dir, `.${basename(target)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  try {
    await writeFileDurable(tmp, bytes);
    await rename(tmp, target);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
  await syncDirectory(dir);
}
