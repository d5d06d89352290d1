/** Whether a file or folder exists (any stat error, e.g. ENOENT or EACCES, counts as absent). */
import { stat } from 'node:fs/promises';

/** true iff stat(path) succeeds. */
export async function pathExists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}
