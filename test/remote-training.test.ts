/**
 * Fine-tuning through remote experts (issue 7, stretch): expert servers started with --train keep
 * each training forward's activations, answer backward requests with dX and accumulate their
 * own weight gradients, and apply their optimizer on `step`. Checked against the same model
 * trained in one process: every router-side gradient (embeddings, attention, norms, routers)
 * matches, and after one SGD step on both, the outputs match. Bounded waits; processes killed.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SGD } from '../src/optim/sgd.js';
import { RemoteExperts } from '../src/remote/remote-experts.js';
import { defaultModelId } from '../src/remote/spec.js';
import { writeRandomCheckpoint } from '../src/serve/fixture.js';
import { loadServingModel } from '../src/serve/model-loader.js';
import { noGrad } from '../src/tensor/autodiff.js';
import { Tensor } from '../src/tensor/tensor.js';
import type { MoETransformerLM } from '../src/nn/transformer.js';
import { startExpertServer, startNats, stopAll, type Nats } from './remote-helpers.js';

const MODEL = { dModel: 32, nLayers: 2, nHeads: 2, dFF: 48, maxSeqLen: 32, moe: { numExperts: 4, router: { type: 'topk' as const, k: 2 } }, seed: 5 };
const LR = 0.05;
let dir: string;
let run: string;
let nats: Nats;
const closers: Array<() => Promise<void>> = [];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'switchyard-remote-train-'));
  run = await writeRandomCheckpoint(join(dir, 'run'), { model: MODEL, embeddingStd: 1 });
  nats = await startNats();
}, 60_000);

afterAll(async () => {
  for (const c of closers) await c().catch(() => undefined);
  await stopAll();
  if (dir) await rm(dir, { recursive: true, force: true });
}, 60_000);

/** max |a-b| / max(|b|, 1e-3) over the arrays. */
function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0, den = 1e-3;
  for (let i = 0; i < b.length; i++) {
    num = Math.max(num, Math.abs(a[i] - b[i]));
    den = Math.max(den, Math.abs(b[i]));
  }
  return num / den;
}

const isExpertWeight = (name: string): boolean => /\.mlp\.experts\./.test(name);

describe('fine-tuning through remote experts', () => {
  it('gives the local gradients and, after one SGD step on both sides, the local outputs', async () => {
    await Promise.all(['*:0-1', '*:2-3'].map((spec) => startExpertServer(run, spec, nats.url, ['--train', '--optimizer', 'sgd', '--lr', String(LR)])));
    const local = (await loadServingModel(run)).model;
    const served = await loadServingModel(run, { expertMemory: 'all' });
    closers.push(() => served.close());
    const remote = await RemoteExperts.connect(served.model, { servers: nats.url, modelId: defaultModelId(served.source), timeoutMs: 10_000, discoveryIntervalMs: 60_000 });
    closers.unshift(() => remote.close());
    remote.attach().train();
    await remote.waitForExperts(20_000);
    const routerModel: MoETransformerLM = served.model;

    const B = 2, T = 16;
    const ids = Tensor.indices(Array.from({ length: B * T }, (_, i) => (i * 13 + 5) % 90), [B, T]);
    const targets = Tensor.indices(Array.from({ length: B * T }, (_, i) => (i * 29 + 1) % 90));
    const before = Array.from(noGrad(() => local.forward(ids)).logits.f32);
    for (const m of [local, routerModel]) {
      const { loss, out } = m.loss(ids, targets);
      loss.add(out.auxLoss).backward();
    }
    // Router-side gradients: every non-expert parameter, against the single-process model.
    const localGrads = new Map(local.namedParameters().map(([n, t]) => [n, t.grad]));
    let compared = 0;
    for (const [name, t] of routerModel.namedParameters()) {
      if (isExpertWeight(name)) continue;
      const want = localGrads.get(name);
      expect(t.grad, name).not.toBeNull();
      expect(relErr(t.grad!.f32, want!.f32), name).toBeLessThan(1e-4);
      compared++;
    }
    expect(compared).toBeGreaterThan(10);
    expect(remote.stats().failures).toBe(0);

    // One SGD step: locally on everything; remotely on the router's parameters plus the servers' step.
    new SGD(local.parameters(), { lr: LR }).step();
    new SGD(routerModel.namedParameters().filter(([n]) => !isExpertWeight(n)).map(([, t]) => t), { lr: LR }).step();
    const stepped = await remote.step();
    expect(stepped.instances).toHaveLength(2);

    remote.train(false);
    const after = Array.from(noGrad(() => local.forward(ids)).logits.f32);
    const got = Array.from(noGrad(() => routerModel.forward(ids)).logits.f32);
    expect(relErr(after, before)).toBeGreaterThan(1e-3); // the step changed the model
    expect(relErr(got, after)).toBeLessThan(1e-4);
  }, 180_000);
});
