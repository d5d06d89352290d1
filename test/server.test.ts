/**
 * `switchyard serve` against a tiny model on loopback: routes and response shapes, SSE streaming,
 * stop sequences, seed determinism, 400/413/429, an expert corrupted mid-run (500 naming the
 * tensor, the server stays up, /healthz degraded), client disconnects freeing their slot, and
 * graceful SIGTERM shutdown of the CLI in a child process.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, open, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readSafetensorsHeader } from '../src/io/safetensors.js';
import { loadHFCase, tempCheckpointDir, writeHFCheckpoint } from './helpers/hf-fixtures.js';
import { writeRandomCheckpoint } from '../src/serve/fixture.js';
import { loadServingModel } from '../src/serve/model-loader.js';
import { createServer, type ServerOptions, type SwitchyardServer } from '../src/serve/server.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const bin = join(root, 'dist', 'cli', 'main.js');
const TEXT = 'abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ.,:!?\n';
const MODEL = {
  dModel: 32,
  nLayers: 2,
  nHeads: 2,
  dFF: 48,
  maxSeqLen: 96,
  moe: { numExperts: 6, router: { type: 'topk' as const, k: 2 } },
  seed: 5,
};

let dir: string;
let run: string;
const servers: SwitchyardServer[] = [];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'switchyard-serve-'));
  run = await writeRandomCheckpoint(join(dir, 'run'), { model: MODEL, text: TEXT });
});
afterAll(async () => {
  for (const s of servers) await s.shutdown().catch(() => undefined);
  await rm(dir, { recursive: true, force: true });
});

async function start(opts: ServerOptions & { expertMemory?: string | number; path?: string } = {}): Promise<{ url: string; server: SwitchyardServer }> {
  const served = await loadServingModel(opts.path ?? run, { expertMemory: opts.expertMemory ?? null });
  const server = await createServer(served, { modelName: 'tiny', ...opts });
  servers.push(server);
  return { url: await server.listen(0, '127.0.0.1'), server };
}

async function post(url: string, body: unknown, init: RequestInit = {}): Promise<{ status: number; json: any; headers: Headers }> {
  const r = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: typeof body === 'string' ? body : JSON.stringify(body), ...init });
  const text = await r.text();
  let json: unknown = null;
  try {
    json = JSON.parse(text);
  } catch {
    json = text;
  }
  return { status: r.status, json, headers: r.headers };
}

/** Parse a server-sent-events body into its data payloads (JSON objects, and '[DONE]'). */
function parseSSE(text: string): unknown[] {
  return text
    .split('\n\n')
    .filter((b) => b.trim())
    .map((b) => {
      expect(b.startsWith('data: '), b).toBe(true);
      const data = b.slice(6);
      return data === '[DONE]' ? data : JSON.parse(data);
    });
}

