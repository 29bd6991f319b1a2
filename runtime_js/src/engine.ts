// The in-page engine: loads a webbuild model folder onto WebGPU through TVM's JS runtime and
// generates chat completions (chunked prefill, KV-cache reuse across turns, sampling, stops).
import * as tvmjs from "@mlc-ai/web-runtime";

import { loadModelArtifacts, loadModelLib, ShardLoader, type LoadOptions, type ModelArtifacts } from "./artifacts.js";
import { chooseBackend, type Backend, type BackendChoice, type ChosenBackend } from "./backend.js";
import { instantiateThreaded, type CpuThreads } from "./cpu_threads.js";
import { type ChatConfig, withContextWindow } from "./config.js";
import { ModelLoadError } from "./errors.js";
import { withOutOfMemoryCheck } from "./gpu.js";
import {
  buildChatCompletion, buildChunk, buildUsage, makeCompletionId, nowSeconds, resolveMaxTokens, validateRequest,
  type ChatCompletion, type ChatCompletionChunk, type ChatCompletionRequest, type CompletionMeta, type CompletionUsage,
  type FinishReason, type NormalizedRequest,
} from "./protocol.js";
import { pushStream } from "./push_stream.js";
import { Sampler } from "./sampling.js";
import { StopMatcher } from "./stop.js";
import { Tokenizer } from "./tokenizer.js";

/* eslint-disable @typescript-eslint/no-explicit-any */
const PAGE_SIZE = 16; // the TIR paged KV-cache kernels are generated for 16-token pages

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
}

export type CreateRequest = ChatCompletionRequest & { signal?: AbortSignal };

export interface ChatEngine {
  readonly config: ChatConfig;
  /** Where the model runs: "webgpu" or "wasm" (the CPU). */
  readonly backend: Backend;
  /** CPU threads the model runs on (wasm backend; 1 on webgpu). */
  readonly threads: number;
  readonly chat: { completions: { create(request: CreateRequest): Promise<ChatCompletion | AsyncIterable<ChatCompletionChunk>> } };
  interrupt(): void;
  resetChat(): Promise<void>;
  unload(): Promise<void>;
}

interface GenerationResult {
  meta: CompletionMeta;
  finish: FinishReason;
  usage: CompletionUsage;
}

/** The model's sequence state, as chat-config.json describes it: a paged KV cache or an RNN state. */
function createState(tvm: any, vm: any, config: ChatConfig): any {
  if (config.state.kv_state === "rnn_state") {
    // max_history 2: each forward reads one slot and writes the other
    return vm.getFunction("create_rnn_state")(tvm.makeShapeTuple([1]), tvm.makeShapeTuple([2]));
  }
  return vm.getFunction("create_paged_kv_cache")(
    tvm.makeShapeTuple([1]), tvm.makeShapeTuple([config.context_window_size]),
    tvm.makeShapeTuple([config.prefill_chunk_size]), tvm.makeShapeTuple([PAGE_SIZE]), tvm.makeShapeTuple([0]));
}

/** Tokens in the KV cache, for reuse by the next request of the same conversation. */
function commonPrefix(a: readonly number[], b: readonly number[]): number {
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  return i;
}

export class LocalEngine implements ChatEngine {
  readonly chat = { completions: { create: (request: CreateRequest) => this.create(request) } };
  private kvTokens: number[] = [];
  private interrupted = false;
  private busy: Promise<unknown> = Promise.resolve();
  private disposed = false;
  private tokenInput: any = null;
  private logitsHost: any = null;
  private argmaxHost: any = null;
  private logitsValues: Float32Array | null = null;

  private constructor(readonly config: ChatConfig, private readonly tokenizer: Tokenizer,
                      private readonly tvm: any, private readonly chosen: ChosenBackend, private readonly vm: any,
                      private readonly params: any, private kv: any, private readonly fns: Record<string, any>,
                      private readonly cpuThreads: CpuThreads | null) {}

