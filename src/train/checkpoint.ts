/**
 * Crash-safe, verifiable training checkpoints.
 *
 * Layout of a run directory:
 *   dir/step-<n>/model.safetensors      model state dict (parameters and buffers)
 *   dir/step-<n>/optimizer.safetensors  optimizer moments, keyed `state.<i>.<name>`
 *   dir/step-<n>/trainer.json           format + version, its own sha256, the sha256 and size of
 *                                       each binary file, step, optimizer hyperparameters and
 *                                       counters, scheduler, every RNG state, data cursor, full
 *                                       config and the run log so far
 *   dir/latest                          the name of the newest complete step directory
 *
 * Saving writes everything into a fresh `dir/.tmp-<step>-<pid>`, fsyncs each file and the
 * directory, renames it to `step-<n>`, fsyncs `dir`, then replaces `latest` atomically (temp,
 * fsync, rename). A crash at any moment leaves `latest` naming a complete checkpoint. Older
 * checkpoints beyond `keep` are deleted only after that.
 *
 * Loading checks everything before touching a model: missing files, trainer.json's checksum and
 * structure, each binary file's size and sha256, safetensors validity, and (on restore) names and
 * shapes. Every problem is a CheckpointError naming the file and what is wrong.
 */
import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { pathExists } from '../io/path-exists.js';
import { join, resolve } from 'node:path';
import { describe as describeValue, SwitchyardError } from '../errors.js';
import { readSafetensors, writeSafetensors } from '../io/safetensors.js';
import { replaceFileAtomic, syncDirectory, writeFileDurable } from '../io/atomic.js';
import type { OptimizerStateDict, ParamState } from '../optim/optimizer.js';
import type { LRSchedulerState } from '../optim/schedule.js';
import type { GeneratorState } from '../random.js';
import { Tensor } from '../tensor/tensor.js';
import type { RunLog } from './metrics.js';
import type { TrainableModel, Trainer } from './trainer.js';

export const CHECKPOINT_FORMAT = 'switchyard-checkpoint';
export const CHECKPOINT_VERSION = 1;
export const MODEL_FILE = 'model.safetensors';
export const OPTIMIZER_FILE = 'optimizer.safetensors';
export const TRAINER_FILE = 'trainer.json';
export const LATEST_FILE = 'latest';

/** A checkpoint is missing, torn, corrupted or does not match the model: `file` names the file at fault. */
export class CheckpointError extends SwitchyardError {
  /** Path of the file (or directory) at fault. */
  readonly file: string;
  constructor(file: string, message: string, cause?: unknown) {
    super('checkpoint', file, message);
    this.file = file;
    if (cause !== undefined) (this as { cause?: unknown }).cause = cause;
  }
}

/** Every RNG whose state a bit-exact resume needs. */
export interface CheckpointRngState {
  /** The process-wide default generator. */
  global: GeneratorState;
  /** Each MoE layer's noiseGenerator, in moeLayers() order. */
  moe: GeneratorState[];
}

/** The trainer's own state in a checkpoint (model, optimizer and scheduler are stored separately). */
export interface TrainerCheckpointState {
  /** Optimizer steps completed. */
  step: number;
  rng: CheckpointRngState;
  /** The training data source's state() (its cursor and sampler RNG). */
  data: unknown;
  log: RunLog;
  /** Full config: model, trainer options, extra. */
  config: unknown;
}

/** What saveCheckpoint stores. */
export interface CheckpointSources {
  model: { stateDict(): Record<string, Tensor> };
  optimizer: { stateDict(): OptimizerStateDict };
  scheduler?: { stateDict(): LRSchedulerState } | null;
  trainerState: TrainerCheckpointState;
}

/** Points in a save where a test hook can run (and throw, simulating a crash). */
export type SavePhase = 'model' | 'optimizer' | 'trainer' | 'synced' | 'renamed' | 'latest';

export interface SaveCheckpointOptions {
  /** Complete checkpoints to keep (default 2; the new one always stays). */
  keep?: number;
  /** Called after each phase with the path just written (the temp dir's files before 'renamed'). For crash tests. */
  afterPhase?(phase: SavePhase, path: string): void | Promise<void>;
}

