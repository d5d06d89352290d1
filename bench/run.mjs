// `npm run bench`: every benchmark, each in its own process, against its peer. Not run in CI.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import os from 'node:os';

console.log(`machine: ${os.cpus()[0]?.model ?? 'unknown'} x${os.cpus().length}, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, node ${process.version}, ${new Date().toISOString()}`);
for (const script of ['bench/matmul.mjs', 'bench/moe.mjs', 'bench/lm.mjs', 'bench/serve.mjs', 'bench/remote.mjs', 'bench/wasm.mjs', 'bench/playground.mjs', 'bench/lora.mjs']) {
  if (!existsSync(script)) continue;
  execFileSync(process.execPath, [script], { stdio: 'inherit' });
}
