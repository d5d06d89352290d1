/**
 * `switchyard playground`: build (first run, or when its sources changed) and serve the MoE
 * playground on 127.0.0.1 with cross-origin isolation headers; `--build <dir>` writes the static
 * site and exits.
 */
import { Command } from 'commander';
import { resolve } from 'node:path';
import { buildPlayground, defaultPlaygroundDir, playgroundBuildIsFresh } from './playground-build.js';
import { servePlayground } from './playground-server.js';
import { intOption } from './common.js';

/** The `playground` subcommand (options: --port, --build <dir>, --rebuild). */
export function playgroundCommand(): Command {
  return new Command('playground')
    .description('train and watch a small MoE live in your browser (serves the playground on 127.0.0.1 and prints its URL)')
    .option('--port <n>', 'TCP port (0 = any free port)', intOption('--port', 0), 5178)
    .option('--build <dir>', 'write the static site to <dir> and exit (host it anywhere; send the COOP/COEP headers for wasm threads)')
    .option('--rebuild', 'rebuild the site before serving even when it is up to date')
    .action(async (o: { port: number; build?: string; rebuild?: boolean }) => {
      if (o.port > 65535) throw new Error(`--port must be at most 65535, got ${o.port}`);
      if (o.build !== undefined) {
        const b = await buildPlayground(resolve(o.build));
        process.stdout.write(`switchyard playground: static site written to ${b.dir} (images: ${b.imageSource})\n`);
        return;
      }
      const dir = defaultPlaygroundDir();
      if (o.rebuild || !playgroundBuildIsFresh(dir)) {
        process.stdout.write('switchyard playground: building the site…\n');
        await buildPlayground(dir);
      }
      const server = await servePlayground(dir, { port: o.port });
      process.stdout.write(`switchyard playground: open ${server.url}\n`);
      const stop = (): void => {
        void server.close().then(() => process.exit(0));
      };
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
    });
}
