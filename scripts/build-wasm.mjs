#!/usr/bin/env node
// Builds the WebAssembly backend from the same C kernels as the native addon:
//   dist/backend/switchyard.wasm          one thread, ordinary memory (any page)
//   dist/backend/switchyard-threads.wasm  atomics + shared memory (cross-origin-isolated pages)
// with clang --target=wasm32 (SIMD128, bulk memory) and lld's wasm-ld; no libc: native/wasm/ holds
// the freestanding shims (allocator, mem*, qsort) and the entry points.
//
// Run by `npm run build` / `prepare` after tsc. Like build-native.mjs it never downloads anything,
// and if clang or wasm-ld is missing it prints one line and exits 0 (the wasm backend is then
// unavailable) unless --strict (CI) is given.
//   node scripts/build-wasm.mjs [--verbose] [--strict] [--out DIR]
import { spawnSync } from 'node:child_process';
import { mkdirSync, renameSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const argv = process.argv.slice(2);
const verbose = argv.includes('--verbose') || process.env.SWITCHYARD_BUILD_VERBOSE === '1';
const strict = argv.includes('--strict') || process.env.SWITCHYARD_REQUIRE_WASM === '1';
const outIdx = argv.indexOf('--out');
const outDir = outIdx >= 0 ? path.resolve(argv[outIdx + 1]) : path.join(root, 'dist', 'backend');

function fail(reason) {
  console.log(`switchyard: wasm backend not built (${reason})`);
  process.exit(strict ? 1 : 0);
}

if (process.env.SWITCHYARD_SKIP_WASM === '1') fail('SWITCHYARD_SKIP_WASM=1');

const clang = process.env.CLANG ?? 'clang';
const probe = spawnSync(clang, ['--version'], { encoding: 'utf8' });
if (probe.status !== 0) fail(`${clang} not found (apt-get install clang lld)`);

const sources = [
  'native/wasm/entry.c',
  'native/wasm/pool_wasm.c',
  'native/wasm/rt.c',
  'native/gemm.c',
  'native/schedule.c',
  'native/ops.c',
  'native/ew_scalar.c',
  'native/wasm/gemm_simd128.c',
].map((s) => path.join(root, s));

const common = [
  '--target=wasm32',
  '-O3',
  '-msimd128',
  '-mbulk-memory',
  '-nostdlib',
  '-ffreestanding',
  '-fno-math-errno',
  '-ftls-model=local-exec',
  '-isystem',
  path.join(root, 'native', 'wasm', 'include'),
  '-Wall',
  '-Wno-unknown-pragmas',
  '-Wl,--no-entry',
  '-Wl,--import-memory',
  '-Wl,--initial-memory=16777216', // 256 pages: src/backend/wasm.ts creates the memory with these limits
  '-Wl,--max-memory=2147483648',
  '-Wl,-z,stack-size=1048576',
  '-Wl,--export=__heap_base',
];
const threaded = [
  '-matomics',
  '-mmutable-globals',
  '-Wl,--shared-memory',
  '-Wl,--export=__stack_pointer',
  '-Wl,--export=__wasm_init_tls',
  '-Wl,--export=__tls_size',
  '-Wl,--export=__tls_align',
];

mkdirSync(outDir, { recursive: true });
for (const [file, flags] of [
  ['switchyard.wasm', []],
  ['switchyard-threads.wasm', threaded],
]) {
  const dest = path.join(outDir, file);
  const tmp = `${dest}.${process.pid}.tmp`;
  const args = [...common, ...flags, '-o', tmp, ...sources];
  if (verbose) console.log([clang, ...args].join(' '));
  const r = spawnSync(clang, args, { encoding: 'utf8' });
  if (verbose || r.status !== 0) process.stderr.write(r.stderr ?? '');
  if (r.status !== 0) fail(`${file}: clang exited with ${r.status ?? r.signal}${r.error ? ` (${r.error.message})` : ''}`);
  renameSync(tmp, dest); // atomic: a reader never sees half a module
}
if (verbose) console.log(`switchyard: wasm backend built in ${path.relative(root, outDir) || outDir}`);