/** A reference from trainer.json to a tensor in optimizer.safetensors. */
interface TensorRef {
  tensor: string | null;
  length: number;
}

interface FileEntry {
  sha256: string;
  bytes: number;
}

/** The parsed body of trainer.json. */
interface TrainerFile {
  format: string;
  version: number;
  sha256: string;
  step: number;
  createdAt: string;
  files: Record<string, FileEntry>;
  optimizer: { paramGroups: OptimizerStateDict['paramGroups']; state: Record<string, Record<string, number | TensorRef>> };
  scheduler: LRSchedulerState | null;
  trainer: TrainerCheckpointState;
}

/** A loaded, verified checkpoint. */
export interface LoadedCheckpoint {
  /** The step directory it came from. */
  dir: string;
  step: number;
  createdAt: string;
  model: Record<string, Tensor>;
  optimizer: OptimizerStateDict;
  scheduler: LRSchedulerState | null;
  trainer: TrainerCheckpointState;
  /** With { fallback: true }: newer checkpoints that were refused, and why. */
  skipped: Array<{ dir: string; error: CheckpointError }>;
}

const sha256 = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');
const ZERO_HASH = '0'.repeat(64);
const HASH_MARKER = '\n  "sha256": "';
const STEP_DIR = /^step-(\d+)$/;

/** trainer.json: one top-level key per line (values compact), its own sha256 computed with that value zeroed. */
function encodeTrainerFile(doc: Omit<TrainerFile, 'sha256'>): Uint8Array {
  const { format, version, ...rest } = doc;
  const entries: Array<[string, unknown]> = [['format', format], ['version', version], ['sha256', ZERO_HASH], ...Object.entries(rest)];
  const text = `{\n${entries.map(([k, v]) => `  ${JSON.stringify(k)}: ${JSON.stringify(v)}`).join(',\n')}\n}\n`;
  const bytes = Buffer.from(text, 'utf8');
  const at = bytes.indexOf(HASH_MARKER) + HASH_MARKER.length;
  bytes.write(sha256(bytes), at, 'latin1');
  return bytes;
}

/** Verify trainer.json's self-checksum (before parsing: a flipped byte may still be valid JSON). */
function verifyTrainerFile(bytes: Buffer, path: string): void {
  const at = bytes.indexOf(HASH_MARKER);
  if (at < 0) throw new CheckpointError(path, 'has no sha256 line: corrupted, or not written by switchyard');
  const start = at + HASH_MARKER.length;
  const stored = bytes.subarray(start, start + 64).toString('latin1');
  const copy = Buffer.from(bytes);
  copy.write(ZERO_HASH, start, 'latin1');
  const actual = sha256(copy);
  if (stored !== actual) throw new CheckpointError(path, `checksum mismatch (stored sha256 ${stored.slice(0, 16)}..., contents hash to ${actual.slice(0, 16)}...): the file is corrupted`);
}

/** Split an optimizer state dict into JSON (hyperparameters, counters) and tensors (moments). */
function splitOptimizerState(dict: OptimizerStateDict): { json: TrainerFile['optimizer']; tensors: Record<string, Tensor> } {
  const tensors: Record<string, Tensor> = {};
  const state: TrainerFile['optimizer']['state'] = {};
  for (const [i, s] of Object.entries(dict.state)) {
    const entry: Record<string, number | TensorRef> = {};
    for (const [k, v] of Object.entries(s as ParamState)) {
      if (v instanceof Float32Array) {
        const name = `state.${i}.${k}`;
        if (v.length > 0) tensors[name] = new Tensor(v, [v.length]);
        entry[k] = { tensor: v.length > 0 ? name : null, length: v.length };
      } else {
        entry[k] = v;
      }
    }
    state[i] = entry;
  }
  return { json: { paramGroups: dict.paramGroups, state }, tensors };
}

