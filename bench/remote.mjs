// Expert parallelism over NATS (issue 7). Not run in CI.
//
// The demo model (random weights, token-dependent routing) runs its forward pass over a batch of
// B×T tokens per step: all in this process ("local"), then with every routed expert in 2 and in
// 4 `switchyard expert-server` processes on loopback (experts split e mod P; each process hosts
// that share of every layer), through a nats-server started here. Configurations alternate
// round by round; medians are reported with the ratio to local, bytes moved per token (requests
// + replies) and NATS requests per step. A router sends each expert-server instance one batched
// frame per layer (all the blocks it computes), so requests per step = layers x instances; the
// 1024-token row shows how a larger batch hides those round trips. Outputs are checked equal to local before timing. The expert servers
// split this machine's cores (SWITCHYARD_THREADS = cores / P, at least 1): their kernel threads
// spin briefly between jobs, and P processes each spinning on every core would fight.
//
// Usage: node bench/remote.mjs [--quick]   (env: BENCH_ROUNDS, BENCH_STEPS)
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DEMO_LM, RemoteExperts, Tensor, loadServingModel, noGrad, writeRandomCheckpoint } from '../dist/index.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const QUICK = process.argv.includes('--quick');
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? (QUICK ? 1 : 5));
const STEPS = Number(process.env.BENCH_STEPS ?? (QUICK ? 3 : 10));
const SHAPES = QUICK ? [[1, 64]] : [[1, 64], [2, 128], [8, 128]]; // [batch, seq]: 64, 256 and 1024 tokens per step
const PROCS = [2, 4];
const NATS = process.env.NATS_SERVER ?? (existsSync('/usr/sbin/nats-server') ? '/usr/sbin/nats-server' : 'nats-server');
const SERVER_THREADS = (P) => Math.max(1, Math.floor(os.cpus().length / P));
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const children = new Set();

function waitLine(proc, stream, re, ms, what) {
  return new Promise((resolve, reject) => {
    let text = '';
    const timer = setTimeout(() => reject(new Error(`${what}: not ready within ${ms} ms: ${text.slice(-400)}`)), ms);
    proc[stream].on('data', (d) => {
      text += d;
      const m = re.exec(text);
      if (m) {
        clearTimeout(timer);
        resolve(m);
      }
    });
    proc.once('exit', (c) => {
      clearTimeout(timer);
      reject(new Error(`${what} exited (${c}): ${text.slice(-400)}`));
    });
  });
}

function track(proc) {
  children.add(proc);
  proc.once('exit', () => children.delete(proc));
  return proc;
}

function cleanup() {
  for (const p of children) p.kill('SIGKILL');
}
process.on('exit', cleanup);
process.on('SIGINT', () => process.exit(130));

// The transport alone: P echo processes on the same nats-server answer the bytes one layer sends
// each instance (tokens·k·dModel float32 rows split over P), layer after layer, with no compute.
// local step + this is the fastest any remote step could be on this machine and broker.
const ECHO = `const { connect } = require(${JSON.stringify(join(root, 'node_modules', 'nats'))});
(async () => { const nc = await connect({ servers: process.argv[1] }); const sub = nc.subscribe(process.argv[2]);
  console.log('echo ready'); for await (const m of sub) m.respond(m.data); })();`;

async function transportFloor(url, localStepSeconds) {
  const { connect } = await import('nats');
  const nc = await connect({ servers: url });
  const layers = DEMO_LM.nLayers, k = DEMO_LM.moe.router.k, d = DEMO_LM.dModel;
  const echoes = [];
  for (let i = 0; i < Math.max(...PROCS); i++) {
    const proc = track(spawn(process.execPath, ['-e', ECHO, url, `bench.echo.${i}`], { stdio: ['ignore', 'pipe', 'inherit'] }));
    echoes.push(waitLine(proc, 'stdout', /echo ready/, 30_000, 'echo responder'));
  }
  await Promise.all(echoes);
  console.log(`\n  transport floor: ${layers} sequential rounds per step of P parallel NATS echoes carrying each instance's rows (no compute), ${STEPS * 5} steps, medians:`);
  console.log(`  ${'tokens'.padStart(8)} ${'P'.padStart(3)} ${'bytes/request'.padStart(14)} ${'echo ms/step'.padStart(13)} ${'best remote vs local'.padStart(21)}`);
  for (const [tokens, stepS] of localStepSeconds) {
    for (const P of PROCS) {
      const payload = new Uint8Array(Math.ceil((tokens * k * d * 4) / P));
      const times = [];
      for (let s = 0; s < STEPS * 5 + 3; s++) {
        const t0 = process.hrtime.bigint();
        for (let l = 0; l < layers; l++) await Promise.all(Array.from({ length: P }, (_, i) => nc.request(`bench.echo.${i}`, payload, { timeout: 30_000 })));
        if (s >= 3) times.push(Number(process.hrtime.bigint() - t0) / 1e9);
      }
      const floor = median(times);
      console.log(`  ${String(tokens).padStart(8)} ${String(P).padStart(3)} ${String(payload.length).padStart(14)} ${(floor * 1e3).toFixed(2).padStart(13)} ${(stepS / (stepS + floor)).toFixed(2).padStart(20)}x`);
    }
  }
  await nc.close();
}

