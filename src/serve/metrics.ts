/** Prometheus text exposition (format 0.0.4) of the server's counters. */
import type { Engine } from './engine.js';
import type { ExpertStore } from './expert-store.js';
import type { RemoteExpertsStats } from '../remote/remote-experts.js';

type Labels = Record<string, string | number>;

function esc(v: string | number): string {
  return String(v).replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}

function fmt(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (!Number.isFinite(v)) return v > 0 ? '+Inf' : '-Inf';
  return String(v);
}

/** Builds one exposition: HELP/TYPE once per metric, then its samples. */
export class PromText {
  private readonly lines: string[] = [];
  metric(name: string, type: 'counter' | 'gauge', help: string, samples: Array<[Labels, number]> | number): this {
    this.lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    const list: Array<[Labels, number]> = typeof samples === 'number' ? [[{}, samples]] : samples;
    for (const [labels, v] of list) {
      const l = Object.entries(labels);
      this.lines.push(`${name}${l.length ? `{${l.map(([k, x]) => `${k}="${esc(x)}"`).join(',')}}` : ''} ${fmt(v)}`);
    }
    return this;
  }
  toString(): string {
    return this.lines.join('\n') + '\n';
  }
}

/** Request counts by route and status code. */
export class RequestCounter {
  private readonly counts = new Map<string, { route: string; status: number; n: number }>();
  add(route: string, status: number): void {
    const k = `${route} ${status}`;
    const c = this.counts.get(k);
    if (c) c.n++;
    else this.counts.set(k, { route, status, n: 1 });
  }
  samples(): Array<[Labels, number]> {
    return [...this.counts.values()].map((c) => [{ route: c.route, status: c.status }, c.n]);
  }
  count(route: string, status: number): number {
    return this.counts.get(`${route} ${status}`)?.n ?? 0;
  }
}

