// The LLM chat pipeline: one conversation with a causal language model on a model runtime. For a
// validated request it applies the chat template, keeps the cached tokens the prompt shares with
// the previous turn, runs the rest of the prompt through the model in chunks (prefill), then
// decodes token by token (greedy on the device, else sampled on the CPU) until a stop token, a
// stop string, the token budget or an abort, streaming chunks as the text becomes final (with the
// log-probabilities of the tokens each chunk completes, when asked; logits are then read back). Between
// calls it gives the event loop a turn (event_loop.ts) and checks for an abort, so Stop ends a
// generation within one call, in the prefill too: prefill calls are sized from the measured
// speed to take about PREFILL_CALL_MS each.
import type { Backend } from "./backend.js";
import type { ChatConfig } from "./config.js";
import { EventLoopTurns } from "./event_loop.js";
import type { GrammarEngine, GrammarMask, GrammarStats } from "./grammar.js";
import { tokenLogprob } from "./logprobs.js";
import {
  buildChunk, buildUsage, makeCompletionId, nowSeconds, resolveMaxTokens,
  type ChatCompletionChunk, type CompletionMeta, type CompletionUsage, type FinishReason, type NormalizedRequest,
  type TokenLogprob,
} from "./protocol.js";
import { Sampler } from "./sampling.js";
import { StopMatcher } from "./stop.js";
import type { Tokenizer } from "./tokenizer.js";
import { ToolCallChunks, toolSyntaxFor } from "./tools.js";
import type { Logits, StateSpec, TvmRuntime } from "./tvm_runtime.js";

/** What the pipeline needs of the model runtime (tvm_runtime.ts). */
export type ChatRuntime = Pick<TvmRuntime, "metadata" | "hasArgmax" | "createState" | "resetSequence" | "popTokens" |
  "forward" | "readLogits" | "readArgmax" | "sync" | "hasTokenBitmask" | "maskLogits">;

/** What the pipeline needs of the tokenizer (tokenizer.ts). */
export type ChatTokenizer = Pick<Tokenizer, "encodeChat" | "chatTemplate" | "encodePrompt" | "streamDecoder" | "decode" | "tokenBytes">;

/** Where the model runs, as reported in `usage.extra`. */
export interface Placement {
  backend: Backend;
  /** CPU threads (reported on the wasm backend only). */
  threads: number;
}

export interface GenerationResult {
  meta: CompletionMeta;
  /** The first choice's finish reason (`finishes[0]`). */
  finish: FinishReason;
  /** Each choice's finish reason, by index. */
  finishes: FinishReason[];
  usage: CompletionUsage;
}

/** How the prompt is cut into calls. */
export interface ChunkRule {
  /** The most tokens one call takes (`_metadata.prefill_chunk`, within the context window). */
  prefillChunk: number;
  /** The attention window, or null. */
  slidingWindow: number | null;
  /** `_metadata.single_token_past_window`. */
  singleTokenPastWindow: boolean;
}

/**
 * Tokens the next call may take when `cached` tokens are in the KV cache: the module's prefill
 * chunk (`_metadata.prefill_chunk`, which the build keeps below a sliding window: TVM's window
 * kernels match transformers only for calls of at most window - 1 tokens). A module whose
 * metadata says `single_token_past_window` takes one token per call once `window` tokens are
 * cached (TVM 0.27's CPU window prefill kernel misreads its running max there: webbuild/runner.py).
 */
export function callSize(rule: ChunkRule, cached: number): number {
  const window = rule.slidingWindow;
  if (window && rule.singleTokenPastWindow && cached >= window) return 1;
  return rule.prefillChunk;
}

/** The first call of every prefill takes at most this many tokens; later calls are sized from
 * the speed measured so far (a kernel with a high cost per call, as WebGPU prefill on SwiftShader,
 * ends up prefilling one token per call with the decode kernel). A prefill starts small even when
 * an earlier one was fast: a call's cost per token grows with its length (attention within the
 * call), so a rate measured on short calls says little of a full prefill chunk. */