function joinOptimizerState(json: TrainerFile['optimizer'], tensors: Record<string, Tensor>, optPath: string, trainerPath: string): OptimizerStateDict {
  if (!json || typeof json !== 'object' || !Array.isArray(json.paramGroups) || !json.state || typeof json.state !== 'object') {
    throw new CheckpointError(trainerPath, 'field "optimizer" must be { paramGroups: [...], state: {...} }');
  }
  const used = new Set<string>();
  const state: Record<number, ParamState> = {};
  for (const [i, entry] of Object.entries(json.state)) {
    if (!entry || typeof entry !== 'object') throw new CheckpointError(trainerPath, `optimizer.state[${i}] must be an object`);
    const s: ParamState = {};
    for (const [k, v] of Object.entries(entry)) {
      if (typeof v === 'number') {
        s[k] = v;
        continue;
      }
      if (!v || typeof v !== 'object' || !Number.isInteger(v.length) || v.length < 0) throw new CheckpointError(trainerPath, `optimizer.state[${i}].${k}=${describeValue(v)} is neither a number nor a tensor reference`);
      if (v.tensor === null) {
        if (v.length !== 0) throw new CheckpointError(trainerPath, `optimizer.state[${i}].${k} has no tensor but length ${v.length}`);
        s[k] = new Float32Array(0);
        continue;
      }
      const t = Object.prototype.hasOwnProperty.call(tensors, v.tensor) ? tensors[v.tensor] : undefined;
      if (!t) throw new CheckpointError(optPath, `is missing tensor ${JSON.stringify(v.tensor)} (referenced by trainer.json)`);
      if (t.dtype !== 'float32' || t.size !== v.length) throw new CheckpointError(optPath, `tensor ${JSON.stringify(v.tensor)} has ${t.size} ${t.dtype} elements, trainer.json expects ${v.length} float32`);
      used.add(v.tensor);
      s[k] = t.f32;
    }
    state[Number(i)] = s;
  }
  const extra = Object.keys(tensors).filter((n) => !used.has(n));
  if (extra.length) throw new CheckpointError(optPath, `has tensors trainer.json does not reference: ${extra.slice(0, 5).join(', ')}${extra.length > 5 ? ', ...' : ''}`);
  return { paramGroups: json.paramGroups, state };
}


function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Step directories in `dir`, newest (highest step) first. */
export async function listCheckpoints(dir: string): Promise<Array<{ step: number; dir: string }>> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return [];
  }
  return names
    .flatMap((n) => {
      const m = STEP_DIR.exec(n);
      return m ? [{ step: Number(m[1]), dir: join(dir, n) }] : [];
    })
    .sort((a, b) => b.step - a.step);
}

/**
 * Save a checkpoint of step `trainerState.step` under `dir` (see the module doc for the layout and
 * the crash-safety protocol). Returns the step directory.
 */
