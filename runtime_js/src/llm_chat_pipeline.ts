// The LLM chat pipeline: one conversation with a causal language model on a model runtime. For a
// validated request it applies the chat template, keeps the cached tokens the prompt shares with
// the previous turn, runs the rest of the prompt through the model in chunks (prefill), then
// decodes token by token (greedy on the device, else sampled on the CPU) until a stop token, a
// stop string, the token budget or an abort, streaming chunks as the text becomes final.
import type { Backend } from "./backend.js";
import type { ChatConfig } from "./config.js";
import {
  buildChunk, buildUsage, makeCompletionId, nowSeconds, resolveMaxTokens,
  type ChatCompletionChunk, type CompletionMeta, type CompletionUsage, type FinishReason, type NormalizedRequest,
} from "./protocol.js";
import { Sampler } from "./sampling.js";
import { StopMatcher } from "./stop.js";
import type { Tokenizer } from "./tokenizer.js";
import type { Logits, StateSpec, TvmRuntime } from "./tvm_runtime.js";

/** What the pipeline needs of the model runtime (tvm_runtime.ts). */
export type ChatRuntime = Pick<TvmRuntime, "metadata" | "hasArgmax" | "createState" | "resetSequence" | "popTokens" |
  "forward" | "readLogits" | "readArgmax">;

/** What the pipeline needs of the tokenizer (tokenizer.ts). */
export type ChatTokenizer = Pick<Tokenizer, "encodeChat" | "streamDecoder">;

/** Where the model runs, as reported in `usage.extra`. */
export interface Placement {
  backend: Backend;
  /** CPU threads (reported on the wasm backend only). */
  threads: number;
}

export interface GenerationResult {
  meta: CompletionMeta;
  finish: FinishReason;
  usage: CompletionUsage;
}

/** How the prompt is cut into calls. */
export interface ChunkRule {
  /** The most tokens one call takes (chat-config.json prefill_chunk_size). */
  prefillChunk: number;
  /** The attention window, or null. */
  slidingWindow: number | null;
  /** `_metadata.single_token_past_window`. */
  singleTokenPastWindow: boolean;
}

/**
 * Tokens the next call may take when `cached` tokens are in the KV cache. A sliding-window model
 * takes at most window - 1 tokens per call: TVM's window kernels match transformers only then
 * (webbuild/arch/kv_model.py). The cache keeps every token, so popping tokens across turns is
 * unaffected. A module whose metadata says `single_token_past_window` takes one token per call
 * once `window` tokens are cached (TVM 0.27's CPU window prefill kernel misreads its running max
 * there: webbuild/runner.py).
 */
export function callSize(rule: ChunkRule, cached: number): number {
  const window = rule.slidingWindow;
  if (!window) return rule.prefillChunk;
  if (rule.singleTokenPastWindow && cached >= window) return 1;
  return Math.min(rule.prefillChunk, window - 1);
}

/** Tokens in the KV cache, for reuse by the next request of the same conversation. */
function commonPrefix(a: readonly number[], b: readonly number[]): number {
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  return i;
}

export class LLMChatPipeline {
  /** The tokens in the sequence state, in order. */
  private cached: number[] = [];
  private readonly chunks: ChunkRule;

  /** Creates the runtime's sequence state for `config` (the context window and prefill chunk). */
  constructor(private readonly runtime: ChatRuntime, private readonly config: ChatConfig,
              private readonly tokenizer: ChatTokenizer, private readonly placement: Placement) {
    this.chunks = {
      prefillChunk: config.prefill_chunk_size,
      slidingWindow: config.state.sliding_window,
      singleTokenPastWindow: runtime.metadata.single_token_past_window,
    };
    const state: StateSpec = { kind: config.state.kv_state, contextWindow: config.context_window_size,
                               prefillChunk: this.chunks.prefillChunk };
    runtime.createState(state);
  }

  /** Forget the conversation held in the sequence state. */
  reset(): void {
    this.runtime.resetSequence();
    this.cached = [];
  }