  get backend(): Backend {
    return this.chosen.kind;
  }

  /** CPU threads the model runs on (wasm backend; 1 on webgpu). */
  get threads(): number {
    return this.chosen.threads;
  }

  /** Download (or read from the cache), verify and upload a model; compile its kernels. */
  static async load(modelUrl: string, options: EngineOptions = {}): Promise<LocalEngine> {
    const artifacts = await loadModelArtifacts(modelUrl, options);
    artifacts.chatConfig = withContextWindow(artifacts.chatConfig, options.contextWindow,
                                             artifacts.baseUrl + "chat-config.json");
    const chosen = await chooseBackend(artifacts.chatConfig, options.backend ?? "auto", artifacts.baseUrl, options.threads);
    if (!chosen.device) return LocalEngine.instantiate(artifacts, chosen, options);
    try {
      return await withOutOfMemoryCheck(chosen.device, () => LocalEngine.instantiate(artifacts, chosen, options));
    } catch (err) {
      chosen.device.destroy();
      throw err;
    }
  }

  /** The TVM device tensors and kernels live on. */
  private static device(tvm: any, chosen: ChosenBackend): any {
    return chosen.kind === "webgpu" ? tvm.webgpu() : tvm.cpu();
  }

  private static async instantiate(artifacts: ModelArtifacts, chosen: ChosenBackend, options: EngineOptions): Promise<LocalEngine> {
    const config = artifacts.chatConfig;
    const shards = new ShardLoader(artifacts, options);
    const wasm = await loadModelLib(artifacts, options, chosen.moduleFile);
    shards.progress.emit("compile", chosen.moduleFile, 0, 1, { backend: chosen.kind });
    const bytes = wasm.slice().buffer as ArrayBuffer;
    let tvm: any;
    let threads: CpuThreads | null = null;
    if (chosen.threads > 1) {
      ({ tvm, threads } = await instantiateThreaded(bytes, config.wasm_threads!.memory_pages, chosen.threads,
                                                    artifacts.baseUrl + chosen.moduleFile, options.threadSpins));
      chosen.threads = threads.count;
    } else {
      tvm = await tvmjs.instantiate(bytes, tvmjs.createPolyfillWASI(), () => {});
    }
    try {
      if (chosen.device) tvm.initWebGPU(chosen.device);
      tvm.beginScope();
      const gpu = LocalEngine.device(tvm, chosen);
      const vm = tvm.detachFromCurrentScope(tvm.createVirtualMachine(gpu));
      if (options.prefetchShaders && chosen.device) await tvm.asyncLoadWebGPUPipelines(vm.getInternalModule());
      const metadata = JSON.parse(String(vm.getFunction("_metadata")()));
      const expected: string[] = metadata.params.map((p: { name: string }) => p.name);
      const tensors: any[] = [];
      for await (const { record, bytes } of shards.tensors()) {
        if (record.name !== expected[tensors.length]) {
          throw new ModelLoadError(artifacts.baseUrl + "tensor-cache.json",
            `parameter ${tensors.length} is ${record.name}, ${chosen.moduleFile} expects ${expected[tensors.length]}`,
            "rebuild the model folder: its files come from different builds");
        }
        const t = tvm.detachFromCurrentScope(tvm.empty(record.shape, record.dtype, gpu));
        t.copyFromRawBytes(bytes);
        tensors.push(t);
      }
      if (tensors.length !== expected.length) {
        throw new ModelLoadError(artifacts.baseUrl + "tensor-cache.json", `has ${tensors.length} of ${expected.length} parameters`,
          "rebuild the model folder");
      }
      const params = tvm.detachFromCurrentScope(tvm.makeTVMArray(tensors));
      const keep = (f: any) => tvm.detachFromCurrentScope(f);
      const fns: Record<string, any> = Object.fromEntries(Object.entries({
        embed: vm.getFunction("embed"),
        prefill: vm.getFunction("prefill"),
        decode: vm.getFunction("decode"),
        addSequence: tvm.getGlobalFunc("vm.builtin.kv_state_add_sequence"),
        removeSequence: tvm.getGlobalFunc("vm.builtin.kv_state_remove_sequence"),
        popN: tvm.getGlobalFunc("vm.builtin.kv_state_popn"),
        begin: tvm.getGlobalFunc("vm.builtin.kv_state_begin_forward"),
        end: tvm.getGlobalFunc("vm.builtin.kv_state_end_forward"),
      }).map(([name, f]) => [name, keep(f)]));
      const argmax = LocalEngine.optionalFunction(vm, "argmax");
      if (argmax) fns.argmax = keep(argmax);
      const kv = tvm.detachFromCurrentScope(createState(tvm, vm, config));
      fns.addSequence(kv, new tvmjs.Scalar(0, "int64"));
      tvm.endScope();
      if (chosen.device) await gpu.sync();
      const tokenizer = new Tokenizer(artifacts.tokenizerJson, artifacts.tokenizerConfig, config);
      shards.progress.emit("compile", chosen.moduleFile, 1, 1, { backend: chosen.kind });
      shards.progress.emit("ready", null as unknown as string, 1, 1,
        { backend: chosen.kind, ...(chosen.kind === "wasm" ? { threads: chosen.threads } : {}), ...(chosen.fallbackReason ? { fallbackReason: chosen.fallbackReason } : {}) });
      return new LocalEngine(config, tokenizer, tvm, chosen, vm, params, kv, fns, threads);
    } catch (err) {
      threads?.dispose();
      throw err;
    }
  }

