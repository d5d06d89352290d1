#!/usr/bin/env node
// Builds the native backend (build/Release/switchyard_native.node) with node-gyp.
//
// Used as the package's `install` script and as `npm run build:native`-style manual rebuild:
//   node scripts/build-native.mjs            build (quiet unless it fails)
//   node scripts/build-native.mjs --verbose  show the compiler output
//   node scripts/build-native.mjs --strict   exit 1 if the build fails (CI)
//
// It never downloads anything: node-gyp is taken from npm's own installation (or
// $npm_config_node_gyp), and headers come from a local nodedir (/usr/include/node when present,
// or an npm-configured nodedir). If the build cannot run or fails, it prints one line and exits 0:
// the package then uses the TypeScript reference backend.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const args = new Set(process.argv.slice(2));
const verbose = args.has('--verbose') || process.env.SWITCHYARD_BUILD_VERBOSE === '1';
const strict = args.has('--strict');

function fail(reason) {
  console.log(`switchyard: native backend not built (${reason}); using the TypeScript reference backend`);
  process.exit(strict ? 1 : 0);
}

if (process.env.SWITCHYARD_SKIP_NATIVE === '1') fail('SWITCHYARD_SKIP_NATIVE=1');
if (!existsSync(path.join(root, 'binding.gyp'))) fail('binding.gyp missing');

function findNodeGyp() {
  const fromEnv = process.env.npm_config_node_gyp;
  if (fromEnv && existsSync(fromEnv)) return fromEnv;
  const candidates = [
    // npm bundled with this node: <prefix>/bin/node -> <prefix>/lib/node_modules/npm/...
    path.join(path.dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
    // Windows layout: <prefix>/node.exe -> <prefix>/node_modules/npm/...
    path.join(path.dirname(process.execPath), 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
  ];
  if (process.env.npm_execpath) {
    // .../npm/bin/npm-cli.js -> .../npm/node_modules/node-gyp
    candidates.push(path.join(path.dirname(process.env.npm_execpath), '..', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
  }
  for (const c of candidates) if (existsSync(c)) return c;
  try {
    return createRequire(import.meta.url).resolve('node-gyp/bin/node-gyp.js');
  } catch {
    return null;
  }
}

const gyp = findNodeGyp();
if (!gyp) fail('node-gyp not found (install npm, or set npm_config_node_gyp)');

const gypArgs = [gyp, 'rebuild', '--release'];
// Use local headers; never let node-gyp fetch them.
const configuredNodedir = process.env.npm_config_nodedir;
if (!configuredNodedir) {
  const candidates = ['/usr', path.join(path.dirname(process.execPath), '..')];
  const local = candidates.find((d) => existsSync(path.join(d, 'include', 'node', 'node_api.h')));
  if (local) gypArgs.push(`--nodedir=${path.resolve(local)}`);
  else fail('no local Node.js headers (include/node/node_api.h) and no nodedir configured; refusing to download them');
}
const jobs = process.env.JOBS ?? 'max';
gypArgs.push(`--jobs=${jobs}`);

const res = spawnSync(process.execPath, gypArgs, {
  cwd: root,
  stdio: verbose ? 'inherit' : 'pipe',
  encoding: 'utf8',
});

if (res.error) fail(`node-gyp could not start: ${res.error.message}`);
if (res.status !== 0) {
  const out = `${res.stdout ?? ''}\n${res.stderr ?? ''}`;
  const line =
    out.split('\n').find((l) => /error[: ]/i.test(l) && !/gyp ERR! (stack|System|command|cwd|node -v|node-gyp -v|not ok)/.test(l)) ??
    `node-gyp exited with status ${res.status}`;
  if (verbose === false && process.env.SWITCHYARD_BUILD_LOG === '1') process.stderr.write(out);
  fail(line.trim().slice(0, 300));
}
const built = path.join(root, 'build', 'Release', 'switchyard_native.node');
if (!existsSync(built)) fail('build finished but build/Release/switchyard_native.node is missing');
if (verbose) console.log(`switchyard: native backend built: ${path.relative(root, built)}`);