export async function saveCheckpoint(dir: string, src: CheckpointSources, opts?: SaveCheckpointOptions): Promise<string> {
  const root = resolve(dir);
  const step = src.trainerState.step;
  if (!Number.isInteger(step) || step < 0) throw new CheckpointError(root, `trainerState.step=${describeValue(step)} must be a non-negative integer`);
  const keep = opts?.keep ?? 2;
  if (!Number.isInteger(keep) || keep < 1) throw new CheckpointError(root, `keep=${describeValue(keep)} must be an integer >= 1`);
  const hook = opts?.afterPhase;
  await mkdir(root, { recursive: true });
  const name = `step-${step}`;
  const tmp = join(root, `.tmp-${step}-${process.pid}`);
  await rm(tmp, { recursive: true, force: true });
  await mkdir(tmp);

  // 1. Binary files, each fsynced; their hashes go into trainer.json.
  const modelBytes = writeSafetensors(src.model.stateDict(), { format: CHECKPOINT_FORMAT, step: String(step) });
  await writeFileDurable(join(tmp, MODEL_FILE), modelBytes);
  await hook?.('model', join(tmp, MODEL_FILE));
  const opt = splitOptimizerState(src.optimizer.stateDict());
  const optBytes = writeSafetensors(opt.tensors, { format: CHECKPOINT_FORMAT, step: String(step) });
  await writeFileDurable(join(tmp, OPTIMIZER_FILE), optBytes);
  await hook?.('optimizer', join(tmp, OPTIMIZER_FILE));

  // 2. trainer.json last: its presence with a valid checksum marks the directory complete.
  const trainerBytes = encodeTrainerFile({
    format: CHECKPOINT_FORMAT,
    version: CHECKPOINT_VERSION,
    step,
    createdAt: new Date().toISOString(),
    files: {
      [MODEL_FILE]: { sha256: sha256(modelBytes), bytes: modelBytes.length },
      [OPTIMIZER_FILE]: { sha256: sha256(optBytes), bytes: optBytes.length },
    },
    optimizer: opt.json,
    scheduler: src.scheduler ? src.scheduler.stateDict() : null,
    trainer: src.trainerState,
  });
  await writeFileDurable(join(tmp, TRAINER_FILE), trainerBytes);
  await hook?.('trainer', join(tmp, TRAINER_FILE));
  await syncDirectory(tmp);
  await hook?.('synced', tmp);

  // 3. Publish: rename into place (moving aside an older save of the same step), fsync the run dir.
  const final = join(root, name);
  let old: string | null = null;
  if (await pathExists(final)) {
    old = join(root, `.old-${step}-${process.pid}-${Date.now()}`);
    await rename(final, old);
  }
  await rename(tmp, final);
  await syncDirectory(root);
  await hook?.('renamed', final);

  // 4. Point `latest` at it (atomic replace), then prune.
  await replaceFileAtomic(join(root, LATEST_FILE), `${name}\n`);
  await hook?.('latest', join(root, LATEST_FILE));
  if (old) await rm(old, { recursive: true, force: true });
  const all = await listCheckpoints(root);
  const others = all.filter((c) => c.step !== step);
  for (const c of others.slice(keep - 1)) await rm(c.dir, { recursive: true, force: true });
  // Temp dirs left by failed saves (ours: ours is published by now; others': only if that process died).
  for (const n of await readdir(root)) {
    const m = /^\.(?:tmp|old)-\d+-(\d+)/.exec(n);
    if (m && (Number(m[1]) === process.pid || !pidAlive(Number(m[1])))) await rm(join(root, n), { recursive: true, force: true });
  }
  return final;
}

async function readRequired(path: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new CheckpointError(path, code === 'ENOENT' ? 'is missing (the checkpoint is incomplete)' : `cannot be read (${code ?? String(e)})`, e);
  }
}

