/**
 * Node side of the browser tests: build the wasm modules, bundle the page and workers with esbuild,
 * and serve them from 127.0.0.1 — under /isolated/ with the COOP/COEP headers that make a page
 * cross-origin isolated (SharedArrayBuffer, wasm threads), under /plain/ without them.
 */
import { spawnSync } from 'node:child_process';
import { createReadStream, existsSync } from 'node:fs';
import { mkdir, mkdtemp, stat, symlink, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

const MIME: Record<string, string> = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript', '.wasm': 'application/wasm', '.map': 'application/json' };

/** <dir>/node_modules/switchyard → the package root, so 'switchyard' resolves as a bare package name. */
async function linkPackage(dir: string): Promise<string> {
  const nm = path.join(dir, 'node_modules');
  await mkdir(nm, { recursive: true });
  await symlink(root, path.join(nm, 'switchyard'), 'dir');
  return nm;
}

/** A directory with page.js, the workers, both .wasm builds and index.html. */
export async function buildBrowserBundle(): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'switchyard-browser-'));
  const wasm = spawnSync(process.execPath, [path.join(root, 'scripts', 'build-wasm.mjs'), '--strict', '--out', dir], { encoding: 'utf8' });
  if (wasm.status !== 0) throw new Error(`build-wasm failed: ${wasm.stdout}${wasm.stderr}`);
  const { build } = await import('esbuild');
  await build({
    entryPoints: {
      page: path.join(root, 'test/browser/page.ts'),
      'suite-worker': path.join(root, 'test/browser/suite-worker.ts'),
      'wasm-worker': path.join(root, 'src/backend/wasm-worker.ts'),
      'webgpu-worker': path.join(root, 'src/backend/webgpu-worker.ts'),
    },
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    outdir: dir,
    logLevel: 'error',
  });
  if (!existsSync(path.join(root, 'dist', 'browser.js'))) throw new Error('dist/browser.js is missing: run `npm run build` first (npm test does)');
  // The entry check imports the package by name, as an app would: esbuild resolves it through
  // package.json "exports" (browser condition) to dist/browser.js, so dist must be built.
  await build({
    entryPoints: { 'entry-page': path.join(root, 'test/browser/entry-page.ts'), 'entry-worker': path.join(root, 'test/browser/entry-worker.ts') },
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    outdir: dir,
    logLevel: 'error',
    nodePaths: [await linkPackage(dir)],
  });
  await writeFile(path.join(dir, 'entry.html'), '<!doctype html><meta charset="utf-8"><title>switchyard entry</title><link rel="icon" href="data:,"><script type="module" src="entry-page.js"></script>\n');
  await writeFile(path.join(dir, 'index.html'), '<!doctype html><meta charset="utf-8"><title>switchyard browser backends</title><link rel="icon" href="data:,"><script type="module" src="page.js"></script>\n');
  return dir;
}

/** Serve dir on 127.0.0.1 (random port): /isolated/<file> with COOP/COEP, /plain/<file> without. */
export async function serve(dir: string): Promise<{ url: string; close(): Promise<void> }> {
  const server: Server = createServer(async (req, res) => {
    const u = new URL(req.url ?? '/', 'http://127.0.0.1');
    const m = /^\/(isolated|plain)\/([\w.-]*)$/.exec(u.pathname);
    const file = m ? path.join(dir, m[2] || 'index.html') : null;
    const st = file ? await stat(file).catch(() => null) : null;
    if (!m || !file || !st?.isFile()) {
      res.writeHead(404).end('not found');
      return;
    }
    const headers: Record<string, string> = { 'content-type': MIME[path.extname(file)] ?? 'application/octet-stream', 'cache-control': 'no-store' };
    if (m[1] === 'isolated') {
      headers['cross-origin-opener-policy'] = 'same-origin';
      headers['cross-origin-embedder-policy'] = 'require-corp';
    }
    res.writeHead(200, headers);
    createReadStream(file).pipe(res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : 0;
  return {
    url: `http://127.0.0.1:${port}`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
