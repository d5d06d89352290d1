/**
 * The playground without a browser: settings ↔ URL and validation, the MoE configs it makes, the
 * per-token routing it draws (checked against the layer's own dispatch plan and stats), live router
 * changes keeping weights, the static build (bundles, datasets, doc anchors) and its server.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildPlayground, headingSlug, IMAGE_SIDE, MOBY_DICK_EXCERPT_CHARS, syntheticShapes } from '../src/cli/playground-build.js';
import { ISOLATION_HEADERS, servePlayground, type PlaygroundServer } from '../src/cli/playground-server.js';
import { MoELayer } from '../src/moe/layer.js';
import { resolveMoEConfig } from '../src/moe/config.js';
import { Tensor } from '../src/tensor/tensor.js';
import { reconfigureMoE } from '../playground/src/model.js';
import { DEFAULTS, moeConfig, ROUTERS, settingsFromQuery, settingsToQuery, SettingsError, validateSettings, type Settings } from '../playground/src/settings.js';
import { routingPerToken } from '../playground/src/tasks.js';

describe('playground settings', () => {
  it('round-trips through the URL, keeping only what differs from the defaults', () => {
    expect(settingsToQuery(DEFAULTS)).toBe('');
    const s: Settings = { ...DEFAULTS, task: 'plane', router: 'expert-choice', capacity: 0.5, experts: 8, balance: 0.02, lr: 0.01, seed: 3 };
    const q = settingsToQuery(s);
    expect(q).toContain('router=expert-choice');
    expect(q).toContain('cf=0.5');
    expect(q).not.toContain('noise=');
    const back = settingsFromQuery(`?${q}`);
    expect(back.errors).toEqual([]);
    expect(back.settings).toEqual(s);
  });

  it('reports a bad value in a link by field and value and keeps the default for it', () => {
    const r = settingsFromQuery('?router=fancy&cf=-1&lr=abc&experts=4&k=2');
    expect(r.settings.router).toBe(DEFAULTS.router);
    expect(r.settings.capacity).toBe(DEFAULTS.capacity);
    expect(r.settings.lr).toBe(DEFAULTS.lr);
    expect(r.errors.some((e) => e.startsWith('router: "fancy"'))).toBe(true);
    expect(r.errors.some((e) => e.startsWith('capacity: -1'))).toBe(true);
    expect(r.errors.some((e) => e.startsWith('lr:'))).toBe(true);
    expect(settingsFromQuery('?router=switch&cf=0').settings).toMatchObject({ router: 'switch', capacity: 1.25, k: 1 });
  });

  it('validates: k ≤ experts, Switch is k = 1, Switch and expert choice need a capacity', () => {
    expect(() => validateSettings({ ...DEFAULTS, k: 3, experts: 2 })).toThrow(SettingsError);
    expect(() => validateSettings({ ...DEFAULTS, experts: 5 })).toThrow(/experts: 5/);
    expect(validateSettings({ ...DEFAULTS, router: 'switch', k: 2, capacity: 1.25 }).k).toBe(1);
    expect(() => validateSettings({ ...DEFAULTS, router: 'switch', capacity: 0 })).toThrow(/capacity: 0/);
    expect(() => validateSettings({ ...DEFAULTS, router: 'expert-choice', capacity: 0 })).toThrow(/capacity/);
  });

  it('makes configs the engine accepts for every router, with the router-specific parts', () => {
    for (const router of ROUTERS) {
      for (const task of ['char', 'plane', 'images'] as const) {
        const s = validateSettings({ ...DEFAULTS, task, router, capacity: router === 'topk' ? 0 : 1.25, noise: 'gaussian', bias: 0.001 });
        const c = resolveMoEConfig(moeConfig(s));
        expect(c.router.type).toBe(router === 'switch' ? 'topk' : router);
      }
    }
    const sw = resolveMoEConfig(moeConfig({ ...DEFAULTS, router: 'switch', k: 1, capacity: 0.5, noise: 'jitter', eps: 0.05 }));
    expect(sw.router).toMatchObject({ type: 'topk', k: 1, capacityFactor: 0.5, noise: { type: 'jitter', eps: 0.05 } });
    expect(resolveMoEConfig(moeConfig({ ...DEFAULTS, capacity: 0 })).router).toMatchObject({ type: 'topk', k: 2, capacityFactor: null });
    // Soft MoE takes no balance loss (the engine rejects one), whatever the knob says.
    expect(resolveMoEConfig(moeConfig({ ...DEFAULTS, router: 'soft', balance: 0.5 })).losses.balance).toBe(0);
  });
});

describe('playground routing view', () => {
  const x = Tensor.randn([64, 16], { seed: 5 });
  const base = { dModel: 16, dFF: 8, numExperts: 4, expert: { activation: 'gelu' as const, gated: false }, seed: 1 };

  it('Switch with capacity: dropped tokens are exactly those the plan dropped, the rest show their expert', () => {
    const layer = new MoELayer({ ...base, router: { type: 'topk', k: 1, capacityFactor: 0.5 } });
    const out = layer.forward(x);
    const r = routingPerToken(out, 64, 4, layer);
    expect(r.primary.filter((e) => e < 0).length).toBe(out.stats.droppedTokens);
    expect(out.stats.droppedTokens).toBeGreaterThanOrEqual(32);
    const kept = new Set(out.plan!.tokenIndex);
    for (let t = 0; t < 64; t++) {
      if (kept.has(t)) expect(r.primary[t]).toBe(out.routing!.experts[t]);
      else expect(r.primary[t]).toBe(-1);
      let s = 0;
      for (let e = 0; e < 4; e++) s += r.probs[t * 4 + e];
      expect(s).toBeCloseTo(1, 5);
    }
  });

  it('top-2: a token shows its most probable kept expert; kept bits match the plan', () => {
    const layer = new MoELayer({ ...base, router: { type: 'topk', k: 2, capacityFactor: 0.75 } });
    const out = layer.forward(x);
    const r = routingPerToken(out, 64, 4, layer);
    const keptPairs = new Map<number, number[]>();
    out.plan!.weightIndex.forEach((w) => {
      const t = Math.floor(w / 2);
      keptPairs.set(t, [...(keptPairs.get(t) ?? []), out.routing!.experts[w]]);
    });
    for (let t = 0; t < 64; t++) {
      const es = keptPairs.get(t) ?? [];
      expect(r.kept[t]).toBe(es.reduce((m, e) => m | (1 << e), 0));
      if (es.length === 0) expect(r.primary[t]).toBe(-1);
      else expect(r.primary[t]).toBe(es.reduce((b, e) => (r.probs[t * 4 + e] > r.probs[t * 4 + b] ? e : b)));
    }
  });

  it('expert choice: tokens no expert picked are dropped; soft MoE drops none', () => {
    const ec = new MoELayer({ ...base, router: { type: 'expert-choice', capacityFactor: 0.5 } });
    const out = ec.forward(x);
    const r = routingPerToken(out, 64, 4, ec);
    expect(r.primary.filter((e) => e < 0).length).toBe(out.stats.droppedTokens);
    expect(out.stats.droppedTokens).toBeGreaterThanOrEqual(32);
    const soft = new MoELayer({ ...base, router: { type: 'soft', slotsPerExpert: 2 } });
    const so = soft.forward(Tensor.randn([1, 64, 16], { seed: 6 }));
    const rs = routingPerToken(so, 64, 4, soft);
    expect(rs.primary.every((e) => e >= 0 && e < 4)).toBe(true);
    for (let t = 0; t < 64; t++) expect(rs.probs.slice(t * 4, t * 4 + 4).reduce((a, b) => a + b, 0)).toBeCloseTo(1, 5);
  });

  it('a live router change keeps the expert weights (and the gate when its shape fits)', () => {
    const a = new MoELayer({ ...base, router: { type: 'topk', k: 2 } });
    const ec = reconfigureMoE(a, { ...base, seed: 99, router: { type: 'expert-choice', capacityFactor: 1 } });
    expect(Array.from(ec.gate.weight.f32)).toEqual(Array.from(a.gate.weight.f32));
    expect(Array.from(ec.experts.items[3].w1.weight.f32)).toEqual(Array.from(a.experts.items[3].w1.weight.f32));
    const soft = reconfigureMoE(a, { ...base, seed: 99, router: { type: 'soft', slotsPerExpert: 2 } });
    expect(soft.gate.weight.shape).toEqual([8, 16]);
    expect(Array.from(soft.experts.items[0].w2.weight.f32)).toEqual(Array.from(a.experts.items[0].w2.weight.f32));
  });
});

describe('playground build and server', () => {
  let dir: string;
  let site: string;
  let server: PlaygroundServer;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'switchyard-playground-build-'));
    site = join(dir, 'site');
    await buildPlayground(site);
    server = await servePlayground(site, { port: 0 });
  }, 60_000);
  afterAll(async () => {
    await server?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('bundles the engine into the Worker only, with nothing from Node', () => {
    const info = JSON.parse(readFileSync(join(site, 'build.json'), 'utf8')) as { inputs: Record<string, string[]> };
    const mainInputs = info.inputs['main.js'];
    const workerInputs = info.inputs['worker.js'];
    expect(mainInputs.some((f) => f.startsWith('src/'))).toBe(false);
    expect(workerInputs).toContain('src/moe/layer.ts');
    expect(workerInputs).not.toContain('src/backend/native.ts');
    for (const f of ['main.js', 'worker.js']) expect(readFileSync(join(site, 'assets', f), 'utf8')).not.toMatch(/["']node:/);
  });

  it('ships the datasets cut at build time', () => {
    const text = readFileSync(join(site, 'data', 'moby-dick.txt'), 'utf8');
    expect(text.length).toBe(MOBY_DICK_EXCERPT_CHARS);
    expect(text.startsWith('CHAPTER 1. Loomings')).toBe(true);
    expect(text).not.toMatch(/\s\s/);
    const meta = JSON.parse(readFileSync(join(site, 'data', 'images.json'), 'utf8')) as { count: number; side: number; classes: string[]; source: string };
    expect(meta.side).toBe(IMAGE_SIDE);
    expect(statSync(join(site, 'data', 'images.bin')).size).toBe(meta.count * (1 + meta.side * meta.side));
    expect(meta.classes.length).toBe(meta.source === 'fashion-mnist' ? 10 : 4);
    const labels = readFileSync(join(site, 'data', 'images.bin')).subarray(0, meta.count);
    expect(Math.max(...labels)).toBe(meta.classes.length - 1);
  });

  it('never replaces a directory that is not an earlier build', async () => {
    const other = join(dir, 'precious');
    await mkdir(other);
    await writeFile(join(other, 'notes.txt'), 'keep me');
    await expect(buildPlayground(other)).rejects.toThrow(/not an earlier playground build/);
    expect(readFileSync(join(other, 'notes.txt'), 'utf8')).toBe('keep me');
    await expect(buildPlayground(join(other, 'notes.txt'))).rejects.toThrow(/not a directory/);
  });

  it('the synthetic image set has four balanced classes', () => {
    const s = syntheticShapes(40);
    expect(s.pixels.length).toBe(40 * IMAGE_SIDE * IMAGE_SIDE);
    expect([0, 1, 2, 3].map((c) => s.labels.filter((l) => l === c).length)).toEqual([10, 10, 10, 10]);
  });

  it("every knob's docs link points at a heading of the rendered docs/moe.md", () => {
    const html = readFileSync(join(site, 'index.html'), 'utf8');
    const doc = readFileSync(join(site, 'moe.html'), 'utf8');
    const anchors = [...html.matchAll(/href="moe\.html#([^"]+)"/g)].map((m) => m[1]);
    expect(anchors.length).toBeGreaterThanOrEqual(10);
    for (const a of new Set(anchors)) expect(doc, a).toContain(`id="${a}"`);
    expect(headingSlug("Top-k token choice (`router.type: 'topk'`)")).toBe('top-k-token-choice-routertype-topk');
  });

  it('serves the site with cross-origin isolation headers and refuses paths outside it', async () => {
    const res = await fetch(server.url);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/text\/html/);
    for (const [k, v] of Object.entries(ISOLATION_HEADERS)) expect(res.headers.get(k)).toBe(v);
    expect(await res.text()).toContain('<title>Switchyard MoE playground</title>');
    const js = await fetch(`${server.url}assets/worker.js`);
    expect(js.headers.get('content-type')).toMatch(/javascript/);
    expect((await server.app.inject({ method: 'GET', url: '/nope.txt' })).statusCode).toBe(404);
    expect((await server.app.inject({ method: 'GET', url: '/..%2f..%2fpackage.json' })).statusCode).toBe(403);
    expect((await server.app.inject({ method: 'GET', url: '/%E0%A4%A' })).statusCode).toBe(400);
    // Still up after bad requests.
    expect((await fetch(`${server.url}style.css`)).status).toBe(200);
  });
});

const bin = join(resolve(dirname(fileURLToPath(import.meta.url)), '..'), 'dist', 'cli', 'main.js');

describe.skipIf(!existsSync(bin))('switchyard playground (CLI, from dist/)', () => {
  it('rejects a bad --port in one line', () => {
    const r = spawnSync(process.execPath, [bin, 'playground', '--port', 'abc'], { encoding: 'utf8', timeout: 30_000 });
    expect(r.status).not.toBe(0);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/^switchyard: .*--port must be an integer >= 0, got "abc"/);
  });

  it('--build <dir> writes the static site', async () => {
    const out = await mkdtemp(join(tmpdir(), 'switchyard-playground-cli-'));
    try {
      const r = spawnSync(process.execPath, [bin, 'playground', '--build', join(out, 'www')], { encoding: 'utf8', timeout: 60_000 });
      expect(r.status, r.stderr).toBe(0);
      expect(r.stdout).toMatch(/static site written to .*www/);
      for (const f of ['index.html', 'moe.html', 'assets/main.js', 'assets/worker.js', 'data/moby-dick.txt', 'data/images.bin']) expect(existsSync(join(out, 'www', f)), f).toBe(true);
    } finally {
      await rm(out, { recursive: true, force: true });
    }
  });

  it('serves on 127.0.0.1 with COOP/COEP, prints the URL, and stops on SIGTERM', async () => {
    const child = spawn(process.execPath, [bin, 'playground', '--port', '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
    try {
      let out = '';
      const url = await new Promise<string>((res, rej) => {
        const timer = setTimeout(() => rej(new Error(`no URL printed in 60 s: ${out}`)), 60_000);
        child.stdout.on('data', (d: Buffer) => {
          out += d.toString();
          const m = /open (http:\/\/127\.0\.0\.1:\d+\/)/.exec(out);
          if (m) {
            clearTimeout(timer);
            res(m[1]);
          }
        });
        child.on('exit', (code) => rej(new Error(`exited ${code}: ${out}`)));
      });
      const res = await fetch(url);
      expect(res.status).toBe(200);
      expect(res.headers.get('cross-origin-opener-policy')).toBe('same-origin');
      expect(res.headers.get('cross-origin-embedder-policy')).toBe('require-corp');
      expect(await res.text()).toContain('assets/main.js');
      const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  }, 90_000);
});
