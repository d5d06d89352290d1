/** `switchyard expert-server`: host some of a model's experts for routers elsewhere, over NATS (expert parallelism). */
import { Command, InvalidArgumentError } from 'commander';
import { ConfigError } from '../errors.js';
import { noGrad } from '../tensor/autodiff.js';
import { Tensor } from '../tensor/tensor.js';
import { parseByteBudget } from '../serve/bytes.js';
import { loadServingModel } from '../serve/model-loader.js';
import { ExpertServer } from '../remote/expert-server.js';
import { defaultModelId, expertCount, formatExpertSet, moeLayerIndex, parseExpertSpec } from '../remote/spec.js';
import { intOption, numberOption } from './common.js';

export function expertServerCommand(): Command {
  return new Command('expert-server')
    .description('serve some of a model\'s routed experts over NATS for `switchyard serve --remote-experts` (replicas of an expert share its load)')
    .requiredOption('--checkpoint <ckpt>', 'run directory (or its checkpoints/ or a step directory), a Hugging Face MoE folder, or a folder from `switchyard import --out`')
    .requiredOption('--experts <spec>', "experts to host: 'all', or '<layer>:<ids>' items such as '1:0-3,2:*' or '*:0-3' (layer = model layer index; an item without '<layer>:' continues the previous layer)")
    .requiredOption('--nats <url>', 'NATS server URL, e.g. nats://127.0.0.1:4222 (comma-separated for a cluster)')
    .option('--model-id <id>', "id routers address this model by (default: from the checkpoint's sha256, or the folder name)")
    .option('--expert-memory <size>', "cap on the memory for the hosted experts' weights (default: all of them stay resident once read)", (v: string) => {
      try {
        parseByteBudget(v, '--expert-memory');
      } catch (e) {
        throw new InvalidArgumentError((e as Error).message);
      }
      return v;
    })
    .option('--max-rows <n>', 'largest number of token rows accepted in one request', intOption('--max-rows'), 65536)
    .option('--verify <mode>', "integrity of expert reads: 'changed', 'always' or 'off' (as for serve)", (v: string) => {
      if (v !== 'changed' && v !== 'always' && v !== 'off') throw new InvalidArgumentError(`--verify must be 'changed', 'always' or 'off', got ${JSON.stringify(v)}`);
      return v;
    }, 'changed')
    .option('--train', 'accept fine-tuning: keep activations of training forwards, answer backward requests with dX, accumulate the hosted experts\' gradients and apply the optimizer on `step` (loads the checkpoint resident)')
    .option('--optimizer <name>', "with --train: 'adamw' or 'sgd'", (v: string) => {
      if (v !== 'adamw' && v !== 'sgd') throw new InvalidArgumentError(`--optimizer must be 'adamw' or 'sgd', got ${JSON.stringify(v)}`);
      return v;
    }, 'adamw')
    .option('--lr <x>', 'with --train: learning rate', numberOption('--lr', { positive: true }), 1e-4)
    .action(async (o: { checkpoint: string; experts: string; nats: string; modelId?: string; expertMemory?: string; maxRows: number; verify: 'changed' | 'always' | 'off'; train?: boolean; optimizer: 'adamw' | 'sgd'; lr: number }) => {
      if (o.train && o.expertMemory) throw new ConfigError('--expert-memory', o.expertMemory, 'cannot be used with --train (fine-tuning keeps the hosted experts resident)');
      // Experts through the on-demand store: only the hosted ones are ever read (resident for --train).
      const served = await loadServingModel(o.checkpoint, { expertMemory: o.train ? null : o.expertMemory ?? 'all', verify: o.verify });
      const layers = moeLayerIndex(served.model);
      const sizes = new Map([...layers].map(([l, i]) => [i, l.config.numExperts]));
      let experts;
      try {
        experts = parseExpertSpec(o.experts, sizes, '--experts');
      } catch (e) {
        await served.close();
        throw e;
      }
      // Read the hosted experts now (one zero row each), so the first requests do not wait on disk.
      const byIndex = new Map([...layers].map(([l, i]) => [i, l]));
      noGrad(() => {
        if (!served.store) return;
        for (const [li, set] of experts) {
          const layer = byIndex.get(li)!;
          const d = layer.config.dModel, E = layer.config.numExperts;
          for (const e of set) {
            const offsets = new Int32Array(E + 1);
            for (let i = e + 1; i <= E; i++) offsets[i] = 1;
            const x = new Tensor(new Float32Array(d), [1, d]);
            served.store.runExperts(layer, x, offsets, x);
          }
        }
      });
      const modelId = o.modelId ?? defaultModelId(served.source);
      const servers = o.nats.split(',').map((s) => s.trim()).filter(Boolean);
      const train = o.train ? { optimizer: o.optimizer, lr: o.lr } : null;
      const server = await ExpertServer.start(served.model, { servers, modelId, experts, source: served.store, limits: { maxRows: o.maxRows }, train });
      process.stdout.write(`switchyard expert-server: instance ${server.id} serving ${expertCount(experts)} experts (${formatExpertSet(experts)}) of model ${modelId} on ${servers.join(',')}${train ? ` (fine-tuning: ${train.optimizer}, lr ${train.lr})` : ''}\n`);
      let stopping = false;
      const stop = (signal: string): void => {
        if (stopping) return;
        stopping = true;
        process.stdout.write(`switchyard expert-server: ${signal}: stopping\n`);
        server.stop().then(
          async () => {
            await served.close();
            process.exit(0);
          },
          () => process.exit(1),
        );
      };
      process.on('SIGTERM', () => stop('SIGTERM'));
      process.on('SIGINT', () => stop('SIGINT'));
    });
}
