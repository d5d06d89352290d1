// Shared plumbing of the experiments: arguments, output directories, machine description,
// result files (JSON, SVG, README), small statistics and formatting helpers.
import { execFileSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DataUnavailableError, getBackend, renderSpecToSvg } from '../../dist/index.js';

/** Repository root (experiments/lib/ → ../..). */
export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** Exit code of a script whose data set is not installed (run-all reports it as skipped). */
export const EXIT_DATA_UNAVAILABLE = 3;

/**
 * Parse the command line shared by every experiment: --quick (tiny plumbing run), --out DIR,
 * --help. Prints usage and exits for --help or an unknown flag.
 */
export function parseArgs(name, description) {
  const argv = process.argv.slice(2);
  const opts = { quick: false, out: null, steps: null };
  const usage = () =>
    `usage: node experiments/${name}.mjs [--quick] [--steps N] [--out DIR]\n\n${description}\n\n` +
    `  --quick     tiny models and a few steps (< 1 minute): checks the plumbing only; writes docs/results/${name}-quick/\n` +
    `  --steps N   train only N steps (the real model sizes, or the tiny ones with --quick): a smoke test, also written to docs/results/${name}-quick/\n` +
    `  --out DIR   output directory (default docs/results/${name}/, or docs/results/${name}-quick/ with --quick or --steps)\n`;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--quick') opts.quick = true;
    else if (a === '--out') {
      if (!argv[i + 1]) fail(`--out needs a directory\n${usage()}`);
      opts.out = argv[++i];
    } else if (a === '--steps') {
      const n = Number(argv[i + 1]);
      if (!Number.isInteger(n) || n < 1) fail(`--steps needs a positive integer\n${usage()}`);
      opts.steps = n;
      i++;
    } else if (a === '--help' || a === '-h') {
      process.stdout.write(usage());
      process.exit(0);
    } else fail(`unknown argument ${a}\n${usage()}`);
  }
  /** Not the real experiment: tiny models (--quick) or a shortened run (--steps). */
  opts.smoke = opts.quick || opts.steps !== null;
  opts.outDir = resolve(opts.out ?? join(ROOT, 'docs', 'results', opts.smoke ? `${name}-quick` : name));
  opts.command = `node experiments/${name}.mjs${argv.length ? ' ' + argv.join(' ') : ''}`;
  return opts;
}

function fail(msg) {
  process.stderr.write(msg.endsWith('\n') ? msg : msg + '\n');
  process.exit(2);
}

/** Create (emptied) the output directory. */
export function prepareOutDir(dir) {
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  return dir;
}

/** Run main(); a DataUnavailableError becomes its one-line message and exit code EXIT_DATA_UNAVAILABLE. */
export function runMain(main) {
  main().catch((e) => {
    if (e instanceof DataUnavailableError) {
      process.stderr.write(`${e.message}\n`);
      process.exit(EXIT_DATA_UNAVAILABLE);
    }
    process.stderr.write(`${e?.stack ?? e}\n`);
    process.exit(1);
  });
}

/** What the numbers were measured on. */
export function machineInfo() {
  const cpus = os.cpus();
  let commit = null;
  try {
    commit = execFileSync('git', ['rev-parse', 'HEAD'], { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    // not a git checkout
  }
  const b = getBackend();
  return {
    cpu: cpus[0]?.model ?? 'unknown',
    logicalCpus: cpus.length,
    memoryGB: +(os.totalmem() / 2 ** 30).toFixed(1),
    platform: `${os.platform()} ${os.release()} ${os.arch()}`,
    node: process.version,
    backend: b.name,
    backendThreads: b.threads,
    loadAverageAtStart: os.loadavg().map((x) => +x.toFixed(2)),
    gitCommit: commit,
  };
}

/** Warn when the native kernels are not loaded: timings then measure the (much slower) reference backend. */
export function warnIfReferenceBackend(machine) {
  if (machine.backend !== 'native') {
    console.warn(`  warning: backend '${machine.backend}' (native kernels not loaded): expect several times longer runs, and throughputs that do not represent Switchyard`);
  }
}

/**
 * JSON, indented, but with arrays of numbers/strings and small objects on one line, so long
 * per-step series stay compact and diffable.
 */
export function stringifyCompact(value, indent = '') {
  const inline = JSON.stringify(value);
  if (inline === undefined) return 'null';
  if (value === null || typeof value !== 'object') return inline;
  const flat = Array.isArray(value) && value.every((v) => v === null || typeof v !== 'object' || (Array.isArray(v) && v.every((w) => w === null || typeof w !== 'object')));
  if (flat || inline.length <= 100) return inline;
  const next = indent + '  ';
  if (Array.isArray(value)) return `[\n${value.map((v) => next + stringifyCompact(v, next)).join(',\n')}\n${indent}]`;
  const entries = Object.entries(value).filter(([, v]) => v !== undefined);
  return `{\n${entries.map(([k, v]) => `${next}${JSON.stringify(k)}: ${stringifyCompact(v, next)}`).join(',\n')}\n${indent}}`;
}

/** Write JSON (stringifyCompact). */
export function writeJson(path, value) {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, stringifyCompact(value) + '\n');
}

/** Write a text file. */
export function writeText(path, text) {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, text);
}

