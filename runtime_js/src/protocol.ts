// OpenAI chat-completions types, request validation (pure) and response builders.
//
// Conversation shape: roles "system", "user" and "assistant"; content is a string or an array of
// {type: "text", text} parts (joined without separator). A conversation may end with an assistant
// message, as the OpenAI API allows: the chat template is then rendered with
// add_generation_prompt=true all the same, so the model starts a *new* assistant turn (it does not
// continue the last one). With tools (tools.ts), assistant messages may carry `tool_calls` (and
// null content) and "tool" messages answer them (tool_call_id); both reach the template in HF's shape.

import type { SamplingDefaults } from "./config.js";
import { ContextWindowExceededError, InvalidRequestError } from "./errors.js";
import type { OutputConstraint } from "./grammar.js";
import {
  normalizeToolCalls, normalizeTools, type FunctionTool, type TemplateToolCall, type ToolCall, type ToolCallDelta,
  type ToolChoice, type ToolRequest,
} from "./tools.js";

export type Role = "system" | "user" | "assistant" | "tool";
export type FinishReason = "stop" | "length" | "tool_calls" | "abort";

export interface TextContentPart {
  type: "text";
  text: string;
}

export type ChatMessage =
  | { role: "system" | "user"; content: string | TextContentPart[]; name?: string }
  | { role: "assistant"; content?: string | TextContentPart[] | null; name?: string; tool_calls?: ToolCall[] }
  | { role: "tool"; content: string | TextContentPart[]; tool_call_id: string };

export type ResponseFormat =
  | { type: "text" }
  | { type: "json_object" }
  | { type: "json_schema"; json_schema: { name: string; description?: string; schema?: Record<string, unknown>; strict?: boolean | null } }
  | { type: "grammar"; grammar: string; root?: string };

/** The generation fields chat and text completions share (OpenAI's names). */
export interface GenerationRequestFields {
  model?: string;
  temperature?: number | null;
  top_p?: number | null;
  repetition_penalty?: number | null;
  frequency_penalty?: number | null;
  presence_penalty?: number | null;
  max_tokens?: number | null;
  /** Newer OpenAI name for max_tokens; either may be given (not both with different values). */
  max_completion_tokens?: number | null;
  seed?: number | null;
  stop?: string | string[] | null;
  /** token id (as a string, like OpenAI; numbers accepted) -> bias in [-100, 100] */
  logit_bias?: Record<string, number> | null;
  stream?: boolean | null;
  stream_options?: { include_usage?: boolean } | null;
  /** How many choices to generate for the prompt (1..MAX_N). */
  n?: number | null;
  /** Constrain the output: {type: "text"} (none), {type: "json_object"} (a JSON object), OpenAI's
   * {type: "json_schema", json_schema: {name, schema, strict?}}, or {type: "grammar", grammar} (EBNF,
   * a webbuild/WebLLM extension; `root` names the start rule, default "root"). */
  response_format?: ResponseFormat | null;
}

export interface ChatCompletionRequest extends GenerationRequestFields {
  messages: ChatMessage[];
  /** Return each generated token's log-probability (and, with top_logprobs, the likeliest alternatives). */
  logprobs?: boolean | null;
  /** 0..20 alternatives per token; needs logprobs: true. */
  top_logprobs?: number | null;
  /** Functions the model may call (their calls come back in message.tool_calls). */
  tools?: FunctionTool[];
  tool_choice?: ToolChoice;
  /** false: at most one call per reply. */
  parallel_tool_calls?: boolean;
  [extra: string]: unknown;
}

/** A normalized message: content is always a string; tool_calls and tool_call_id as the template reads them. */
export interface NormalizedMessage {
  role: Role;
  content: string;
  tool_calls?: TemplateToolCall[];
  tool_call_id?: string;
}

export interface NormalizedRequest extends SamplingDefaults {
  messages: NormalizedMessage[];
  model: string | null;
  /** null: up to the end of the context window (see resolveMaxTokens). */
  max_tokens: number | null;
  /** null: a fresh random seed per request. */
  seed: number | null;
  stop: string[];
  /** token id -> bias; -100 bans the token. */
  logit_bias: Map<number, number>;
  stream: boolean;
  include_usage: boolean;
  logprobs: boolean;
  /** Alternatives per token in the logprobs (0 without logprobs). */
  top_logprobs: number;
  /** Choices to generate. */
  n: number;
  /** The output's grammar, or null (free text). */
  constraint: OutputConstraint | null;
  /** The request's tools (null: none); the engine sets `constraint` from them. */
  tools: ToolRequest | null;
}

