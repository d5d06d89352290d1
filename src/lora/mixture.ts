/**
 * Mixtures of LoRA experts over a frozen base model. `LoRAModel` turns the Linears of a
 * MoETransformerLM chosen by name pattern into base + n low-rank adapters + a router:
 *   y = W x + b + Σ_e g_e(x) · scale_e · B_e A_e x
 * (MoLoRA, Zadouri et al. 2023; X-LoRA, Buehler & Buehler 2024; LoRAMoE, Dou et al. 2023). Per adapted
 * Linear: the base runs once; the router picks adapters per token (or per sequence, or all of them);
 * tokens are sorted by adapter with the MoE dispatch plan; one grouped GEMM applies every A_e to its
 * token block, one applies every B_e; a weighted scatter-add brings rows back. No dense ΔW, no second
 * pass of the base. A few token rows at inference (decoding) take one fused backend call per
 * Linear instead (router + low-rank update, src/lora/decode.ts). The base's parameters stop
 * requiring grad, so they get no gradient and no optimizer state; the wrapper's parameters() are
 * the trainable adapter and router tensors only.
 *
 * The base model is adapted in place (its Linears' forward is redirected) until detach().
 */
import type { Activation } from '../backend/interface.js';
import { ConfigError, ShapeError, StateDictError, ValueError } from '../errors.js';
import { ExpertFFN, MoELayer } from '../moe/layer.js';
import { Embedding, Linear } from '../nn/layers.js';
import { Module } from '../nn/module.js';
import { DenseFFN, KVCache, MoETransformerLM, type LMOutput } from '../nn/transformer.js';
import { dropout } from '../ops/dropout.js';
import { activation, add, gatedAct, mul } from '../ops/elementwise.js';
import { gatherRows, scatterAddRows } from '../ops/gather.js';
import { crossEntropy } from '../ops/loss.js';
import { linear } from '../ops/matmul.js';
import { reshape } from '../ops/shape.js';
import { Generator } from '../random.js';
import { isGradEnabled, noGrad } from '../tensor/autodiff.js';
import { Tensor, type IndexLike } from '../tensor/tensor.js';
import { checkAdapterName, resolveLoRAOptions, resolveRouterConfig, type LoRAOptions, type MixtureRouterConfig, type ResolvedLoRAOptions, type ResolvedRouterConfig } from './config.js';
import { DECODE_ROWS, SitePack } from './decode.js';
import { groupedLoRAMixture, groupedLowRank, type LowRankFactors } from './grouped.js';
import { freeze, initLoRAFactors } from './lora-linear.js';
import { AdapterRouter, type AdapterRoute } from './router.js';

/** One adapter of a mixture: a name and its LoRA hyperparameters. */
export interface AdapterSpec extends LoRAOptions {
  name: string;
}

/** Options of a LoRAModel. */
export interface LoRAModelOptions {
  /**
   * Which Linears to adapt, PEFT-style: a module name suffix on dot boundaries (`q_proj`,
   * `self_attn.o_proj`), a glob with `*` for one name component (`layers.*.self_attn.v_proj`), or a
   * regular expression in slashes matched against the whole path (`/layers\.[01]\..*_proj/`).
   */
  targets: readonly string[];
  adapters: readonly AdapterSpec[];
  /** Default: 'single' for one adapter, top-2 token routing otherwise. */
  router?: MixtureRouterConfig;
  /** Seed of the router rows' initialisation (default 0). */
  seed?: number;
}

/** Shared by every site of a model during one forward: the [batch, seq] of the ids being processed. */
interface ForwardContext {
  batch: number;
  seq: number;
}

/** A Linear of the base adapted by a mixture: its base, its adapters' factors and its router. */
export class LoRAMixtureLinear extends Module {
  readonly path: string;
  readonly base: Linear;
  readonly factors: LowRankFactors[];
  readonly router: AdapterRouter;
  readonly adapters: ResolvedLoRAOptions[];
  /** The route of the last forward (choices, gates, stats). */
  last: AdapterRoute | null = null;
  /** When set, the last forward's input rows [T, in] are kept in `lastInput` (router warm start). */
  recordInput = false;
  lastInput: Tensor | null = null;
  private readonly ctx: ForwardContext;

