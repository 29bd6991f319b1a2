// The in-page engine: the public ChatEngine API on top of one model. It loads a webbuild model
// folder (artifacts, backend choice, the TVM runtime, the tokenizer), normalises and checks each
// request, runs one request at a time (the others wait their turn), and stops a generation on
// interrupt() or the request's AbortSignal. The generation itself is the LLM chat pipeline's
// (llm_chat_pipeline.ts); everything that touches TVM is in tvm_runtime.ts. An embedding model
// (chat-config.json model_kind "embedding") loads the embeddings pipeline instead (embeddings.ts,
// encoder_runtime.ts); asking a model of one kind for the other's API is a ModelKindError.
import { loadModelArtifacts, loadModelLib, ShardLoader, type LoadOptions, type ModelArtifacts } from "./artifacts.js";
import { chooseBackend, type Backend, type BackendChoice, type ChosenBackend } from "./backend.js";
import { type ChatConfig, withContextWindow } from "./config.js";
import {
  CompletionChunker, mergeCompletionChunks, validateCompletionRequest, type Completion, type CompletionChunk,
  type CompletionRequest,
} from "./completions.js";
import {
  EmbeddingPipeline, validateEmbeddingRequest, type CreateEmbeddingResponse, type EmbeddingCreateParams,
} from "./embeddings.js";
import { EncoderRuntime } from "./encoder_runtime.js";
import { ModelKindError, ModelLoadError } from "./errors.js";
import { withOutOfMemoryCheck } from "./gpu.js";
import { GrammarEngine } from "./grammar.js";
import { LLMChatPipeline, type GenerationResult } from "./llm_chat_pipeline.js";
import {
  buildChatCompletion, validateRequest,
  type ChatCompletion, type ChatCompletionChunk, type ChatCompletionRequest, type NormalizedRequest, type ChoiceResult,
} from "./protocol.js";
import { pushStream } from "./push_stream.js";
import { Tokenizer } from "./tokenizer.js";
import { mergeToolCallDeltas } from "./tools.js";
import { TvmRuntime, type RuntimeOptions } from "./tvm_runtime.js";

export interface EngineOptions extends LoadOptions {
  /** Run the engine in a dedicated Web Worker behind a proxy (see createEngine). */
  worker?: boolean;
  /** Compile every WebGPU pipeline while loading instead of on first use. Default false. */
  prefetchShaders?: boolean;
  /** "auto" (default): WebGPU when the adapter can run the model, else the WebAssembly CPU module;
   * "webgpu" or "wasm" force one. */
  backend?: BackendChoice;
  /** CPU threads for the wasm backend, the calling one included. Default: every core the browser
   * reports (navigator.hardwareConcurrency), at most 8. More than 1 needs a cross-origin isolated
   * page (COOP/COEP headers, as `webbuild serve` sends); elsewhere one thread runs. */
  threads?: number;
  /** Tokens the KV cache holds (prompt and completion together); default and maximum: the model's
   * context_window_size. A smaller window takes less memory: the cache is allocated for the whole
   * window up front (2 x layers x KV heads x head_dim values per token). */
  contextWindow?: number;
  /** Tuning: how many times an idle CPU worker checks for work before it sleeps (default 131072,
   * about 0.1 ms; more wakes faster, but spinning takes a core from other work). */
  threadSpins?: number;
  /** Tuning: a generation gives the event loop a turn (timers, input, Stop, a worker's abort
   * message) between two model calls once this many ms have passed since its last turn. Default 4
   * (0: after every call, which costs a fast model's decode speed; Infinity: never, the page
   * freezes and Stop waits for the answer). */
  yieldIntervalMs?: number;
}

/** A turn costs ~0.05-0.4 ms (more on a loaded machine): after every call it slows a model whose
 * decode step takes under a millisecond; every 4 ms it is lost in the noise. */
const DEFAULT_YIELD_INTERVAL_MS = 4;

export type CreateRequest = ChatCompletionRequest & { signal?: AbortSignal };
export type CompletionCreateRequest = CompletionRequest & { signal?: AbortSignal };
export type EmbeddingCreateRequest = EmbeddingCreateParams & { signal?: AbortSignal };

