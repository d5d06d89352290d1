/** `switchyard serve <checkpoint|hf-dir>`: an OpenAI-compatible HTTP server for a trained or imported MoE model. */
import { Command, InvalidArgumentError } from 'commander';
import { basename, resolve } from 'node:path';
import { ConfigError } from '../errors.js';
import { formatBytes, parseByteBudget } from '../serve/bytes.js';
import { loadServingModel } from '../serve/model-loader.js';
import { createServer } from '../serve/server.js';
import { RemoteExperts } from '../remote/remote-experts.js';
import { defaultModelId } from '../remote/spec.js';
import { intOption } from './common.js';

function sizeOption(flag: string): (v: string) => number {
  return (v: string) => {
    let spec;
    try {
      spec = parseByteBudget(v, flag);
    } catch (e) {
      throw new InvalidArgumentError((e as Error).message);
    }
    if (spec.kind !== 'bytes') throw new InvalidArgumentError(`${flag} must be a size such as 1MB or 65536, got ${JSON.stringify(v)}`);
    return spec.bytes;
  };
}

function budgetOption(v: string): string {
  try {
    parseByteBudget(v, '--expert-memory');
  } catch (e) {
    throw new InvalidArgumentError((e as Error).message);
  }
  return v;
}

export function serveCommand(): Command {
  return new Command('serve')
    .description('serve a checkpoint or a Hugging Face MoE folder over HTTP (OpenAI-compatible /v1/completions and /v1/chat/completions, /healthz, /metrics)')
    .argument('<model>', 'run directory (or its checkpoints/ or a step directory), a Hugging Face MoE folder, or a folder from `switchyard import --out`')
    .option('--port <n>', 'TCP port (0 = any free port)', intOption('--port', 0), 8080)
    .option('--host <addr>', 'address to listen on', '127.0.0.1')
    .option('--expert-memory <size>', "keep routed experts on disk with an LRU cache of this size: '200MB', '1.5GB', a fraction '0.25' / '25%' of all experts, or 'all' (default: load every weight)", budgetOption)
    .option('--prefetch', "with --expert-memory: read the next layer's predicted experts in a worker thread while the current layer runs")
    .option('--verify <mode>', "integrity of expert reads: 'changed' (CRC-check reads once the file changed since start-up), 'always' (every read), 'off' (also skips the start-up sha256/CRC pass)", (v: string) => {
      if (v !== 'changed' && v !== 'always' && v !== 'off') throw new InvalidArgumentError(`--verify must be 'changed', 'always' or 'off', got ${JSON.stringify(v)}`);
      return v;
    }, 'changed')
    .option('--max-queue <n>', 'requests that may wait while one generates; more get 429', intOption('--max-queue', 0), 16)
    .option('--max-body <size>', 'largest request body; larger get 413', sizeOption('--max-body'), 1 << 20)
    .option('--context <mode>', "a prompt longer than the context: 'error' (400) or 'truncate' (keep its last tokens)", (v: string) => {
      if (v !== 'error' && v !== 'truncate') throw new InvalidArgumentError(`--context must be 'error' or 'truncate', got ${JSON.stringify(v)}`);
      return v;
    }, 'error')
    .option('--max-tokens <n>', 'max_tokens of a request that gives none', intOption('--max-tokens'), 128)
    .option('--model-name <name>', 'the `model` reported in responses (default: the folder name)')
    .option('--remote-experts <nats-url>', 'run the routed experts in `switchyard expert-server` processes reached through this NATS server (comma-separated URLs for a cluster)')
    .option('--model-id <id>', "with --remote-experts: the id the expert servers registered (default: from the checkpoint's sha256, or the folder name)")
    .option('--remote-timeout <ms>', 'with --remote-experts: per-request timeout; a request that times out or fails is retried once on another replica', intOption('--remote-timeout'), 2000)
    .option('--on-expert-failure <policy>', "with --remote-experts, when no replica answers: 'fail' (the request fails naming the layer and expert) or 'drop' (that expert's contribution is dropped for those tokens, as capacity dropping does, and counted)", (v: string) => {
      if (v !== 'fail' && v !== 'drop') throw new InvalidArgumentError(`--on-expert-failure must be 'fail' or 'drop', got ${JSON.stringify(v)}`);
      return v;
    }, 'fail')
    .option('--local-experts <spec>', "with --remote-experts: experts to run in this process instead ('1:0-3,2:*'; read on demand within --expert-memory)")
    .action(async (path: string, o: { port: number; host: string; expertMemory?: string; prefetch?: boolean; verify: 'changed' | 'always' | 'off'; maxQueue: number; maxBody: number; context: 'error' | 'truncate'; maxTokens: number; modelName?: string; remoteExperts?: string; modelId?: string; remoteTimeout: number; onExpertFailure: 'fail' | 'drop'; localExperts?: string }) => {
      if (o.prefetch && !o.expertMemory) throw new InvalidArgumentError('--prefetch needs --expert-memory');
      if (!o.remoteExperts && (o.localExperts || o.modelId)) throw new ConfigError(o.localExperts ? '--local-experts' : '--model-id', o.localExperts ?? o.modelId, 'needs --remote-experts');
      // With remote experts the model is built with its experts deferred (an expert store that
      // only ever reads --local-experts), and RemoteExperts takes the layers over.
      const served = await loadServingModel(path, { expertMemory: o.expertMemory ?? (o.remoteExperts ? 'all' : null), prefetch: !!o.prefetch, verify: o.verify });
      let remote: RemoteExperts | null = null;
      if (o.remoteExperts) {
        try {
          remote = await RemoteExperts.connect(served.model, {
            servers: o.remoteExperts.split(',').map((s) => s.trim()).filter(Boolean),
            modelId: o.modelId ?? defaultModelId(served.source),
            timeoutMs: o.remoteTimeout,
            onFailure: o.onExpertFailure,
            local: o.localExperts,
            localSource: served.store ?? undefined,
          });
        } catch (e) {
          await served.close();
          throw e;
        }
        remote.attach();
        const found = await remote.discover();
        if (found.missing.length) process.stderr.write(`switchyard serve: warning: ${found.missing.length} remote expert(s) have no expert server yet (${found.missing.slice(0, 6).join(', ')}${found.missing.length > 6 ? ', ...' : ''}); requests needing them fail until one starts\n`);
        const close = served.close;
        const r = remote;
        served.close = async () => {
          await r.close();
          await close();
        };
      }
      const name = o.modelName ?? basename(resolve(path));
      const server = await createServer(served, { modelName: name, maxQueue: o.maxQueue, maxBodyBytes: o.maxBody, context: o.context, defaultMaxTokens: o.maxTokens, remoteExperts: remote ?? undefined });
      const url = await server.listen(o.port, o.host);
      const s = served.store?.stats();
      const experts = remote
        ? `experts on expert servers (model id ${remote.modelId}) via ${o.remoteExperts}${o.localExperts ? `, local ${o.localExperts}` : ''}, on failure ${remote.onFailure}`
        : s ? `experts on disk, cache ${formatBytes(s.budgetBytes)} of ${formatBytes(s.totalExpertBytes)}${served.store!.prefetch ? ', prefetch on' : ''}` : 'all weights resident';
      process.stdout.write(`switchyard serve: ${name} (${served.source.kind}, context ${served.contextLength}, ${experts}) listening on ${url}\n`);
      let stopping = false;
      const stop = (signal: string): void => {
        if (stopping) return;
        stopping = true;
        process.stdout.write(`switchyard serve: ${signal}: finishing ${server.engine.busy ? 1 : 0} running and ${server.engine.queueDepth} queued request(s), then exiting\n`);
        server.shutdown().then(
          () => process.exit(0),
          (e) => {
            process.stderr.write(`switchyard: shutdown failed: ${(e as Error).message}\n`);
            process.exit(1);
          },
        );
      };
      process.on('SIGTERM', () => stop('SIGTERM'));
      process.on('SIGINT', () => stop('SIGINT'));
    });
}