describe('server routes', () => {
  let url: string;
  beforeAll(async () => {
    url = (await start()).url;
  });

  it('answers completions and chat completions in the OpenAI shapes', async () => {
    const c = await post(`${url}/v1/completions`, { prompt: 'the whale', max_tokens: 7, temperature: 0 });
    expect(c.status).toBe(200);
    expect(c.json.object).toBe('text_completion');
    expect(c.json.model).toBe('tiny');
    expect(c.json.choices[0].finish_reason).toBe('length');
    expect(typeof c.json.choices[0].text).toBe('string');
    expect(c.json.usage).toEqual({ prompt_tokens: 9, completion_tokens: 7, total_tokens: 16 });
    const chat = await post(`${url}/v1/chat/completions`, { messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hi!' }], max_tokens: 5, temperature: 0 });
    expect(chat.status).toBe(200);
    expect(chat.json.object).toBe('chat.completion');
    expect(chat.json.choices[0].message.role).toBe('assistant');
    expect(typeof chat.json.choices[0].message.content).toBe('string');
    // Template: "System: Be brief.\nUser: Hi!\nAssistant:" = 39 characters.
    expect(chat.json.usage.prompt_tokens).toBe('System: Be brief.\nUser: Hi!\nAssistant:'.length);
    const models = (await (await fetch(`${url}/v1/models`)).json()) as any;
    expect(models.data[0].id).toBe('tiny');
    const h = await fetch(`${url}/healthz`);
    expect(h.status).toBe(200);
    expect(((await h.json()) as any).status).toBe('ok');
    const nf = await fetch(`${url}/nope`);
    expect(nf.status).toBe(404);
  });

  it('streams server-sent events that add up to the non-streamed text', async () => {
    const body = { prompt: 'Call me', max_tokens: 12, temperature: 0.9, seed: 7 };
    const plain = await post(`${url}/v1/completions`, body);
    const r = await fetch(`${url}/v1/completions`, { method: 'POST', body: JSON.stringify({ ...body, stream: true }), headers: { 'content-type': 'application/json' } });
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toMatch(/text\/event-stream/);
    const events = parseSSE(await r.text());
    expect(events.at(-1)).toBe('[DONE]');
    const chunks = events.slice(0, -1) as Array<{ object: string; choices: Array<{ text: string; finish_reason: string | null }> }>;
    expect(chunks.every((c) => c.object === 'text_completion')).toBe(true);
    expect(chunks.map((c) => c.choices[0].text).join('')).toBe(plain.json.choices[0].text);
    expect(chunks.at(-1)!.choices[0].finish_reason).toBe('length');

    const chat = await fetch(`${url}/v1/chat/completions`, {
      method: 'POST',
      body: JSON.stringify({ messages: [{ role: 'user', content: 'Hello' }], max_tokens: 6, stream: true, seed: 1, stream_options: { include_usage: true } }),
    });
    const ev = parseSSE(await chat.text()) as any[];
    expect(ev[0].choices[0].delta.role).toBe('assistant');
    expect(ev.at(-1)).toBe('[DONE]');
    expect(ev.at(-2).usage.completion_tokens).toBeGreaterThan(0);
    expect(ev.at(-3).choices[0].finish_reason).toMatch(/length|stop/);
  });

  it('cuts the completion before a stop sequence (string or array), streamed or not', async () => {
    const base = { prompt: 'It was', max_tokens: 30, temperature: 0 };
    const full = (await post(`${url}/v1/completions`, base)).json.choices[0].text as string;
    expect(full.length).toBe(30);
    const stop = full.slice(10, 12);
    const cut = full.indexOf(stop);
    const r = await post(`${url}/v1/completions`, { ...base, stop });
    expect(r.json.choices[0].text).toBe(full.slice(0, cut));
    expect(r.json.choices[0].finish_reason).toBe('stop');
    const r2 = await post(`${url}/v1/completions`, { ...base, stop: ['not-there', stop] });
    expect(r2.json.choices[0].text).toBe(full.slice(0, cut));
    const s = await fetch(`${url}/v1/completions`, { method: 'POST', body: JSON.stringify({ ...base, stop, stream: true }) });
    const ev = parseSSE(await s.text()) as any[];
    expect(ev.slice(0, -1).map((c) => c.choices[0].text).join('')).toBe(full.slice(0, cut));
    expect(ev.at(-2).choices[0].finish_reason).toBe('stop');
  });

  it('is deterministic for a seed', async () => {
    const body = { prompt: 'Whale', max_tokens: 20, temperature: 1.2, top_p: 0.9 };
    const a = await post(`${url}/v1/completions`, { ...body, seed: 42 });
    const b = await post(`${url}/v1/completions`, { ...body, seed: 42 });
    const c = await post(`${url}/v1/completions`, { ...body, seed: 43 });
    expect(a.json.choices[0].text).toBe(b.json.choices[0].text);
    expect(c.json.choices[0].text).not.toBe(a.json.choices[0].text);
  });

  it('refuses bad input with 400 naming the field', async () => {
    const cases: Array<[unknown, string, RegExp?]> = [
      ['{"prompt": "x", ', 'body', /malformed JSON/],
      ['', 'body', /empty/],
      ['[1, 2]', 'body', /JSON object/],
      [{ max_tokens: 3 }, 'prompt', /required/],
      [{ prompt: 'x', temperature: 3 }, 'temperature'],
      [{ prompt: 'x', temperature: 'hot' }, 'temperature', /number/],
      [{ prompt: 'x', top_p: 0 }, 'top_p'],
      [{ prompt: 'x', max_tokens: 0 }, 'max_tokens'],
      [{ prompt: 'x', max_tokens: 2.5 }, 'max_tokens'],
      [{ prompt: 'x', n: 2 }, 'n'],
      [{ prompt: 'x', seed: 'abc' }, 'seed'],
      [{ prompt: 'x', stop: ['a', 'b', 'c', 'd', 'e'] }, 'stop'],
      [{ prompt: 'x', stream: 'yes' }, 'stream'],
      [{ prompt: '' }, 'prompt', /empty/],
      [{ prompt: 'x', max_tokens: 500 }, 'max_tokens', /context/],
      [{ prompt: 'y'.repeat(200), max_tokens: 4 }, 'prompt', /context/],
    ];
    for (const [body, param, msg] of cases) {
      const r = await post(`${url}/v1/completions`, body);
      expect(r.status, JSON.stringify(body)).toBe(400);
      expect(r.json.error.param, JSON.stringify(body)).toBe(param);
      expect(r.json.error.type).toBe('invalid_request_error');
      if (msg) expect(r.json.error.message).toMatch(msg);
    }
    const chatCases: Array<[unknown, string]> = [
      [{}, 'messages'],
      [{ messages: [] }, 'messages'],
      [{ messages: [{ role: 'robot', content: 'x' }] }, 'messages[0].role'],
      [{ messages: [{ role: 'user' }] }, 'messages[0].content'],
      [{ messages: [{ role: 'user', content: 'x' }], max_completion_tokens: -1 }, 'max_completion_tokens'],
    ];
    for (const [body, param] of chatCases) {
      const r = await post(`${url}/v1/chat/completions`, body);
      expect(r.status, JSON.stringify(body)).toBe(400);
      expect(r.json.error.param, JSON.stringify(body)).toBe(param);
    }
  });

  it('counts requests, tokens and expert load in /metrics', async () => {
    const m = await (await fetch(`${url}/metrics`)).text();
    expect(m).toMatch(/^# TYPE switchyard_requests_total counter$/m);
    expect(m).toMatch(/^switchyard_requests_total\{route="\/v1\/completions",status="200"\} \d+$/m);
    expect(m).toMatch(/^switchyard_requests_total\{route="\/v1\/completions",status="400"\} \d+$/m);
    expect(m).toMatch(/^switchyard_tokens_generated_total [1-9]\d*$/m);
    expect(m).toMatch(/^switchyard_decode_tokens_per_second \d/m);
    expect(m).toMatch(/^switchyard_queue_depth 0$/m);
    expect(m).toMatch(/^switchyard_expert_load_total\{layer="1",expert="\d"\} \d+$/m);
  });
});

describe('server limits and faults', () => {
  it('answers 413 for a body over --max-body', async () => {
    const { url } = await start({ maxBodyBytes: 1024 });
    const r = await post(`${url}/v1/completions`, { prompt: 'x'.repeat(5000) });
    expect(r.status).toBe(413);
    expect(r.json.error.param).toBe('body');
  });

  it('left-truncates a long prompt with context: truncate', async () => {
    const { url } = await start({ context: 'truncate' });
    const r = await post(`${url}/v1/completions`, { prompt: 'y'.repeat(200), max_tokens: 6 });
    expect(r.status).toBe(200);
    expect(r.json.usage.prompt_tokens).toBe(MODEL.maxSeqLen - 6);
  });

  it('queues FIFO, answers 429 with Retry-After when full, and frees slots of clients that leave', async () => {
    let release: () => void = () => undefined;
    let hold = true;
    const gate = (): Promise<void> | void => (hold ? new Promise<void>((r) => (release = r)) : undefined);
    const { url, server } = await start({ maxQueue: 1, beforeStep: gate });
    const body = { prompt: 'abc', max_tokens: 4, temperature: 0 };
    const first = post(`${url}/v1/completions`, body); // generating (held before its first forward)
    await waitFor(() => server.engine.busy);
    const ac = new AbortController();
    const second = fetch(`${url}/v1/completions`, { method: 'POST', body: JSON.stringify(body), signal: ac.signal }).catch((e: Error) => e);
    await waitFor(() => server.engine.queueDepth === 1);
    const third = await post(`${url}/v1/completions`, body);
    expect(third.status).toBe(429);
    expect(Number(third.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    expect(third.json.error.code).toBe('queue_full');
    // A queued client that disconnects leaves the queue at once, so the next one gets its place.
    ac.abort();
    expect(await second).toBeInstanceOf(Error);
    await waitFor(() => server.engine.queueDepth === 0);
    const fourth = post(`${url}/v1/completions`, body);
    await waitFor(() => server.engine.queueDepth === 1);
    hold = false;
    release();
    const [a, d] = await Promise.all([first, fourth]);
    expect(a.status).toBe(200);
    expect(d.status).toBe(200);
    expect(d.json.choices[0].text).toBe(a.json.choices[0].text);
    expect(server.engine.counters.requestsAborted).toBe(1);
  });

  it('frees the slot of a streaming client that disconnects mid-stream', async () => {
    let steps = 0;
    const { url, server } = await start({
      maxQueue: 0,
      beforeStep: async () => {
        steps++;
        await new Promise((r) => setTimeout(r, 5));
      },
    });
    const ac = new AbortController();
    const r = await fetch(`${url}/v1/completions`, { method: 'POST', body: JSON.stringify({ prompt: 'abc', max_tokens: 80, stream: true }), signal: ac.signal });
    const reader = r.body!.getReader();
    await reader.read(); // first chunk arrived: generating
    expect(server.engine.busy).toBe(true);
    ac.abort();
    await waitFor(() => !server.engine.busy);
    expect(steps).toBeLessThan(80);
    expect(server.engine.counters.requestsAborted).toBe(1);
    // The slot is free: a new request is served (maxQueue 0 would answer 429 if it were not).
    const next = await post(`${url}/v1/completions`, { prompt: 'abc', max_tokens: 2 });
    expect(next.status).toBe(200);
    const m = await (await fetch(`${url}/metrics`)).text();
    expect(m).toMatch(/^switchyard_generations_total\{outcome="aborted"\} 1$/m);
  });

  it('fails a request that needs a corrupted expert with 500 naming the tensor, stays up, reports degraded', async () => {
    const copy = await writeRandomCheckpoint(join(dir, 'corrupt'), { model: MODEL, text: TEXT });
    const { url } = await start({ path: copy, expertMemory: '25%' });
    const file = join(copy, 'checkpoints', 'step-0', 'model.safetensors');
    const header = readSafetensorsHeader(await readFile(file));
    const victim = 'layers.1.mlp.experts.2.w3.weight';
    const fh = await open(file, 'r+');
    await fh.write(Buffer.alloc(64, 0x7f), 0, 64, header.dataStart + header.tensors[victim].dataOffsets[0] + 100);
    await fh.close();
    // One-character prompts, one token each: each request touches 2 of the 6 experts per layer.
    const outcomes: Array<{ status: number; param?: string; message?: string }> = [];
    for (const ch of 'abcdefghijklmnopqrstuvwxyz') {
      const r = await post(`${url}/v1/completions`, { prompt: ch, max_tokens: 1, temperature: 0 });
      outcomes.push({ status: r.status, param: r.json.error?.param, message: r.json.error?.message });
    }
    const failed = outcomes.filter((o) => o.status === 500);
    const ok = outcomes.filter((o) => o.status === 200);
    expect(failed.length).toBeGreaterThan(0);
    expect(ok.length).toBeGreaterThan(0);
    expect(outcomes.every((o) => o.status === 200 || o.status === 500)).toBe(true);
    for (const f of failed) {
      expect(f.param).toBe(victim);
      expect(f.message).toMatch(new RegExp(`${victim.replace(/\./g, '\\.')}.*corrupted`));
    }
    const h = (await (await fetch(`${url}/healthz`)).json()) as any;
    expect(h.status).toBe('degraded');
    expect(h.reasons.join(' ')).toContain(victim);
    const m = await (await fetch(`${url}/metrics`)).text();
    expect(m).toMatch(/^switchyard_degraded 1$/m);
    expect(m).toMatch(/^switchyard_requests_total\{route="\/v1\/completions",status="500"\} [1-9]/m);
    // A streamed request that meets it before any output gets the 500 too.
    const bad = outcomes.findIndex((o) => o.status === 500);
    const s = await fetch(`${url}/v1/completions`, { method: 'POST', body: JSON.stringify({ prompt: 'abcdefghijklmnopqrstuvwxyz'[bad], max_tokens: 1, temperature: 0, stream: true }) });
    expect(s.status).toBe(500);
    expect(((await s.json()) as any).error.param).toBe(victim);
  });
});

describe('serving a Hugging Face folder', () => {
  it('serves completions from a Mixtral-layout folder with its tokenizer.json, experts from the shards', async () => {
    const hfDir = writeHFCheckpoint(tempCheckpointDir('serve-http'), loadHFCase('mixtral'), { dtype: 'BF16', shards: 2, tokenizer: true });
    try {
      const { url, server } = await start({ path: hfDir, expertMemory: '50%' });
      expect(server.served.source.kind).toBe('hf');
      const r = await post(`${url}/v1/completions`, { prompt: 'abc abc', max_tokens: 5, temperature: 0 });
      expect(r.status).toBe(200);
      expect(r.json.usage.completion_tokens).toBeLessThanOrEqual(5);
      expect(r.json.choices[0].finish_reason).toMatch(/length|stop/);
      const h = (await (await fetch(`${url}/healthz`)).json()) as any;
      expect(h.status).toBe('ok');
      expect(h.experts.budgetBytes).toBeGreaterThan(0);
      await server.shutdown();
    } finally {
      await rm(hfDir, { recursive: true, force: true });
    }
  });
});

async function waitFor(cond: () => boolean, ms = 5000): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe.skipIf(!existsSync(bin))('switchyard serve (CLI)', () => {
  it('finishes in-flight and queued requests on SIGTERM, then exits 0', async () => {
    const big = await writeRandomCheckpoint(join(dir, 'big'), { model: { ...MODEL, dModel: 64, nLayers: 3, maxSeqLen: 256 }, text: TEXT });
    const child = spawn(process.execPath, [bin, 'serve', big, '--port', '0', '--expert-memory', '50%', '--prefetch'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    let err = '';
    child.stderr.on('data', (d) => (err += d));
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    await waitFor(() => /listening on (http:\/\/[\d.:]+)/.test(out), 60_000);
    const url = /listening on (http:\/\/[\d.:]+)/.exec(out)![1];
    let firstChunk: () => void = () => undefined;
    const started = new Promise<void>((r) => (firstChunk = r));
    const streams = [0, 1, 2].map(async (i) => {
      const r = await fetch(`${url}/v1/completions`, { method: 'POST', body: JSON.stringify({ prompt: 'abc', max_tokens: 150, stream: true, seed: i }) });
      const reader = r.body!.getReader();
      const dec = new TextDecoder();
      let text = '';
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        text += dec.decode(value, { stream: true });
        firstChunk();
      }
      return { status: r.status, events: parseSSE(text) };
    });
    // SIGTERM once a stream is generating and the other two wait in the queue.
    await started;
    for (let i = 0; i < 2000; i++) {
      const h = (await (await fetch(`${url}/healthz`)).json()) as { queue: { depth: number } };
      if (h.queue.depth === 2) break;
      await new Promise((r) => setTimeout(r, 2));
    }
    child.kill('SIGTERM');
    const results = await Promise.all(streams);
    for (const r of results) {
      expect(r.status).toBe(200);
      expect(r.events.at(-1)).toBe('[DONE]');
      expect((r.events.at(-2) as any).choices[0].finish_reason).toBe('length');
      expect(r.events.slice(0, -1).map((e: any) => e.choices[0].text).join('').length).toBe(150);
    }
    expect(await exited, err).toBe(0);
    expect(out).toMatch(/SIGTERM: finishing/);
    await expect(fetch(`${url}/healthz`)).rejects.toThrow();
  }, 120_000);
});
