/**
 * The HTTP server (fastify): OpenAI-compatible /v1/completions and /v1/chat/completions (JSON or
 * server-sent events), /v1/models, /healthz and Prometheus /metrics, in front of one Engine.
 *
 * Errors are OpenAI-shaped `{ error: { message, type, param, code } }`:
 * - 400 malformed JSON (`param: "body"`) or a bad field (`param` names it: `temperature`,
 *   `messages[0].role`, ...); a prompt longer than the context is a 400 naming `prompt` /
 *   `messages` unless `context: 'truncate'` (then the prompt keeps its last tokens);
 * - 413 a body over maxBodyBytes; 429 the queue is full (with Retry-After, seconds);
 * - 500 an expert weight could not be read (`param` names the tensor, `code:
 *   "expert_load_failed"`): the server stays up, /healthz says degraded until a later read of
 *   that weight succeeds; 503 while shutting down.
 * A client that disconnects (stream or not) cancels its request: it leaves the queue, or stops
 * generating at the next token.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { Engine, QueueFullError, ShuttingDownError, AbortedError, type GenerateRequest } from './engine.js';
import { ExpertLoadError } from './expert-store.js';
import { renderMetrics, RequestCounter } from './metrics.js';
import type { RemoteExpertsStats } from '../remote/remote-experts.js';
import type { ServingModel } from './model-loader.js';
import {
  CHAT_STOPS,
  chatSchema,
  completionId,
  completionSchema,
  messageText,
  parseBody,
  renderChat,
  RequestError,
  stopList,
  usage,
  type ChatMessage,
} from './openai.js';

export interface ServerOptions {
  /** Name reported as `model` (default 'switchyard'). */
  modelName?: string;
  /** Most requests waiting behind the one generating (default 16); more get 429. */
  maxQueue?: number;
  /** Largest request body in bytes (default 1 MiB); larger get 413. */
  maxBodyBytes?: number;
  /** A prompt that does not fit: 'error' (400, default) or 'truncate' (keep its last tokens). */
  context?: 'error' | 'truncate';
  /** max_tokens when a request gives none (default 128, capped to what fits). */
  defaultMaxTokens?: number;
  /** fastify logger (default off). */
  logger?: boolean;
  /** Counters of experts served by other processes (`serve --remote-experts`), for /metrics and /healthz. */
  remoteExperts?: { stats(): RemoteExpertsStats; onFailure: 'fail' | 'drop' };
  /** Awaited before every forward of the engine (a test hook: hold a generation mid-way). */
  beforeStep?: () => Promise<void> | void;
}

export interface SwitchyardServer {
  app: FastifyInstance;
  engine: Engine;
  served: ServingModel;
  /** Listen; resolves to the base URL. */
  listen(port: number, host?: string): Promise<string>;
  /** Stop accepting, finish what is in flight and queued, close the listener and the model. */
  shutdown(): Promise<void>;
}

interface ErrorBody {
  error: { message: string; type: string; param: string | null; code: string | null };
}

function errorBody(message: string, type: string, param: string | null = null, code: string | null = null): ErrorBody {
  return { error: { message, type, param, code } };
}

/** Status, body and headers for any error a handler meets. */
function describeError(e: unknown, maxBody: number): { status: number; body: ErrorBody; headers: Record<string, string> } {
  if (e instanceof RequestError) return { status: e.status, body: errorBody(e.message, 'invalid_request_error', e.param), headers: {} };
  if (e instanceof QueueFullError) {
    return { status: 429, body: errorBody(e.message, 'rate_limit_error', null, 'queue_full'), headers: { 'retry-after': String(e.retryAfterSeconds) } };
  }
  if (e instanceof ShuttingDownError) return { status: 503, body: errorBody(e.message, 'server_error', null, 'shutting_down'), headers: {} };
  if (e instanceof ExpertLoadError) return { status: 500, body: errorBody(`expert weight ${e.tensor} could not be read: ${e.message}`, 'server_error', e.tensor, 'expert_load_failed'), headers: {} };
  const fe = e as { code?: string; statusCode?: number; message?: string };
  if (fe.code === 'FST_ERR_CTP_BODY_TOO_LARGE') return { status: 413, body: errorBody(`body: larger than the ${maxBody}-byte limit`, 'invalid_request_error', 'body', 'body_too_large'), headers: {} };
  if (typeof fe.statusCode === 'number' && fe.statusCode >= 400 && fe.statusCode < 500) {
    return { status: fe.statusCode, body: errorBody(fe.message ?? 'bad request', 'invalid_request_error', null), headers: {} };
  }
  return { status: 500, body: errorBody(`internal error: ${(e as Error)?.message ?? String(e)}`, 'server_error'), headers: {} };
}

