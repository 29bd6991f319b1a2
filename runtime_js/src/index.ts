// Public entry point of the webbuild browser runtime (dist/webbuild.js, the npm package "webbuild").
// This is the whole public API: createEngine, the engine's and the OpenAI-style request/response
// types, the typed errors with their codes, the load-progress types, and a model's cache entries
// (getModelCacheInfo, deleteCachedModel). Everything else is
// internal; tests/js/unit/exports.test.mjs fails when this list changes by accident.
import { LocalEngine, type ChatEngine, type EngineOptions } from "./engine.js";
import { WorkerEngine } from "./worker_proxy.js";

/**
 * Load a webbuild model folder (its URL) and return an engine with an OpenAI-style
 * `chat.completions.create`. With `options.worker` the model runs in a dedicated Web Worker
 * (dist/worker.js) and the page stays responsive.
 */
export async function createEngine(modelUrl: string, options: EngineOptions = {}): Promise<ChatEngine> {
  return options.worker ? WorkerEngine.load(modelUrl, options) : LocalEngine.load(modelUrl, options);
}

export type { ChatEngine, CompletionCreateRequest, CreateRequest, EmbeddingCreateRequest, EngineOptions } from "./engine.js";
export type { CreateEmbeddingResponse, Embedding, EmbeddingCreateParams } from "./embeddings.js";
export type { Completion, CompletionChoice, CompletionChunk, CompletionLogprobs, CompletionRequest } from "./completions.js";
export type { FetchFn } from "./artifacts.js";
export type { Backend, BackendChoice } from "./backend.js";
export type { ChatConfig, EmbeddingConfig, SamplingDefaults, StateConfig } from "./config.js";
export type { CacheKind, ModelCacheInfo, ModelCacheOptions, ShardStore } from "./storage.js";
export { deleteCachedModel, getModelCacheInfo } from "./storage.js";

export type {
  ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ChatMessage, ChoiceLogprobs, CompletionUsage,
  FinishReason, Role, TextContentPart, TokenLogprob, TopLogprob, UsageExtra,
} from "./protocol.js";

export {
  AbortedError, ContextWindowExceededError, IntegrityError, InvalidRequestError, ModelKindError, ModelLoadError, NoWebGPUError,
  OutOfMemoryError, ShaderF16Error, StorageQuotaError, ToolsUnsupportedError, WebbuildError,
} from "./errors.js";
export type { ErrorCode, SerializedError } from "./errors.js";

export type { FunctionTool, ToolCall, ToolCallDelta, ToolChoice } from "./tools.js";

export type { LoadProgress, ProgressCallback, ProgressStage } from "./progress.js";
