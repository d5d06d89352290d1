/** `switchyard bench`: the benchmark suite (matmul, MoE layer, demo training step) against numpy/PyTorch. */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import { ConfigError } from '../errors.js';

export function benchCommand(): Command {
  return new Command('bench')
    .description('run the benchmarks next to numpy / PyTorch (needs /usr/bin/python3 with numpy and torch)')
    .action(() => {
      const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
      const script = join(root, 'bench', 'run.mjs');
      if (!existsSync(script)) throw new ConfigError('bench', script, 'the benchmark scripts are not installed with this package');
      const r = spawnSync(process.execPath, [script], { cwd: root, stdio: 'inherit' });
      if (r.status !== 0) process.exitCode = r.status ?? 1;
    });
}
