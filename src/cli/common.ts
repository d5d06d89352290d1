/**
 * Shared CLI plumbing: one-line errors (never a stack trace), validated option parsers, and a
 * live training progress display (a cli-progress bar on a TTY, periodic lines otherwise).
 */
import { InvalidArgumentError } from 'commander';
import cliProgress from 'cli-progress';
import type { StepMetrics } from '../train/metrics.js';

/** Parse a positive integer option, naming the flag in the error. */
export function intOption(flag: string, min = 1): (value: string) => number {
  return (value: string) => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < min) throw new InvalidArgumentError(`${flag} must be an integer >= ${min}, got ${JSON.stringify(value)}`);
    return n;
  };
}

/** Parse a finite number option (optionally > 0). */
export function numberOption(flag: string, opts: { positive?: boolean; min?: number } = {}): (value: string) => number {
  return (value: string) => {
    const n = Number(value);
    if (value.trim() === '' || !Number.isFinite(n) || (opts.positive && n <= 0) || (opts.min !== undefined && n < opts.min)) {
      throw new InvalidArgumentError(`${flag} must be a ${opts.positive ? 'positive ' : ''}number, got ${JSON.stringify(value)}`);
    }
    return n;
  };
}

/** A one-line message for any error a command throws (typed errors already name field and value). */
export function errorLine(e: unknown): string {
  if (e instanceof Error) return e.message.split('\n')[0];
  return String(e);
}

const BLOCKS = ' ▁▂▃▄▅▆▇█';

/** A tiny bar chart of per-expert load: one block character per expert, height ∝ share. */
export function loadSparkline(tokensPerExpert: readonly number[]): string {
  const max = Math.max(1, ...tokensPerExpert);
  return tokensPerExpert.map((v) => BLOCKS[Math.round((v / max) * (BLOCKS.length - 1))]).join('');
}

/** Format a duration in seconds as m:ss. */
export function formatDuration(s: number): string {
  if (!Number.isFinite(s)) return '--:--';
  const m = Math.floor(s / 60), sec = Math.round(s % 60);
  return `${m}:${String(sec).padStart(2, '0')}`;
}

/** Live progress of a training run. */
export class TrainingProgress {
  private bar: cliProgress.SingleBar | null = null;
  private readonly tty: boolean;
  private lastLine = 0;
  private readonly t0 = Date.now();
  constructor(private readonly total: number, private readonly label: string, private readonly stream: NodeJS.WriteStream = process.stderr) {
    this.tty = !!stream.isTTY;
  }

  start(startStep = 0): void {
    if (this.tty) {
      this.bar = new cliProgress.SingleBar(
        {
          stream: this.stream,
          format: `${this.label} {bar} {value}/{total} | loss {loss} | {tps} tok/s | ETA {eta_formatted} | load {load}`,
          barsize: 24,
          hideCursor: true,
          etaBuffer: 20,
        },
        cliProgress.Presets.shades_classic,
      );
      this.bar.start(this.total, startStep, { loss: '-', tps: '-', load: '' });
    }
  }

  update(m: StepMetrics): void {
    const load = m.moe[0] ? loadSparkline(m.moe[0].tokensPerExpert) : 'dense';
    const payload = { loss: m.loss.toFixed(3), tps: Math.round(m.tokensPerSecond).toLocaleString('en-US'), load };
    if (this.bar) this.bar.update(m.step, payload);
    else if (m.step === this.total || Date.now() - this.lastLine > 5000) {
      this.lastLine = Date.now();
      const elapsed = (Date.now() - this.t0) / 1000;
      const eta = (elapsed / Math.max(1, m.step)) * (this.total - m.step);
      this.stream.write(`${this.label} step ${m.step}/${this.total} | loss ${payload.loss} | ${payload.tps} tok/s | ETA ${formatDuration(eta)} | load ${load}\n`);
    }
  }

  stop(): void {
    this.bar?.stop();
  }
}
