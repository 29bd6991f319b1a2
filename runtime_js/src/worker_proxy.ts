// The page side of worker mode: the ChatEngine API, forwarded to dist/worker.js.
import type { Backend } from "./backend.js";
import type { ChatConfig } from "./config.js";
import type { Completion, CompletionChunk, CompletionRequest } from "./completions.js";
import type { CreateEmbeddingResponse, EmbeddingCreateParams } from "./embeddings.js";
import type { ChatEngine, CompletionCreateRequest, CreateRequest, EmbeddingCreateRequest, EngineOptions } from "./engine.js";
import { AbortedError, deserializeError, throwIfAborted } from "./errors.js";
import type { ChatCompletion, ChatCompletionChunk, ChatCompletionRequest } from "./protocol.js";
import { pushStream } from "./push_stream.js";
import type { FromWorker, ToWorker } from "./worker_protocol.js";

type Chunk = ChatCompletionChunk | CompletionChunk;
type Result = ChatCompletion | Completion | CreateEmbeddingResponse | null;
type Api = { api: "chat"; request: ChatCompletionRequest } | { api: "completions"; request: CompletionRequest }
  | { api: "embeddings"; request: EmbeddingCreateParams };

interface Pending {
  onChunk?: ((chunk: Chunk) => void) | undefined;
  resolve: (result: Result) => void;
  reject: (err: unknown) => void;
}

export class WorkerEngine implements ChatEngine {
  readonly chat = { completions: { create: (request: CreateRequest) => this.create(request) } };
  readonly completions = { create: (request: CompletionCreateRequest) => this.createCompletion(request) };
  readonly embeddings = { create: (request: EmbeddingCreateRequest) => this.createEmbeddings(request) };
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();

  private constructor(private readonly worker: Worker, readonly config: ChatConfig, readonly backend: Backend,
                      readonly threads: number, readonly fallbackReason: string | null) {}

  /** Load the model in a new worker. `options.signal` ends the load: the worker is terminated (its
   * downloads with it) and the promise rejects with AbortedError. */
  static async load(modelUrl: string, options: EngineOptions = {}): Promise<WorkerEngine> {
    const { onProgress, signal, fetch: _fetch, store: _store, worker: _w, ...plain } = options;
    throwIfAborted(signal);
    const worker = new Worker(new URL("./worker.js", import.meta.url), { type: "module" });
    let onAbort: (() => void) | undefined;
    type Loaded = { config: ChatConfig; backend: Backend; threads: number; fallbackReason: string | null };
    const { config, backend, threads, fallbackReason } = await new Promise<Loaded>((resolve, reject) => {
      onAbort = () => reject(new AbortedError("the model load was aborted", { cause: signal?.reason }));
      signal?.addEventListener("abort", onAbort, { once: true });
      worker.onmessage = (event: MessageEvent<FromWorker>) => {
        const m = event.data;
        if (m.type === "progress") onProgress?.(m.event);
        else if (m.type === "loaded") resolve(m);
        else if (m.type === "error") reject(deserializeError(m.error));
      };
      worker.onerror = (event) => reject(new Error(`the engine worker failed to start: ${event.message}`));
      worker.postMessage({ type: "load", modelUrl: new URL(modelUrl, location.href).href, options: plain } satisfies ToWorker);
    }).catch((err) => { worker.terminate(); throw err; })
      .finally(() => { if (onAbort) signal?.removeEventListener("abort", onAbort); });
    const engine = new WorkerEngine(worker, config, backend, threads, fallbackReason);
    worker.onmessage = (event: MessageEvent<FromWorker>) => engine.receive(event.data);
    return engine;
  }

  private receive(m: FromWorker): void {
    if (m.type === "chunk") this.pending.get(m.id)?.onChunk?.(m.chunk);
    else if (m.type === "result") { this.pending.get(m.id)?.resolve(m.result); this.pending.delete(m.id); }
    else if (m.type === "error" && m.id !== null) {
      this.pending.get(m.id)?.reject(deserializeError(m.error));
      this.pending.delete(m.id);
    }
  }

  private call(message: ToWorker & { id: number }, onChunk?: (c: Chunk) => void): Promise<Result> {
    return new Promise((resolve, reject) => {
      this.pending.set(message.id, { resolve, reject, onChunk });
      this.worker.postMessage(message);
    });
  }

  private async create(request: CreateRequest): Promise<ChatCompletion | AsyncIterable<ChatCompletionChunk>> {
    const { signal, ...body } = request;
    const id = this.nextId++;
    if (!body.stream) return (await this.forward(id, { api: "chat", request: body }, signal)) as ChatCompletion;
    return pushStream((push) => this.forward(id, { api: "chat", request: body }, signal,
                                             push as (c: Chunk) => void));
  }

  private async createCompletion(request: CompletionCreateRequest): Promise<Completion | AsyncIterable<CompletionChunk>> {
    const { signal, ...body } = request;
    const id = this.nextId++;
    const api: Api = { api: "completions", request: body };
    if (!body.stream) return (await this.forward(id, api, signal)) as Completion;
    return pushStream((push) => this.forward(id, api, signal, push as (c: Chunk) => void));
  }

  private async createEmbeddings(request: EmbeddingCreateRequest): Promise<CreateEmbeddingResponse> {
    const { signal, ...body } = request;
    return (await this.forward(this.nextId++, { api: "embeddings", request: body }, signal)) as CreateEmbeddingResponse;
  }

  /** Send request `id` to the worker; the signal's abort follows it as an "abort" message, which the
   * worker handles between two model calls (a signal aborted already is sent right after). */
  private async forward(id: number, api: Api, signal: AbortSignal | undefined,
                        onChunk?: (c: Chunk) => void): Promise<Result> {
    const abort = () => this.worker.postMessage({ type: "abort", id } satisfies ToWorker);
    const done = this.call({ type: "create", id, ...api }, onChunk);
    if (signal?.aborted) abort();
    else signal?.addEventListener("abort", abort, { once: true });
    try {
      return await done;
    } finally {
      signal?.removeEventListener("abort", abort);
    }
  }

  interrupt(): void {
    this.worker.postMessage({ type: "interrupt" } satisfies ToWorker);
  }

  async resetChat(): Promise<void> {
    await this.call({ type: "reset", id: this.nextId++ });
  }

  async unload(): Promise<void> {
    await this.call({ type: "unload", id: this.nextId++ }).catch(() => {});
    this.worker.terminate();
  }
}
