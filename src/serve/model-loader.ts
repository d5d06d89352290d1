/**
 * Load a Switchyard language-model checkpoint for serving without ever holding the whole model
 * file in memory: the header is parsed, every resident tensor is read with its own positioned
 * read straight into the model's parameter, and (with an expert budget) the model is built with
 * its routed experts unmaterialised and an ExpertStore serves them from the same file.
 *
 * Layout read (src/train/checkpoint.ts): a run directory (its checkpoints/latest), a checkpoints
 * directory, or a step-<n> directory holding model.safetensors and trainer.json. With `verify`,
 * model.safetensors is streamed once through sha256 and compared with trainer.json's record.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { tokenizerFromJSON, type Tokenizer } from '../data/tokenizer.js';
import { ConfigError } from '../errors.js';
import { HFTokenizer, loadHFModel, SWITCHYARD_MODEL_FORMAT } from '../io/hf-import.js';
import { SafetensorsFile } from '../io/safetensors-file.js';
import { withDeferredExperts } from '../moe/layer.js';
import { MoETransformerLM, type TransformerLMConfig } from '../nn/transformer.js';
import { CheckpointError, MODEL_FILE, resolveCheckpointDir, TRAINER_FILE } from '../train/checkpoint.js';
import type { Tensor } from '../tensor/tensor.js';
import type { ByteBudgetSpec } from './bytes.js';
import { ExpertStore, type TensorLocation, type VerifyMode } from './expert-store.js';

export interface LoadServingModelOptions {
  /** Expert memory budget ('200MB', 0.25, '25%', 'all'); null/undefined: every weight resident, no store. */
  expertMemory?: string | number | ByteBudgetSpec | null;
  /** Prefetch the next layer's experts (store only). */
  prefetch?: boolean;
  /**
   * Integrity: check model.safetensors against trainer.json's sha256 at start-up, CRC the expert
   * weights, and check reads as ExpertStore's `verify` says ('changed', the default, or 'always');
   * false / 'off' skips all of it.
   */
  verify?: boolean | VerifyMode;
  /** Passed to the store (tests). */
  onStoreChange?(store: ExpertStore): void;
}

/** A model ready to serve. */
export interface ServingModel {
  model: MoETransformerLM;
  tokenizer: Tokenizer;
  /** The expert store when experts are served from disk, else null (fully resident). */
  store: ExpertStore | null;
  /** Where it came from: a checkpoint's step directory (and step), or a Hugging Face / imported model folder. */
  source: { kind: 'checkpoint'; path: string; step: number } | { kind: 'hf' | 'switchyard-model'; path: string; family: string | null };
  /** Token ids that end a completion (from generation_config.json for HF models). */
  eosIds: number[];
  /** Prompt text to ids (HF tokenizers add their special tokens, e.g. BOS). */
  encodePrompt(text: string): number[];
  /** Maximum positions (prompt + generated). */
  contextLength: number;
  /** Release files and the prefetch worker. */
  close(): Promise<void>;
}

async function sha256File(path: string): Promise<{ sha256: string; bytes: number }> {
  const hash = createHash('sha256');
  let bytes = 0;
  for await (const chunk of createReadStream(path, { highWaterMark: 4 << 20 })) {
    hash.update(chunk as Buffer);
    bytes += (chunk as Buffer).length;
  }
  return { sha256: hash.digest('hex'), bytes };
}

/** { spec, tokenizer } somewhere in the trainer's config record (as trainLanguageModel stores it). */
function findRunConfig(cfg: unknown, depth = 0): { spec: { model: Omit<TransformerLMConfig, 'vocabSize'> }; tokenizer: unknown } | null {
  if (!cfg || typeof cfg !== 'object' || depth > 4) return null;
  const o = cfg as Record<string, unknown>;
  if (o.spec && o.tokenizer && typeof o.spec === 'object' && (o.spec as { model?: unknown }).model) {
    return { spec: o.spec as { model: Omit<TransformerLMConfig, 'vocabSize'> }, tokenizer: o.tokenizer };
  }
  for (const v of Object.values(o)) {
    const found = findRunConfig(v, depth + 1);
    if (found) return found;
  }
  return null;
}

