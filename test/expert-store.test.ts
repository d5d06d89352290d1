/**
 * ExpertStore: experts read on demand from the checkpoint give bit-identical logits to the fully
 * loaded model at every budget (100%, 50%, 25%, one expert per layer), with and without
 * prefetch; the LRU never holds more than its budget (checked after every change); counters;
 * budget parsing; a corrupted / truncated expert fails with an error naming the tensor.
 */
import { mkdtemp, open, readFile, rm, truncate } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KVCache, loadLanguageModel, noGrad, Tensor, type MoETransformerLM } from '../src/index.js';
import { parseByteBudget, resolveByteBudget } from '../src/serve/bytes.js';
import { ExpertLoadError, ExpertStore } from '../src/serve/expert-store.js';
import { writeRandomCheckpoint } from '../src/serve/fixture.js';
import { loadServingModel } from '../src/serve/model-loader.js';
import { readSafetensorsHeader } from '../src/io/safetensors.js';
import { loadHFModel } from '../src/io/hf-import.js';
import { loadHFCase, tempCheckpointDir, writeHFCheckpoint, type HFCaseName, type WriteOptions } from './helpers/hf-fixtures.js';

const MODEL = {
  dModel: 32,
  nLayers: 3,
  nHeads: 2,
  dFF: 48,
  maxSeqLen: 64,
  moe: { numExperts: 6, router: { type: 'topk' as const, k: 2 } },
  seed: 3,
};

let dir: string;
let run: string;
let reference: MoETransformerLM;
const prompt = 'Call me Ishmael. Some years ago';

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'switchyard-store-'));
  run = await writeRandomCheckpoint(join(dir, 'run'), { model: MODEL });
  reference = (await loadLanguageModel(run)).model;
  reference.eval();
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Prefill logits, then 8 greedy decode steps' logits, with a KV cache. */
function trace(model: MoETransformerLM, ids: number[]): Float32Array[] {
  return noGrad(() => {
    const out: Float32Array[] = [];
    const cache = new KVCache(model.config.nLayers);
    let next = ids;
    for (let step = 0; step < 9; step++) {
      const { logits } = model.forward(Tensor.indices(next, [1, next.length]), { cache });
      out.push(logits.f32.slice());
      const V = model.config.vocabSize;
      const last = logits.f32.subarray((next.length - 1) * V);
      let best = 0;
      for (let i = 1; i < V; i++) if (last[i] > last[best]) best = i;
      next = [best];
    }
    return out;
  });
}

describe('byte budgets', () => {
  it('parses sizes, fractions and percentages strictly', () => {
    expect(parseByteBudget('200MB')).toEqual({ kind: 'bytes', bytes: 200 * 2 ** 20 });
    expect(parseByteBudget('1.5GB')).toEqual({ kind: 'bytes', bytes: 1.5 * 2 ** 30 });
    expect(parseByteBudget('512 KiB')).toEqual({ kind: 'bytes', bytes: 512 * 1024 });
    expect(parseByteBudget(0.25)).toEqual({ kind: 'fraction', fraction: 0.25 });
    expect(parseByteBudget('0.5')).toEqual({ kind: 'fraction', fraction: 0.5 });
    expect(parseByteBudget('25%')).toEqual({ kind: 'fraction', fraction: 0.25 });
    expect(parseByteBudget('all')).toEqual({ kind: 'all' });
    expect(parseByteBudget('4096')).toEqual({ kind: 'bytes', bytes: 4096 });
    expect(resolveByteBudget(parseByteBudget('50%'), 1000)).toBe(500);
    for (const bad of ['', 'lots', '-1MB', '12 parsecs', '0', '150%', 'MB']) expect(() => parseByteBudget(bad), bad).toThrow(/expertMemory/);
    expect(() => parseByteBudget(-3)).toThrow(/expertMemory/);
  });
});

