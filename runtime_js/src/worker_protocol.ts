// Messages between the page-side proxy (worker_proxy.ts) and the engine worker (worker.ts).
import type { SerializedError } from "./errors.js";
import type { LoadProgress } from "./progress.js";
import type { Completion, CompletionChunk, CompletionRequest } from "./completions.js";
import type { ChatCompletion, ChatCompletionChunk, ChatCompletionRequest } from "./protocol.js";
import type { Backend } from "./backend.js";
import type { ChatConfig } from "./config.js";
import type { CreateEmbeddingResponse, EmbeddingCreateParams } from "./embeddings.js";

export type ToWorker =
  | { type: "load"; modelUrl: string; options: Record<string, unknown> }
  | { type: "create"; id: number; api: "chat"; request: ChatCompletionRequest }
  | { type: "create"; id: number; api: "completions"; request: CompletionRequest }
  | { type: "create"; id: number; api: "embeddings"; request: EmbeddingCreateParams }
  | { type: "abort"; id: number }
  | { type: "interrupt" }
  | { type: "reset"; id: number }
  | { type: "unload"; id: number };

export type FromWorker =
  | { type: "progress"; event: LoadProgress }
  | { type: "loaded"; config: ChatConfig; backend: Backend; threads: number; fallbackReason: string | null }
  | { type: "chunk"; id: number; chunk: ChatCompletionChunk | CompletionChunk }
  | { type: "result"; id: number; result: ChatCompletion | Completion | CreateEmbeddingResponse | null }
  | { type: "error"; id: number | null; error: SerializedError };