export interface ChatEngine {
  readonly config: ChatConfig;
  /** Where the model runs: "webgpu" or "wasm" (the CPU). */
  readonly backend: Backend;
  /** CPU threads the model runs on (wasm backend; 1 on webgpu). */
  readonly threads: number;
  /** Why backend "auto" runs the CPU module (e.g. "software-adapter", "no-webgpu"); null otherwise. */
  readonly fallbackReason: string | null;
  readonly chat: { completions: { create(request: CreateRequest): Promise<ChatCompletion | AsyncIterable<ChatCompletionChunk>> } };
  /** Raw-prompt completions (no chat template), OpenAI's `text_completion` objects. */
  readonly completions: { create(request: CompletionCreateRequest): Promise<Completion | AsyncIterable<CompletionChunk>> };
  /** OpenAI's embeddings (embedding models only: chat-config.json model_kind "embedding"). */
  readonly embeddings: { create(request: EmbeddingCreateRequest): Promise<CreateEmbeddingResponse> };
  interrupt(): void;
  resetChat(): Promise<void>;
  unload(): Promise<void>;
}

export class LocalEngine implements ChatEngine {
  readonly chat = { completions: { create: (request: CreateRequest) => this.create(request) } };
  readonly completions = { create: (request: CompletionCreateRequest) => this.createCompletion(request) };
  readonly embeddings = { create: (request: EmbeddingCreateRequest) => this.createEmbeddings(request) };
  private interrupted = false;
  private busy: Promise<unknown> = Promise.resolve();
  private disposed = false;

  private constructor(readonly config: ChatConfig, private readonly chosen: ChosenBackend,
                      private readonly runtime: TvmRuntime | EncoderRuntime,
                      private readonly chatPipeline: LLMChatPipeline | null,
                      private readonly embedder: EmbeddingPipeline | null = null) {}

  /** The chat pipeline; a ModelKindError (code "model-kind-mismatch") on an embedding model. */
  private get pipeline(): LLMChatPipeline {
    if (!this.chatPipeline) throw new ModelKindError(this.config.model_kind, "chat and text completions");
    return this.chatPipeline;
  }

  get backend(): Backend {
    return this.chosen.kind;
  }

  /** CPU threads the model runs on (wasm backend; 1 on webgpu). */
  get threads(): number {
    return this.chosen.threads;
  }

  get fallbackReason(): string | null {
    return this.chosen.fallbackReason ?? null;
  }

  /** Download (or read from the cache), verify and upload a model; compile its kernels. */
  static async load(modelUrl: string, options: EngineOptions = {}): Promise<LocalEngine> {
    const artifacts = await loadModelArtifacts(modelUrl, options);
    artifacts.chatConfig = withContextWindow(artifacts.chatConfig, options.contextWindow,
                                             artifacts.baseUrl + "chat-config.json");
    const chosen = await chooseBackend(artifacts.chatConfig, options.backend ?? "auto", artifacts.baseUrl, options.threads);
    const device = chosen.device;
    if (!device) return LocalEngine.instantiate(artifacts, chosen, options);
    try {
      return await withOutOfMemoryCheck(device, () => LocalEngine.instantiate(artifacts, chosen, options));
    } catch (err) {
      device.destroy();
      throw err;
    }
  }

