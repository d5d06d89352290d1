/**
 * Checkpoints: resume to the bit (in process, and after a child process is SIGKILLed mid-save),
 * crash safety at every phase of a save, refusal of truncated/corrupted/mismatched checkpoints
 * with a CheckpointError naming the file while the previous good one still loads.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, truncate, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { MoETransformerLM, type TransformerLMConfig } from '../src/index.js';
import {
  applyCheckpoint,
  CheckpointError,
  loadCheckpoint,
  resumeTrainer,
  sequentialBatches,
  TokenWindowSampler,
  Trainer,
  type SavePhase,
  type TrainerOptions,
} from '../src/train/index.js';

const TEXT = 'call me ishmael. some years ago, never mind how long precisely, having little money in my purse. '.repeat(4);
const CHARS = [...new Set(TEXT)].sort();
const IDS = [...TEXT].map((c) => CHARS.indexOf(c));

/** Noisy (Gaussian) router with bias balancing, a capacity limit and every loss that uses the noise; no dropout anywhere. */
const CFG: TransformerLMConfig = {
  vocabSize: CHARS.length, dModel: 16, nLayers: 2, nHeads: 2, dFF: 16, maxSeqLen: 16, seed: 11,
  moe: {
    numExperts: 4,
    router: { type: 'topk', k: 2, noise: { type: 'gaussian' }, capacityFactor: 1.5, biasBalancing: { rate: 0.001 } },
    losses: { balance: 0.01, zLoss: 0.001, load: 0.01 },
  },
};
const OPTS: TrainerOptions = { lr: 5e-3, weightDecay: 0.1, warmupSteps: 2, totalSteps: 20, evalEvery: 2, evalBatches: 2, seed: 42 };
const DATA = { batchSize: 2, seqLen: 12, seed: 7 };

function build(over: Partial<TrainerOptions> = {}, cfg: TransformerLMConfig = CFG): Trainer<MoETransformerLM> {
  const lm = new MoETransformerLM(cfg);
  return new Trainer(lm, new TokenWindowSampler(IDS, DATA), { ...OPTS, evalData: sequentialBatches(IDS, { batchSize: 2, seqLen: 12, maxBatches: 2 }), ...over });
}

const dirs: string[] = [];
async function tempDir(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'switchyard-ckpt-'));
  dirs.push(d);
  return d;
}
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

function bits(t: { data: Float32Array | Int32Array }): Buffer {
  return Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength);
}

/** Model state (parameters and buffers) and optimizer moments are bit-identical. */
function expectSameState(a: Trainer<MoETransformerLM>, b: Trainer<MoETransformerLM>): void {
  const sa = a.model.stateDict(), sb = b.model.stateDict();
  expect(Object.keys(sb)).toEqual(Object.keys(sa));
  for (const k of Object.keys(sa)) expect(bits(sb[k]).equals(bits(sa[k])), k).toBe(true);
  const oa = a.optimizer.stateDict(), ob = b.optimizer.stateDict();
  expect(Object.keys(ob.state)).toEqual(Object.keys(oa.state));
  for (const [i, s] of Object.entries(oa.state)) {
    for (const [k, v] of Object.entries(s)) {
      const w = (ob.state as Record<string, Record<string, unknown>>)[i][k];
      if (v instanceof Float32Array) expect(Buffer.from(v.buffer).equals(Buffer.from((w as Float32Array).buffer)), `state.${i}.${k}`).toBe(true);
      else expect(w).toBe(v);
    }
  }
  expect(ob.paramGroups).toEqual(oa.paramGroups);
  a.model.moeLayers().forEach((l, i) => expect(b.model.moeLayers()[i].noiseGenerator.getState()).toEqual(l.noiseGenerator.getState()));
}

/** The deterministic part of the log: everything but timings. */
function detLog(t: Trainer): unknown {
  return {
    steps: t.log.steps.map(({ tokensPerSecond: _a, elapsedSeconds: _b, ...rest }) => rest),
    evals: t.log.evals.map(({ elapsedSeconds: _c, ...rest }) => rest),
  };
}