  /** Generate the reply to `req`, passing each chunk to `emit`; `stopped()` true ends it with "abort". */
  async generate(req: NormalizedRequest, stopped: () => boolean,
                 emit: (chunk: ChatCompletionChunk) => void): Promise<GenerationResult> {
    const meta = { id: makeCompletionId(), created: nowSeconds(), model: this.config.model_id };
    const { ids } = this.tokenizer.encodeChat(req.messages);
    const budget = resolveMaxTokens(ids.length, req.max_tokens, this.config.context_window_size);
    const start = performance.now();
    const keep = this.reuseCache(ids);
    const sampler = new Sampler(req, ids);
    const stops = new Set(this.config.stop_token_ids);
    const matcher = new StopMatcher([...req.stop, ...this.config.stop_strings]);
    const decoder = this.tokenizer.streamDecoder({ skipSpecial: true, context: ids.slice(-4) });
    emit(buildChunk(meta, { role: "assistant", content: "" }));

    let token = await this.nextToken(this.prefill(ids.slice(keep)), sampler, req);
    const firstToken = performance.now();
    let generated = 0;
    let finish: FinishReason = "length";
    while (generated < budget) {
      if (stopped()) { finish = "abort"; break; }
      sampler.accept(token);
      generated++;
      if (stops.has(token)) { finish = "stop"; break; }
      const { text, stopped: atStopString } = matcher.push(decoder.push(token));
      if (text) emit(buildChunk(meta, { content: text }));
      if (atStopString) { finish = "stop"; break; }
      if (generated >= budget) break;
      token = await this.nextToken(this.prefill([token]), sampler, req);
    }
    if (!matcher.stopped) {
      // the text held back as a possible stop-string prefix (or incomplete bytes) is final now
      const rest = matcher.push(decoder.flush()).text + matcher.flush();
      if (rest) emit(buildChunk(meta, { content: rest }));
    }
    const end = performance.now();
    const { backend, threads } = this.placement;
    const usage = buildUsage({
      promptTokens: ids.length, completionTokens: generated,
      prefillSeconds: (firstToken - start) / 1000, decodeSeconds: (end - firstToken) / 1000,
      timeToFirstTokenSeconds: (firstToken - start) / 1000, cachedTokens: keep, backend,
      ...(backend === "wasm" ? { threads } : {}),
    });
    emit(buildChunk(meta, { finishReason: finish }, req.include_usage ? usage : undefined));
    return { meta, finish, usage };
  }

  /** Keep the cached tokens shared with the prompt `ids` (recomputing at least its last token); returns how many. */
  private reuseCache(ids: readonly number[]): number {
    const keep = Math.min(commonPrefix(this.cached, ids), ids.length - 1);
    if (keep >= this.cached.length) return keep;
    if (this.config.state.kv_state === "rnn_state") {
      // an RNN state cannot roll back over a prefill: start the sequence again
      this.reset();
      return 0;
    }
    this.runtime.popTokens(this.cached.length - keep);
    this.cached.length = keep;
    return keep;
  }

  /** Run `ids` through the model at the end of the cached sequence, in calls of callSize(); last-position logits. */
  private prefill(ids: readonly number[]): Logits {
    let logits: Logits | null = null;
    for (let start = 0; start < ids.length;) {
      const chunk = ids.slice(start, start + callSize(this.chunks, this.cached.length));
      const next = this.runtime.forward(chunk);
      logits?.dispose();
      logits = next;
      this.cached.push(...chunk);
      start += chunk.length;
    }
    if (!logits) throw new Error("prefill of no tokens");
    return logits;
  }

  /** The next token from a forward call's logits: on the device when decoding is plain greedy
   * (temperature 0, no bias or penalties), else sampled on the CPU from the logits read back. */
  private async nextToken(logits: Logits, sampler: Sampler, req: NormalizedRequest): Promise<number> {
    const greedy = this.runtime.hasArgmax && req.temperature <= 0 && req.logit_bias.size === 0 &&
      req.repetition_penalty === 1 && req.frequency_penalty === 0 && req.presence_penalty === 0;
    return greedy ? this.runtime.readArgmax(logits) : sampler.sample(await this.runtime.readLogits(logits));
  }
}