  constructor(path: string, base: Linear, adapters: Array<{ name: string; options: ResolvedLoRAOptions }>, router: ResolvedRouterConfig, ctx: ForwardContext, gen: Generator) {
    super();
    this.path = path;
    this.base = base;
    this.ctx = ctx;
    this.adapters = adapters.map((a) => a.options);
    const init = adapters.map(({ options }) => initLoRAFactors(base.inFeatures, base.outFeatures, options, new Generator(options.seed * 1_000_003 + hash(path))));
    const bound = 1 / Math.sqrt(base.inFeatures);
    const initRows = router.type === 'single' ? [] : adapters.map(() => Tensor.rand([1, base.inFeatures], { generator: gen, low: -bound, high: bound }));
    // The parameters are views into packed buffers that the one-call decode path reads.
    this.pack = new SitePack(base.inFeatures, base.outFeatures, init, initRows, this.adapters.map((a) => a.scale), router);
    this.factors = adapters.map(({ name }, e) => {
      const f = this.pack.factors[e] as { A: Tensor; B: Tensor };
      this.registerParameter(`lora_A.${name}.weight`, f.A);
      this.registerParameter(`lora_B.${name}.weight`, f.B);
      return f;
    });
    const rows = adapters.slice(0, this.pack.rows.length).map(({ name }, e) => this.registerParameter(`router.${name}.weight`, this.pack.rows[e]));
    this.router = new AdapterRouter(router, rows);
  }

  /** Packed adapter and router buffers behind this site's parameters (see decode.ts). */
  private readonly pack: SitePack;

  /** Whether a forward on x must record gradients (x or any adapter or router tensor requires grad, under grad mode). */
  private needsGrad(x: Tensor): boolean {
    if (!isGradEnabled()) return false;
    if (x.requiresGrad) return true;
    for (const f of this.factors) if (f && (f.A.requiresGrad || f.B.requiresGrad)) return true;
    for (const r of this.router.rows) if (r.requiresGrad) return true;
    return false;
  }

  /** y = W x + b + Σ over the adapters each token was routed to of gate · scale · B A x, for x [..., in]. */
  forward(x: Tensor): Tensor {
    const inF = this.base.inFeatures, outF = this.base.outFeatures;
    if (x.shape[x.rank - 1] !== inF) throw new ShapeError(`${this.path}.x`, x.shape, `last dimension must be ${inF}`);
    const y = linear(x, this.base.weight, this.base.bias);
    const T = x.size / inF;
    if (T <= DECODE_ROWS && !this.training && this.router.config.type !== 'sequence' && !this.needsGrad(x) && this.pack.intact(this.factors, this.router.rows)) {
      // Decoding: router and low-rank update in one backend call, added in place to the base output.
      this.last = this.pack.run(x.f32, T, y.f32, this.router.config.type === 'single');
      this.lastInput = this.recordInput ? reshape(x, [T, inF]).detach() : null;
      return y;
    }
    const x2 = x.rank === 2 ? x : reshape(x, [T, inF]);
    const batch = x.rank === 3 ? x.shape[0] : this.ctx.batch * this.ctx.seq === T ? this.ctx.batch : 1;
    const route = this.router.route(x2, batch, this.training);
    this.last = route;
    this.lastInput = this.recordInput ? x2.detach() : null;
    const n = this.factors.length;
    const { plan } = route;
    const single = this.router.config.type === 'single';
    const N = plan.tokenIndex.length;
    // Row weights gate · scale_e in plan order (the scale is a constant per adapter block).
    const rowScale = new Float32Array(N);
    for (let e = 0; e < n; e++) rowScale.fill(this.adapters[e].scale, plan.expertOffsets[e], plan.expertOffsets[e + 1]);
    const drop = this.training ? Math.max(...this.adapters.map((a) => a.dropout)) : 0;
    const needGrad = isGradEnabled() && (x.requiresGrad || (route.gates?.requiresGrad ?? false) || this.factors.some((f) => f && (f.A.requiresGrad || f.B.requiresGrad)));
    if (!needGrad && drop === 0) {
      // Inference: weights in plain arrays, the low-rank path added in place to the base output.
      if (route.gates) {
        const g = route.gates.f32;
        for (let i = 0; i < N; i++) rowScale[i] *= g[plan.weightIndex[i]];
      }
      groupedLoRAMixture(x2, plan.tokenIndex, plan.expertOffsets, this.factors, new Tensor(rowScale, [N]), outF, { gather: !single, into: y.f32 });
      return y;
    }
    let w: Tensor;
    if (route.gates === null) w = new Tensor(rowScale, [N]);
    else w = mul(reshape(gatherRows(reshape(route.gates, [route.gates.size, 1]), plan.weightIndex), [N]), new Tensor(rowScale, [N]));
    // Dropout on the LoRA path's input (PEFT: lora_B(lora_A(dropout(x)))), one mask per assignment.
    if (drop > 0) {
      const xs = dropout(single ? x2 : gatherRows(x2, plan.tokenIndex), drop, { training: true });
      const ys = groupedLowRank(xs, plan.expertOffsets, this.factors, w, outF);
      const delta = single ? ys : scatterAddRows(ys, plan.tokenIndex, T);
      return add(y, reshape(delta, y.shape));
    }
    const delta = groupedLoRAMixture(x2, plan.tokenIndex, plan.expertOffsets, this.factors, w, outF, { gather: !single });
    return add(y, reshape(delta, y.shape));
  }
}