export const FIRST_PREFILL_CALL = 16;
/** What one prefill call should take: an abort waits for the call in progress. */
export const PREFILL_CALL_MS = 25;
/** After a one-token prefill call the estimated cost of a prefill call's token shrinks by this. */
const SINGLE_CALL_DECAY = 0.9;

/**
 * Tokens the next prefill call takes: what `msPerToken` (null: not measured yet) says fits in
 * PREFILL_CALL_MS, at least 1, at most twice the previous call of this prefill (`previous`, 0 for
 * none: then at most FIRST_PREFILL_CALL) and never more than callSize() allows.
 */
export function prefillCallSize(rule: ChunkRule, cached: number, msPerToken: number | null, previous: number): number {
  const cap = callSize(rule, cached);
  const grown = previous > 0 ? 2 * previous : FIRST_PREFILL_CALL;
  if (msPerToken === null) return Math.min(cap, grown);
  const fits = msPerToken > 0 ? Math.floor(PREFILL_CALL_MS / msPerToken) : cap;
  return Math.max(1, Math.min(cap, grown, fits));
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
  /** The last prefill call's milliseconds per token (null before the first measured call). */
  private prefillMsPerToken: number | null = null;

  /** Creates the runtime's sequence state for `config` (the context window and prefill chunk).
   * `yieldIntervalMs`: the event loop gets a turn between calls once this many ms have passed
   * since the last turn (0: after every call). `grammars` serves requests with a response_format. */
  constructor(private readonly runtime: ChatRuntime, private readonly config: ChatConfig,
              private readonly tokenizer: ChatTokenizer, private readonly placement: Placement,
              private readonly yieldIntervalMs = 0,
              private readonly grammars: Pick<GrammarEngine, "mask"> | null = null) {
    this.chunks = {
      prefillChunk: Math.min(runtime.metadata.prefill_chunk, config.context_window_size),
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

  /** Generate the reply to `req` (its `n` choices, one after the other), passing each chunk to `emit`;
   * `stopped()` true ends it with "abort". `stopped()` is checked before the prefill, between
   * prefill calls and before each token. With tools the template gets them, the output is decoded
   * under their grammar and split into content and tool calls (tools.ts). */
  async generate(req: NormalizedRequest, stopped: () => boolean,
                 emit: (chunk: ChatCompletionChunk) => void): Promise<GenerationResult> {
    const ids = this.tokenizer.encodeChat(req.messages, req.tools?.tools).ids;
    if (!req.tools) return this.complete(ids, req, stopped, emit);
    // tools: the output is free text or calls in the template's syntax, under their grammar
    const calls = new ToolCallChunks(toolSyntaxFor(this.tokenizer.chatTemplate), req.tools);
    if (!calls.tag) return this.complete(ids, req, stopped, emit);
    const result = await this.complete(ids, { ...req, constraint: { kind: "structural_tag", tag: calls.tag } }, stopped,
                                       calls.wrap(emit));
    result.finishes = result.finishes.map((f, i) => calls.finishReason(i, f));
    result.finish = result.finishes[0]!;
    return result;
  }

  /** A raw prompt's token ids (a string is tokenized with the model's BOS rule) and its text. */
  promptOf(prompt: string | readonly number[]): { ids: number[]; text: string } {
    if (typeof prompt === "string") return { ids: this.tokenizer.encodePrompt(prompt), text: prompt };
    return { ids: [...prompt], text: this.tokenizer.decode(prompt) };
  }

  /**
   * Continue the prompt `ids` (a rendered chat, or a raw prompt) `req.n` times. Each choice starts
   * from the prompt's KV state: the next one pops the previous one's tokens and recomputes only the
   * prompt's last token. Choice i samples with seed `req.seed + i` (reproducible with a seed).
   */
  async complete(ids: readonly number[], req: NormalizedRequest, stopped: () => boolean,
                 emit: (chunk: ChatCompletionChunk) => void): Promise<GenerationResult> {
    const meta = { id: makeCompletionId(), created: nowSeconds(), model: this.config.model_id };
    const budget = resolveMaxTokens(ids.length, req.max_tokens, this.config.context_window_size);
    const start = performance.now();
    const finishes: FinishReason[] = [];
    let completionTokens = 0, cachedTokens = 0, firstToken = start;
    const grammar = req.constraint ? { compileSeconds: 0, maskSeconds: 0, maskedTokens: 0 } : undefined;
    for (let index = 0; index < req.n; index++) {
      const choice = await this.choice(index, ids, budget, req, stopped, emit, meta, grammar);
      finishes.push(choice.finish);
      completionTokens += choice.generated;
      if (index === 0) [cachedTokens, firstToken] = [choice.cached, choice.firstToken];
    }
    const end = performance.now();
    const { backend, threads } = this.placement;
    const usage = buildUsage({
      promptTokens: ids.length, completionTokens,
      prefillSeconds: (firstToken - start) / 1000, decodeSeconds: (end - firstToken) / 1000,
      timeToFirstTokenSeconds: (firstToken - start) / 1000, cachedTokens, backend,
      ...(backend === "wasm" ? { threads } : {}), ...(grammar ? { grammar } : {}),
    });
    if (req.include_usage) emit(buildChunk(meta, null, usage));
    return { meta, finish: finishes[0]!, finishes, usage };
  }

  /** One choice: prefill what the cache lacks of `ids`, then decode; its chunks carry `index`. With
   * a response_format (`grammarStats` given) every token is sampled under the grammar's mask. */
  private async choice(index: number, ids: readonly number[], budget: number, req: NormalizedRequest,
                       stopped: () => boolean, emit: (chunk: ChatCompletionChunk) => void, meta: CompletionMeta,
                       grammarStats?: GrammarStats):
      Promise<{ finish: FinishReason; generated: number; cached: number; firstToken: number }> {
    let grammar: GrammarMask | null = null;
    if (req.constraint && grammarStats) {
      if (!this.grammars) throw new Error("this engine has no grammar engine");
      grammar = await this.grammars.mask(req.constraint, grammarStats);
    }
    try {
      return await this.decodeChoice(index, ids, budget, req, stopped, emit, meta, grammar);
    } finally {
      grammar?.dispose();
    }
  }

  private async decodeChoice(index: number, ids: readonly number[], budget: number, req: NormalizedRequest,
                             stopped: () => boolean, emit: (chunk: ChatCompletionChunk) => void, meta: CompletionMeta,
                             grammar: GrammarMask | null):
      Promise<{ finish: FinishReason; generated: number; cached: number; firstToken: number }> {
    const keep = this.reuseCache(ids);
    const sampler = new Sampler({ ...req, seed: req.seed === null ? null : req.seed + index }, ids);
    const stops = new Set(this.config.stop_token_ids);
    const matcher = new StopMatcher([...req.stop, ...this.config.stop_strings]);
    const decoder = this.tokenizer.streamDecoder({ skipSpecial: true, context: ids.slice(-4) });
    const turns = new EventLoopTurns(this.yieldIntervalMs);
    emit(buildChunk(meta, { index, role: "assistant", content: "" }));

    const logits = stopped() ? null : await this.prefill(ids.slice(keep), stopped, turns);
    let finish: FinishReason = logits ? "length" : "abort";
    // the log-probabilities of the tokens not yet in an emitted chunk (with req.logprobs)
    let pending: TokenLogprob[] = [];
    const withLogprobs = (choice: { content?: string; finishReason?: FinishReason }) => {
      if (!req.logprobs || (!pending.length && choice.finishReason === undefined)) return { index, ...choice };
      const out = { index, ...choice, logprobs: pending };
      pending = [];
      return out;
    };
    let token = logits ? await this.nextToken(logits, sampler, req, pending, grammar) : -1;
    let generated = 0;
    const firstToken = performance.now();
    while (logits && generated < budget) {
      await turns.give();
      if (stopped()) { if (req.logprobs) pending.pop(); finish = "abort"; break; }  // `token` is not emitted
      sampler.accept(token);
      generated++;
      if (stops.has(token)) { if (req.logprobs) pending.pop(); finish = "stop"; break; }
      const { text, stopped: atStopString } = matcher.push(decoder.push(token));
      if (text) emit(buildChunk(meta, withLogprobs({ content: text })));
      if (atStopString) { finish = "stop"; break; }
      if (generated >= budget) break;
      const next = this.runtime.forward([token]);
      this.cached.push(token);
      token = await this.nextToken(next, sampler, req, pending, grammar);
    }
    if (!matcher.stopped) {
      // the text held back as a possible stop-string prefix (or incomplete bytes) is final now
      const rest = matcher.push(decoder.flush()).text + matcher.flush();
      if (rest) emit(buildChunk(meta, withLogprobs({ content: rest })));
    }
    emit(buildChunk(meta, withLogprobs({ finishReason: finish })));
    return { finish, generated, cached: keep, firstToken };
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

  /**
   * Run `ids` through the model at the end of the cached sequence, in calls of prefillCallSize();
   * the last position's logits, or null when `stopped()` turned true (the tokens prefilled so far
   * stay cached). After each call it waits for the device (this times the call: the next one is
   * sized from it) and gives the event loop a turn.
   */
  private async prefill(ids: readonly number[], stopped: () => boolean, turns: EventLoopTurns): Promise<Logits | null> {
    if (!ids.length) throw new Error("prefill of no tokens");
    let logits: Logits | null = null;
    let size = 0;
    for (let start = 0; start < ids.length;) {
      size = prefillCallSize(this.chunks, this.cached.length, this.prefillMsPerToken, size);
      const chunk = ids.slice(start, start + size);
      const began = performance.now();
      const next = this.runtime.forward(chunk);
      logits?.dispose();
      logits = next;
      this.cached.push(...chunk);
      start += chunk.length;
      await this.runtime.sync();
      const ms = performance.now() - began;
      // a one-token call runs the decode kernel: it says nothing of a prefill call's cost, but
      // lets the estimate decay so that larger calls are tried again
      if (chunk.length > 1) this.prefillMsPerToken = ms / chunk.length;
      else if (this.prefillMsPerToken !== null) this.prefillMsPerToken *= SINGLE_CALL_DECAY;
      await turns.give();
      if (stopped()) {
        logits.dispose();
        return null;
      }
    }
    return logits;
  }

  /** The next token from a forward call's logits: on the device when decoding is plain greedy
   * (temperature 0, no bias or penalties) with no logprobs, else sampled on the CPU from the logits
   * read back. A grammar's mask is applied by the model module where the logits are (before the
   * device argmax or the read-back) when the module has apply_token_bitmask and no logprobs are
   * asked for (they need the unmasked logits), else here to the read-back logits; the grammar then
   * accepts the token. With req.logprobs its entry (of the model's own logits) is appended to `logprobs`. */
  private async nextToken(logits: Logits, sampler: Sampler, req: NormalizedRequest,
                          logprobs: TokenLogprob[], grammar: GrammarMask | null): Promise<number> {
    const greedy = this.runtime.hasArgmax && req.temperature <= 0 && req.logit_bias.size === 0 &&
      req.repetition_penalty === 1 && req.frequency_penalty === 0 && req.presence_penalty === 0;
    if (greedy && !req.logprobs && !grammar) return this.runtime.readArgmax(logits);
    if (grammar && !req.logprobs && this.runtime.hasTokenBitmask) {
      await grammar.applyWith((bitmask) => this.runtime.maskLogits(logits, bitmask));
      const token = greedy ? await this.runtime.readArgmax(logits) : sampler.sample(await this.runtime.readLogits(logits));
      grammar.accept(token);
      return token;
    }
    const values = await this.runtime.readLogits(logits);
    const model = req.logprobs ? Float32Array.from(values) : values;  // mask and sampler edit `values` in place
    if (grammar) await grammar.apply(values);
    const token = sampler.sample(values);
    grammar?.accept(token);
    if (req.logprobs) logprobs.push(tokenLogprob(model, token, req.top_logprobs, this.tokenizer));
    return token;
  }
}