  private static async instantiate(artifacts: ModelArtifacts, chosen: ChosenBackend, options: EngineOptions): Promise<LocalEngine> {
    const config = artifacts.chatConfig;
    const shards = new ShardLoader(artifacts, options);
    const wasm = await loadModelLib(artifacts, options, chosen.moduleFile);
    shards.progress.emit("compile", chosen.moduleFile, 0, 1, { backend: chosen.kind });
    const runtimeOptions = {
      url: artifacts.baseUrl + chosen.moduleFile, gpu: chosen.device, threads: chosen.threads,
      memoryPages: config.wasm_threads?.memory_pages, prefetchShaders: options.prefetchShaders,
      threadSpins: options.threadSpins,
    };
    if (config.model_kind === "embedding") {
      return LocalEngine.instantiateEncoder(artifacts, chosen, shards, wasm, runtimeOptions);
    }
    const runtime = await TvmRuntime.create(wasm.slice().buffer, runtimeOptions);
    chosen.threads = runtime.threads;
    try {
      await runtime.loadParams(shards.tensors(), artifacts.baseUrl + "tensor-cache.json", chosen.moduleFile);
      const tokenizer = new Tokenizer(artifacts.tokenizerJson, artifacts.tokenizerConfig, config);
      const grammars = new GrammarEngine(artifacts.tokenizerJson as Record<string, unknown>, config.vocab_size,
                                         config.stop_token_ids, undefined, tokenizer.keptSpecialTokens);
      const pipeline = new LLMChatPipeline(runtime, config, tokenizer, { backend: chosen.kind, threads: chosen.threads },
                                           options.yieldIntervalMs ?? DEFAULT_YIELD_INTERVAL_MS, grammars);
      await runtime.sync();
      shards.progress.emit("compile", chosen.moduleFile, 1, 1, { backend: chosen.kind });
      shards.progress.emit("ready", null as unknown as string, 1, 1,
        { backend: chosen.kind, ...(chosen.kind === "wasm" ? { threads: chosen.threads } : {}), ...(chosen.fallbackReason ? { fallbackReason: chosen.fallbackReason } : {}),
          ...(chosen.fallbackDetail ? { fallbackDetail: chosen.fallbackDetail } : {}) });
      return new LocalEngine(config, chosen, runtime, pipeline);
    } catch (err) {
      runtime.stopThreads();
      throw err;
    }
  }

  /** An embedding model: the module's encode function behind the embeddings pipeline. */
  private static async instantiateEncoder(artifacts: ModelArtifacts, chosen: ChosenBackend, shards: ShardLoader,
                                          wasm: Uint8Array, runtimeOptions: RuntimeOptions): Promise<LocalEngine> {
    const config = artifacts.chatConfig;
    if (!config.embedding) {
      throw new ModelLoadError(artifacts.baseUrl + "chat-config.json", "an embedding model needs an embedding block",
                               "rebuild the model folder with this version of webbuild");
    }
    const runtime = await EncoderRuntime.create(wasm.slice().buffer, runtimeOptions, config.embedding.function);
    chosen.threads = runtime.threads;
    try {
      await runtime.loadParams(shards.tensors(), artifacts.baseUrl + "tensor-cache.json", chosen.moduleFile);
      const tokenizer = new Tokenizer(artifacts.tokenizerJson, artifacts.tokenizerConfig, config);
      const embedder = new EmbeddingPipeline(runtime, config, tokenizer);
      await runtime.sync();
      shards.progress.emit("compile", chosen.moduleFile, 1, 1, { backend: chosen.kind });
      shards.progress.emit("ready", null as unknown as string, 1, 1,
        { backend: chosen.kind, ...(chosen.kind === "wasm" ? { threads: chosen.threads } : {}),
          ...(chosen.fallbackReason ? { fallbackReason: chosen.fallbackReason } : {}) });
      return new LocalEngine(config, chosen, runtime, null, embedder);
    } catch (err) {
      runtime.stopThreads();
      throw err;
    }
  }

  /** Stop the generation in progress (it ends with finish_reason "abort"). */
  interrupt(): void {
    this.interrupted = true;
  }

  /** Forget the conversation held in the KV cache. */
  async resetChat(): Promise<void> {
    await this.exclusive(async () => this.chatPipeline?.reset());  // an embedding model keeps nothing
  }

  async unload(): Promise<void> {
    if (this.disposed) return;
    this.interrupt();
    await this.busy.catch(() => {});
    this.disposed = true;
    this.runtime.dispose();
  }