  /** A VM function the module may lack (folders built before it existed), else null. */
  private static optionalFunction(vm: any, name: string): any {
    try {
      return vm.getFunction(name);
    } catch {
      return null;
    }
  }

  /** Stop the generation in progress (it ends with finish_reason "abort"). */
  interrupt(): void {
    this.interrupted = true;
  }

  /** Forget the conversation held in the KV cache. */
  async resetChat(): Promise<void> {
    await this.exclusive(async () => this.clearCache());
  }

  async unload(): Promise<void> {
    if (this.disposed) return;
    this.interrupt();
    await this.busy.catch(() => {});
    this.disposed = true;
    this.tokenInput?.dispose();
    this.logitsHost?.dispose();
    this.argmaxHost?.dispose();
    this.kv.dispose();
    this.params.dispose();
    this.vm.dispose();
    this.cpuThreads?.dispose();
    this.tvm.dispose();
    this.chosen.device?.destroy();
  }

  private clearCache(): void {
    this.fns.removeSequence(this.kv, new tvmjs.Scalar(0, "int64"));
    this.fns.addSequence(this.kv, new tvmjs.Scalar(0, "int64"));
    this.kvTokens = [];
  }

  private exclusive<T>(work: () => Promise<T>): Promise<T> {
    const run = this.busy.then(work, work);
    this.busy = run.catch(() => {});
    return run;
  }

  private async create(request: CreateRequest): Promise<ChatCompletion | AsyncIterable<ChatCompletionChunk>> {
    if (this.disposed) throw new ModelLoadError(this.config.model_id, "the engine was unloaded", "create a new engine");
    const { signal, ...body } = request;
    const req = validateRequest(body, { sampling: this.config.sampling, vocabSize: this.config.vocab_size,
      contextWindow: this.config.context_window_size });
    if (req.stream) return this.stream(req, signal);
    let text = "";
    const result = await this.exclusive(() => this.generate({ ...req, include_usage: true }, signal, (chunk) => {
      text += chunk.choices[0]?.delta?.content ?? "";
    }));
    return buildChatCompletion(result.meta, text, result.finish, result.usage);
  }

  /** Streams chunks; the whole generation holds the engine (one request at a time). */
  private stream(req: NormalizedRequest, signal?: AbortSignal): AsyncIterable<ChatCompletionChunk> {
    return pushStream((push) => this.exclusive(() => this.generate(req, signal, push)));
  }