/** The step directory a run dir / checkpoints dir / step dir stands for. */
async function stepDirOf(path: string): Promise<string> {
  try {
    return await resolveCheckpointDir(join(path, 'checkpoints'));
  } catch {
    return resolveCheckpointDir(path);
  }
}

/**
 * Load a checkpoint written by `switchyard train`/`demo` (or trainLanguageModel) for serving.
 * Throws CheckpointError naming the file at fault, ConfigError for a bad budget.
 */
export async function loadServingModel(path: string, opts: LoadServingModelOptions = {}): Promise<ServingModel> {
  if ((await isFile(join(path, 'config.json'))) && !(await isFile(join(path, TRAINER_FILE)))) return loadFolder(path, opts);
  const dir = await stepDirOf(path);
  const trainerPath = join(dir, TRAINER_FILE);
  const modelPath = join(dir, MODEL_FILE);
  let doc: { step?: unknown; files?: Record<string, { sha256?: string; bytes?: number }>; trainer?: { config?: unknown } };
  try {
    doc = JSON.parse(await readFile(trainerPath, 'utf8')) as typeof doc;
  } catch (e) {
    throw new CheckpointError(trainerPath, `cannot be read as JSON (${(e as Error).message})`, e);
  }
  const run = findRunConfig(doc.trainer?.config);
  if (!run) throw new CheckpointError(trainerPath, 'is not a language-model checkpoint written by switchyard train/demo (no run spec and tokenizer)');
  const verify = opts.verify ?? true;
  if (verify !== false && verify !== 'off') {
    const want = doc.files?.[MODEL_FILE];
    let got;
    try {
      got = await sha256File(modelPath);
    } catch (e) {
      throw new CheckpointError(modelPath, `cannot be read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, e);
    }
    if (want?.bytes !== undefined && got.bytes !== want.bytes) throw new CheckpointError(modelPath, `is ${got.bytes} bytes, ${TRAINER_FILE} records ${want.bytes}`);
    if (want?.sha256 && got.sha256 !== want.sha256) throw new CheckpointError(modelPath, `checksum mismatch (sha256 ${got.sha256.slice(0, 16)}..., ${TRAINER_FILE} records ${want.sha256.slice(0, 16)}...): the file is corrupted`);
  }
  const tokenizer = tokenizerFromJSON(run.tokenizer);
  const config: TransformerLMConfig = { ...run.spec.model, vocabSize: tokenizer.vocabSize };
  const lazy = opts.expertMemory !== null && opts.expertMemory !== undefined;
  const model = lazy ? withDeferredExperts(() => new MoETransformerLM(config)) : new MoETransformerLM(config);
  model.eval();
  let store: ExpertStore | null = null;
  const file = await SafetensorsFile.open(modelPath);
  try {
    if (lazy) {
      store = await ExpertStore.open(model, {
        files: [modelPath],
        budget: opts.expertMemory as string | number | ByteBudgetSpec,
        prefetch: opts.prefetch ?? false,
        verify,
        onChange: opts.onStoreChange,
      });
    }
    await readResident(model, file, store?.expertTensorNames ?? new Set<string>());
  } catch (e) {
    await store?.close();
    throw e;
  } finally {
    await file.close();
  }
  store?.attach();
  const step = typeof doc.step === 'number' ? doc.step : 0;
  return {
    model,
    tokenizer,
    store,
    source: { kind: 'checkpoint', path: dir, step },
    eosIds: [],
    encodePrompt: (text) => tokenizer.encode(text),
    contextLength: model.config.maxSeqLen,
    close: async () => {
      await store?.close();
    },
  };
}


async function isFile(p: string): Promise<boolean> {
  try {
    return (await stat(p)).isFile();
  } catch {
    return false;
  }
}

/** Read every parameter and buffer of `model` not in `skip` from `file`, one positioned read each, into the parameter. */
async function readResident(model: MoETransformerLM, file: SafetensorsFile, skip: ReadonlySet<string>): Promise<void> {
  const own: Array<[string, Tensor]> = [...model.namedParameters(), ...model.namedBuffers()];
  for (const [name, t] of own) {
    if (skip.has(name)) continue;
    if (!Object.prototype.hasOwnProperty.call(file.header.tensors, name)) throw new CheckpointError(file.path, `is missing tensor ${JSON.stringify(name)}`);
    const src = await file.read(name);
    if (src.shape.length !== t.shape.length || src.shape.some((d, i) => d !== t.shape[i])) {
      throw new CheckpointError(file.path, `tensor ${JSON.stringify(name)} has shape [${src.shape}], the model needs [${t.shape}]`);
    }
    (t.data as Float32Array).set(src.data);
  }
}

/**
 * A Hugging Face MoE folder (config.json + safetensors shards + tokenizer.json, read by
 * loadHFModel with the experts deferred and served from the shards), or a folder written by
 * `switchyard import --out` (config.json with format 'switchyard-model' + model.safetensors).
 */
async function loadFolder(path: string, opts: LoadServingModelOptions): Promise<ServingModel> {
  const root = resolve(path);
  const lazy = opts.expertMemory !== null && opts.expertMemory !== undefined;
  const cfg = JSON.parse(await readFile(join(root, 'config.json'), 'utf8')) as { format?: string; model?: TransformerLMConfig; eosTokenIds?: number[]; source?: { family?: string } };
  let model: MoETransformerLM;
  let tokenizer: Tokenizer | null;
  let eosIds: number[];
  let family: string | null;
  let files: string[];
  let locate: ((name: string) => TensorLocation | null) | undefined;
  let kind: 'hf' | 'switchyard-model';
  if (cfg.format === SWITCHYARD_MODEL_FORMAT) {
    kind = 'switchyard-model';
    const config = cfg.model as TransformerLMConfig;
    model = lazy ? withDeferredExperts(() => new MoETransformerLM(config)) : new MoETransformerLM(config);
    model.eval();
    tokenizer = (await isFile(join(root, 'tokenizer.json'))) ? await HFTokenizer.fromDir(root, config.vocabSize) : null;
    eosIds = Array.isArray(cfg.eosTokenIds) ? cfg.eosTokenIds : [];
    family = cfg.source?.family ?? null;
    files = [join(root, 'model.safetensors')];
  } else {
    kind = 'hf';
    const res = await loadHFModel(root, { deferExperts: lazy });
    model = res.model;
    tokenizer = res.tokenizer;
    eosIds = res.eosTokenIds;
    family = res.family;
    const experts = [...res.tensors.entries()].filter(([, t]) => t.expert);
    for (const [name, t] of experts) if (t.permuteRows) throw new ConfigError(name, t.name, 'expert weights with permuted rows cannot be served from disk');
    files = [...new Set(experts.map(([, t]) => t.file))];
    locate = (name) => {
      const t = res.tensors.get(name);
      return t ? { file: t.file, tensor: t.name, byteOffset: t.byteOffset, byteLength: t.byteLength } : null;
    };
  }
  if (!tokenizer) throw new ConfigError('tokenizer.json', join(root, 'tokenizer.json'), 'is missing: serving needs the tokenizer to turn text into ids');
  const tok = tokenizer;
  let store: ExpertStore | null = null;
  try {
    if (lazy) {
      store = await ExpertStore.open(model, {
        files,
        locate,
        budget: opts.expertMemory as string | number | ByteBudgetSpec,
        prefetch: opts.prefetch ?? false,
        verify: opts.verify ?? true,
        onChange: opts.onStoreChange,
      });
    }
    if (kind === 'switchyard-model') {
      const file = await SafetensorsFile.open(files[0]);
      try {
        await readResident(model, file, store?.expertTensorNames ?? new Set<string>());
      } finally {
        await file.close();
      }
    }
  } catch (e) {
    await store?.close();
    throw e;
  }
  store?.attach();
  const withSpecials = (tok as { encodePrompt?: (t: string) => number[] }).encodePrompt;
  return {
    model,
    tokenizer: tok,
    store,
    source: { kind, path: root, family },
    eosIds,
    encodePrompt: (text) => (withSpecials ? withSpecials.call(tok, text) : tok.encode(text)),
    contextLength: model.config.maxSeqLen,
    close: async () => {
      await store?.close();
    },
  };
}