export interface RequestLimits {
  /** The chat-config `sampling` block: defaults for absent sampling fields. */
  sampling?: Partial<SamplingDefaults>;
  /** Token ids in logit_bias must be below this. */
  vocabSize?: number;
  /** max_tokens may not exceed this. */
  contextWindow?: number;
}

const FALLBACK_SAMPLING: SamplingDefaults = {
  temperature: 0.7, top_p: 0.95, repetition_penalty: 1.0, frequency_penalty: 0.0, presence_penalty: 0.0,
};
const ROLES = new Set<string>(["system", "user", "assistant", "tool"]);
const MAX_STOP = 4;
/** The most alternatives `top_logprobs` may ask for (as OpenAI). */
export const MAX_TOP_LOGPROBS = 20;
/** The most choices `n` may ask for (each one is generated in turn). */
export const MAX_N = 64;

function bad(field: string, message: string): never {
  throw new InvalidRequestError(field, message);
}

function given(v: unknown): boolean {
  return v !== undefined && v !== null;
}

function number(req: Record<string, unknown>, field: string, fallback: number, lo: number, hi: number,
                opts: { loOpen?: boolean } = {}): number {
  const v = req[field];
  if (!given(v)) return fallback;
  if (typeof v !== "number" || !Number.isFinite(v)) bad(field, "must be a finite number");
  if ((opts.loOpen ? v <= lo : v < lo) || v > hi) bad(field, `must be in ${opts.loOpen ? "(" : "["}${lo}, ${hi}]`);
  return v;
}

function normalizeContent(content: unknown, field: string): string {
  if (typeof content === "string") return content;
  if (Array.isArray(content)) {
    return content.map((part, i) => {
      const p = part as { type?: unknown; text?: unknown } | null;
      if (!p || p.type !== "text") bad(`${field}[${i}].type`, "only text content parts are supported");
      if (typeof p.text !== "string") bad(`${field}[${i}].text`, "must be a string");
      return p.text;
    }).join("");
  }
  return bad(field, "must be a string or an array of text parts");
}

function normalizeMessages(messages: unknown): NormalizedMessage[] {
  if (!Array.isArray(messages)) bad("messages", "must be an array");
  if (messages.length === 0) bad("messages", "must not be empty");
  return messages.map((m, i) => {
    if (!m || typeof m !== "object") bad(`messages[${i}]`, "must be an object");
    const { role, content, tool_calls: calls, tool_call_id: callId } = m as Record<string, unknown>;
    if (typeof role !== "string" || !ROLES.has(role)) bad(`messages[${i}].role`, "must be system, user, assistant or tool");
    const out: NormalizedMessage = { role: role as Role, content: "" };
    if (role === "assistant" && given(calls)) out.tool_calls = normalizeToolCalls(calls, `messages[${i}].tool_calls`);
    if (role === "tool") {
      if (typeof callId !== "string") bad(`messages[${i}].tool_call_id`, "must be a string");
      out.tool_call_id = callId;
    }
    // an assistant message with tool calls may have no content
    out.content = out.tool_calls && !given(content) ? "" : normalizeContent(content, `messages[${i}].content`);
    return out;
  });
}

function normalizeStop(stop: unknown): string[] {
  if (!given(stop)) return [];
  const list = typeof stop === "string" ? [stop] : stop;
  if (!Array.isArray(list)) bad("stop", "must be a string or an array of strings");
  if (list.length > MAX_STOP) bad("stop", `at most ${MAX_STOP} stop sequences`);
  list.forEach((s, i) => {
    if (typeof s !== "string" || s.length === 0) bad(`stop[${i}]`, "must be a non-empty string");
  });
  return [...new Set(list as string[])];
}

function normalizeLogitBias(bias: unknown, vocabSize?: number): Map<number, number> {
  const out = new Map<number, number>();
  if (!given(bias)) return out;
  if (typeof bias !== "object" || Array.isArray(bias)) bad("logit_bias", "must be an object of token id -> bias");
  for (const [key, value] of Object.entries(bias as Record<string, unknown>)) {
    const field = `logit_bias.${key}`;
    if (!/^(0|[1-9][0-9]*)$/.test(key)) bad(field, "keys must be token ids (non-negative integers)");
    const id = Number(key);
    if (!Number.isSafeInteger(id) || (vocabSize !== undefined && id >= vocabSize)) {
      bad(field, `token id must be below the vocabulary size${vocabSize !== undefined ? ` ${vocabSize}` : ""}`);
    }
    if (typeof value !== "number" || !Number.isFinite(value) || value < -100 || value > 100) {
      bad(field, "bias must be a number in [-100, 100]");
    }
    out.set(id, value);
  }
  return out;
}

