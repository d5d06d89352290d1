/**
 * Expert parallelism over NATS, end to end: a nats-server on a random loopback port, expert
 * servers as `switchyard expert-server` child processes, the router (RemoteExperts) in this
 * process. Outputs equal the same model run locally (bit for bit); a replica killed mid-run
 * (every forward still exact); all replicas gone (policy 'fail' names layer and expert, 'drop'
 * equals the model with those experts' contributions zeroed, a stopped replica times out instead
 * of hanging); a restarted server is used again by the same router; malformed and oversized
 * messages are answered with errors and logged while the server keeps serving; the stats
 * endpoint and service discovery; `switchyard serve --remote-experts` over HTTP.
 * Every wait is bounded; afterAll kills every process started here.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, RequestStrategy, ServiceError, type NatsConnection } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ExpertSource } from '../src/moe/layer.js';
import type { MoETransformerLM } from '../src/nn/transformer.js';
import { decodeBatch, decodeMessage, encodeBatch, encodeMessage, KIND_BATCH_FORWARD, KIND_BATCH_REPLY, KIND_FORWARD, KIND_REPLY } from '../src/remote/protocol.js';
import { RemoteExpertError, RemoteExperts } from '../src/remote/remote-experts.js';
import { defaultModelId, directSubject, expertSubject, SERVICE_NAME, statsSubject } from '../src/remote/spec.js';
import { writeRandomCheckpoint } from '../src/serve/fixture.js';
import { loadServingModel, type ServingModel } from '../src/serve/model-loader.js';
import { noGrad } from '../src/tensor/autodiff.js';
import { Tensor } from '../src/tensor/tensor.js';
import { CLI, kill, startExpertServer, startNats, stopAll, type ExpertServerProc, type Nats } from './remote-helpers.js';

const MODEL = {
  dModel: 32,
  nLayers: 3,
  nHeads: 2,
  dFF: 48,
  maxSeqLen: 64,
  moe: { numExperts: 4, router: { type: 'topk' as const, k: 2 } },
  seed: 3,
};
const BATCH = 4, SEQ = 16; // 64 tokens per forward

let dir: string;
let run: string;
let modelId: string;
let nats: Nats;
let reference: MoETransformerLM;
const opened: Array<{ close(): Promise<void> }> = [];

function batch(seed: number): Tensor {
  const ids = Array.from({ length: BATCH * SEQ }, (_, i) => (i * 31 + seed * 17 + ((i * i) % 7)) % 90);
  return Tensor.indices(ids, [BATCH, SEQ]);
}

function logits(model: MoETransformerLM, x: Tensor): number[] {
  return Array.from(noGrad(() => model.forward(x)).logits.f32);
}

/** A router: the model with deferred experts, RemoteExperts attached. */
async function router(opts: Partial<Parameters<typeof RemoteExperts.connect>[1]> = {}, wait = true): Promise<{ served: ServingModel; remote: RemoteExperts }> {
  const served = await loadServingModel(run, { expertMemory: 'all' });
  opened.push(served);
  const remote = await RemoteExperts.connect(served.model, { servers: nats.url, modelId, timeoutMs: 10_000, discoveryIntervalMs: 60_000, localSource: served.store ?? undefined, ...opts });
  opened.unshift(remote);
  remote.attach();
  if (wait) await remote.waitForExperts(20_000);
  return { served, remote };
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'switchyard-remote-'));
  run = await writeRandomCheckpoint(join(dir, 'run'), { model: MODEL, embeddingStd: 1 });
  const local = await loadServingModel(run);
  reference = local.model;
  modelId = defaultModelId(local.source);
  nats = await startNats();
}, 60_000);

afterAll(async () => {
  for (const o of opened) await o.close().catch(() => undefined);
  await stopAll();
  if (dir) await rm(dir, { recursive: true, force: true });
}, 60_000);

