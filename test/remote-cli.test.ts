/** CLI errors of `switchyard expert-server` and `serve --remote-experts`: one line naming the flag and value, exit 1. */
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeRandomCheckpoint } from '../src/serve/fixture.js';
import { CLI } from './remote-helpers.js';

const run = promisify(execFile);
let dir: string, ckpt: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'switchyard-remote-cli-'));
  ckpt = await writeRandomCheckpoint(join(dir, 'run'), { model: { dModel: 16, nLayers: 2, nHeads: 2, dFF: 16, maxSeqLen: 16, moe: { numExperts: 4, router: { type: 'topk', k: 2 } } } });
}, 60_000);
afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function fails(args: string[]): Promise<string> {
  try {
    await run(process.execPath, [CLI, ...args], { timeout: 60_000 });
  } catch (e) {
    const err = e as { code?: number; stderr?: string };
    expect(err.code).toBe(1);
    return err.stderr ?? '';
  }
  throw new Error(`switchyard ${args.join(' ')} succeeded`);
}

describe('remote experts CLI errors', () => {
  it('names the flag and value', async () => {
    expect(await fails(['expert-server', '--checkpoint', ckpt, '--experts', '9:0', '--nats', 'nats://127.0.0.1:1'])).toMatch(/^switchyard: --experts="9:0": layer "9" is not an MoE layer/);
    expect(await fails(['expert-server', '--checkpoint', ckpt, '--experts', '0:7', '--nats', 'nats://127.0.0.1:1'])).toMatch(/--experts="0:7": experts 7 of layer 0/);
    expect(await fails(['expert-server', '--checkpoint', ckpt, '--experts', 'all', '--nats', 'nats://127.0.0.1:1'])).toMatch(/nats="nats:\/\/127\.0\.0\.1:1": cannot connect/);
    expect(await fails(['expert-server', '--checkpoint', ckpt, '--experts', 'all', '--nats', 'nats://127.0.0.1:1', '--optimizer', 'adam'])).toMatch(/--optimizer must be 'adamw' or 'sgd'/);
    expect(await fails(['serve', ckpt, '--local-experts', '0:1'])).toMatch(/--local-experts="0:1": needs --remote-experts/);
    expect(await fails(['serve', ckpt, '--remote-experts', 'nats://127.0.0.1:1'])).toMatch(/servers="nats:\/\/127\.0\.0\.1:1": cannot connect to NATS/);
    expect(await fails(['serve', ckpt, '--remote-experts', 'nats://127.0.0.1:1', '--on-expert-failure', 'ignore'])).toMatch(/--on-expert-failure must be 'fail' or 'drop'/);
  }, 120_000);
});