  /** OpenAI embeddings of the request's inputs (one request at a time holds the model). */
  private async createEmbeddings(request: EmbeddingCreateRequest): Promise<CreateEmbeddingResponse> {
    if (this.disposed) throw new ModelLoadError(this.config.model_id, "the engine was unloaded", "create a new engine");
    const embedder = this.embedder;
    if (!embedder) throw new ModelKindError(this.config.model_kind, "embeddings");
    const { signal, ...body } = request;
    const req = validateEmbeddingRequest(body, embedder.embedding, this.config.vocab_size);
    return this.exclusive(() => {
      this.interrupted = false;
      return embedder.create(req, () => Boolean(signal?.aborted) || this.interrupted);
    });
  }

  /** Run `work` after every request queued before it: one request at a time holds the model. */
  private exclusive<T>(work: () => Promise<T>): Promise<T> {
    const run = this.busy.then(work, work);
    this.busy = run.catch(() => {});
    return run;
  }

  private async create(request: CreateRequest): Promise<ChatCompletion | AsyncIterable<ChatCompletionChunk>> {
    if (this.disposed) throw new ModelLoadError(this.config.model_id, "the engine was unloaded", "create a new engine");
    if (!this.chatPipeline) throw new ModelKindError(this.config.model_kind, "chat completions");
    const { signal, ...body } = request;
    const req = validateRequest(body, { sampling: this.config.sampling, vocabSize: this.config.vocab_size,
      contextWindow: this.config.context_window_size });
    if (req.stream) return this.stream(req, signal);
    const choices: ChoiceResult[] = Array.from({ length: req.n }, () => (
      { content: "", finishReason: "abort", logprobs: req.logprobs ? [] : null }));
    const result = await this.exclusive(() => this.generate(req, signal, (chunk) => {
      for (const c of chunk.choices) {
        const choice = choices[c.index]!;
        choice.content += c.delta.content ?? "";
        if (c.delta.tool_calls) mergeToolCallDeltas(choice.toolCalls ??= [], c.delta.tool_calls);
        choice.logprobs?.push(...(c.logprobs?.content ?? []));
      }
    }));
    result.finishes.forEach((finish, i) => { choices[i]!.finishReason = finish; });
    return buildChatCompletion(result.meta, choices, result.usage);
  }

  private async createCompletion(request: CompletionCreateRequest): Promise<Completion | AsyncIterable<CompletionChunk>> {
    if (this.disposed) throw new ModelLoadError(this.config.model_id, "the engine was unloaded", "create a new engine");
    if (!this.chatPipeline) throw new ModelKindError(this.config.model_kind, "text completions");
    const { signal, ...body } = request;
    const { req, prompt, echo } = validateCompletionRequest(body, { sampling: this.config.sampling,
      vocabSize: this.config.vocab_size, contextWindow: this.config.context_window_size });
    const { ids, text } = this.pipeline.promptOf(prompt);
    const chunker = new CompletionChunker(echo ? text : null, req.top_logprobs);
    const run = (push: (c: CompletionChunk) => void) => this.exclusive(() => this.generate(req, signal, (chunk) => {
      const converted = chunker.convert(chunk);
      if (converted) push(converted);
    }, ids));
    if (req.stream) return pushStream(run);
    const chunks: CompletionChunk[] = [];
    const result = await run((c) => chunks.push(c));
    return mergeCompletionChunks(result.meta, req.n, chunks, result.usage, req.logprobs);
  }

  /** Streams chunks; the whole generation holds the engine (one request at a time). */
  private stream(req: NormalizedRequest, signal?: AbortSignal): AsyncIterable<ChatCompletionChunk> {
    return pushStream((push) => this.exclusive(() => this.generate(req, signal, push)));
  }

  /** Run one request on the pipeline: the chat of `req.messages`, or the raw prompt `ids`. It stops
   * on the signal or interrupt(). */
  private generate(req: NormalizedRequest, signal: AbortSignal | undefined,
                   emit: (chunk: ChatCompletionChunk) => void, ids?: readonly number[]): Promise<GenerationResult> {
    this.interrupted = false;
    const stopped = () => Boolean(signal?.aborted) || this.interrupted;
    return ids ? this.pipeline.complete(ids, req, stopped, emit) : this.pipeline.generate(req, stopped, emit);
  }
}