describe('remote experts over NATS', () => {
  let a: ExpertServerProc, b: ExpertServerProc;

  it('gives exactly the local outputs, all experts remote and mixed local/remote', async () => {
    [a, b] = await Promise.all([startExpertServer(run, 'all', nats.url), startExpertServer(run, '*:0-3', nats.url)]);
    const { remote, served } = await router();
    const report = await remote.discover();
    expect(report.instances.map((i) => i.id).sort()).toEqual([a.id, b.id].sort());
    for (let s = 0; s < 3; s++) expect(logits(served.model, batch(s))).toEqual(logits(reference, batch(s)));
    const st = remote.stats();
    expect(st.failures).toBe(0);
    expect(st.remoteRows).toBe(3 * 3 * BATCH * SEQ * 2); // forwards × layers × tokens × k
    expect(st.bytesSent).toBeGreaterThanOrEqual(st.remoteRows * MODEL.dModel * 4);
    // Both replicas served (replicas taken in turn).
    const load = await Promise.all([a, b].map((p) => serverStats(p.id)));
    for (const l of load) expect(l.requests).toBeGreaterThan(0);

    const mixed = await router({ local: '0:0-1,2:*' });
    for (let s = 0; s < 2; s++) expect(logits(mixed.served.model, batch(s))).toEqual(logits(reference, batch(s)));
    expect(mixed.remote.stats().localRows).toBeGreaterThan(0);
    expect(mixed.remote.stats().remoteRows).toBeGreaterThan(0);
  }, 120_000);

  it('serves completions over HTTP with --remote-experts identical to local serving', async () => {
    const start = async (extra: string[]): Promise<{ url: string; proc: ReturnType<typeof spawn> }> => {
      const proc = spawn(process.execPath, [CLI, 'serve', run, '--port', '0', ...extra], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
      proc.stderr!.on('data', (d: Buffer) => (out += d.toString()));
      const deadline = Date.now() + 60_000;
      while (!/listening on (http:\/\/[\d.:]+)/.test(out)) {
        if (Date.now() > deadline || proc.exitCode !== null) {
          proc.kill('SIGKILL');
          throw new Error(`serve did not start: ${out}`);
        }
        await new Promise((r) => setTimeout(r, 50));
      }
      return { url: /listening on (http:\/\/[\d.:]+)/.exec(out)![1], proc };
    };
    const [loc, rem] = await Promise.all([start([]), start(['--remote-experts', nats.url])]);
    try {
      const ask = async (url: string): Promise<{ choices: Array<{ text: string }> }> => {
        const r = await fetch(`${url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: 'Call me Ishmael.', max_tokens: 12, temperature: 0 }), signal: AbortSignal.timeout(60_000) });
        if (r.status !== 200) throw new Error(`${url}: ${r.status} ${await r.text()}`);
        return (await r.json()) as { choices: Array<{ text: string }> };
      };
      const [x, y] = await Promise.all([ask(loc.url), ask(rem.url)]);
      expect(x.choices[0].text.length).toBeGreaterThan(0);
      expect(y.choices[0].text).toBe(x.choices[0].text);
      // The remote experts' counters are exported: requests went out, none failed.
      const metrics = await (await fetch(`${rem.url}/metrics`, { signal: AbortSignal.timeout(10_000) })).text();
      const sample = (name: string): number => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(metrics)?.[1] ?? NaN);
      expect(sample('switchyard_remote_expert_requests_total')).toBeGreaterThan(0);
      expect(sample('switchyard_remote_expert_failures_total')).toBe(0);
      expect(metrics).toMatch(/switchyard_remote_expert_rows_total\{where="remote"\} [1-9]/);
      const health = (await (await fetch(`${rem.url}/healthz`, { signal: AbortSignal.timeout(10_000) })).json()) as { remoteExperts?: { onFailure: string; requests: number } };
      expect(health.remoteExperts?.onFailure).toBe('fail');
      expect(health.remoteExperts?.requests).toBeGreaterThan(0);
      expect((await (await fetch(`${loc.url}/metrics`)).text())).not.toMatch(/switchyard_remote_expert/);
    } finally {
      await Promise.all([kill(loc.proc), kill(rem.proc)]);
    }
  }, 120_000);

  it('answers every forward exactly while one replica is killed mid-run', async () => {
    // A request in flight when its replica dies is only noticed by its timeout, then retried.
    const { remote, served } = await router({ timeoutMs: 2000 });
    const want = [0, 1, 2].map((s) => logits(reference, batch(s)));
    // The kill comes from another process while this thread is blocked inside forwards.
    const killer = spawn('sh', ['-c', `sleep 0.3; kill -9 ${a.proc.pid}`], { stdio: 'ignore' });
    let after = 0;
    for (let i = 0; i < 400 && after < 6; i++) {
      expect(logits(served.model, batch(i % 3))).toEqual(want[i % 3]);
      await new Promise((r) => setImmediate(r));
      if (a.proc.exitCode !== null || a.proc.signalCode !== null) after++;
    }
    await kill(killer);
    expect(after).toBe(6);
    const st = remote.stats();
    expect(st.failures).toBe(0);
    expect(st.retries).toBeGreaterThan(0); // requests aimed at the dead replica went to the other
  }, 120_000);

  it("with every replica gone: 'fail' names the layer and expert, 'drop' zeroes exactly those contributions; a stopped replica times out", async () => {
    const fail = await router();
    const drop = await router({ onFailure: 'drop' });
    await kill(b.proc);
    const rep = await fail.remote.discover();
    expect(rep.instances).toEqual([]);

    const t0 = Date.now();
    let err: unknown;
    try {
      logits(fail.served.model, batch(0));
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(RemoteExpertError);
    expect((err as RemoteExpertError).layer).toBe(0); // the first MoE layer
    expect((err as Error).message).toMatch(/layer 0 expert [0-3]/);
    expect(Date.now() - t0).toBeLessThan(15_000);

    // 'drop': the MoE layers contribute nothing (the residual carries every token), counted.
    const zero: ExpertSource = { runExperts: (_l, xs) => new Tensor(new Float32Array(xs.size), xs.shape) };
    const dropRef = (await loadServingModel(run)).model;
    for (const l of dropRef.moeLayers()) l.setExpertSource(zero);
    const dropped = logits(drop.served.model, batch(1));
    expect(dropped).toEqual(logits(dropRef, batch(1)));
    expect(dropped).not.toEqual(logits(reference, batch(1)));
    const ds = drop.remote.stats();
    expect(ds.droppedAssignments).toBe(MODEL.nLayers * BATCH * SEQ * 2);
    expect(ds.experts.reduce((s, e) => s + e.droppedRows, 0)).toBe(ds.droppedAssignments);

    // A replica that is up but never answers (SIGSTOP): each request times out and is retried once; no hang.
    const c = await startExpertServer(run, 'all', nats.url);
    const slow = await router({ timeoutMs: 300 });
    c.proc.kill('SIGSTOP');
    try {
      const t1 = Date.now();
      expect(() => logits(slow.served.model, batch(2))).toThrow(/no reply within 300 ms/);
      expect(Date.now() - t1).toBeLessThan(2 * 300 + 5000);
      const slowDrop = await router({ timeoutMs: 300, onFailure: 'drop' }, false);
      expect(logits(slowDrop.served.model, batch(2))).toEqual(logits(dropRef, batch(2)));
      expect(slowDrop.remote.stats().timeouts).toBeGreaterThan(0);
    } finally {
      await kill(c.proc);
    }

    // A server started again: the same routers use it, without restarting them.
    const d = await startExpertServer(run, 'all', nats.url);
    expect(logits(fail.served.model, batch(0))).toEqual(logits(reference, batch(0)));
    expect(logits(drop.served.model, batch(1))).toEqual(logits(reference, batch(1)));
    expect((await serverStats(d.id)).requests).toBeGreaterThan(0);
    await kill(d.proc);
  }, 180_000);

  it('splits blocks larger than a server accepts (--max-rows) into several requests, still exact', async () => {
    const f = await startExpertServer(run, 'all', nats.url, ['--max-rows', '8']);
    try {
      const { remote, served } = await router();
      expect(logits(served.model, batch(0))).toEqual(logits(reference, batch(0)));
      const st = remote.stats();
      expect(st.failures).toBe(0);
      // 64 tokens × k=2 = 128 rows per layer in blocks of at most 8 rows: at least 16 requests per layer.
      expect(st.requests).toBeGreaterThanOrEqual(MODEL.nLayers * 16);
      expect((await serverStats(f.id)).rejected).toBe(0);
    } finally {
      await kill(f.proc);
    }
  }, 120_000);

  it('rejects malformed and oversized messages with an error, logs them, and keeps serving', async () => {
    const e = await startExpertServer(run, '0:0-1', nats.url, ['--max-rows', '8']);
    const nc = await connect({ servers: nats.url });
    try {
      const ask = async (subject: string, data: Uint8Array): Promise<{ code: number; text: string; data: Uint8Array }> => {
        const m = await nc.request(subject, data, { timeout: 10_000 });
        const se = ServiceError.toServiceError(m);
        return { code: se?.code ?? 0, text: se?.message ?? '', data: m.data };
      };
      const subj = expertSubject(modelId, 0, 0);
      const rows = (n: number, cols = MODEL.dModel): Uint8Array => encodeMessage({ kind: KIND_FORWARD, requestId: 1, layer: 0, expert: 0, rows: n, cols }, new Float32Array(n * cols).map((_, i) => Math.sin(i)));
      const cases: Array<[string, Uint8Array, number, RegExp]> = [
        ['garbage', new Uint8Array([1, 2, 3]), 400, /bytes/],
        ['JSON', new TextEncoder().encode(JSON.stringify({ rows: [[1, 2, 3]], layer: 0, expert: 0, pad: 'x'.repeat(40) })), 400, /magic/],
        ['too many rows', rows(9), 400, /rows=9.*limit of 8/],
        ['wrong width', rows(2, MODEL.dModel + 1), 400, /cols=33/],
        ['truncated', rows(4).subarray(0, 100), 400, /bytes=100/],
        ['near the size limit', new Uint8Array(1000 * 1000).fill(255), 400, /bytes|magic/],
        ['reply kind', encodeMessage({ kind: KIND_REPLY, requestId: 1, layer: 0, expert: 0, rows: 1, cols: MODEL.dModel }, new Float32Array(MODEL.dModel)), 400, /kind/],
        ['expert not hosted', encodeMessage({ kind: KIND_FORWARD, requestId: 1, layer: 0, expert: 3, rows: 1, cols: MODEL.dModel }, new Float32Array(MODEL.dModel)), 404, /not hosted/],
        ['mismatched subject', encodeMessage({ kind: KIND_FORWARD, requestId: 1, layer: 0, expert: 1, rows: 1, cols: MODEL.dModel }, new Float32Array(MODEL.dModel)), 400, /subject/],
      ];
      for (const [name, data, code, re] of cases) {
        const subject = name === 'expert not hosted' ? directSubject(modelId, e.id) : subj;
        const r = await ask(subject, data);
        expect(r.code, name).toBe(code);
        expect(r.text, name).toMatch(re);
      }
      nc.publish(subj, new Uint8Array([9, 9, 9])); // no reply subject: logged, nothing to answer
      await nc.flush();
      // Still serving, and correctly: expert 0 of layer 0 on 5 rows equals the local expert.
      const x = new Float32Array(5 * MODEL.dModel).map((_, i) => Math.cos(i * 0.37));
      const r = await ask(subj, encodeMessage({ kind: KIND_FORWARD, requestId: 77, layer: 0, expert: 0, rows: 5, cols: MODEL.dModel }, x));
      expect(r.code).toBe(0);
      const rep = decodeMessage(r.data);
      expect([rep.kind, rep.requestId, rep.rows, rep.cols]).toEqual([KIND_REPLY, 77, 5, MODEL.dModel]);
      const layer0 = reference.moeLayers()[0];
      const want = noGrad(() => layer0.experts.items[0].forward(new Tensor(x, [5, MODEL.dModel]), layer0.config.expert.activation));
      expect(Array.from(rep.data)).toEqual(Array.from(want.f32));
      expect(e.proc.exitCode).toBeNull();
      const st = await serverStats(e.id);
      expect(st.rejected).toBe(cases.length + 1);
      expect(st.requests).toBe(1);
      expect(st.load['0:0']).toEqual({ requests: 1, rows: 5 });
      await new Promise((res) => setTimeout(res, 100));
      expect(e.stderr()).toMatch(/rejected a 3-byte message/);
      expect(e.stderr().match(/rejected/g)!.length).toBe(cases.length + 1);

      // Batched frames (the instance's direct subject): every block answered by one grouped call,
      // each exactly its local expert; malformed ones rejected the same way.
      const direct = directSubject(modelId, e.id);
      const d = MODEL.dModel;
      const xb = new Float32Array(7 * d).map((_, i) => Math.sin(i * 0.11));
      const bblocks = [{ expert: 0, rows: 3 }, { expert: 1, rows: 4 }];
      const batchOf = (bs: Array<{ expert: number; rows: number }>, over: Partial<{ kind: number; cols: number }> = {}): Uint8Array => {
        const cols = over.cols ?? d;
        return encodeBatch({ kind: over.kind ?? KIND_BATCH_FORWARD, requestId: 78, layer: 0, cols }, bs, new Float32Array(bs.reduce((n, b) => n + b.rows, 0) * cols).fill(0.5));
      };
      const rb = await ask(direct, encodeBatch({ kind: KIND_BATCH_FORWARD, requestId: 78, layer: 0, cols: d }, bblocks, xb));
      expect(rb.code).toBe(0);
      const repb = decodeBatch(rb.data);
      expect([repb.kind, repb.requestId, repb.layer, repb.rows, repb.cols]).toEqual([KIND_BATCH_REPLY, 78, 0, 7, d]);
      expect(repb.blocks).toEqual(bblocks);
      const one = (ex: number, r0: number, r1: number): number[] => Array.from(noGrad(() => layer0.experts.items[ex].forward(new Tensor(xb.slice(r0 * d, r1 * d), [r1 - r0, d]), layer0.config.expert.activation)).f32);
      expect(Array.from(repb.data)).toEqual([...one(0, 0, 3), ...one(1, 3, 7)]);
      const batchCases: Array<[string, string, Uint8Array, number, RegExp]> = [
        ['experts out of order', direct, batchOf([{ expert: 1, rows: 1 }, { expert: 0, rows: 1 }]), 400, /expert=0.*increasing/],
        ['an expert not hosted', direct, batchOf([{ expert: 0, rows: 1 }, { expert: 3, rows: 1 }]), 404, /0:3 is not hosted/],
        ['too many rows in all', direct, batchOf([{ expert: 0, rows: 5 }, { expert: 1, rows: 4 }]), 400, /rows=9.*limit of 8/],
        ['wrong width', direct, batchOf([{ expert: 0, rows: 1 }], { cols: d + 1 }), 400, /cols=33/],
        ['reply kind', direct, batchOf([{ expert: 0, rows: 1 }], { kind: KIND_BATCH_REPLY }), 400, /kind/],
        ['truncated', direct, batchOf(bblocks).subarray(0, 60), 400, /bytes=60/],
        ['on a per-expert subject', subj, batchOf([{ expert: 0, rows: 1 }]), 400, /direct subject/],
      ];
      for (const [name, subject, data, code, re] of batchCases) {
        const r2 = await ask(subject, data);
        expect(r2.code, name).toBe(code);
        expect(r2.text, name).toMatch(re);
      }
      const st2 = await serverStats(e.id);
      expect(st2.rejected).toBe(cases.length + 1 + batchCases.length);
      expect(st2.requests).toBe(2); // one per-expert message, one batched frame
      expect(st2.load['0:0']).toEqual({ requests: 2, rows: 8 });
      expect(st2.load['0:1']).toEqual({ requests: 1, rows: 4 });
      expect(e.proc.exitCode).toBeNull();
      // Discovery: the service lists the instance, its model and its experts.
      const infos = [];
      for await (const info of await nc.services.client({ strategy: RequestStrategy.Timer, maxWait: 500 }).info(SERVICE_NAME)) infos.push(info);
      const mine = infos.find((i) => i.id === e.id)!;
      expect(mine.metadata).toMatchObject({ model: modelId, dModel: String(MODEL.dModel), experts: '0:0-1', maxRows: '8' });
      expect(mine.endpoints.map((p) => p.name).sort()).toEqual(['0-0', '0-1', 'direct', 'stats', 'step']);
    } finally {
      await nc.close();
      await kill(e.proc);
    }
  }, 120_000);
});

let statsConn: NatsConnection | null = null;
/** A server's `stats` endpoint. */
async function serverStats(id: string): Promise<{ requests: number; rejected: number; load: Record<string, { requests: number; rows: number }> }> {
  statsConn ??= await connect({ servers: nats.url });
  opened.push({ close: async () => void (await statsConn?.close()) });
  const m = await statsConn.request(statsSubject(modelId, id), new Uint8Array(0), { timeout: 10_000 });
  return JSON.parse(new TextDecoder().decode(m.data)) as { requests: number; rejected: number; load: Record<string, { requests: number; rows: number }> };
}
