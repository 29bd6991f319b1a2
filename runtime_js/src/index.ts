// Public entry point of the webbuild browser runtime (dist/webbuild.js): createEngine and the
// building blocks it is made of.
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

export { LocalEngine, WorkerEngine };
export type { ChatEngine, CreateRequest, EngineOptions } from "./engine.js";

export * from "./backend.js";
export * from "./errors.js";
export * from "./config.js";
export * from "./protocol.js";
export * from "./sampling.js";
export * from "./stop.js";
export * from "./tokenizer.js";
export * from "./sha256.js";
export * from "./progress.js";
export * from "./storage.js";
export * from "./artifacts.js";