function normalizeMaxTokens(req: Record<string, unknown>, contextWindow?: number): number | null {
  const a = req.max_tokens, b = req.max_completion_tokens;
  if (given(a) && given(b) && a !== b) bad("max_completion_tokens", "conflicts with max_tokens");
  const field = given(a) ? "max_tokens" : "max_completion_tokens";
  const v = given(a) ? a : b;
  if (!given(v)) return null;
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 1) bad(field, "must be a positive integer");
  if (contextWindow !== undefined && v > contextWindow) bad(field, `must not exceed the context window (${contextWindow})`);
  return v;
}

/** response_format as a grammar constraint (null: free text). JSON is a JSON Schema: "json_object"
 * is {"type": "object"}, a json_schema without a schema any JSON value. */
function normalizeResponseFormat(format: unknown): OutputConstraint | null {
  if (!given(format)) return null;
  if (typeof format !== "object" || Array.isArray(format)) bad("response_format", "must be an object with a type");
  const f = format as Record<string, unknown>;
  switch (f.type) {
    case "text":
      return null;
    case "json_object":
      return { kind: "json_schema", schema: JSON.stringify({ type: "object" }) };
    case "json_schema": {
      const js = f.json_schema as Record<string, unknown> | null | undefined;
      if (!js || typeof js !== "object" || Array.isArray(js)) bad("response_format.json_schema", "must be {name, schema, strict?}");
      if (typeof js.name !== "string" || !/^[A-Za-z0-9_-]{1,64}$/.test(js.name)) {
        bad("response_format.json_schema.name", "must be 1-64 letters, digits, _ or -");
      }
      const schema = js.schema ?? true;
      if (typeof schema !== "boolean" && (typeof schema !== "object" || schema === null || Array.isArray(schema))) {
        bad("response_format.json_schema.schema", "must be a JSON Schema object");
      }
      return { kind: "json_schema", schema: JSON.stringify(schema === true ? {} : schema) };
    }
    case "grammar": {
      if (typeof f.grammar !== "string" || !f.grammar.trim()) bad("response_format.grammar", "must be a non-empty EBNF string");
      if (given(f.root) && (typeof f.root !== "string" || !f.root)) bad("response_format.root", "must be a rule name");
      return { kind: "grammar", ebnf: f.grammar, root: (f.root as string | undefined) ?? "root" };
    }
    default:
      return bad("response_format.type", "must be text, json_object, json_schema or grammar");
  }
}

/**
 * Validate an OpenAI chat-completions request and fill in defaults (from `limits.sampling`, the
 * model's chat-config). Pure: never mutates `request`. Throws InvalidRequestError naming the field.
 */
export function validateRequest(request: unknown, limits: RequestLimits = {}): NormalizedRequest {
  if (!request || typeof request !== "object" || Array.isArray(request)) bad("request", "must be an object");
  const req = request as Record<string, unknown>;
  const d = { ...FALLBACK_SAMPLING, ...limits.sampling };

  if (given(req.n) && (typeof req.n !== "number" || !Number.isSafeInteger(req.n) || req.n < 1 || req.n > MAX_N)) {
    bad("n", `must be an integer in [1, ${MAX_N}]`);
  }
  const tools = normalizeTools(req);
  if (tools && tools.choice !== "none" && given(req.response_format) && (req.response_format as { type?: unknown }).type !== "text") {
    bad("response_format", "cannot be combined with tools (the calls have their own grammar); use tool_choice \"none\"");
  }
  if (given(req.logprobs) && typeof req.logprobs !== "boolean") bad("logprobs", "must be a boolean");
  let topLogprobs = 0;
  if (given(req.top_logprobs)) {
    const k = req.top_logprobs;
    if (typeof k !== "number" || !Number.isSafeInteger(k) || k < 0 || k > MAX_TOP_LOGPROBS) {
      bad("top_logprobs", `must be an integer in [0, ${MAX_TOP_LOGPROBS}]`);
    }
    if (req.logprobs !== true) bad("top_logprobs", "needs logprobs: true");
    topLogprobs = k;
  }
  if (given(req.stream) && typeof req.stream !== "boolean") bad("stream", "must be a boolean");
  if (given(req.model) && typeof req.model !== "string") bad("model", "must be a string");
  const so = req.stream_options as { include_usage?: unknown } | null | undefined;
  if (given(so) && (typeof so !== "object" || (given(so!.include_usage) && typeof so!.include_usage !== "boolean"))) {
    bad("stream_options", "must be {include_usage?: boolean}");
  }
  let seed: number | null = null;
  if (given(req.seed)) {
    if (typeof req.seed !== "number" || !Number.isSafeInteger(req.seed)) bad("seed", "must be an integer");
    seed = req.seed;
  }

  return {
    messages: normalizeMessages(req.messages),
    model: (req.model as string | undefined) ?? null,
    temperature: number(req, "temperature", d.temperature, 0, 2),
    top_p: number(req, "top_p", d.top_p, 0, 1, { loOpen: true }),
    repetition_penalty: number(req, "repetition_penalty", d.repetition_penalty, 0, 10, { loOpen: true }),
    frequency_penalty: number(req, "frequency_penalty", d.frequency_penalty, -2, 2),
    presence_penalty: number(req, "presence_penalty", d.presence_penalty, -2, 2),
    max_tokens: normalizeMaxTokens(req, limits.contextWindow),
    seed,
    stop: normalizeStop(req.stop),
    logit_bias: normalizeLogitBias(req.logit_bias, limits.vocabSize),
    stream: req.stream === true,
    include_usage: so?.include_usage === true,
    logprobs: req.logprobs === true,
    top_logprobs: topLogprobs,
    n: (req.n as number | null | undefined) ?? 1,
    constraint: normalizeResponseFormat(req.response_format),
    tools,
  };
}

