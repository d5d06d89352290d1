/**
 * Processes for the remote-expert tests: a nats-server on a random loopback port and
 * `switchyard expert-server` children (from the built dist/cli/main.js). Every wait is bounded;
 * stopAll() kills whatever is still running.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';

const ROOT = join(import.meta.dirname ?? new URL('.', import.meta.url).pathname, '..');
export const CLI = join(ROOT, 'dist', 'cli', 'main.js');
const NATS = process.env.NATS_SERVER ?? (existsSync('/usr/sbin/nats-server') ? '/usr/sbin/nats-server' : 'nats-server');

const running = new Set<ChildProcess>();

/** Resolve when `re` matches the accumulated output of `stream`, reject after `ms` or if the process exits first. */
function waitFor(proc: ChildProcess, stream: 'stdout' | 'stderr', re: RegExp, ms: number, what: string): Promise<RegExpExecArray> {
  return new Promise((resolve, reject) => {
    let text = '';
    const timer = setTimeout(() => done(new Error(`${what}: no ${re} within ${ms} ms; output so far: ${text.slice(-500)}`)), ms);
    const onData = (d: Buffer): void => {
      text += d.toString();
      const m = re.exec(text);
      if (m) done(null, m);
    };
    const onExit = (code: number | null): void => done(new Error(`${what} exited (${code}) before ${re}; output: ${text.slice(-800)}`));
    const done = (err: Error | null, m?: RegExpExecArray): void => {
      clearTimeout(timer);
      proc[stream]!.off('data', onData);
      proc.off('exit', onExit);
      if (err) reject(err);
      else resolve(m!);
    };
    proc[stream]!.on('data', onData);
    proc.once('exit', onExit);
  });
}

export interface Nats {
  url: string;
  proc: ChildProcess;
}

/** nats-server on 127.0.0.1, random port. */
export async function startNats(): Promise<Nats> {
  const proc = spawn(NATS, ['-a', '127.0.0.1', '-p', '-1'], { stdio: ['ignore', 'ignore', 'pipe'] });
  running.add(proc);
  proc.once('exit', () => running.delete(proc));
  const m = await waitFor(proc, 'stderr', /Listening for client connections on 127\.0\.0\.1:(\d+)/, 15_000, 'nats-server');
  return { url: `nats://127.0.0.1:${m[1]}`, proc };
}

export interface ExpertServerProc {
  proc: ChildProcess;
  id: string;
  /** Everything it wrote to stderr so far. */
  stderr(): string;
  /** Resolves when it has exited. */
  exited: Promise<void>;
}

/** Spawn `switchyard expert-server` and wait (bounded) for its ready line. */
export async function startExpertServer(checkpoint: string, experts: string, url: string, extra: string[] = []): Promise<ExpertServerProc> {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run npm run build first`);
  const proc = spawn(process.execPath, [CLI, 'expert-server', '--checkpoint', checkpoint, '--experts', experts, '--nats', url, ...extra], { stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(proc);
  let err = '';
  proc.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<void>((resolve) => proc.once('exit', () => {
    running.delete(proc);
    resolve();
  }));
  const m = await waitFor(proc, 'stdout', /instance (\S+) serving/, 60_000, `expert-server ${experts}`);
  return { proc, id: m[1], stderr: () => err, exited };
}

/** Kill a process with `signal` and wait (bounded) for it to exit. */
export async function kill(proc: ChildProcess, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  const gone = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  proc.kill(signal);
  await Promise.race([gone, new Promise((r) => setTimeout(r, 10_000))]);
}

/** Kill everything still running (SIGCONT first, for stopped ones). */
export async function stopAll(): Promise<void> {
  await Promise.all(
    [...running].map(async (p) => {
      try {
        p.kill('SIGCONT');
      } catch {
        /* gone */
      }
      await kill(p, 'SIGKILL');
    }),
  );
}
