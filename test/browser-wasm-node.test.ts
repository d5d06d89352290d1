/**
 * The wasm backend outside a browser (Node runs the same WebAssembly): loading rules and errors,
 * linear-memory growth in the middle of a call, and aliasing, on the one-thread build. The full op
 * suite runs in Chromium (browser-backends.test.ts). Skipped when clang is missing, unless
 * SWITCHYARD_REQUIRE_WASM=1.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ReferenceBackend } from '../src/backend/reference.js';
import { createWasmBackend, wasmThreadsAvailable, type WasmBackend } from '../src/backend/wasm.js';

const haveClang = spawnSync('clang', ['--version']).status === 0;
const required = process.env.SWITCHYARD_REQUIRE_WASM === '1';
if (!haveClang && !required) console.warn('browser-wasm-node.test: skipped: clang not found (apt-get install clang lld)');

describe('wasm backend in Node', () => {
  it.runIf(!haveClang && required)('clang is required (SWITCHYARD_REQUIRE_WASM=1)', () => {
    expect.fail('clang missing but SWITCHYARD_REQUIRE_WASM=1');
  });

  describe.runIf(haveClang)('built by scripts/build-wasm.mjs', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'switchyard-wasm-'));
    afterAll(() => rmSync(dir, { recursive: true, force: true }));
    const build = spawnSync(process.execPath, ['scripts/build-wasm.mjs', '--strict', '--out', dir], { encoding: 'utf8' });
    const bytes = (f: string): Buffer => readFileSync(path.join(dir, f));
    const ref = new ReferenceBackend();
    let be: WasmBackend;

    it('builds both modules', async () => {
      expect(build.status, build.stdout + build.stderr).toBe(0);
      be = await createWasmBackend({ wasm: bytes('switchyard.wasm'), threads: 1 });
      expect(be.name).toBe('wasm');
      expect(be.threads).toBe(1);
      expect(be.threaded).toBe(false);
    });

    it('refuses threads without cross-origin isolation, bad thread counts and the wrong build', async () => {
      expect(wasmThreadsAvailable()).toBe(false);
      await expect(createWasmBackend({ wasm: bytes('switchyard.wasm'), threads: 2 })).rejects.toThrow(/threads=2 needs a cross-origin-isolated page/);
      await expect(createWasmBackend({ wasm: bytes('switchyard.wasm'), threads: 0 })).rejects.toThrow(/threads must be a positive integer \(got 0\)/);
      await expect(createWasmBackend({ wasm: bytes('switchyard.wasm'), threads: 1.5 })).rejects.toThrow(RangeError);
      await expect(createWasmBackend({ wasm: bytes('switchyard-threads.wasm'), threads: 1 })).rejects.toThrow(/threaded build, expected the other one/);
    });

    it('a gemm whose operands outgrow the initial 16 MiB memory matches the reference (memory grows mid-call)', () => {
      const m = 700, k = 2500, n = 900; // A 7 MB, B 9 MB, C 2.5 MB, plus packing scratch
      const A = Float32Array.from({ length: m * k }, (_, i) => Math.sin(i * 0.001));
      const B = Float32Array.from({ length: k * n }, (_, i) => Math.cos(i * 0.0007));
      const C = new Float32Array(m * n), want = new Float32Array(m * n);
      const p = new Int32Array([0, 0, k, 1, 0, n, 2, 0, n, m, n, k, 0]);
      be.gemm([A, B, C], p);
      ref.gemm([A, B, want], p);
      let worst = 0;
      for (let i = 0; i < C.length; i++) worst = Math.max(worst, Math.abs(C[i] - want[i]) / (1e-5 * Math.sqrt(k) * 50));
      expect(worst).toBeLessThanOrEqual(1);
      // and a small call afterwards still sees fresh views of the grown memory
      const x = new Float32Array([1, -2, 3]), y = new Float32Array(3);
      be.unary('relu', x, y);
      expect(Array.from(y)).toEqual([1, 0, 3]);
    });

    it('aliasing: out === x in place, gemm with one buffer as both A and B, subarray views', () => {
      const x = new Float32Array([0.5, -1, 2, 9]);
      be.affine(x, 2, 1, x);
      expect(Array.from(x)).toEqual([2, -1, 5, 19]);
      const S = new Float32Array([1, 2, 3, 4]), C = new Float32Array(4);
      be.gemm([S, S, C], new Int32Array([0, 0, 2, 1, 0, 2, 2, 0, 2, 2, 2, 2, 0])); // S·S
      expect(Array.from(C)).toEqual([7, 10, 15, 22]);
      const big = new Float32Array([9, 9, 1, 4, 9, 16, 9]);
      const view = big.subarray(2, 6), out = new Float32Array(4);
      be.unary('sqrt', view, out);
      expect(Array.from(out)).toEqual([1, 2, 3, 4]);
      expect(Array.from(big)).toEqual([9, 9, 1, 4, 9, 16, 9]);
    });
  });
});