async function main() {
  const dir = await mkdtemp(join(os.tmpdir(), 'switchyard-bench-remote-'));
  try {
    const run = await writeRandomCheckpoint(join(dir, 'run'), { model: DEMO_LM, embeddingStd: 1, name: 'remote bench' });
    const nats = track(spawn(NATS, ['-a', '127.0.0.1', '-p', '-1'], { stdio: ['ignore', 'ignore', 'pipe'] }));
    const url = `nats://127.0.0.1:${(await waitLine(nats, 'stderr', /client connections on 127\.0\.0\.1:(\d+)/, 15_000, 'nats-server'))[1]}`;
    const E = DEMO_LM.moe.numExperts;
    const ready = [];
    for (const P of PROCS) {
      for (let i = 0; i < P; i++) {
        const spec = Array.from({ length: E }, (_, e) => e).filter((e) => e % P === i).map((e) => `*:${e}`).join(',');
        // The P servers share this machine's cores (on separate machines each would use all of its own).
        const env = { ...process.env, SWITCHYARD_THREADS: String(SERVER_THREADS(P)) };
        const proc = track(spawn(process.execPath, [join(root, 'dist/cli/main.js'), 'expert-server', '--checkpoint', run, '--experts', spec, '--nats', url, '--model-id', `bench-p${P}`], { stdio: ['ignore', 'pipe', 'inherit'], env }));
        ready.push(waitLine(proc, 'stdout', /serving/, 120_000, `expert-server ${spec}`));
      }
    }
    await Promise.all(ready);
    const local = await loadServingModel(run);
    const routers = [];
    for (const P of PROCS) {
      const served = await loadServingModel(run, { expertMemory: 'all' });
      const remote = await RemoteExperts.connect(served.model, { servers: url, modelId: `bench-p${P}`, timeoutMs: 30_000 });
      remote.attach();
      const rep = await remote.waitForExperts(30_000);
      if (rep.instances.length !== P) throw new Error(`expected ${P} expert servers for bench-p${P}, found ${rep.instances.length}`);
      routers.push({ name: `${P} expert servers`, P, model: served.model, remote, close: async () => { await remote.close(); await served.close(); } });
    }
    const localStepSeconds = new Map();
    console.log(`\nRemote experts over NATS (demo model: ${DEMO_LM.nLayers} MoE layers, ${E} experts top-${DEMO_LM.moe.router.k}, dModel ${DEMO_LM.dModel}; forward only; loopback; ${ROUNDS} rounds x ${STEPS} steps, medians; expert servers with SWITCHYARD_THREADS=${PROCS.map(SERVER_THREADS).join('/')} for ${PROCS.join('/')} servers)`);
    for (const [B, T] of SHAPES) {
      const tokens = B * T;
      const ids = Tensor.indices(Array.from({ length: tokens }, (_, i) => (i * 7919 + 13) % 90), [B, T]);
      const forward = (model) => noGrad(() => model.forward(ids)).logits;
      const want = forward(local.model).f32;
      for (const r of routers) {
        const got = forward(r.model).f32;
        if (got.length !== want.length || got.some((v, i) => v !== want[i])) throw new Error(`${r.name}: outputs differ from local`);
      }
      const configs = [{ name: 'local', model: local.model, remote: null }, ...routers];
      const rates = new Map(configs.map((c) => [c.name, []]));
      const moved = new Map();
      for (let round = 0; round < ROUNDS; round++) {
        for (const c of configs) {
          forward(c.model); // warm
          const before = c.remote?.stats();
          const t0 = process.hrtime.bigint();
          for (let s = 0; s < STEPS; s++) forward(c.model);
          const sec = Number(process.hrtime.bigint() - t0) / 1e9;
          rates.get(c.name).push((tokens * STEPS) / sec);
          if (c.remote) {
            const after = c.remote.stats();
            moved.set(c.name, {
              bytesPerToken: (after.bytesSent - before.bytesSent + after.bytesReceived - before.bytesReceived) / (tokens * STEPS),
              requestsPerStep: (after.requests - before.requests) / STEPS,
              retries: after.retries - before.retries,
            });
          }
        }
      }
      const base = median(rates.get('local'));
      localStepSeconds.set(tokens, tokens / base);
      console.log(`\n  ${tokens} tokens per step (batch ${B} x ${T}):`);
      console.log(`  ${'config'.padEnd(20)} ${'tokens/s'.padStart(10)} ${'vs local'.padStart(9)} ${'bytes/token'.padStart(12)} ${'requests/step'.padStart(14)}`);
      for (const c of configs) {
        const r = median(rates.get(c.name));
        const m = moved.get(c.name);
        console.log(`  ${c.name.padEnd(20)} ${r.toFixed(0).padStart(10)} ${(r / base).toFixed(2).padStart(8)}x ${(m ? m.bytesPerToken.toFixed(0) : '-').padStart(12)} ${(m ? m.requestsPerStep.toFixed(0) : '-').padStart(14)}${m?.retries ? `  (${m.retries} retries)` : ''}`);
      }
    }
    await transportFloor(url, localStepSeconds);
    console.log(`  (goal: remote at least 0.70x local at >= 64 tokens per step; bytes/token = float32 rows out and back, ${DEMO_LM.nLayers} layers x k=${DEMO_LM.moe.router.k} x 2 x ${DEMO_LM.dModel} x 4 B = ${DEMO_LM.nLayers * DEMO_LM.moe.router.k * 2 * DEMO_LM.dModel * 4} B, plus per frame a 32-byte header and 8 bytes per expert block)`);
    for (const r of routers) await r.close();
    await local.close();
  } finally {
    cleanup();
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
process.exit(0);
