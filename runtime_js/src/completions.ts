// OpenAI's (legacy) text completions: `engine.completions.create({prompt})` continues a raw prompt
// (a string, or token ids) with no chat template. Types, request validation (pure: the sampling
// fields follow the chat rules of protocol.ts) and the conversion of the pipeline's chat chunks
// into `text_completion` objects. `logprobs` is an integer here (0..5 alternatives, OpenAI's legacy
// format); `echo` prepends the prompt to each choice; `suffix` (insertion) is refused, and so is
// `echo` with `logprobs` (the prompt's logprobs would need every prompt position's logits).

import { InvalidRequestError } from "./errors.js";
import {
  validateRequest, type ChatCompletionChunk, type CompletionMeta, type CompletionUsage, type FinishReason,
  type GenerationRequestFields, type NormalizedRequest, type RequestLimits, type TokenLogprob,
} from "./protocol.js";

/** OpenAI's legacy completions allow at most 5 alternatives per token. */
export const MAX_COMPLETION_LOGPROBS = 5;
/** OpenAI's default max_tokens for completions (a `max_tokens` field absent: 16). */
export const DEFAULT_COMPLETION_TOKENS = 16;

export interface CompletionRequest extends GenerationRequestFields {
  /** The text to continue, or its token ids. */
  prompt: string | number[];
  /** Alternatives per token (0..5): each token's log-probability and the likeliest tokens at its position. */
  logprobs?: number | null;
  /** Prepend the prompt to each choice's text. */
  echo?: boolean | null;
  /** Refused: webbuild does not insert text before a suffix. */
  suffix?: string | null;
  /** Accepted only equal to n (each choice is returned). */
  best_of?: number | null;
  [extra: string]: unknown;
}

/** OpenAI's legacy logprobs of one choice. */
export interface CompletionLogprobs {
  tokens: string[];
  token_logprobs: number[];
  /** Per token, the likeliest tokens at its position (an empty object with logprobs 0). */
  top_logprobs: Array<Record<string, number>>;
  /** Each token's character offset in the choice's text. */
  text_offset: number[];
}

export interface CompletionChoice {
  text: string;
  index: number;
  logprobs: CompletionLogprobs | null;
  finish_reason: TextFinishReason;
}

/** A whole response. */
export interface Completion {
  id: string;
  object: "text_completion";
  created: number;
  model: string;
  choices: CompletionChoice[];
  usage?: CompletionUsage;
}

/** A raw prompt has no tools: its choices never finish with "tool_calls". */
export type TextFinishReason = Exclude<FinishReason, "tool_calls">;

/** One streamed chunk: the same shape, `finish_reason` null until its choice ends; with
 * stream_options.include_usage a last chunk has no choices and the usage. */
export interface CompletionChunk extends Omit<Completion, "choices"> {
  choices: Array<Omit<CompletionChoice, "finish_reason"> & { finish_reason: TextFinishReason | null }>;
}

export interface NormalizedCompletionRequest {
  /** The sampling, stop and streaming fields, as for a chat request (its messages unused). */
  req: NormalizedRequest;
  prompt: string | number[];
  echo: boolean;
}

function bad(field: string, message: string): never {
  throw new InvalidRequestError(field, message);
}

function given(v: unknown): boolean {
  return v !== undefined && v !== null;
}

/** Validate a completions request; throws InvalidRequestError naming the field. Pure. */
export function validateCompletionRequest(request: unknown, limits: RequestLimits = {}): NormalizedCompletionRequest {
  if (!request || typeof request !== "object" || Array.isArray(request)) bad("request", "must be an object");
  const { prompt, logprobs, echo, suffix, best_of: bestOf, messages, ...rest } = request as CompletionRequest;
  if (given(messages)) bad("messages", "belongs to chat.completions.create; completions take a prompt");
  if (typeof prompt === "string") {
    if (prompt.length === 0) bad("prompt", "must not be empty");
  } else if (Array.isArray(prompt)) {
    if (prompt.length === 0) bad("prompt", "must not be empty");
    prompt.forEach((id, i) => {
      if (typeof id !== "number" || !Number.isSafeInteger(id) || id < 0
          || (limits.vocabSize !== undefined && id >= limits.vocabSize)) {
        bad(`prompt[${i}]`, "token ids must be integers below the vocabulary size");
      }
    });
  } else {
    bad("prompt", "must be a string or an array of token ids");
  }
  if (given(suffix) && suffix !== "") bad("suffix", "insertion before a suffix is not supported");
  if (given(echo) && typeof echo !== "boolean") bad("echo", "must be a boolean");
  if (given((rest as Record<string, unknown>).tools)) bad("tools", "belongs to chat.completions.create (a raw prompt has no chat template)");
  let top = -1;
  if (given(logprobs)) {
    if (typeof logprobs !== "number" || !Number.isSafeInteger(logprobs) || logprobs < 0
        || logprobs > MAX_COMPLETION_LOGPROBS) {
      bad("logprobs", `must be an integer in [0, ${MAX_COMPLETION_LOGPROBS}]`);
    }
    if (echo === true) bad("echo", "echo with logprobs is not supported (it needs the prompt's logprobs)");
    top = logprobs;
  }
  const req = validateRequest({
    ...rest, messages: [{ role: "user", content: "" }],
    max_tokens: given(rest.max_tokens) || given(rest.max_completion_tokens) ? rest.max_tokens : DEFAULT_COMPLETION_TOKENS,
    logprobs: top >= 0, top_logprobs: top >= 0 ? top : null,
  }, limits);
  if (given(bestOf) && bestOf !== req.n) bad("best_of", "must equal n: every generated choice is returned");
  return { req, prompt: Array.isArray(prompt) ? [...prompt] : prompt, echo: echo === true };
}

