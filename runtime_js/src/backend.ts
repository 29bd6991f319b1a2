// Which compiled module runs a model: WebGPU (model.wasm) when an adapter with the model's features
// and limits exists, otherwise the WebAssembly CPU module (model-cpu.wasm) the build writes beside it.
import type { ChatConfig } from "./config.js";
import { ModelLoadError, NoWebGPUError, OutOfMemoryError, ShaderF16Error, WebbuildError } from "./errors.js";
import { requestModelAdapter, requestModelDevice, softwareAdapter } from "./gpu.js";
import { defaultThreadCount, threadsAvailable } from "./thread_support.js";

export type Backend = "webgpu" | "wasm";
export type BackendChoice = Backend | "auto";

export interface ChosenBackend {
  kind: Backend;
  /** The model library file of that backend (from chat-config.json `model_libs`). */
  moduleFile: string;
  /** The WebGPU device (webgpu only). */
  device: GPUDevice | null;
  /** Why "auto" fell back to the CPU, if it did: the WebGPU error's code, or "software-adapter". */
  fallbackReason?: string | undefined;
  /** The fallback in words (e.g. which software adapter was found). */
  fallbackDetail?: string | undefined;
  /** CPU threads to run the wasm module on (1: the single-threaded module; webgpu: 1). */
  threads: number;
}

/** WebGPU errors after which the CPU module can still run the model. */
function canFallBack(err: unknown): boolean {
  return err instanceof NoWebGPUError || err instanceof ShaderF16Error || err instanceof OutOfMemoryError;
}

/** The CPU module: the threaded one when more than one thread is asked for (default: every core)
 * and the page can share memory with workers (cross-origin isolated), else the single-threaded one. */
function cpuBackend(config: ChatConfig, url: string, threads: number | undefined,
                    reason?: string, detail?: string): ChosenBackend {
  const file = config.model_libs.wasm;
  if (!file) {
    throw new ModelLoadError(url, "the folder has no WebAssembly CPU module (model_libs.wasm)",
      "rebuild it with `webbuild build` (without --no-cpu-fallback) to run it where WebGPU is missing");
  }
  const wanted = threads ?? defaultThreadCount();
  const threaded = config.model_libs["wasm-threads"];
  if (wanted > 1 && threaded && threadsAvailable()) {
    return { kind: "wasm", moduleFile: threaded, device: null, fallbackReason: reason, fallbackDetail: detail, threads: wanted };
  }
  return { kind: "wasm", moduleFile: file, device: null, fallbackReason: reason, fallbackDetail: detail, threads: 1 };
}

/** Pick the backend for `choice`: "webgpu" and "wasm" force one; "auto" prefers WebGPU on a hardware
 * GPU and runs the CPU module where WebGPU is missing, cannot run the model, or is a software
 * implementation (SwiftShader, llvmpipe, ...: the WASM module is many times faster on the same cores).
 * `threads`: CPU threads for the wasm backend (default: navigator.hardwareConcurrency, at most 8). */
export async function chooseBackend(config: ChatConfig, choice: BackendChoice, url: string,
                                    threads?: number): Promise<ChosenBackend> {
  if (choice !== "auto" && choice !== "webgpu" && choice !== "wasm") {
    throw new ModelLoadError(url, `unknown backend ${JSON.stringify(choice)}`, 'use backend: "auto", "webgpu" or "wasm"');
  }
  if (threads !== undefined && (!Number.isInteger(threads) || threads < 1)) {
    throw new ModelLoadError(url, `threads must be a positive integer, got ${JSON.stringify(threads)}`,
      "pass threads: 1 for one thread, or leave it out to use every core");
  }
  if (choice === "wasm") return cpuBackend(config, url, threads);
  const gpuFile = config.model_libs.webgpu;
  if (!gpuFile) {
    if (choice === "webgpu") throw new ModelLoadError(url, "the folder has no WebGPU module", "rebuild it with --target webgpu");
    return cpuBackend(config, url, threads);
  }
  try {
    const adapter = await requestModelAdapter();
    const software = softwareAdapter(adapter);
    if (choice === "auto" && software && config.model_libs.wasm) {
      return cpuBackend(config, url, threads, "software-adapter",
        `the WebGPU adapter is a software implementation (${software}) running on the CPU; ` +
        'the WebAssembly module is faster there (backend: "webgpu" forces it)');
    }
    const { device } = await requestModelDevice(config, adapter);
    return { kind: "webgpu", moduleFile: gpuFile, device, threads: 1 };
  } catch (err) {
    if (choice === "auto" && canFallBack(err) && config.model_libs.wasm) {
      return cpuBackend(config, url, threads, (err as WebbuildError).code, (err as WebbuildError).message);
    }
    if (choice === "webgpu" && err instanceof NoWebGPUError) {
      throw new NoWebGPUError("WebGPU is not available in this browser, and the engine was created with backend: \"webgpu\"",
        { cause: err, fix: 'enable WebGPU (Chrome/Edge 113+, Safari 26+, Firefox 141+; https:// or localhost), or create ' +
          'the engine with backend: "auto" or "wasm" to run the model on the CPU' });
    }
    throw err;
  }
}