/**
 * The number of tokens the engine may generate for a prompt of `promptTokens`: `maxTokens`, or
 * what is left of the context window when null. Throws ContextWindowExceededError when the prompt
 * leaves no room, or prompt + max_tokens exceeds the window (as the OpenAI API does).
 */
export function resolveMaxTokens(promptTokens: number, maxTokens: number | null, contextWindow: number): number {
  if (promptTokens >= contextWindow || (maxTokens !== null && promptTokens + maxTokens > contextWindow)) {
    throw new ContextWindowExceededError(promptTokens, maxTokens, contextWindow);
  }
  return maxTokens ?? contextWindow - promptTokens;
}

// ---------------------------------------------------------------------------------------------
// Responses

export interface UsageExtra {
  prefill_tokens_per_s: number;
  decode_tokens_per_s: number;
  time_to_first_token_s: number;
  /** Where the model ran: "webgpu" or "wasm" (the CPU). */
  backend?: string;
  /** CPU threads the wasm backend ran on. */
  threads?: number;
  /** With a response_format: seconds spent loading and compiling the grammar (0 when cached). */
  grammar_compile_s?: number;
  /** With a response_format: milliseconds per generated token spent computing and applying the mask. */
  grammar_mask_ms_per_token?: number;
  /** With a response_format: where the mask was applied, "module" (the model module, where the logits
   * are) or "js" (logits read back; model folders built without apply_token_bitmask, or logprobs). */
  grammar_mask_where?: "module" | "js";
}

export interface CompletionUsage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  /** cached_tokens: prompt tokens reused from the KV cache (not prefilled again). */
  prompt_tokens_details: { cached_tokens: number };
  extra: UsageExtra;
}

/** One alternative at a position: the token's text, its natural-log probability and its bytes. */
export interface TopLogprob {
  token: string;
  logprob: number;
  /** The token's bytes (UTF-8 of `token`, or the raw bytes of a token that is part of a character). */
  bytes: number[] | null;
}

/** A generated token's log-probability, with the likeliest tokens at its position (most likely first). */
export interface TokenLogprob extends TopLogprob {
  top_logprobs: TopLogprob[];
}

/** `choices[i].logprobs` when the request asked for them. */
export interface ChoiceLogprobs {
  content: TokenLogprob[] | null;
  refusal: null;
}

export interface ChatCompletion {
  id: string;
  object: "chat.completion";
  created: number;
  model: string;
  choices: Array<{
    index: number;
    /** `refusal` is always null (OpenAI's field; a local model does not refuse by API). `content` is
     * null when the reply is only tool calls. */
    message: { role: "assistant"; content: string | null; refusal: null; tool_calls?: ToolCall[] };
    finish_reason: FinishReason;
    logprobs: ChoiceLogprobs | null;
  }>;
  usage: CompletionUsage;
}

export interface ChatCompletionChunk {
  id: string;
  object: "chat.completion.chunk";
  created: number;
  model: string;
  /** Empty in the final usage-only chunk (stream_options.include_usage). */
  choices: Array<{
    index: number;
    delta: { role?: "assistant"; content?: string; tool_calls?: ToolCallDelta[] };
    finish_reason: FinishReason | null;
    logprobs: ChoiceLogprobs | null;
  }>;
  usage?: CompletionUsage | null;
}

