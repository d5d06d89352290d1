/** `switchyard info`: which backend is active, its threads, and why native is absent if it is. */
import { Command } from 'commander';
import { getBackend } from '../backend/index.js';
import { nativeLoadError } from '../backend/native.js';

export function infoCommand(): Command {
  return new Command('info')
    .description('show the active compute backend and thread count')
    .option('--json', 'print as JSON')
    .action((opts: { json?: boolean }) => {
      const b = getBackend();
      const info = { backend: b.name, threads: b.threads, nativeError: b.name === 'native' ? null : nativeLoadError() };
      if (opts.json) console.log(JSON.stringify(info));
      else {
        console.log(`backend: ${info.backend} (${info.threads} thread${info.threads === 1 ? '' : 's'})`);
        if (info.nativeError) console.log(`native backend unavailable: ${info.nativeError}`);
      }
    });
}