/** The server's Prometheus exposition: requests, generation, expert load, cache and remote-expert counters. */
export function renderMetrics(engine: Engine, store: ExpertStore | null, requests: RequestCounter, degraded: boolean, remote: RemoteExpertsStats | null = null): string {
  const c = engine.counters;
  const p = new PromText();
  p.metric('switchyard_requests_total', 'counter', 'HTTP requests by route and status code.', requests.samples());
  p.metric('switchyard_generations_total', 'counter', 'Generations by outcome.', [
    [{ outcome: 'completed' }, c.requestsCompleted],
    [{ outcome: 'failed' }, c.requestsFailed],
    [{ outcome: 'aborted' }, c.requestsAborted],
  ]);
  p.metric('switchyard_tokens_generated_total', 'counter', 'Tokens generated.', c.tokensGenerated);
  p.metric('switchyard_prompt_tokens_total', 'counter', 'Prompt tokens processed (prefill).', c.promptTokens);
  p.metric('switchyard_decode_tokens_per_second', 'gauge', 'Decode throughput since start: decode tokens / seconds in decode forwards.', c.decodeSeconds > 0 ? c.decodeTokens / c.decodeSeconds : 0);
  p.metric('switchyard_busy_seconds_total', 'counter', 'Seconds spent in model forwards.', c.busySeconds);
  p.metric('switchyard_queue_depth', 'gauge', 'Requests waiting for the engine.', engine.queueDepth);
  p.metric('switchyard_queue_capacity', 'gauge', 'Most requests that may wait (--max-queue).', engine.maxQueue);
  p.metric('switchyard_inflight', 'gauge', 'Requests generating now (0 or 1).', engine.busy ? 1 : 0);
  p.metric('switchyard_degraded', 'gauge', '1 while an expert weight cannot be read.', degraded ? 1 : 0);
  const load: Array<[Labels, number]> = [];
  for (const [layer, counts] of [...c.expertLoad.entries()].sort((a, b) => a[0] - b[0])) counts.forEach((n, e) => load.push([{ layer, expert: e }, n]));
  p.metric('switchyard_expert_load_total', 'counter', 'Token assignments per MoE layer and expert.', load);
  if (store) {
    const s = store.stats();
    p.metric('switchyard_expert_cache_hits_total', 'counter', 'Expert lookups served from the cache.', s.hits);
    p.metric('switchyard_expert_cache_misses_total', 'counter', 'Expert lookups read from disk.', s.misses);
    p.metric('switchyard_expert_cache_bytes_read_total', 'counter', 'Bytes of expert weights read from disk.', s.bytesRead);
    p.metric('switchyard_expert_cache_evictions_total', 'counter', 'Experts evicted from the cache.', s.evictions);
    p.metric('switchyard_expert_cache_resident_bytes', 'gauge', 'Bytes of expert weights held now.', s.residentBytes);
    p.metric('switchyard_expert_cache_budget_bytes', 'gauge', 'The expert cache budget.', s.budgetBytes);
    p.metric('switchyard_expert_total_bytes', 'gauge', 'Bytes of all routed experts (fp32).', s.totalExpertBytes);
    p.metric('switchyard_expert_cache_split_forwards_total', 'counter', "Layer forwards whose experts exceeded the budget together and ran in groups.", s.splitForwards);
    p.metric('switchyard_expert_prefetch_issued_total', 'counter', 'Experts prefetched.', s.prefetchIssued);
    p.metric('switchyard_expert_prefetch_useful_total', 'counter', 'Prefetched experts used before eviction.', s.prefetchUseful);
    p.metric('switchyard_expert_prediction_correct_total', 'counter', "Experts a layer used that the previous layer's prediction named.", s.predictedCorrect);
    p.metric('switchyard_expert_prediction_needed_total', 'counter', 'Experts used by layers that had a prediction.', s.predictedTotal);
    p.metric('switchyard_expert_load_errors_total', 'counter', 'Expert reads that failed.', s.loadErrors);
    p.metric('switchyard_expert_layer_hits_total', 'counter', 'Cache hits per MoE layer.', s.layers.map((l) => [{ layer: l.layer }, l.hits]));
    p.metric('switchyard_expert_layer_misses_total', 'counter', 'Cache misses per MoE layer.', s.layers.map((l) => [{ layer: l.layer }, l.misses]));
  }
  if (remote) {
    p.metric('switchyard_remote_expert_calls_total', 'counter', 'Layer forwards that used remote experts.', remote.calls);
    p.metric('switchyard_remote_expert_requests_total', 'counter', 'NATS requests sent to expert servers (retries and chunks included).', remote.requests);
    p.metric('switchyard_remote_expert_retries_total', 'counter', 'Requests retried on another replica.', remote.retries);
    p.metric('switchyard_remote_expert_timeouts_total', 'counter', 'Requests that timed out.', remote.timeouts);
    p.metric('switchyard_remote_expert_failures_total', 'counter', 'Expert blocks that no replica answered.', remote.failures);
    p.metric('switchyard_remote_expert_dropped_assignments_total', 'counter', "Token-expert assignments dropped under the 'drop' policy.", remote.droppedAssignments);
    p.metric('switchyard_remote_expert_bytes_total', 'counter', 'Bytes exchanged with expert servers.', [[{ direction: 'sent' }, remote.bytesSent], [{ direction: 'received' }, remote.bytesReceived]]);
    p.metric('switchyard_remote_expert_rows_total', 'counter', 'Token rows routed to experts, by where they ran.', [[{ where: 'remote' }, remote.remoteRows], [{ where: 'local' }, remote.localRows]]);
    p.metric('switchyard_remote_expert_layer_rows_total', 'counter', 'Token rows sent per remote expert.', remote.experts.map((e) => [{ layer: e.layer, expert: e.expert }, e.rows]));
    p.metric('switchyard_remote_expert_layer_failures_total', 'counter', 'Layer forwards in which no replica of this expert answered.', remote.experts.map((e) => [{ layer: e.layer, expert: e.expert }, e.failures]));
  }
  return p.toString();
}
