#!/usr/bin/env node
// Run every experiment in sequence (each in its own Node process), passing --quick through.
// A script whose data set is not installed is reported as skipped; any other failure makes the
// exit code non-zero after the remaining experiments have run.
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { EXIT_DATA_UNAVAILABLE } from './lib/common.mjs';

const EXPERIMENTS = ['dense-vs-moe', 'load-balancing', 'specialisation', 'vision', 'lora-mixture'];
const here = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
if (args.includes('--help') || args.includes('-h')) {
  console.log(`usage: node experiments/run-all.mjs [--quick]\n\nRuns ${EXPERIMENTS.join(', ')} in sequence; --quick runs each in its tiny plumbing mode.`);
  process.exit(0);
}
const unknown = args.filter((a) => a !== '--quick');
if (unknown.length) {
  console.error(`unknown argument ${unknown[0]} (only --quick is passed through)`);
  process.exit(2);
}

const summary = [];
const t0 = performance.now();
for (const name of EXPERIMENTS) {
  console.log(`\n=== ${name} ${args.join(' ')} ===`);
  const start = performance.now();
  const r = spawnSync(process.execPath, [join(here, `${name}.mjs`), ...args], { stdio: 'inherit' });
  const secs = (performance.now() - start) / 1000;
  const status = r.status === 0 ? 'ok' : r.status === EXIT_DATA_UNAVAILABLE ? 'skipped (data not installed)' : `failed (exit ${r.status ?? r.signal})`;
  summary.push({ name, status, secs });
}
console.log('\n=== summary ===');
for (const s of summary) console.log(`  ${s.name.padEnd(16)} ${s.status.padEnd(30)} ${s.secs.toFixed(0)} s`);
console.log(`  total ${((performance.now() - t0) / 60000).toFixed(1)} min`);
process.exit(summary.some((s) => s.status.startsWith('failed')) ? 1 : 0);