function hash(s: string): number {
  let h = 2166136261;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 16777619) >>> 0;
  return h % 1_000_003;
}

/** A Linear of the base and how the model calls it. */
interface Candidate {
  path: string;
  linear: Linear;
  /** 'linear': called through Linear.forward; 'ffn': a weight of a dense/shared ExpertFFN; else unsupported (why). */
  kind: 'linear' | 'ffn' | string;
  owner?: ExpertFFN;
  act?: Activation;
}

/** Every Linear of the model, with whether and how it can carry adapters. */
function candidates(model: MoETransformerLM): Candidate[] {
  const out: Candidate[] = [];
  const walk = (m: Module, path: string, parent: Module | null, act: Activation | undefined): void => {
    if (m instanceof Linear) {
      const leaf = path.split('.').pop() ?? '';
      if (/\.self_attn\.[^.]+$/.test(path)) out.push({ path, linear: m, kind: 'linear' });
      else if (parent instanceof DenseFFN) out.push({ path, linear: m, kind: 'ffn', owner: parent.ffn, act: parent.activation });
      else if (/\.mlp\.shared_experts\.\d+\.w[123]$/.test(path) && parent instanceof ExpertFFN) out.push({ path, linear: m, kind: 'ffn', owner: parent, act });
      else if (/\.mlp\.experts\.\d+\.w[123]$/.test(path)) out.push({ path, linear: m, kind: 'routed MoE expert weights are not LoRA targets (adapt the attention projections, dense or shared-expert FFN weights)' });
      else out.push({ path, linear: m, kind: `${leaf} is not called as a Linear by the model` });
      return;
    }
    const a = m instanceof MoELayer ? m.config.expert.activation : act;
    for (const [n, c] of m.namedChildren()) walk(c, path ? `${path}.${n}` : n, m, a);
  };
  walk(model, '', null, undefined);
  return out;
}

function patternMatcher(p: string): (path: string) => boolean {
  if (p.length > 2 && p.startsWith('/') && p.endsWith('/')) {
    let re: RegExp;
    try {
      re = new RegExp(`^(?:${p.slice(1, -1)})$`);
    } catch (e) {
      throw new ConfigError('targets', p, `is not a valid regular expression (${(e as Error).message})`);
    }
    return (path) => re.test(path);
  }
  const esc = p.split('.').map((seg) => (seg === '*' ? '[^.]+' : seg.replace(/[\\^$+?()[\]{}|*]/g, (c) => (c === '*' ? '[^.]*' : `\\${c}`)))).join('\\.');
  const re = new RegExp(`(^|\\.)${esc}$`);
  return (path) => re.test(path);
}

/** Resolve target patterns to adaptable Linears; unknown or unsupported patterns throw ConfigError('targets', pattern). */
export function resolveTargets(model: MoETransformerLM, targets: readonly string[]): Candidate[] {
  if (!Array.isArray(targets) || targets.length === 0) throw new ConfigError('targets', targets, 'must list at least one target module pattern (e.g. q_proj, v_proj)');
  const all = candidates(model);
  const chosen = new Map<string, Candidate>();
  for (const p of targets) {
    if (typeof p !== 'string' || p.length === 0) throw new ConfigError('targets', p, 'must be a non-empty string');
    const match = patternMatcher(p);
    const hits = all.filter((c) => match(c.path));
    if (hits.length === 0) {
      const leaves = [...new Set(all.filter((c) => c.kind === 'linear' || c.kind === 'ffn').map((c) => c.path.split('.').pop()))];
      throw new ConfigError('targets', p, `matches no Linear of the model (adaptable: ${leaves.join(', ')})`);
    }
    const bad = hits.find((c) => c.kind !== 'linear' && c.kind !== 'ffn');
    if (bad) throw new ConfigError('targets', p, `matches ${bad.path}: ${bad.kind}`);
    for (const h of hits) chosen.set(h.path, h);
  }
  return [...chosen.values()];
}

