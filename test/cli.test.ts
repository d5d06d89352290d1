/**
 * The `switchyard` CLI end to end (against dist/, built by `npm test`): bad arguments exit
 * non-zero with one line and no stack trace; a tiny train → sample / inspect / eval round trip.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const bin = join(root, 'dist', 'cli', 'main.js');
const built = existsSync(bin);
const dir = mkdtempSync(join(tmpdir(), 'switchyard-cli-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function run(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', cwd: dir, timeout: 120_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function expectOneLineError(r: ReturnType<typeof run>, pattern: RegExp): void {
  expect(r.status).not.toBe(0);
  const lines = r.stderr.trim().split('\n').filter((l) => !l.includes('Warning') && !l.includes('--trace-warnings'));
  expect(lines.length, r.stderr).toBe(1);
  expect(lines[0]).toMatch(/^switchyard: /);
  expect(lines[0]).toMatch(pattern);
  expect(r.stderr).not.toMatch(/\n\s+at /); // no stack trace
}

describe.skipIf(!built)('switchyard CLI', () => {
  it('is built executable (npx runs the bin file itself after npm ci && npm run build)', () => {
    expect(statSync(bin).mode & 0o111).toBe(0o111);
  });

  it('answers --help for every command', () => {
    for (const cmd of ['', 'demo', 'train', 'eval', 'sample', 'inspect', 'compare', 'bench', 'info']) {
      const r = run(...(cmd ? [cmd] : []), '--help');
      expect(r.status, cmd).toBe(0);
      expect(r.stdout).toMatch(/Usage: switchyard/);
    }
  });

  it('refuses bad arguments with one line', () => {
    expectOneLineError(run('train', '--bogus'), /unknown option '--bogus'/);
    expectOneLineError(run('train', '--steps', 'abc'), /--steps must be an integer/);
    expectOneLineError(run('train', '--config', join(dir, 'missing.json')), /cannot read the file/);
    writeFileSync(join(dir, 'bad.json'), '{"model": {"dModel": "wide"}}');
    expectOneLineError(run('train', '--config', join(dir, 'bad.json')), /model\.dModel/);
    writeFileSync(join(dir, 'bad2.json'), '{"model": {"moe": {"numExperts": 4, "router": {"type": "topk", "k": 9}}}}');
    expectOneLineError(run('train', '--config', join(dir, 'bad2.json'), '--steps', '1'), /router\.k=9/);
    writeFileSync(join(dir, 'bad3.json'), '{not json');
    expectOneLineError(run('train', '--config', join(dir, 'bad3.json')), /not valid JSON/);
    expectOneLineError(run('sample', join(dir, 'no-such-run')), /does not exist|no loadable checkpoint/);
    expectOneLineError(run('train', '--corpus', join(dir, 'no-such-corpus.txt'), '--steps', '1'), /no-such-corpus/);
    expectOneLineError(run('nonsense'), /unknown command/);
    // An argument error raised inside a command's action is printed too, not only its exit code.
    expectOneLineError(run('serve', join(dir, 'no-such-run'), '--prefetch'), /--prefetch needs --expert-memory/);
  });

  it('trains a tiny model, then samples, inspects and evaluates it', () => {
    const text = 'Call me Ishmael. The whale swims in the sea. The ship sails on the sea. '.repeat(40);
    writeFileSync(join(dir, 'tiny.txt'), text);
    const out = join(dir, 'run');
    const t = run('train', '--corpus', join(dir, 'tiny.txt'), '--steps', '6', '--layers', '1', '--d-model', '32', '--heads', '2', '--d-ff', '32',
      '--experts', '4', '--batch-size', '2', '--seq-len', '16', '--out', out);
    expect(t.status, t.stderr).toBe(0);
    expect(t.stdout).toMatch(/eval loss \d/);
    expect(t.stdout).toMatch(/layer 0: /);
    expect(existsSync(join(out, 'report.html'))).toBe(true);
    expect(existsSync(join(out, 'checkpoints', 'latest'))).toBe(true);

    const s = run('sample', out, '--prompt', 'The whale', '--max-tokens', '20', '--seed', '1');
    expect(s.status, s.stderr).toBe(0);
    expect(s.stdout.startsWith('The whale')).toBe(true);
    expect(s.stdout.length).toBeGreaterThan('The whale'.length + 5);
    // Same seed, same text.
    expect(run('sample', out, '--prompt', 'The whale', '--max-tokens', '20', '--seed', '1').stdout).toBe(s.stdout);

    const i = run('inspect', out, '--text', 'the sea', '--json');
    expect(i.status, i.stderr).toBe(0);
    const routing = JSON.parse(i.stdout) as { tokens: string[]; layers: Array<{ experts: number[][] }>; stats: Array<{ tokensPerExpert: number[] }> };
    expect(routing.tokens.join('')).toBe('the sea');
    expect(routing.layers[0].experts).toHaveLength(7);
    expect(routing.stats[0].tokensPerExpert.reduce((a, b) => a + b, 0)).toBe(7 * 2);

    const e = run('eval', out, '--json');
    expect(e.status, e.stderr).toBe(0);
    const res = JSON.parse(e.stdout) as { loss: number; perplexity: number };
    expect(res.loss).toBeGreaterThan(0);
    expect(res.perplexity).toBeCloseTo(Math.exp(res.loss), 6);
  });
});
