/**
 * OpenAI-compatible request validation (every problem names its field) and response shapes for
 * /v1/completions and /v1/chat/completions, and the chat prompt template.
 *
 * Chat template (used unless the tokenizer brings its own `applyChatTemplate`): each message is
 * one line `System: …`, `User: …` or `Assistant: …` (content as given, newline-terminated), then
 * `Assistant:` for the model to continue. `\nUser:` and `\nSystem:` are implicit stop sequences.
 */
import { z } from 'zod';

/** A 400: `param` names the offending field (`temperature`, `messages[0].content`, `body`). */
export class RequestError extends Error {
  readonly param: string;
  readonly status: number;
  constructor(param: string, message: string, status = 400) {
    super(`${param}: ${message}`);
    this.param = param;
    this.status = status;
  }
}

const stop = z.union([z.string().min(1, 'stop sequences must not be empty'), z.array(z.string().min(1, 'stop sequences must not be empty')).max(4, 'at most 4 stop sequences')]);

const common = {
  model: z.string().optional(),
  max_tokens: z.number().int('must be an integer').min(1, 'must be >= 1').nullable().optional(),
  temperature: z.number().min(0, 'must be in [0, 2]').max(2, 'must be in [0, 2]').nullable().optional(),
  top_p: z.number().gt(0, 'must be in (0, 1]').max(1, 'must be in (0, 1]').nullable().optional(),
  stop: stop.nullable().optional(),
  seed: z.number().int('must be an integer').nullable().optional(),
  stream: z.boolean().nullable().optional(),
  n: z.literal(1, { errorMap: () => ({ message: 'only n = 1 is supported' }) }).nullable().optional(),
  presence_penalty: z.literal(0, { errorMap: () => ({ message: 'is not supported (only 0)' }) }).nullable().optional(),
  frequency_penalty: z.literal(0, { errorMap: () => ({ message: 'is not supported (only 0)' }) }).nullable().optional(),
  user: z.string().optional(),
};

export const completionSchema = z
  .object({
    ...common,
    prompt: z.union([z.string(), z.array(z.string()).length(1, 'only one prompt per request is supported')]),
    echo: z.literal(false, { errorMap: () => ({ message: 'is not supported' }) }).nullable().optional(),
    logprobs: z.null({ errorMap: () => ({ message: 'is not supported' }) }).optional(),
    best_of: z.literal(1, { errorMap: () => ({ message: 'only best_of = 1 is supported' }) }).nullable().optional(),
    suffix: z.null({ errorMap: () => ({ message: 'is not supported' }) }).optional(),
  })
  .passthrough();

const content = z.union([
  z.string(),
  z.array(z.object({ type: z.literal('text', { errorMap: () => ({ message: "only 'text' parts are supported" }) }), text: z.string() })),
]);

export const chatSchema = z
  .object({
    ...common,
    max_completion_tokens: z.number().int('must be an integer').min(1, 'must be >= 1').nullable().optional(),
    messages: z
      .array(
        z.object({
          role: z.enum(['system', 'developer', 'user', 'assistant'], { errorMap: () => ({ message: "must be 'system', 'user' or 'assistant'" }) }),
          content,
          name: z.string().optional(),
        }),
      )
      .min(1, 'must hold at least one message'),
    logprobs: z.literal(false, { errorMap: () => ({ message: 'is not supported' }) }).nullable().optional(),
    tools: z.undefined({ errorMap: () => ({ message: 'are not supported' }) }).optional(),
  })
  .passthrough();

export type CompletionBody = z.infer<typeof completionSchema>;
export type ChatBody = z.infer<typeof chatSchema>;

/** `messages.0.content` → `messages[0].content`. */
function fieldPath(path: ReadonlyArray<string | number>): string {
  let out = '';
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : out ? `.${p}` : p;
  return out || 'body';
}

/** Validate a parsed JSON body; RequestError naming the first bad field. */
export function parseBody<S extends z.ZodTypeAny>(schema: S, body: unknown): z.infer<S> {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new RequestError('body', 'must be a JSON object');
  const r = schema.safeParse(body);
  if (r.success) return r.data as z.infer<S>;
  const issue = r.error.issues[0];
  const param = fieldPath(issue.path);
  let message = issue.message;
  let value: unknown = body;
  for (const k of issue.path) value = value === null || value === undefined ? undefined : (value as Record<string | number, unknown>)[k];
  if (issue.code === 'invalid_type') message = issue.received === 'undefined' ? 'is required' : `must be ${issue.expected}, got ${issue.received}`;
  if (issue.code === 'invalid_union') message = value === undefined ? 'is required' : `has the wrong type or value${describeUnion(issue)}`;
  throw new RequestError(param, message);
}

function describeUnion(issue: z.ZodIssue): string {
  if (issue.code !== 'invalid_union') return '';
  const inner = issue.unionErrors.flatMap((e) => e.issues).find((i) => i.code !== 'invalid_type');
  return inner ? ` (${inner.message})` : '';
}

export interface ChatMessage {
  role: string;
  content: string;
}

/** Message content as plain text (text parts concatenated). */
export function messageText(c: ChatBody['messages'][number]['content']): string {
  return typeof c === 'string' ? c : c.map((p) => p.text).join('');
}

const ROLE: Record<string, string> = { system: 'System', developer: 'System', user: 'User', assistant: 'Assistant' };

/** The default chat template (see module doc). */
export function renderChat(messages: ChatMessage[]): string {
  return messages.map((m) => `${ROLE[m.role] ?? 'User'}: ${m.content}\n`).join('') + 'Assistant:';
}

/** Stop sequences the default chat template adds. */
export const CHAT_STOPS = ['\nUser:', '\nSystem:'];

export function stopList(s: string | string[] | null | undefined): string[] {
  if (s === null || s === undefined) return [];
  return typeof s === 'string' ? [s] : s;
}

let counter = 0;
export function completionId(prefix: string): string {
  counter = (counter + 1) % 1e9;
  return `${prefix}-${Date.now().toString(36)}${counter.toString(36).padStart(4, '0')}`;
}

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

export function usage(prompt: number, completion: number): Usage {
  return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion };
}