type Forwardable = { forward: (...a: never[]) => unknown };

/** A frozen base MoETransformerLM with mixtures of LoRA adapters at chosen Linears (see module doc). */
export class LoRAModel extends Module {
  readonly base: MoETransformerLM;
  readonly adapterNames: string[];
  readonly adapterOptions: ResolvedLoRAOptions[];
  readonly routerConfig: ResolvedRouterConfig;
  readonly targets: string[];
  /** Adapted sites in model order; site paths are Switchyard module names (`layers.0.self_attn.q_proj`). */
  readonly sites: LoRAMixtureLinear[];
  private readonly ctx: ForwardContext = { batch: 1, seq: 0 };
  private readonly patched: Forwardable[] = [];
  private readonly frozenBase: Tensor[];

  constructor(base: MoETransformerLM, opts: LoRAModelOptions) {
    super();
    if (!(base instanceof MoETransformerLM)) throw new ValueError('base', typeof base, 'must be a MoETransformerLM');
    if (typeof opts !== 'object' || opts === null) throw new ConfigError('options', opts, 'must be { targets, adapters, router? }');
    if (!Array.isArray(opts.adapters) || opts.adapters.length === 0) throw new ConfigError('adapters', opts.adapters, 'must list at least one adapter');
    const names = opts.adapters.map((a, i) => checkAdapterName(a?.name, `adapters[${i}].name`));
    const dup = names.find((n, i) => names.indexOf(n) !== i);
    if (dup) throw new ConfigError('adapters', dup, 'adapter names must be unique');
    this.adapterNames = names;
    this.adapterOptions = opts.adapters.map((a, i) => resolveLoRAOptions(a, `adapters[${i}]`));
    this.routerConfig = resolveRouterConfig(opts.router ?? (names.length === 1 ? { type: 'single' } : { type: 'topk', k: 2 }), names.length);
    const chosen = resolveTargets(base, opts.targets);
    if (chosen.some((c) => (c.linear as unknown as Record<string, unknown>).__lora)) throw new ValueError('base', 'adapted', 'this model already carries a LoRAModel: detach() it first');
    this.base = base;
    this.targets = [...opts.targets];
    const gen = new Generator(opts.seed ?? 0);
    const adapters = names.map((name, i) => ({ name, options: this.adapterOptions[i] }));
    this.sites = chosen.map((c) => this.registerModule(c.path, new LoRAMixtureLinear(c.path, c.linear, adapters, this.routerConfig, this.ctx, gen)));
    this.frozenBase = base.parameters().filter((p) => p.requiresGrad);
    for (const p of base.parameters()) freeze(p);
    base.eval();
    // Redirect the adapted Linears (and the FFNs that own adapted weights) to the mixture.
    const owners = new Set<ExpertFFN>();
    chosen.forEach((c, i) => {
      const site = this.sites[i];
      this.patch(c.linear, { forward: (x: Tensor) => site.forward(x), __lora: true });
      if (c.kind === 'ffn' && c.owner) owners.add(c.owner);
    });
    for (const f of owners) {
      this.patch(f, {
        forward: (x: Tensor, act: Activation) => {
          const a = f.w1.forward(x);
          const h = f.w3 ? gatedAct(a, f.w3.forward(x), act) : activation(a, act);
          return f.w2.forward(h);
        },
      });
    }
    const embed = base.embed_tokens;
    const ctx = this.ctx;
    this.patch(embed, {
      forward: (ids: IndexLike) => {
        const shape = ids instanceof Tensor ? ids.shape : [1, (ids as ArrayLike<number>).length];
        ctx.batch = shape.length === 2 ? shape[0] : 1;
        ctx.seq = shape.length === 2 ? shape[1] : shape[0];
        return Embedding.prototype.forward.call(embed, ids);
      },
    });
  }

  private patch(target: object, props: Record<string, unknown>): void {
    Object.assign(target, props);
    this.patched.push(target as Forwardable);
  }

