/**
 * Names shared by expert servers and routers: which experts a process hosts (`--experts`), the
 * model id, and the NATS subjects built from them.
 *
 * Expert spec grammar: `all`, or comma-separated items `<layer>:<ids>` where <layer> is a model
 * layer index (`layers.<i>`) or `*` (every MoE layer) and <ids> is an expert index, a range
 * `a-b` (inclusive) or `*`. An item without `<layer>:` continues the previous item's layer, so
 * `1:0,1,2,3:5` is experts 0-2 of layer 1 and expert 5 of layer 3.
 */
import { readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { ConfigError } from '../errors.js';

/** A set of (layer, expert) pairs by model layer index. */
export type ExpertSet = Map<number, Set<number>>;

/** The MoE layers of a model: model layer index → number of experts. */
export type LayerExperts = ReadonlyMap<number, number>;

/** Parse an expert spec (grammar in the module doc) against a model's MoE layers; `flag` names the option in errors. */
export function parseExpertSpec(spec: string, layers: LayerExperts, flag = '--experts'): ExpertSet {
  const out: ExpertSet = new Map();
  const s = spec.trim();
  if (!s) throw new ConfigError(flag, spec, "is empty: give 'all' or items like '0:0-3,1:*'");
  const add = (layer: number, e: number): void => {
    let set = out.get(layer);
    if (!set) out.set(layer, (set = new Set()));
    set.add(e);
  };
  if (s === 'all') {
    for (const [layer, n] of layers) for (let e = 0; e < n; e++) add(layer, e);
    return out;
  }
  let current: number[] | null = null;
  for (const raw of s.split(',')) {
    const item = raw.trim();
    let ids = item;
    const colon = item.indexOf(':');
    if (colon >= 0) {
      const l = item.slice(0, colon).trim();
      ids = item.slice(colon + 1).trim();
      if (l === '*') current = [...layers.keys()];
      else {
        const li = Number(l);
        if (!/^\d+$/.test(l) || !layers.has(li)) {
          throw new ConfigError(flag, spec, `layer ${JSON.stringify(l)} is not an MoE layer of this model (MoE layers: ${[...layers.keys()].join(', ')})`);
        }
        current = [li];
      }
    }
    if (!current) throw new ConfigError(flag, spec, `item ${JSON.stringify(item)} needs a layer first ('<layer>:<ids>')`);
    for (const li of current) {
      const n = layers.get(li)!;
      let lo: number, hi: number;
      const m = /^(\d+)(?:-(\d+))?$/.exec(ids);
      if (ids === '*') [lo, hi] = [0, n - 1];
      else if (m) [lo, hi] = [Number(m[1]), Number(m[2] ?? m[1])];
      else throw new ConfigError(flag, spec, `${JSON.stringify(ids)} is not an expert index, range 'a-b' or '*'`);
      if (lo > hi || hi >= n) throw new ConfigError(flag, spec, `experts ${ids} of layer ${li}: the layer has experts 0-${n - 1}`);
      for (let e = lo; e <= hi; e++) add(li, e);
    }
  }
  return out;
}

/** Canonical short form of an expert set (`1:0-2,3:5`). */
export function formatExpertSet(set: ExpertSet): string {
  const parts: string[] = [];
  for (const layer of [...set.keys()].sort((a, b) => a - b)) {
    const ids = [...set.get(layer)!].sort((a, b) => a - b);
    const runs: string[] = [];
    for (let i = 0; i < ids.length; ) {
      let j = i;
      while (j + 1 < ids.length && ids[j + 1] === ids[j] + 1) j++;
      runs.push(i === j ? `${ids[i]}` : `${ids[i]}-${ids[j]}`);
      i = j + 1;
    }
    parts.push(`${layer}:${runs.join(',')}`);
  }
  return parts.join(',');
}

/** Number of (layer, expert) pairs in a set. */
export function expertCount(set: ExpertSet): number {
  let n = 0;
  for (const s of set.values()) n += s.size;
  return n;
}

/** The NATS service name every expert server registers (discovery: `$SRV.INFO.switchyard-experts`). */
export const SERVICE_NAME = 'switchyard-experts';
/** The queue group replicas of an expert share. */
export const QUEUE_GROUP = 'switchyard-experts';

const TOKEN = /^[A-Za-z0-9_-]+$/;

/** Check a model id is one NATS subject token (letters, digits, '-', '_'). */
export function checkModelId(id: string): string {
  if (!TOKEN.test(id)) throw new ConfigError('modelId', id, "must be letters, digits, '-' or '_' (it is a NATS subject token)");
  return id;
}

/** Subject of expert `expert` of layer `layer`: every replica subscribes in QUEUE_GROUP. */
export function expertSubject(modelId: string, layer: number, expert: number): string {
  return `switchyard.experts.${modelId}.${layer}.${expert}`;
}

/** One server instance's own subject for any expert it hosts (layer and expert are read from the header). */
export function directSubject(modelId: string, instanceId: string): string {
  return `switchyard.experts.${modelId}.direct.${instanceId}`;
}

/** Fine-tuning: every instance of the model applies its optimizer step on a request here. */
export function stepSubject(modelId: string): string {
  return `switchyard.experts.${modelId}.step`;
}

/** One server instance's `stats` endpoint (JSON). */
export function statsSubject(modelId: string, instanceId: string): string {
  return `switchyard.experts.${modelId}.stats.${instanceId}`;
}

/**
 * The model id router and servers agree on when none is given: for a Switchyard checkpoint the
 * first 12 hex digits of model.safetensors' sha256 recorded in trainer.json (so two copies of
 * one checkpoint agree and two checkpoints never do), else the folder name made subject-safe.
 */
export function defaultModelId(source: { kind: string; path: string }): string {
  if (source.kind === 'checkpoint') {
    try {
      const doc = JSON.parse(readFileSync(join(source.path, 'trainer.json'), 'utf8')) as { files?: Record<string, { sha256?: string }> };
      const sha = doc.files?.['model.safetensors']?.sha256;
      if (sha && /^[0-9a-f]{12}/.test(sha)) return `sha-${sha.slice(0, 12)}`;
    } catch {
      /* fall back to the name */
    }
  }
  const name = basename(source.path).replace(/[^A-Za-z0-9_-]/g, '_');
  return name || 'model';
}

/** Map of a model's MoE layers by model layer index (`layers.<i>.mlp`), as expert specs refer to them. */
export function moeLayerIndex<L>(model: { moeLayers(): L[]; layers?: { items: unknown[] } }): Map<L, number> {
  const items = (model.layers?.items ?? []) as Array<{ mlp?: unknown }>;
  const out = new Map<L, number>();
  model.moeLayers().forEach((moe, i) => {
    const idx = items.findIndex((l) => l.mlp === moe);
    out.set(moe, idx >= 0 ? idx : i);
  });
  return out;
}