/** Resolve `path` to a step directory: a step dir itself, or a run dir via `latest` (else its highest step-*). */
export async function resolveCheckpointDir(path: string): Promise<string> {
  const p = resolve(path);
  let st;
  try {
    st = await stat(p);
  } catch {
    throw new CheckpointError(p, 'does not exist');
  }
  if (!st.isDirectory()) throw new CheckpointError(p, 'is not a directory (pass a run directory or a step-<n> directory)');
  if (await pathExists(join(p, TRAINER_FILE))) return p;
  const latestPath = join(p, LATEST_FILE);
  if (await pathExists(latestPath)) {
    const target = (await readFile(latestPath, 'utf8')).trim();
    if (!STEP_DIR.test(target)) throw new CheckpointError(latestPath, `must name a step-<n> directory, got ${describeValue(target)}`);
    return join(p, target);
  }
  const list = await listCheckpoints(p);
  if (list.length === 0) throw new CheckpointError(p, `holds no checkpoint (no ${LATEST_FILE} pointer, no step-<n> directory, no ${TRAINER_FILE})`);
  return list[0].dir;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Load and verify one step directory. */
async function loadStepDir(stepDir: string): Promise<LoadedCheckpoint> {
  const trainerPath = join(stepDir, TRAINER_FILE);
  const raw = await readRequired(trainerPath);
  verifyTrainerFile(raw, trainerPath);
  let doc: TrainerFile;
  try {
    doc = JSON.parse(raw.toString('utf8')) as TrainerFile;
  } catch (e) {
    throw new CheckpointError(trainerPath, `is not valid JSON (${(e as Error).message})`, e);
  }
  if (!isObject(doc) || doc.format !== CHECKPOINT_FORMAT) throw new CheckpointError(trainerPath, `format=${describeValue((doc as { format?: unknown })?.format)}: not a switchyard checkpoint`);
  if (doc.version !== CHECKPOINT_VERSION) throw new CheckpointError(trainerPath, `version=${describeValue(doc.version)}: this build reads version ${CHECKPOINT_VERSION}`);
  if (!Number.isInteger(doc.step) || doc.step < 0) throw new CheckpointError(trainerPath, `step=${describeValue(doc.step)} must be a non-negative integer`);
  if (!isObject(doc.files)) throw new CheckpointError(trainerPath, 'field "files" is missing');
  if (!isObject(doc.trainer)) throw new CheckpointError(trainerPath, 'field "trainer" is missing');
  const t = doc.trainer;
  if (t.step !== doc.step) throw new CheckpointError(trainerPath, `trainer.step=${describeValue(t.step)} differs from step=${doc.step}`);
  if (!isObject(t.rng) || !isObject(t.rng.global) || !Array.isArray(t.rng.moe)) throw new CheckpointError(trainerPath, 'field "trainer.rng" must be { global, moe: [...] }');
  if (!isObject(t.log) || !Array.isArray(t.log.steps) || !Array.isArray(t.log.evals)) throw new CheckpointError(trainerPath, 'field "trainer.log" must be a RunLog { steps: [...], evals: [...] }');

  const binaries: Record<string, Record<string, Tensor>> = {};
  for (const file of [MODEL_FILE, OPTIMIZER_FILE]) {
    const path = join(stepDir, file);
    const entry = doc.files[file] as FileEntry | undefined;
    if (!isObject(entry) || typeof entry.sha256 !== 'string' || !Number.isInteger(entry.bytes)) throw new CheckpointError(trainerPath, `has no valid files[${JSON.stringify(file)}] entry`);
    const bytes = await readRequired(path);
    if (bytes.length !== entry.bytes) {
      throw new CheckpointError(path, `is ${bytes.length < entry.bytes ? 'truncated' : 'too long'}: ${bytes.length} bytes, ${TRAINER_FILE} records ${entry.bytes}`);
    }
    const actual = sha256(bytes);
    if (actual !== entry.sha256) throw new CheckpointError(path, `checksum mismatch (sha256 ${actual.slice(0, 16)}..., ${TRAINER_FILE} records ${entry.sha256.slice(0, 16)}...): the file is corrupted`);
    try {
      binaries[file] = readSafetensors(bytes);
    } catch (e) {
      throw new CheckpointError(path, `is not a valid safetensors file: ${(e as Error).message}`, e);
    }
  }
  return {
    dir: stepDir,
    step: doc.step,
    createdAt: String(doc.createdAt),
    model: binaries[MODEL_FILE],
    optimizer: joinOptimizerState(doc.optimizer, binaries[OPTIMIZER_FILE], join(stepDir, OPTIMIZER_FILE), trainerPath),
    scheduler: doc.scheduler ?? null,
    trainer: t,
    skipped: [],
  };
}

export interface LoadCheckpointOptions {
  /**
   * When the checkpoint `latest` names is refused, try the older step directories (newest first)
   * and record the refused ones in `skipped`. Default false: refuse loudly.
   */
  fallback?: boolean;
}

/**
 * Load and verify a checkpoint: `path` is a step directory, or a run directory (its `latest`,
 * else its highest step-<n>). Throws CheckpointError naming the file at fault.
 */
export async function loadCheckpoint(path: string, opts?: LoadCheckpointOptions): Promise<LoadedCheckpoint> {
  if (!opts?.fallback) return loadStepDir(await resolveCheckpointDir(path));
  const root = resolve(path);
  const skipped: LoadedCheckpoint['skipped'] = [];
  let first: string | null = null;
  try {
    first = await resolveCheckpointDir(root);
    const ck = await loadStepDir(first);
    return ck;
  } catch (e) {
    if (!(e instanceof CheckpointError)) throw e;
    skipped.push({ dir: first ?? root, error: e });
  }
  for (const c of await listCheckpoints(root)) {
    if (c.dir === first) continue;
    try {
      const ck = await loadStepDir(c.dir);
      ck.skipped = skipped;
      return ck;
    } catch (e) {
      if (!(e instanceof CheckpointError)) throw e;
      skipped.push({ dir: c.dir, error: e });
    }
  }
  throw new CheckpointError(root, `no loadable checkpoint: ${skipped.map((s) => s.error.message).join('; ')}`, skipped[0]?.error);
}

function copyDict(d: Record<string, Tensor>): Record<string, Tensor> {
  const out: Record<string, Tensor> = {};
  for (const [k, t] of Object.entries(d)) out[k] = Tensor.from(t.data, t.shape);
  return out;
}

/**
 * Restore model, optimizer and scheduler from a loaded checkpoint, all or nothing: on any
 * mismatch everything is rolled back and a CheckpointError names the file.
 */
export function applyCheckpoint(
  ck: LoadedCheckpoint,
  targets: {
    model: { stateDict(): Record<string, Tensor>; loadStateDict(d: Record<string, Tensor>): unknown };
    optimizer: { stateDict(): OptimizerStateDict; loadStateDict(d: OptimizerStateDict): void };
    scheduler?: { stateDict(): LRSchedulerState; loadStateDict(s: LRSchedulerState): void } | null;
  },
  more?: () => void,
): void {
  const backup = { model: copyDict(targets.model.stateDict()), optimizer: targets.optimizer.stateDict(), scheduler: targets.scheduler?.stateDict() };
  const attempt = (file: string, f: () => void): void => {
    try {
      f();
    } catch (e) {
      throw e instanceof CheckpointError ? e : new CheckpointError(join(ck.dir, file), `does not match: ${(e as Error).message}`, e);
    }
  };
  try {
    attempt(MODEL_FILE, () => targets.model.loadStateDict(ck.model));
    attempt(OPTIMIZER_FILE, () => targets.optimizer.loadStateDict(ck.optimizer));
    if (targets.scheduler) {
      if (!ck.scheduler) throw new CheckpointError(join(ck.dir, TRAINER_FILE), 'has no scheduler state');
      const s = ck.scheduler;
      attempt(TRAINER_FILE, () => targets.scheduler!.loadStateDict(s));
    }
    if (more) attempt(TRAINER_FILE, more);
  } catch (e) {
    targets.model.loadStateDict(backup.model);
    targets.optimizer.loadStateDict(backup.optimizer);
    if (backup.scheduler) targets.scheduler!.loadStateDict(backup.scheduler);
    throw e;
  }
}

/**
 * Resume a freshly built Trainer (same model config and options) from a checkpoint: model,
 * optimizer, scheduler, every RNG, data cursor, step and log. The next step then computes exactly
 * what the uninterrupted run would have.
 */
export async function resumeTrainer<M extends TrainableModel>(trainer: Trainer<M>, path: string, opts?: LoadCheckpointOptions): Promise<LoadedCheckpoint> {
  const ck = await loadCheckpoint(path, opts);
  const trainerPath = join(ck.dir, TRAINER_FILE);
  const saved = (ck.trainer.config as { model?: unknown } | null)?.model;
  const current = trainer.fullConfig().model;
  if (saved !== undefined && JSON.stringify(saved) !== JSON.stringify(current)) {
    throw new CheckpointError(trainerPath, `model config differs from the model being resumed: saved ${describeValue(saved)}, current ${describeValue(current)}`);
  }
  if (ck.trainer.rng.moe.length !== trainer.moeLayers().length) {
    throw new CheckpointError(trainerPath, `has ${ck.trainer.rng.moe.length} MoE noise generator states, the model has ${trainer.moeLayers().length} MoE layers`);
  }
  applyCheckpoint(ck, { model: trainer.model, optimizer: trainer.optimizer, scheduler: trainer.scheduler }, () => trainer.restoreState(ck.trainer));
  return ck;
}