  /** Run `ids` through the model at the end of the cached sequence; returns last-position logits. */
  private forward(ids: number[]): any {
    const { tvm, fns, kv } = this;
    const gpu = LocalEngine.device(tvm, this.chosen);
    let logits: any = null;
    // A sliding-window model takes at most window - 1 tokens per call: TVM's window kernels match
    // transformers only then (webbuild/arch/kv_model.py). The cache keeps every token, so popN
    // across turns is unaffected. On the CPU module, once `window` tokens are cached, one token per
    // call: TVM 0.27's CPU window prefill kernel misreads its running max there (webbuild/runner.py).
    const window = this.config.state.sliding_window;
    const chunkSize = window ? Math.min(this.config.prefill_chunk_size, window - 1) : this.config.prefill_chunk_size;
    const callSize = () => (window && this.backend === "wasm" && this.kvTokens.length >= window ? 1 : chunkSize);
    for (let start = 0, size = callSize(); start < ids.length; start += size, size = callSize()) {
      const chunk = ids.slice(start, start + size);
      tvm.beginScope();
      // one-token calls (decode) reuse one input buffer: no device allocation per token
      this.tokenInput ??= chunk.length === 1 ? tvm.detachFromCurrentScope(tvm.empty([1], "int32", gpu)) : null;
      const input = chunk.length === 1 ? this.tokenInput : tvm.empty([chunk.length], "int32", gpu);
      input.copyFrom(Int32Array.from(chunk));
      const embed = fns.embed(input, this.params);
      const hidden = embed.shape[embed.shape.length - 1];
      fns.begin(kv, tvm.makeShapeTuple([0]), tvm.makeShapeTuple([chunk.length]));
      const out = (chunk.length > 1 ? fns.prefill : fns.decode)(embed.view([1, chunk.length, hidden]), kv, this.params);
      fns.end(kv);
      logits?.dispose();
      logits = tvm.detachFromCurrentScope(out.get(0));
      tvm.endScope();
      this.kvTokens.push(...chunk);
    }
    return logits;
  }

  /** A host (CPU) tensor of `shape` kept across tokens in `slot`: no allocation per decoded token. */
  private hostTensor(slot: "logitsHost" | "argmaxHost", shape: number[], dtype: string): any {
    const held = this[slot];
    if (held && held.shape.length === shape.length && held.shape.every((d: number, i: number) => d === shape[i])) return held;
    held?.dispose();
    this[slot] = this.tvm.detachFromCurrentScope(this.tvm.empty(shape, dtype, this.tvm.cpu()));
    return this[slot];
  }

  /** Read `count` elements of a host tensor straight from wasm memory (the buffer may have grown: view it now). */
  private hostView<T extends Float32Array | Int32Array>(kind: { new(b: ArrayBufferLike, o: number, n: number): T },
                                                        host: any, count: number): T {
    return new kind(this.tvm.memory.memory.buffer, host.getCPUDataAddress(), count);
  }

  /** The logits, in one array reused for every token (the sampler only reads it while picking one). */
  private async readLogits(logits: any): Promise<Float32Array> {
    const { tvm } = this;
    tvm.beginScope();
    const host = this.hostTensor("logitsHost", logits.shape, "float32");
    host.copyFrom(logits);
    if (this.chosen.device) await tvm.webgpu().sync();
    const count = logits.shape.reduce((a: number, b: number) => a * b, 1);
    const values: Float32Array = this.logitsValues && this.logitsValues.length === count ? this.logitsValues : new Float32Array(count);
    values.set(this.hostView(Float32Array, host, count));
    this.logitsValues = values;
    tvm.endScope();
    logits.dispose();
    return values;
  }