/** Build the server around a loaded model (does not listen yet). fastify is imported on first use, so importing the library stays fast. */
/** The remote-expert counters /healthz reports (totals; per-expert figures are in /metrics). */
function remoteSummary(r: { stats(): RemoteExpertsStats; onFailure: 'fail' | 'drop' }): Record<string, number | string> {
  const { experts: _perExpert, ...totals } = r.stats();
  return { onFailure: r.onFailure, ...totals };
}

export async function createServer(served: ServingModel, opts: ServerOptions = {}): Promise<SwitchyardServer> {
  const { default: Fastify } = await import('fastify');
  const maxBody = opts.maxBodyBytes ?? 1 << 20;
  const modelName = opts.modelName ?? 'switchyard';
  const contextMode = opts.context ?? 'error';
  const defaultMax = opts.defaultMaxTokens ?? 128;
  const engine = new Engine(served, { maxQueue: opts.maxQueue ?? 16, beforeStep: opts.beforeStep });
  const requests = new RequestCounter();
  const app = Fastify({ logger: opts.logger ?? false, bodyLimit: maxBody, return503OnClosing: true, forceCloseConnections: 'idle' });
  const { tokenizer } = served;
  const ctx = served.contextLength;
  const created = Math.floor(Date.now() / 1000);

  // Any content type is read as JSON (curl -d sends form-urlencoded by default).
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'string', bodyLimit: maxBody }, (_req, body, done) => {
    const text = String(body);
    if (text.trim() === '') return done(new RequestError('body', 'is empty; expected a JSON object'), undefined);
    try {
      done(null, JSON.parse(text));
    } catch (e) {
      done(new RequestError('body', `malformed JSON (${(e as Error).message})`), undefined);
    }
  });

  app.addHook('onRequest', async (req, reply) => {
    const route = req.routeOptions.url ?? 'unmatched';
    reply.raw.once('close', () => requests.add(route, reply.raw.headersSent ? reply.raw.statusCode : 499));
    // Refuse before reading and parsing the body when the queue is full: cheap 429s under overload.
    if (req.method === 'POST' && (route === '/v1/completions' || route === '/v1/chat/completions')) {
      const refused = engine.refusal();
      if (refused) {
        const { status, body, headers } = describeError(refused, maxBody);
        return reply.code(status).headers(headers).send(body);
      }
    }
  });

  app.setErrorHandler((err, _req, reply) => {
    const { status, body, headers } = describeError(err, maxBody);
    void reply.code(status).headers(headers).send(body);
  });
  app.setNotFoundHandler((req, reply) => {
    void reply.code(404).send(errorBody(`no route ${req.method} ${req.url}`, 'invalid_request_error', null, 'not_found'));
  });

  /** Prompt ids and max_tokens after the context policy; RequestError naming the field otherwise. */
  function fit(ids: number[], maxTokens: number | null | undefined, promptField: string): { promptIds: number[]; maxTokens: number } {
    if (ids.length === 0) throw new RequestError(promptField, 'must not be empty');
    if (maxTokens !== null && maxTokens !== undefined && maxTokens >= ctx) {
      throw new RequestError('max_tokens', `is ${maxTokens}; the context holds ${ctx} tokens (prompt included)`);
    }
    const want = maxTokens ?? Math.min(defaultMax, ctx - 1);
    if (ids.length + want <= ctx) return { promptIds: ids, maxTokens: want };
    if (contextMode === 'truncate') return { promptIds: ids.slice(ids.length - (ctx - want)), maxTokens: want };
    if (maxTokens === null || maxTokens === undefined) {
      if (ids.length < ctx) return { promptIds: ids, maxTokens: ctx - ids.length };
      throw new RequestError(promptField, `is ${ids.length} tokens; the context holds ${ctx} (prompt + completion); shorten it (the server runs with context: 'error')`);
    }
    throw new RequestError(ids.length >= ctx ? promptField : 'max_tokens', `prompt (${ids.length} tokens) + max_tokens (${maxTokens}) exceed the context of ${ctx} tokens`);
  }

  function sampling(body: { temperature?: number | null; top_p?: number | null; seed?: number | null }): Pick<GenerateRequest, 'temperature' | 'topP' | 'seed'> {
    return {
      temperature: body.temperature ?? 1,
      topP: body.top_p ?? 1,
      seed: body.seed ?? Math.floor(Math.random() * 2 ** 31),
    };
  }

  /** An AbortSignal that fires when the client goes away before the response is complete. */
  function disconnectSignal(reply: FastifyReply): AbortController {
    const ac = new AbortController();
    reply.raw.once('close', () => {
      if (!reply.raw.writableFinished) ac.abort();
    });
    return ac;
  }

  async function respond(
    req: FastifyRequest,
    reply: FastifyReply,
    kind: 'text' | 'chat',
    gen: Omit<GenerateRequest, 'signal' | 'onText'>,
    stream: boolean,
    includeUsage: boolean,
  ): Promise<unknown> {
    const id = completionId(kind === 'chat' ? 'chatcmpl' : 'cmpl');
    const object = kind === 'chat' ? 'chat.completion' : 'text_completion';
    if (!stream) {
      const ac = disconnectSignal(reply);
      try {
        const r = await engine.generate({ ...gen, signal: ac.signal });
        const choice =
          kind === 'chat'
            ? { index: 0, message: { role: 'assistant', content: r.text }, logprobs: null, finish_reason: r.finishReason }
            : { index: 0, text: r.text, logprobs: null, finish_reason: r.finishReason };
        return reply.send({ id, object, created: Math.floor(Date.now() / 1000), model: modelName, choices: [choice], usage: usage(r.promptTokens, r.completionTokens) });
      } catch (e) {
        if (e instanceof AbortedError) return reply;
        throw e;
      }
    }
    reply.hijack();
    const raw = reply.raw;
    const ac = disconnectSignal(reply);
    const chunkObject = kind === 'chat' ? 'chat.completion.chunk' : 'text_completion';
    const t = Math.floor(Date.now() / 1000);
    let started = false;
    const send = (o: unknown): void => {
      raw.write(`data: ${JSON.stringify(o)}\n\n`);
    };
    const chunk = (delta: string | null, finish: string | null, role = false): unknown =>
      kind === 'chat'
        ? { id, object: chunkObject, created: t, model: modelName, choices: [{ index: 0, delta: role ? { role: 'assistant', content: '' } : delta === null ? {} : { content: delta }, logprobs: null, finish_reason: finish }] }
        : { id, object: chunkObject, created: t, model: modelName, choices: [{ index: 0, text: delta ?? '', logprobs: null, finish_reason: finish }] };
    const start = (): void => {
      if (started) return;
      started = true;
      raw.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', connection: 'keep-alive', 'x-accel-buffering': 'no' });
      if (kind === 'chat') send(chunk(null, null, true));
    };
    try {
      const r = await engine.generate({
        ...gen,
        signal: ac.signal,
        onText: (delta) => {
          if (ac.signal.aborted) return;
          start();
          send(chunk(delta, null));
        },
      });
      if (ac.signal.aborted) return;
      start();
      send(chunk(null, r.finishReason));
      if (includeUsage) send({ id, object: chunkObject, created: t, model: modelName, choices: [], usage: usage(r.promptTokens, r.completionTokens) });
      raw.end('data: [DONE]\n\n');
    } catch (e) {
      if (ac.signal.aborted || e instanceof AbortedError) {
        raw.destroy();
        return;
      }
      const { status, body, headers } = describeError(e, maxBody);
      if (!started) {
        raw.writeHead(status, { 'content-type': 'application/json; charset=utf-8', ...headers });
        raw.end(JSON.stringify(body));
      } else {
        send(body);
        raw.end();
      }
    }
    return undefined;
  }

  app.post('/v1/completions', async (req, reply) => {
    const body = parseBody(completionSchema, req.body);
    const prompt = typeof body.prompt === 'string' ? body.prompt : body.prompt[0];
    const { promptIds, maxTokens } = fit(served.encodePrompt(prompt), body.max_tokens, 'prompt');
    const includeUsage = !!(body as { stream_options?: { include_usage?: boolean } }).stream_options?.include_usage;
    return respond(req, reply, 'text', { promptIds, maxTokens, stop: stopList(body.stop), ...sampling(body) }, !!body.stream, includeUsage);
  });

  app.post('/v1/chat/completions', async (req, reply) => {
    const body = parseBody(chatSchema, req.body);
    const messages: ChatMessage[] = body.messages.map((m) => ({ role: m.role, content: messageText(m.content) }));
    const own = (tokenizer as { applyChatTemplate?: (m: ChatMessage[]) => string }).applyChatTemplate;
    const text = own ? own.call(tokenizer, messages) : renderChat(messages);
    const { promptIds, maxTokens } = fit(served.encodePrompt(text), body.max_completion_tokens ?? body.max_tokens, 'messages');
    const stop = [...stopList(body.stop), ...(own ? [] : CHAT_STOPS)];
    const includeUsage = !!(body as { stream_options?: { include_usage?: boolean } }).stream_options?.include_usage;
    return respond(req, reply, 'chat', { promptIds, maxTokens, stop, ...sampling(body) }, !!body.stream, includeUsage);
  });

  app.get('/v1/models', async () => ({ object: 'list', data: [{ id: modelName, object: 'model', created, owned_by: 'switchyard' }] }));

  const health = (): { status: 'ok' | 'degraded' | 'shutting_down'; reasons: string[] } => {
    const failures = served.store?.failedTensors() ?? new Map<string, string>();
    const reasons = [...failures].map(([t, m]) => `expert weight ${t} cannot be read: ${m}`);
    if (!engine.isAccepting) return { status: 'shutting_down', reasons: ['the server is shutting down', ...reasons] };
    return { status: reasons.length ? 'degraded' : 'ok', reasons };
  };

  app.get('/healthz', async (_req, reply) => {
    const h = health();
    const s = served.store?.stats();
    return reply.code(h.status === 'shutting_down' ? 503 : 200).send({
      ...h,
      model: modelName,
      queue: { depth: engine.queueDepth, capacity: engine.maxQueue, generating: engine.busy },
      experts: s ? { budgetBytes: s.budgetBytes, residentBytes: s.residentBytes, totalBytes: s.totalExpertBytes, prefetch: served.store!.prefetch } : 'resident',
      ...(opts.remoteExperts ? { remoteExperts: remoteSummary(opts.remoteExperts) } : {}),
    });
  });

  app.get('/metrics', async (_req, reply) => {
    return reply.header('content-type', 'text/plain; version=0.0.4; charset=utf-8').send(renderMetrics(engine, served.store, requests, health().status === 'degraded', opts.remoteExperts?.stats() ?? null));
  });

  let closing: Promise<void> | null = null;
  return {
    app,
    engine,
    served,
    async listen(port: number, host = '127.0.0.1') {
      return app.listen({ port, host });
    },
    shutdown() {
      closing ??= (async () => {
        const drained = engine.drain();
        await app.close();
        await drained;
        await served.close();
      })();
      return closing;
    },
  };
}