describe('ExpertStore', () => {
  const ids = () => Array.from(prompt, (c) => c.charCodeAt(0) - 31);

  for (const prefetch of [false, true]) {
    it(`matches the fully loaded model bit for bit at 100%, 50%, 25% and one expert per layer${prefetch ? ' (prefetch)' : ''}`, async () => {
      const expected = trace(reference, ids());
      const expertBytes = 3 * MODEL.dModel * MODEL.dFF * 4;
      const budgets: Array<[string, string | number]> = [['100%', 'all'], ['50%', 0.5], ['25%', '25%'], ['one per layer', MODEL.nLayers * expertBytes]];
      for (const [label, budget] of budgets) {
        let checks = 0;
        const served = await loadServingModel(run, {
          expertMemory: budget,
          prefetch,
          onStoreChange: (s) => {
            checks++;
            expect(s.residentBytes, label).toBeLessThanOrEqual(s.budgetBytes);
          },
        });
        try {
          const store = served.store!;
          expect(store.totalExpertBytes).toBe(MODEL.nLayers * MODEL.moe.numExperts * expertBytes);
          // The deferred model holds no expert weights at all.
          expect(served.model.moeLayers()[0].experts.items[0].w1.weight.size).toBe(0);
          const got = trace(served.model, ids());
          got.forEach((g, i) => expect(Buffer.from(g.buffer).equals(Buffer.from(expected[i].buffer)), `${label} step ${i}`).toBe(true));
          const s = store.stats();
          expect(s.peakResidentBytes).toBeLessThanOrEqual(s.budgetBytes);
          expect(checks).toBeGreaterThan(0);
          expect(s.misses).toBeGreaterThan(0);
          expect(s.bytesRead).toBeGreaterThanOrEqual(s.misses * expertBytes);
          expect(s.layers).toHaveLength(MODEL.nLayers);
          // Every assignment was counted: (prompt + 8 decode tokens) · k per layer.
          for (const l of s.layers) expect(l.load.reduce((a, b) => a + b, 0)).toBe((ids().length + 8) * 2);
          if (label === '100%') {
            expect(s.evictions).toBe(0);
            expect(s.misses).toBeLessThanOrEqual(MODEL.nLayers * MODEL.moe.numExperts);
            expect(s.hits).toBeGreaterThan(0);
          } else {
            expect(s.evictions).toBeGreaterThan(0);
          }
          if (label === 'one per layer') expect(s.splitForwards).toBeGreaterThan(0);
          else expect(s.parallelReads).toBeGreaterThan(0); // the prompt's forward misses several experts per layer at once
          if (prefetch) {
            expect(s.prefetchIssued + s.predictedCount).toBeGreaterThan(0);
            expect(s.predictedTotal).toBeGreaterThan(0);
            expect(s.predictedCorrect).toBeLessThanOrEqual(s.predictedTotal);
            expect(s.prefetchUseful + s.prefetchWasted).toBeLessThanOrEqual(s.prefetchIssued);
          }
        } finally {
          await served.close();
        }
      }
    });
  }

  it('counts hits and misses exactly for a known access pattern', async () => {
    const served = await loadServingModel(run, { expertMemory: 'all' });
    try {
      const store = served.store!;
      const first = trace(served.model, ids());
      const a = store.stats();
      expect(a.hits + a.misses).toBeGreaterThan(0);
      const usedExperts = a.misses; // all distinct experts touched, each missed once
      trace(served.model, ids());
      const b = store.stats();
      expect(b.misses).toBe(usedExperts); // everything was resident the second time
      expect(b.hits - a.hits).toBe(a.hits + a.misses);
      expect(b.bytesRead).toBe(a.bytesRead);
      expect(first.length).toBe(9);
      store.clear();
      expect(store.residentBytes).toBe(0);
      expect(store.stats().evictions).toBe(usedExperts);
    } finally {
      await served.close();
    }
  });

  it('refuses a budget smaller than one expert, naming the option', async () => {
    await expect(loadServingModel(run, { expertMemory: '1KB' })).rejects.toThrow(/expertMemory.*less than one expert/);
  });

  it('fails the read that meets a corrupted or truncated expert, naming the tensor; others still work', async () => {
    const copy = join(dir, 'copy');
    await writeRandomCheckpoint(copy, { model: MODEL });
    const served = await loadServingModel(copy, { expertMemory: 'all' });
    const store = served.store!;
    try {
      const stepDir = served.source.path;
      const file = join(stepDir, 'model.safetensors');
      const bytes = await readFile(file);
      const header = readSafetensorsHeader(bytes);
      const victim = 'layers.1.mlp.experts.4.w2.weight';
      const at = header.dataStart + header.tensors[victim].dataOffsets[0] + 8;
      const fh = await open(file, 'r+');
      await fh.write(Buffer.from([0xde, 0xad, 0xbe, 0xef]), 0, 4, at);
      await fh.close();
      // Force layer 1 to need expert 4 by running its layer with a plan that routes a row there.
      const layer = served.model.moeLayers()[1];
      const xs = Tensor.zeros([1, MODEL.dModel]);
      const offsets = Int32Array.from([0, 0, 0, 0, 0, 1, 1]);
      let err: unknown;
      try {
        store.runExperts(layer, xs, offsets, xs);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(ExpertLoadError);
      expect((err as ExpertLoadError).tensor).toBe(victim);
      expect((err as Error).message).toMatch(/corrupted/);
      // Another expert of the same layer still loads, and nothing stays pinned or over budget.
      const ok = store.runExperts(layer, xs, Int32Array.from([0, 1, 1, 1, 1, 1, 1]), xs);
      expect(ok.shape).toEqual([1, MODEL.dModel]);
      expect(store.stats().loadErrors).toBe(1);
      // Truncation: the last tensor in the file loses its tail.
      const lastName = Object.entries(header.tensors).sort(([, a], [, b]) => b.dataOffsets[1] - a.dataOffsets[1])[0][0];
      await truncate(file, bytes.length - 16);
      const m = /^layers\.(\d+)\.mlp\.experts\.(\d+)\./.exec(lastName);
      if (m) {
        const l = served.model.layers.items[Number(m[1])].mlp as typeof layer;
        const off = new Int32Array(MODEL.moe.numExperts + 1);
        for (let e = Number(m[2]) + 1; e <= MODEL.moe.numExperts; e++) off[e] = 1;
        expect(() => store.runExperts(l, xs, off, xs)).toThrow(new RegExp(`${lastName.replace(/\./g, '\\.')}.*truncated`));
      }
    } finally {
      await served.close();
    }
  });

  it('refuses a model file that does not match trainer.json', async () => {
    const bad = join(dir, 'bad');
    await writeRandomCheckpoint(bad, { model: MODEL });
    const stepDir = join(bad, 'checkpoints', 'step-0');
    const file = join(stepDir, 'model.safetensors');
    const fh = await open(file, 'r+');
    const { size } = await fh.stat();
    await fh.write(Buffer.from([1, 2, 3]), 0, 3, size - 10);
    await fh.close();
    await expect(loadServingModel(bad, { expertMemory: 0.5 })).rejects.toThrow(/model\.safetensors.*checksum mismatch/);
  });

  it('serves a fully resident model the same way (no store)', async () => {
    const served = await loadServingModel(run, {});
    try {
      expect(served.store).toBeNull();
      const expected = trace(reference, ids());
      trace(served.model, ids()).forEach((g, i) => expect(Buffer.from(g.buffer).equals(Buffer.from(expected[i].buffer))).toBe(true));
    } finally {
      await served.close();
    }
  });

  it('opens directly on a model and attaches/detaches', async () => {
    const served = await loadServingModel(run, {});
    const stepDir = served.source.path;
    const store = await ExpertStore.open(served.model, { files: [join(stepDir, 'model.safetensors')], budget: '30%' });
    try {
      store.attach();
      const a = trace(served.model, ids());
      store.detach();
      const b = trace(served.model, ids());
      a.forEach((g, i) => expect(Buffer.from(g.buffer).equals(Buffer.from(b[i].buffer))).toBe(true));
      expect(store.stats().budgetBytes).toBe(Math.floor(0.3 * store.totalExpertBytes));
    } finally {
      await store.close();
      await served.close();
    }
  });
});

describe('ExpertStore on Hugging Face folders', () => {
  const cases: Array<[HFCaseName, WriteOptions]> = [
    ['mixtral', { dtype: 'BF16', shards: 2, tokenizer: true }],
    ['qwen2_moe', { dtype: 'F16', fusedExperts: true, tokenizer: true }],
    ['deepseek_v3', { dtype: 'F32', tokenizer: true }],
    ['olmoe', { dtype: 'BF16', fusedExperts: true, shards: 3, tokenizer: true }],
  ];
  for (const [name, opts] of cases) {
    it(`${name} (${JSON.stringify(opts)}): experts served from the shards match the fully loaded import bit for bit`, async () => {
      const hfDir = writeHFCheckpoint(tempCheckpointDir(`serve-${name}`), loadHFCase(name), opts);
      try {
        const full = (await loadHFModel(hfDir)).model;
        const V = full.config.vocabSize;
        const ids = Array.from({ length: 12 }, (_, i) => (i * 7 + 3) % Math.min(V, 40));
        const expected = trace(full, ids);
        for (const [budget, prefetch] of [['25%', true], ['50%', false], ['all', false]] as const) {
          const served = await loadServingModel(hfDir, { expertMemory: budget, prefetch });
          try {
            expect(served.source.kind).toBe('hf');
            expect(served.store).not.toBeNull();
            trace(served.model, ids).forEach((g, i) => expect(Buffer.from(g.buffer).equals(Buffer.from(expected[i].buffer)), `${budget} step ${i}`).toBe(true));
            const s = served.store!.stats();
            expect(s.peakResidentBytes).toBeLessThanOrEqual(s.budgetBytes);
            expect(s.misses).toBeGreaterThan(0);
          } finally {
            await served.close();
          }
        }
      } finally {
        await rm(hfDir, { recursive: true, force: true });
      }
    });
  }
});