/** "chatcmpl-" + 24 random alphanumerics. */
export function makeCompletionId(): string {
  const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  const bytes = new Uint8Array(24);
  globalThis.crypto.getRandomValues(bytes);
  return "chatcmpl-" + Array.from(bytes, (b) => alphabet[b % alphabet.length]).join("");
}

/** Seconds since the epoch, as OpenAI's `created`. */
export function nowSeconds(): number {
  return Math.floor(Date.now() / 1000);
}

export interface UsageTimings {
  promptTokens: number;
  completionTokens: number;
  /** Wall time of the prefill (prompt) phase. */
  prefillSeconds: number;
  /** Wall time of the decode phase (after the first token). */
  decodeSeconds: number;
  /** From the request to the first generated token. */
  timeToFirstTokenSeconds: number;
  /** Prompt tokens reused from the KV cache. */
  cachedTokens?: number;
  backend?: string;
  threads?: number;
  /** Grammar time (with a response_format). */
  grammar?: { compileSeconds: number; maskSeconds: number; maskedTokens: number; maskWhere?: "module" | "js" };
}

function rate(tokens: number, seconds: number): number {
  return seconds > 0 ? tokens / seconds : 0;
}

export function buildUsage(t: UsageTimings): CompletionUsage {
  return {
    prompt_tokens: t.promptTokens,
    completion_tokens: t.completionTokens,
    total_tokens: t.promptTokens + t.completionTokens,
    prompt_tokens_details: { cached_tokens: t.cachedTokens ?? 0 },
    extra: {
      prefill_tokens_per_s: rate(t.promptTokens - (t.cachedTokens ?? 0), t.prefillSeconds),
      // the first generated token comes out of the prefill; decode produced the rest
      decode_tokens_per_s: rate(Math.max(t.completionTokens - 1, 0), t.decodeSeconds),
      time_to_first_token_s: t.timeToFirstTokenSeconds,
      ...(t.backend ? { backend: t.backend } : {}),
      ...(t.threads ? { threads: t.threads } : {}),
      ...(t.grammar ? {
        grammar_compile_s: t.grammar.compileSeconds,
        grammar_mask_ms_per_token: t.grammar.maskedTokens ? 1000 * t.grammar.maskSeconds / t.grammar.maskedTokens : 0,
        ...(t.grammar.maskWhere ? { grammar_mask_where: t.grammar.maskWhere } : {}),
      } : {}),
    },
  };
}

export interface CompletionMeta {
  id: string;
  created: number;
  model: string;
}

/** One choice of a whole response; `logprobs`: its tokens' entries when the request asked for them, else null. */
export interface ChoiceResult {
  content: string;
  /** The calls the reply made (none: the message has no tool_calls). */
  toolCalls?: ToolCall[];
  finishReason: FinishReason;
  logprobs: TokenLogprob[] | null;
}

export function buildChatCompletion(meta: CompletionMeta, choices: ChoiceResult[], usage: CompletionUsage): ChatCompletion {
  return {
    id: meta.id, object: "chat.completion", created: meta.created, model: meta.model,
    choices: choices.map((c, index) => ({
      index, message: c.toolCalls?.length
        ? { role: "assistant", content: c.content || null, refusal: null, tool_calls: c.toolCalls }
        : { role: "assistant", content: c.content, refusal: null },
      finish_reason: c.finishReason,
      logprobs: c.logprobs ? { content: c.logprobs, refusal: null } : null,
    })),
    usage,
  };
}

/**
 * One streaming chunk. The first chunk of a stream should carry `role: "assistant"`; the last
 * content chunk carries the finish_reason; with include_usage a final chunk has no choices and the
 * usage (pass `choice: null`). `choice.logprobs`: the entries of the tokens this chunk completes.
 */
export function buildChunk(meta: CompletionMeta,
                           choice: { index?: number; role?: "assistant"; content?: string; toolCalls?: ToolCallDelta[];
                                     finishReason?: FinishReason | null; logprobs?: TokenLogprob[] } | null,
                           usage?: CompletionUsage | null): ChatCompletionChunk {
  const chunk: ChatCompletionChunk = {
    id: meta.id, object: "chat.completion.chunk", created: meta.created, model: meta.model,
    choices: choice === null ? [] : [{
      index: choice.index ?? 0,
      delta: {
        ...(choice.role ? { role: choice.role } : {}),
        ...(choice.content !== undefined ? { content: choice.content } : {}),
        ...(choice.toolCalls?.length ? { tool_calls: choice.toolCalls } : {}),
      },
      finish_reason: choice.finishReason ?? null,
      logprobs: choice.logprobs ? { content: choice.logprobs, refusal: null } : null,
    }],
  };
  if (usage !== undefined) chunk.usage = usage;
  return chunk;
}