  /** Undo the adaptation: the base's Linears run as before and its parameters require grad again. */
  detach(): void {
    for (const t of this.patched) {
      delete (t as Partial<Forwardable>).forward;
      delete (t as Record<string, unknown>).__lora;
    }
    this.patched.length = 0;
    for (const p of this.frozenBase) p.requiresGrad = true;
  }

  /** The model config of the base (recorded in training logs). */
  get config(): MoETransformerLM['config'] {
    return this.base.config;
  }

  /** Trainable tensors only (adapters and router rows that are not frozen). */
  override parameters(): Tensor[] {
    return super.parameters().filter((p) => p.requiresGrad);
  }

  /** Training mode for the adapters' dropout and router losses; the base always stays in eval mode. */
  override train(on = true): this {
    super.train(on);
    this.base.eval();
    return this;
  }

  /** Tensors of adapter `name` at every site: Switchyard site path → { A, B }. */
  adapterWeights(name: string): Map<string, { A: Tensor; B: Tensor }> {
    const e = this.adapterIndex(name);
    const out = new Map<string, { A: Tensor; B: Tensor }>();
    for (const s of this.sites) {
      const f = s.factors[e];
      if (f) out.set(s.path, f);
    }
    return out;
  }

  /** Index of an adapter by name (ConfigError when absent). */
  adapterIndex(name: string): number {
    const e = this.adapterNames.indexOf(name);
    if (e < 0) throw new ConfigError('adapter', name, `no such adapter (have ${this.adapterNames.join(', ')})`);
    return e;
  }

  /**
   * Copy an adapter's factors in (e.g. from a PEFT file): site path → { A [r, in], B [out, r] }.
   * Unknown sites and shapes that do not fit this model throw, naming the tensor; sites the
   * dictionary leaves out keep a zero update (B = 0).
   */
  loadAdapterWeights(name: string, weights: Map<string, { A: Tensor; B: Tensor }>): void {
    const e = this.adapterIndex(name);
    const byPath = new Map(this.sites.map((s) => [s.path, s]));
    const r = this.adapterOptions[e].rank;
    for (const [path, { A, B }] of weights) {
      const site = byPath.get(path);
      if (!site) throw new StateDictError(`${path}.lora_A.weight`, path, `adapter "${name}" has weights for a module this mixture does not adapt (targets: ${this.targets.join(', ')})`);
      const inF = site.base.inFeatures, outF = site.base.outFeatures;
      if (A.rank !== 2 || A.shape[0] !== r || A.shape[1] !== inF) throw new ShapeError(`${path}.lora_A.weight`, A.shape, `must be [${r}, ${inF}] (rank ${r} over this model's in-features): an adapter for another model's shapes?`);
      if (B.rank !== 2 || B.shape[0] !== outF || B.shape[1] !== r) throw new ShapeError(`${path}.lora_B.weight`, B.shape, `must be [${outF}, ${r}] (this model's out-features, rank ${r}): an adapter for another model's shapes?`);
    }
    for (const s of this.sites) {
      const f = s.factors[e];
      if (!f) continue;
      const src = weights.get(s.path);
      (f.A.data as Float32Array).set(src ? src.A.f32 : f.A.f32);
      if (src) (f.B.data as Float32Array).set(src.B.f32);
      else (f.B.data as Float32Array).fill(0);
    }
  }

  /** Freeze (or unfreeze) every adapter's A and B: router-only training. */
  setAdaptersTrainable(on: boolean, names: readonly string[] = this.adapterNames): void {
    for (const n of names) {
      const e = this.adapterIndex(n);
      for (const s of this.sites) {
        const f = s.factors[e];
        if (f) {
          f.A.requiresGrad = on;
          f.B.requiresGrad = on;
          if (!on) f.A.grad = f.B.grad = null;
        }
      }
    }
  }

  /** Freeze (or unfreeze) the router rows of the named adapters at every site: their routes cannot move. */
  setRouterRowsTrainable(on: boolean, names: readonly string[]): void {
    for (const n of names) {
      const e = this.adapterIndex(n);
      for (const s of this.sites) {
        const row = s.router.rows[e];
        if (row) {
          row.requiresGrad = on;
          if (!on) row.grad = null;
        }
      }
    }
  }

  /** Router state: site path → gate matrix [n, in] in adapter order (for saving a mixture). */
  routerWeights(): Record<string, Tensor> {
    const out: Record<string, Tensor> = {};
    for (const s of this.sites) if (s.router.rows.length) out[`${s.path}.router.weight`] = noGrad(() => s.router.weight()).detach();
    return out;
  }

