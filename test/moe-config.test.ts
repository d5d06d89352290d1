/**
 * MoE config validation and state-dict loading errors: every invalid value throws a typed error
 * (ConfigError / StateDictError / ShapeError) whose field and message name what was wrong.
 */
import { describe, expect, it } from 'vitest';
import { ConfigError, MoELayer, ShapeError, StateDictError, SwitchyardError, Tensor, type MoEConfig } from '../src/index.js';

const base = (): MoEConfig => ({
  dModel: 4,
  dFF: 6,
  numExperts: 4,
  expert: { activation: 'silu', gated: true },
  router: { type: 'topk', k: 2 },
});

/** Build a layer from a config patched by `patch`; return the error thrown (or fail). */
function errorOf(patch: (c: MoEConfig) => void): SwitchyardError {
  const c = base();
  patch(c);
  try {
    new MoELayer(c);
  } catch (e) {
    return e as SwitchyardError;
  }
  throw new Error(`no error for ${JSON.stringify(c)}`);
}

function expectConfigError(patch: (c: MoEConfig) => void, field: string, value: unknown): void {
  const e = errorOf(patch);
  expect(e).toBeInstanceOf(ConfigError);
  expect(e.field).toBe(field);
  expect(e.message).toContain(field);
  if (Number.isNaN(value)) expect(e.value).toBeNaN();
  else expect(e.value).toEqual(value);
  expect(e.message).toContain(String(value));
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Loose = any;

describe('MoE config errors', () => {
  it('a valid base config builds', () => {
    expect(() => new MoELayer(base())).not.toThrow();
  });

  it('unknown router type', () => {
    expectConfigError((c) => ((c.router as Loose).type = 'hash'), 'router.type', 'hash');
    expectConfigError((c) => ((c.router as Loose).type = undefined), 'router.type', undefined);
  });

  it('k > numExperts, k < 1, non-integer k', () => {
    expectConfigError((c) => ((c.router as Loose).k = 5), 'router.k', 5);
    expectConfigError((c) => ((c.router as Loose).k = 0), 'router.k', 0);
    expectConfigError((c) => ((c.router as Loose).k = 1.5), 'router.k', 1.5);
  });

  it('capacityFactor <= 0 (token choice and expert choice), and non-finite', () => {
    for (const cf of [0, -0.5, Number.NaN, Infinity]) {
      expectConfigError((c) => ((c.router as Loose).capacityFactor = cf), 'router.capacityFactor', cf);
      expectConfigError((c) => (c.router = { type: 'expert-choice', capacityFactor: cf }), 'router.capacityFactor', cf);
    }
  });

  it('missing slotsPerExpert for Soft MoE, and a bad one', () => {
    expectConfigError((c) => (c.router = { type: 'soft' } as Loose), 'router.slotsPerExpert', undefined);
    expectConfigError((c) => (c.router = { type: 'soft', slotsPerExpert: 0 }), 'router.slotsPerExpert', 0);
  });

  it('numExperts out of 2..1024', () => {
    for (const n of [0, 1, 1025, 2.5, -3]) expectConfigError((c) => (c.numExperts = n), 'numExperts', n);
    expect(() => new MoELayer({ ...base(), numExperts: 2, router: { type: 'topk', k: 1 } })).not.toThrow();
  });

  it('bad activation, bad gated flag', () => {
    expectConfigError((c) => ((c.expert as Loose).activation = 'tanh'), 'expert.activation', 'tanh');
    expectConfigError((c) => ((c.expert as Loose).gated = 'yes'), 'expert.gated', 'yes');
  });

  it('losses that do not apply to the router are rejected, not silently ignored', () => {
    expectConfigError((c) => ((c.router = { type: 'expert-choice' }), (c.losses = { importance: 0.1 })), 'losses.importance', 0.1);
    expectConfigError((c) => (c.losses = { load: 0.1 }), 'losses.load', 0.1); // load needs gaussian noise
    expect(errorOf((c) => ((c.router = { type: 'soft', slotsPerExpert: 1 }), (c.losses = { balance: 0.1 })))).toBeInstanceOf(ConfigError);
    expectConfigError((c) => (c.losses = { zLoss: -1 }), 'losses.zLoss', -1);
  });

  it('bad drop policy, capacity scope and noise', () => {
    expectConfigError((c) => ((c.router as Loose).dropPolicy = 'random'), 'router.dropPolicy', 'random');
    expectConfigError((c) => ((c.router as Loose).capacityScope = 'token'), 'router.capacityScope', 'token');
    expectConfigError((c) => ((c.router as Loose).noise = { type: 'dropout' }), 'router.noise.type', 'dropout');
    expectConfigError((c) => ((c.router as Loose).noise = { type: 'jitter', eps: 1 }), 'router.noise.eps', 1);
  });
});

describe('MoE loadStateDict errors', () => {
  const layer = (): MoELayer => new MoELayer(base());
  const fullDict = (): Record<string, Tensor> => {
    const out: Record<string, Tensor> = {};
    for (const [n, t] of layer().namedParameters()) out[n] = Tensor.from(t.f32, t.shape);
    return out;
  };

  it('the Hugging Face-style names', () => {
    const names = layer().namedParameters().map(([n]) => n);
    expect(names).toContain('gate.weight');
    for (let e = 0; e < 4; e++) for (const w of ['w1', 'w2', 'w3']) expect(names).toContain(`experts.${e}.${w}.weight`);
    expect(names).toHaveLength(1 + 4 * 3);
    const shared = new MoELayer({ ...base(), numSharedExperts: 1, router: { type: 'topk', k: 2, noise: { type: 'gaussian' } } });
    const sn = shared.namedParameters().map(([n]) => n);
    expect(sn).toContain('shared_experts.0.w1.weight');
    expect(sn).toContain('gate.noise.weight');
  });

  it('missing and unexpected keys are all listed in one StateDictError', () => {
    const dict = fullDict();
    delete dict['gate.weight'];
    delete dict['experts.2.w3.weight'];
    dict['experts.4.w1.weight'] = Tensor.zeros([6, 4]);
    dict['router.weight'] = Tensor.zeros([4, 4]);
    const l = layer();
    let err: unknown;
    try {
      l.loadStateDict(dict);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(StateDictError);
    const msg = (err as Error).message;
    for (const k of ['gate.weight', 'experts.2.w3.weight', 'experts.4.w1.weight', 'router.weight']) expect(msg).toContain(k);
    expect(msg).toMatch(/missing/);
    expect(msg).toMatch(/unexpected/);
    expect((err as StateDictError).value).toEqual(expect.arrayContaining(['gate.weight', 'experts.2.w3.weight', 'experts.4.w1.weight', 'router.weight']));
  });

  it('a shape mismatch names the key and both shapes', () => {
    const dict = fullDict();
    dict['experts.1.w2.weight'] = Tensor.zeros([6, 4]); // transposed: should be [4, 6]
    let err: unknown;
    try {
      layer().loadStateDict(dict);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(SwitchyardError);
    expect(err).toBeInstanceOf(ShapeError);
    const msg = (err as Error).message;
    expect(msg).toContain('experts.1.w2.weight');
    expect(msg).toContain('[4,6]');
    expect(msg).toContain('[6,4]');
  });

  it('a Soft MoE gate has numExperts·slotsPerExpert rows', () => {
    const soft = new MoELayer({ ...base(), router: { type: 'soft', slotsPerExpert: 3 } });
    const dict: Record<string, Tensor> = {};
    for (const [n, t] of soft.namedParameters()) dict[n] = Tensor.from(t.f32, t.shape);
    expect(dict['gate.weight'].shape).toEqual([12, 4]);
    dict['gate.weight'] = Tensor.zeros([4, 4]);
    expect(() => soft.loadStateDict(dict)).toThrow(/gate\.weight/);
  });
});