async function expectRefused(p: Promise<unknown>, file: string, message: RegExp): Promise<CheckpointError> {
  const err = await p.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(CheckpointError);
  const ce = err as CheckpointError;
  expect(ce.file.endsWith(file), `${ce.file} should name ${file}`).toBe(true);
  expect(ce.message).toContain(file);
  expect(ce.message).toMatch(message);
  return ce;
}

describe('checkpoints: resume to the bit', () => {
  it('2N steps == N steps + save + rebuild everything from disk + N steps (losses, evals, parameters, moments, RNGs)', async () => {
    const N = 4;
    const full = build();
    for (let i = 0; i < 2 * N; i++) {
      full.step();
      if (full.completedSteps % 2 === 0) full.evaluate();
    }

    const dir = await tempDir();
    let first: Trainer<MoETransformerLM> | null = build();
    await first.run(N);
    await first.save(dir);
    const firstLosses = first.log.steps.map((s) => s.loss);
    first = null; // drop every object of the first half

    const resumed = build();
    const ck = await resumeTrainer(resumed, dir);
    expect(ck.step).toBe(N);
    expect(resumed.completedSteps).toBe(N);
    expect(resumed.log.steps.map((s) => s.loss)).toEqual(firstLosses);
    await resumed.run(N);

    expect(resumed.log.steps.map((s) => s.loss)).toEqual(full.log.steps.map((s) => s.loss));
    expect(detLog(resumed)).toEqual(detLog(full));
    expectSameState(resumed, full);
    // The bias-balancing buffers moved, so the check above covered them.
    expect(full.model.moeLayers()[0].gate.bias!.f32.some((v) => v !== 0)).toBe(true);
  });

  it('save / kill -9 mid-save / resume in a fresh process state gives the identical next-step losses', async () => {
    const N = 3;
    const dir = await tempDir();
    const runDir = join(dir, 'run');
    const root = resolve('.');
    const script = join(dir, 'child.ts');
    // The child trains N steps, checkpoints, trains one more step and SIGKILLs itself in the
    // middle of the next save (after model.safetensors reached its temp directory).
    await writeFile(
      script,
      `import { writeFileSync } from 'node:fs';
import { MoETransformerLM } from ${JSON.stringify(join(root, 'src/index.js'))};
import { sequentialBatches, TokenWindowSampler, Trainer } from ${JSON.stringify(join(root, 'src/train/index.js'))};
const a = JSON.parse(process.env.CKPT_CHILD_ARGS);
const ids = a.ids;
const t = new Trainer(new MoETransformerLM(a.cfg), new TokenWindowSampler(ids, a.data), { ...a.opts, evalData: sequentialBatches(ids, { batchSize: 2, seqLen: 12, maxBatches: 2 }) });
await t.run(a.N);
await t.save(a.runDir);
t.step();
writeFileSync(a.lossFile, JSON.stringify(t.log.steps.map((s) => s.loss)));
await t.save(a.runDir, { afterPhase: (phase) => { if (phase === 'model') process.kill(process.pid, 'SIGKILL'); } });
writeFileSync(a.lossFile, 'not killed');
`,
    );
    const lossFile = join(dir, 'losses.json');
    const args = { cfg: CFG, opts: OPTS, data: DATA, ids: IDS, N, runDir, lossFile };
    const { code, signal, stderr } = await new Promise<{ code: number | null; signal: string | null; stderr: string }>((res, rej) => {
      const child = spawn(process.execPath, [join(root, 'node_modules/vite-node/vite-node.mjs'), script], {
        cwd: root,
        env: { ...process.env, CKPT_CHILD_ARGS: JSON.stringify(args) },
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      let err = '';
      child.stderr.on('data', (d) => (err += d));
      child.on('error', rej);
      child.on('exit', (c, s) => res({ code: c, signal: s, stderr: err }));
    });
    expect(signal, stderr).toBe('SIGKILL');
    expect(code).toBeNull();
    const childLosses = JSON.parse(await readFile(lossFile, 'utf8')) as number[];
    expect(childLosses).toHaveLength(N + 1);

    // The kill left a torn temp directory; latest still names the complete step-N checkpoint.
    const entries = await readdir(runDir);
    expect(entries.filter((e) => e.startsWith(`.tmp-${N + 1}-`))).toHaveLength(1);
    expect(entries.filter((e) => /^step-/.test(e))).toEqual([`step-${N}`]);
    expect((await readFile(join(runDir, 'latest'), 'utf8')).trim()).toBe(`step-${N}`);

    const full = build();
    await full.run(2 * N);
    const resumed = build();
    await resumeTrainer(resumed, runDir);
    expect(resumed.completedSteps).toBe(N);
    const next = resumed.step();
    // The step the child took before dying, recomputed after resume: bit-identical.
    expect(next.loss).toBe(childLosses[N]);
    expect(next.loss).toBe(full.log.steps[N].loss);
    await resumed.run(N - 1);
    expect(resumed.log.steps.map((s) => s.loss)).toEqual(full.log.steps.map((s) => s.loss));
    expectSameState(resumed, full);

    // The next save from a live process cleans up the dead process's temp directory.
    await resumed.save(runDir);
    expect((await readdir(runDir)).filter((e) => e.startsWith('.'))).toEqual([]);
  }, 120_000);
});

describe('checkpoints: crash safety', () => {
  const phases: SavePhase[] = ['model', 'optimizer', 'trainer', 'synced', 'renamed', 'latest'];
  for (const phase of phases) {
    it(`a crash after phase '${phase}' leaves latest naming a complete checkpoint`, async () => {
      const dir = await tempDir();
      const t = build({ evalEvery: 0 });
      await t.run(2);
      await t.save(dir);
      const good = t.model.stateDict()['layers.0.mlp.gate.weight'].f32.slice();
      await t.run(2);
      const crash = new Error('simulated crash');
      await expect(t.save(dir, { afterPhase: (p) => { if (p === phase) throw crash; } })).rejects.toBe(crash);
      const latest = (await readFile(join(dir, 'latest'), 'utf8')).trim();
      const published = phase === 'latest';
      expect(latest).toBe(published ? 'step-4' : 'step-2');
      const ck = await loadCheckpoint(dir);
      expect(ck.step).toBe(published ? 4 : 2);
      if (!published) expect(Array.from(ck.model['layers.0.mlp.gate.weight'].f32)).toEqual(Array.from(good));
      // A checkpoint renamed into place is complete even before latest points at it.
      if (phase === 'renamed') expect((await loadCheckpoint(join(dir, 'step-4'))).step).toBe(4);
      // And a fresh trainer resumes from whatever latest names.
      const fresh = build({ evalEvery: 0 });
      await resumeTrainer(fresh, dir);
      expect(fresh.completedSteps).toBe(published ? 4 : 2);
    });
  }

  it('keeps the last N checkpoints, deleting older ones only after the new one is complete', async () => {
    const dir = await tempDir();
    const saved: string[] = [];
    const t = build({ evalEvery: 0, checkpointEvery: 1, checkpointDir: dir, keepCheckpoints: 2, onCheckpoint: (p) => saved.push(p) });
    await t.run(3);
    expect(saved.map((p) => p.split('/').pop())).toEqual(['step-1', 'step-2', 'step-3']);
    expect((await readdir(dir)).sort()).toEqual(['latest', 'step-2', 'step-3']);
    // A crash during the next save must not have deleted anything yet.
    await t.run(1); // step-4 (step-2 pruned)
    t.step();
    await expect(t.save(dir, { afterPhase: (p) => { if (p === 'renamed') throw new Error('crash'); } })).rejects.toThrow('crash');
    expect((await readdir(dir)).filter((e) => e.startsWith('step-')).sort()).toEqual(['step-3', 'step-4', 'step-5']);
    // Saving the same step again replaces it.
    await t.save(dir);
    await t.save(dir);
    expect((await readdir(dir)).sort()).toEqual(['latest', 'step-4', 'step-5']);
    expect((await loadCheckpoint(dir)).step).toBe(5);
  });

  it('trainer.json records format, version, checksums, step, RNG states, data cursor, config and log', async () => {
    const dir = await tempDir();
    const t = build();
    await t.run(2);
    const stepDir = await t.save(dir);
    const doc = JSON.parse(await readFile(join(stepDir, 'trainer.json'), 'utf8'));
    expect(doc.format).toBe('switchyard-checkpoint');
    expect(doc.version).toBe(1);
    expect(doc.sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(doc.step).toBe(2);
    expect(Object.keys(doc.files).sort()).toEqual(['model.safetensors', 'optimizer.safetensors']);
    expect(doc.files['model.safetensors'].sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(doc.trainer.rng.global.s).toHaveLength(4);
    expect(doc.trainer.rng.moe).toHaveLength(2);
    expect(doc.trainer.data).toEqual(t.data.state());
    expect(doc.trainer.config.model).toEqual(t.model.config);
    expect(doc.trainer.log.steps).toHaveLength(2);
    expect(doc.trainer.log.evals).toHaveLength(1);
    expect(doc.scheduler.step).toBe(2);
    // Moments live in optimizer.safetensors, referenced by name.
    expect(doc.optimizer.state['0'].expAvg).toEqual({ tensor: 'state.0.expAvg', length: t.model.parameters()[0].size });
    expect(doc.optimizer.state['0'].step).toBe(2);
  });
});

describe('checkpoints: corruption is refused, the previous good one still loads', () => {
  /** A run dir with good checkpoints at steps 2 and 4 (latest = step-4). */
  async function twoCheckpoints(): Promise<{ dir: string; t: Trainer<MoETransformerLM> }> {
    const dir = await tempDir();
    const t = build({ evalEvery: 0, checkpointEvery: 2, checkpointDir: dir });
    await t.run(4);
    return { dir, t };
  }

  async function flipByte(path: string, at: (size: number) => number, mask = 0x04): Promise<void> {
    const b = await readFile(path);
    const i = at(b.length);
    b[i] ^= mask;
    await writeFile(path, b);
  }

  async function expectPreviousLoads(dir: string, refusedFile: string): Promise<void> {
    const prev = await loadCheckpoint(join(dir, 'step-2'));
    expect(prev.step).toBe(2);
    const fb = await loadCheckpoint(dir, { fallback: true });
    expect(fb.step).toBe(2);
    expect(fb.skipped).toHaveLength(1);
    expect(fb.skipped[0].error.file.endsWith(refusedFile)).toBe(true);
    const fresh = build({ evalEvery: 0 });
    await resumeTrainer(fresh, join(dir, 'step-2'));
    expect(fresh.completedSteps).toBe(2);
  }

  it('truncated model.safetensors', async () => {
    const { dir } = await twoCheckpoints();
    const path = join(dir, 'step-4', 'model.safetensors');
    const size = (await readFile(path)).length;
    await truncate(path, Math.floor(size / 2));
    await expectRefused(loadCheckpoint(dir), 'step-4/model.safetensors', /truncated/);
    // A fresh trainer refuses it too, and is left untouched.
    const fresh = build({ evalEvery: 0 });
    const before = fresh.model.stateDict()['norm.weight'].f32.slice();
    await expectRefused(resumeTrainer(fresh, dir), 'model.safetensors', /truncated/);
    expect(fresh.completedSteps).toBe(0);
    expect(Array.from(fresh.model.stateDict()['norm.weight'].f32)).toEqual(Array.from(before));
    await expectPreviousLoads(dir, 'model.safetensors');
  });

  it('a flipped byte in model.safetensors (same size)', async () => {
    const { dir } = await twoCheckpoints();
    await flipByte(join(dir, 'step-4', 'model.safetensors'), (n) => n - 3);
    await expectRefused(loadCheckpoint(dir), 'step-4/model.safetensors', /checksum mismatch.*corrupted/);
    await expectPreviousLoads(dir, 'model.safetensors');
  });

  it('a flipped byte in trainer.json (still valid JSON)', async () => {
    const { dir } = await twoCheckpoints();
    const path = join(dir, 'step-4', 'trainer.json');
    const text = await readFile(path, 'utf8');
    // Change one digit of a loss (x ^ 1 keeps a digit a digit): still valid JSON, only the checksum can tell.
    const at = text.indexOf('"loss":') + 9;
    expect(text[at]).toMatch(/[0-9]/);
    await flipByte(path, () => at, 0x01);
    const flipped = await readFile(path, 'utf8');
    expect(flipped).not.toBe(text);
    expect(() => JSON.parse(flipped)).not.toThrow();
    await expectRefused(loadCheckpoint(dir), 'step-4/trainer.json', /checksum mismatch.*corrupted/);
    await expectPreviousLoads(dir, 'trainer.json');
  });

  it('a flipped byte in trainer.json\'s own checksum, or a trainer.json that is not JSON', async () => {
    const { dir } = await twoCheckpoints();
    const path = join(dir, 'step-4', 'trainer.json');
    const text = await readFile(path, 'utf8');
    await flipByte(path, () => text.indexOf('"sha256": "') + 14);
    await expectRefused(loadCheckpoint(dir), 'trainer.json', /checksum mismatch/);
    await writeFile(path, text.slice(0, 100));
    await expectRefused(loadCheckpoint(dir), 'trainer.json', /checksum|sha256/);
    await expectPreviousLoads(dir, 'trainer.json');
  });

  it('a flipped byte in optimizer.safetensors', async () => {
    const { dir } = await twoCheckpoints();
    await flipByte(join(dir, 'step-4', 'optimizer.safetensors'), (n) => Math.floor(n * 0.75));
    await expectRefused(loadCheckpoint(dir), 'step-4/optimizer.safetensors', /checksum mismatch/);
    await expectPreviousLoads(dir, 'optimizer.safetensors');
  });

  it('a missing file, a bad latest pointer, an empty directory', async () => {
    const { dir } = await twoCheckpoints();
    await unlink(join(dir, 'step-4', 'optimizer.safetensors'));
    await expectRefused(loadCheckpoint(dir), 'step-4/optimizer.safetensors', /missing/);
    await expectPreviousLoads(dir, 'optimizer.safetensors');
    await writeFile(join(dir, 'latest'), '../../etc\n');
    await expectRefused(loadCheckpoint(dir), 'latest', /step-<n>/);
    const empty = await tempDir();
    await expectRefused(loadCheckpoint(empty), empty.split('/').pop()!, /no checkpoint/);
    await expectRefused(loadCheckpoint(join(empty, 'nope')), 'nope', /does not exist/);
  });

  it('a checkpoint of a different model is refused by name, and nothing is changed', async () => {
    const { dir } = await twoCheckpoints();
    const other = build({ evalEvery: 0 }, { ...CFG, dModel: 32, nHeads: 4 });
    await expectRefused(resumeTrainer(other, dir), 'trainer.json', /model config differs/);
    // Bypassing the config check, the shapes are checked file by file and everything rolls back.
    const ck = await loadCheckpoint(dir);
    const before = other.model.stateDict()['norm.weight'].f32.slice();
    const optBefore = JSON.stringify(other.optimizer.stateDict().paramGroups);
    let err: unknown = null;
    try {
      applyCheckpoint(ck, { model: other.model, optimizer: other.optimizer, scheduler: other.scheduler });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(CheckpointError);
    expect((err as CheckpointError).file.endsWith('step-4/model.safetensors')).toBe(true);
    expect((err as Error).message).toMatch(/model\.safetensors.*shape mismatch/);
    expect(Array.from(other.model.stateDict()['norm.weight'].f32)).toEqual(Array.from(before));
    expect(JSON.stringify(other.optimizer.stateDict().paramGroups)).toBe(optBefore);
    expect(existsSync(join(dir, 'step-4'))).toBe(true);
  });
});