  /** Copy router rows in for the named adapters from gate matrices saved with `names` as their row order. */
  loadRouterRows(dict: Record<string, Tensor>, names: readonly string[]): void {
    for (const s of this.sites) {
      if (!s.router.rows.length) continue;
      const key = `${s.path}.router.weight`;
      const w = dict[key];
      if (!w) throw new StateDictError(key, undefined, 'missing from the saved router');
      if (w.rank !== 2 || w.shape[0] !== names.length || w.shape[1] !== s.base.inFeatures) throw new ShapeError(key, w.shape, `must be [${names.length}, ${s.base.inFeatures}]`);
      names.forEach((n, i) => {
        const e = this.adapterIndex(n);
        (s.router.rows[e].data as Float32Array).set(w.f32.subarray(i * s.base.inFeatures, (i + 1) * s.base.inFeatures));
      });
    }
  }

  /** The base model's forward with the mixtures active. */
  forward(ids: Tensor, opts?: { cache?: KVCache }): LMOutput {
    return this.base.forward(ids, opts);
  }

  /** Mean next-token cross-entropy (ignoreIndex -100); `out.moe` reports each site's routing stats, auxLoss the routers' balancing losses. */
  loss(ids: Tensor, targets: IndexLike): { loss: Tensor; out: { auxLoss: Tensor; moe: Array<{ layer: number; out: { stats: AdapterRoute['stats'] } }>; logits: Tensor } } {
    const out = this.forward(ids);
    const [B, T] = ids.shape;
    const loss = crossEntropy(reshape(out.logits, [B * T, this.base.config.vocabSize]), targets);
    return { loss, out: { auxLoss: this.auxLoss(), moe: this.siteStats(), logits: out.logits } };
  }

  /** Σ of the sites' router balancing losses from the last forward. */
  auxLoss(): Tensor {
    let aux: Tensor | null = null;
    for (const s of this.sites) if (s.last && s.last.auxLoss.requiresGrad) aux = aux ? add(aux, s.last.auxLoss) : s.last.auxLoss;
    return aux ?? Tensor.scalar(0);
  }

  /** Per-site routing stats of the last forward (empty for a plain single adapter). */
  siteStats(): Array<{ layer: number; out: { stats: AdapterRoute['stats'] } }> {
    if (this.routerConfig.type === 'single') return [];
    return this.sites.flatMap((s, i) => (s.last ? [{ layer: i, out: { stats: s.last.stats } }] : []));
  }

  /**
   * Per token of the last forward, the total gate each adapter got summed over the sites, [T, n],
   * and the adapter with the most (what `sample` and `inspect` show as "the adapter this token used").
   */
  adapterUsage(): { weights: Float32Array; top: Int32Array; tokens: number } {
    const n = this.adapterNames.length;
    const T = this.sites[0]?.last ? this.sites[0].last.experts.length / this.sites[0].last.k : 0;
    const weights = new Float32Array(T * n);
    for (const s of this.sites) {
      const r = s.last;
      if (!r) continue;
      const g = r.gates ? r.gates.f32 : null;
      for (let i = 0; i < r.experts.length; i++) weights[Math.floor(i / r.k) * n + r.experts[i]] += g ? g[i] : 1;
    }
    const top = new Int32Array(T);
    for (let t = 0; t < T; t++) {
      let best = 0;
      for (let e = 1; e < n; e++) if (weights[t * n + e] > weights[t * n + best]) best = e;
      top[t] = best;
    }
    return { weights, top, tokens: T };
  }

  /** Sample like MoETransformerLM.generate; sequence routers keep the prompt's choice for the whole continuation. */
  generate(prompt: number[], maxNewTokens: number, opts?: { temperature?: number; topP?: number; seed?: number }): number[] {
    for (const s of this.sites) {
      s.router.pinning = true;
      s.router.pinned = null;
    }
    try {
      return this.base.generate(prompt, maxNewTokens, opts);
    } finally {
      for (const s of this.sites) {
        s.router.pinning = false;
        s.router.pinned = null;
      }
    }
  }

  /** Trainable parameter count (adapters and router rows that are not frozen). */
  trainableParameterCount(): number {
    return this.parameters().reduce((a, p) => a + p.size, 0);
  }
}