/** Render a Vega-Lite spec and write it as a standalone SVG file; returns the file name. */
export async function writeChart(dir, file, spec) {
  const svg = await renderSpecToSvg(spec);
  writeText(join(dir, file), svg.startsWith('<?xml') ? svg : `<?xml version="1.0" encoding="UTF-8"?>\n${svg}`);
  return file;
}

/** A GitHub-flavoured Markdown table. */
export function mdTable(headers, rows, align) {
  const a = align ?? headers.map((_, i) => (i === 0 ? 'l' : 'r'));
  const sep = a.map((x) => (x === 'r' ? '---:' : x === 'c' ? ':---:' : ':---'));
  const line = (cells) => `| ${cells.map((c) => String(c).replace(/\|/g, '\\|')).join(' | ')} |`;
  return [line(headers), line(sep), ...rows.map(line)].join('\n');
}

/** The common header of every generated README: title, quick-mode warning, command, machine, date. */
export function readmeHeader(title, opts, machine, startedAt, seconds) {
  const lines = [`# ${title}`, ''];
  if (opts.smoke) {
    lines.push(
      `> **${opts.quick ? 'Quick mode' : 'Shortened run'}**: ${opts.quick ? 'tiny models and a handful of steps' : `only ${opts.steps} training steps`}. These numbers only show that the script runs end to end;`,
      '> they say nothing about MoE. Run the script without `--quick` / `--steps` for the real experiment.',
      '',
    );
  }
  lines.push(
    `Generated by \`${opts.command}\` on ${startedAt} in ${fmtDuration(seconds)}.`,
    `Machine: ${machine.cpu}, ${machine.logicalCpus} logical CPUs, Node ${machine.node}, backend ${machine.backend} (${machine.backendThreads} threads); load average at start ${machine.loadAverageAtStart.join(' / ')}.`,
    'Every number below is read from `results.json` in this directory; the text is generated from those numbers.',
    '',
  );
  return lines.join('\n');
}

/** Relative path for README links. */
export function rel(from, to) {
  return relative(from, to) || '.';
}

export function fmtDuration(s) {
  if (!Number.isFinite(s)) return '?';
  if (s < 90) return `${s.toFixed(0)} s`;
  return `${(s / 60).toFixed(1)} min`;
}

/** Seconds with sensible precision: '0.42 s', '7.3 s', '412 s'. */
export const fmtSeconds = (s) => (!Number.isFinite(s) ? '–' : s < 1 ? `${s.toFixed(2)} s` : s < 10 ? `${s.toFixed(1)} s` : `${s.toFixed(0)} s`);
export const fmt = (x, d = 3) => (x === null || x === undefined || !Number.isFinite(x) ? '–' : x.toFixed(d));
export const fmtInt = (x) => (Number.isFinite(x) ? Math.round(x).toLocaleString('en-US') : '–');
export const fmtPct = (x, d = 1) => (Number.isFinite(x) ? `${(100 * x).toFixed(d)}%` : '–');
export const fmtM = (x) => (!Number.isFinite(x) ? '–' : x < 1e5 ? `${(x / 1e3).toFixed(2)} K` : `${(x / 1e6).toFixed(3)} M`);

export const mean = (xs) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN);
export const argmin = (xs) => xs.reduce((best, x, i) => (x < xs[best] ? i : best), 0);
export const argmax = (xs) => xs.reduce((best, x, i) => (x > xs[best] ? i : best), 0);

/** Seconds since `t0` (performance.now() milliseconds). */
export const since = (t0) => (performance.now() - t0) / 1000;

/** A one-line progress logger: prints at most every `everySeconds`, and always when forced. */
export function progressPrinter(everySeconds = 10) {
  let last = 0;
  return (line, force = false) => {
    const now = performance.now();
    if (force || now - last >= everySeconds * 1000) {
      last = now;
      console.log(line);
    }
  };
}