/** "cmpl-" + 24 random alphanumerics. */
export function makeTextCompletionId(chatId: string): string {
  return "cmpl-" + chatId.slice(chatId.indexOf("-") + 1);
}

/** Legacy logprobs from the chat entries of one choice; offsets count from `start` characters. */
export function legacyLogprobs(entries: readonly TokenLogprob[], top: number, start: number): CompletionLogprobs {
  const offsets: number[] = [];
  let at = start;
  for (const e of entries) {
    offsets.push(at);
    at += e.token.length;
  }
  return {
    tokens: entries.map((e) => e.token),
    token_logprobs: entries.map((e) => e.logprob),
    top_logprobs: entries.map((e) => Object.fromEntries(e.top_logprobs.slice(0, top).map((t) => [t.token, t.logprob]))),
    text_offset: offsets,
  };
}

/**
 * Turns the pipeline's chat chunks into completion chunks: a choice's first chunk (the chat "role"
 * chunk) carries the echoed prompt, content becomes `text`, logprobs the legacy format. Chunks
 * with nothing to say (no text, no finish, no usage) are dropped.
 */
export class CompletionChunker {
  private readonly offsets = new Map<number, number>();

  constructor(private readonly echoText: string | null, private readonly top: number) {}

  convert(chunk: ChatCompletionChunk): CompletionChunk | null {
    const choices: CompletionChunk["choices"] = [];
    for (const c of chunk.choices) {
      let text = c.delta.content ?? "";
      if (c.delta.role && this.echoText) text = this.echoText + text;
      const start = this.offsets.get(c.index) ?? 0;
      const entries = c.logprobs?.content ?? null;
      this.offsets.set(c.index, start + text.length);
      if (!text && !c.finish_reason && !entries?.length) continue;
      choices.push({ text, index: c.index, finish_reason: c.finish_reason as TextFinishReason | null,
                     logprobs: entries ? legacyLogprobs(entries, this.top, start) : null });
    }
    if (!choices.length && !chunk.usage) return null;
    return { id: makeTextCompletionId(chunk.id), object: "text_completion", created: chunk.created,
             model: chunk.model, choices, ...(chunk.usage ? { usage: chunk.usage } : {}) };
  }
}

/** A whole response from the converted chunks of a generation. */
export function mergeCompletionChunks(meta: CompletionMeta, n: number, chunks: readonly CompletionChunk[],
                                      usage: CompletionUsage, withLogprobs: boolean): Completion {
  const choices: CompletionChoice[] = Array.from({ length: n }, (_, index) => ({
    text: "", index, finish_reason: "abort",
    logprobs: withLogprobs ? { tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [] } : null,
  }));
  for (const chunk of chunks) {
    for (const c of chunk.choices) {
      const choice = choices[c.index]!;
      choice.text += c.text;
      if (c.finish_reason) choice.finish_reason = c.finish_reason;
      if (c.logprobs && choice.logprobs) {
        choice.logprobs.tokens.push(...c.logprobs.tokens);
        choice.logprobs.token_logprobs.push(...c.logprobs.token_logprobs);
        choice.logprobs.text_offset.push(...c.logprobs.text_offset);
        choice.logprobs.top_logprobs.push(...c.logprobs.top_logprobs);
      }
    }
  }
  return { id: makeTextCompletionId(meta.id), object: "text_completion", created: meta.created, model: meta.model,
           choices, usage };
}