  /** The token id of the largest logit, computed by the module's `argmax`: 4 bytes read back. */
  private async readArgmax(logits: any): Promise<number> {
    const { tvm } = this;
    tvm.beginScope();
    const token = this.fns.argmax(logits);
    const host = this.hostTensor("argmaxHost", [1], "int32");
    host.copyFrom(token);
    if (this.chosen.device) await tvm.webgpu().sync();
    const id = this.hostView(Int32Array, host, 1)[0]!;
    tvm.endScope();
    logits.dispose();
    return id;
  }

  /** The next token from a forward pass's logits: on the device when decoding is plain greedy
   * (temperature 0, no bias or penalties), else sampled on the CPU from the logits read back. */
  private async nextToken(logits: any, sampler: Sampler, req: NormalizedRequest): Promise<number> {
    const greedy = this.fns.argmax && req.temperature <= 0 && req.logit_bias.size === 0 &&
      req.repetition_penalty === 1 && req.frequency_penalty === 0 && req.presence_penalty === 0;
    return greedy ? this.readArgmax(logits) : sampler.sample(await this.readLogits(logits));
  }

  private async generate(req: NormalizedRequest, signal: AbortSignal | undefined,
                         emit: (chunk: ChatCompletionChunk) => void): Promise<GenerationResult> {
    this.interrupted = false;
    const meta = { id: makeCompletionId(), created: nowSeconds(), model: this.config.model_id };
    const { ids } = this.tokenizer.encodeChat(req.messages);
    const budget = resolveMaxTokens(ids.length, req.max_tokens, this.config.context_window_size);
    const start = performance.now();
    // Keep the cached tokens shared with this prompt; recompute at least the last prompt token.
    let keep = Math.min(commonPrefix(this.kvTokens, ids), ids.length - 1);
    if (keep < this.kvTokens.length && this.config.state.kv_state === "rnn_state") {
      // an RNN state cannot roll back over a prefill: start the sequence again
      this.clearCache();
      keep = 0;
    } else if (keep < this.kvTokens.length) {
      this.fns.popN(this.kv, new tvmjs.Scalar(0, "int64"), new tvmjs.Scalar(this.kvTokens.length - keep, "int64"));
      this.kvTokens.length = keep;
    }
    const sampler = new Sampler(req, ids);
    const stops = new Set(this.config.stop_token_ids);
    const matcher = new StopMatcher([...req.stop, ...this.config.stop_strings]);
    const decoder = this.tokenizer.streamDecoder({ skipSpecial: true, context: ids.slice(-4) });
    emit(buildChunk(meta, { role: "assistant", content: "" }));

    let token = await this.nextToken(this.forward(ids.slice(keep)), sampler, req);
    const firstToken = performance.now();
    let generated = 0;
    let finish: FinishReason = "length";
    while (generated < budget) {
      if (signal?.aborted || this.interrupted) { finish = "abort"; break; }
      sampler.accept(token);
      generated++;
      if (stops.has(token)) { finish = "stop"; break; }
      const { text, stopped } = matcher.push(decoder.push(token));
      if (text) emit(buildChunk(meta, { content: text }));
      if (stopped) { finish = "stop"; break; }
      if (generated >= budget) break;
      token = await this.nextToken(this.forward([token]), sampler, req);
    }
    if (!matcher.stopped) {
      // the text held back as a possible stop-string prefix (or incomplete bytes) is final now
      const rest = matcher.push(decoder.flush()).text + matcher.flush();
      if (rest) emit(buildChunk(meta, { content: rest }));
    }
    const end = performance.now();
    const usage = buildUsage({
      promptTokens: ids.length, completionTokens: generated,
      prefillSeconds: (firstToken - start) / 1000, decodeSeconds: (end - firstToken) / 1000,
      timeToFirstTokenSeconds: (firstToken - start) / 1000, cachedTokens: keep, backend: this.backend,
      ...(this.backend === "wasm" ? { threads: this.threads } : {}),
    });
    emit(buildChunk(meta, { finishReason: finish }, req.include_usage ? usage : undefined));
    return { meta, finish, usage };
  }
}
