// Which compiled module runs a model: WebGPU (model.wasm) when an adapter with the model's features
// and limits exists, otherwise the WebAssembly CPU module (model-cpu.wasm) the build writes beside it.
import type { ChatConfig } from "./config.js";
import { ModelLoadError, NoWebGPUError, OutOfMemoryError, ShaderF16Error, WebbuildError } from "./errors.js";
import { requestModelDevice } from "./gpu.js";

/* eslint-disable @typescript-eslint/no-explicit-any */
export type Backend = "webgpu" | "wasm";
export type BackendChoice = Backend | "auto";

export interface ChosenBackend {
  kind: Backend;
  /** The model library file of that backend (from chat-config.json `model_libs`). */
  moduleFile: string;
  /** The WebGPU device (webgpu only). */
  device: any | null;
  /** Why "auto" fell back to the CPU (the WebGPU error's code), if it did. */
  fallbackReason?: string;
}

/** WebGPU errors after which the CPU module can still run the model. */
function canFallBack(err: unknown): boolean {
  return err instanceof NoWebGPUError || err instanceof ShaderF16Error || err instanceof OutOfMemoryError;
}

function cpuBackend(config: ChatConfig, url: string, reason?: string): ChosenBackend {
  const file = config.model_libs.wasm;
  if (!file) {
    throw new ModelLoadError(url, "the folder has no WebAssembly CPU module (model_libs.wasm)",
      "rebuild it with `webbuild build` (without --no-cpu-fallback) to run it where WebGPU is missing");
  }
  return { kind: "wasm", moduleFile: file, device: null, fallbackReason: reason };
}

/** Pick the backend for `choice`: "webgpu" and "wasm" force one, "auto" prefers WebGPU. */
export async function chooseBackend(config: ChatConfig, choice: BackendChoice, url: string): Promise<ChosenBackend> {
  if (choice !== "auto" && choice !== "webgpu" && choice !== "wasm") {
    throw new ModelLoadError(url, `unknown backend ${JSON.stringify(choice)}`, 'use backend: "auto", "webgpu" or "wasm"');
  }
  if (choice === "wasm") return cpuBackend(config, url);
  const gpuFile = config.model_libs.webgpu;
  if (!gpuFile) {
    if (choice === "webgpu") throw new ModelLoadError(url, "the folder has no WebGPU module", "rebuild it with --target webgpu");
    return cpuBackend(config, url);
  }
  try {
    const { device } = await requestModelDevice(config);
    return { kind: "webgpu", moduleFile: gpuFile, device };
  } catch (err) {
    if (choice === "auto" && canFallBack(err) && config.model_libs.wasm) {
      return cpuBackend(config, url, (err as WebbuildError).code);
    }
    if (choice === "webgpu" && err instanceof NoWebGPUError) {
      throw new NoWebGPUError("WebGPU is not available in this browser, and the engine was created with backend: \"webgpu\"",
        { cause: err, fix: 'enable WebGPU (Chrome/Edge 113+, Safari 26+, Firefox 141+; https:// or localhost), or create ' +
          'the engine with backend: "auto" or "wasm" to run the model on the CPU' });
    }
    throw err;
  }
}
