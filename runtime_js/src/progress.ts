// Structured load-progress events.
//
//   fetch   bytes of one file downloaded so far (loaded / total bytes of `file`)
//   verify  a shard's sha256 checked (loaded / total: shards verified / shard count)
//   cache   a shard written to (or read from: fromCache = true) the store (loaded / total: shards)
//   compile the engine compiling shaders / creating pipelines (loaded / total: engine-defined)
//   ready   everything loaded; `backend` says where the model runs ("webgpu" or "wasm")
//
// Every event also carries the whole model's byte progress (bytesLoaded / bytesTotal over all
// shards, counting shards read from the store) so a UI can show one bar.

export type ProgressStage = "fetch" | "verify" | "cache" | "compile" | "ready";

export interface LoadProgress {
  stage: ProgressStage;
  file: string;
  loaded: number;
  total: number;
  bytesLoaded: number;
  bytesTotal: number;
  /** cache stage: true when the shard came from the store rather than the network. */
  fromCache?: boolean;
  /** compile and ready stages: the backend running the model ("webgpu" or "wasm"). */
  backend?: string;
  /** ready stage, backend "wasm" chosen automatically: why WebGPU was not used, as a code (the WebGPU
   * error's code, or "software-adapter" for an adapter that runs on the CPU, such as SwiftShader). */
  fallbackReason?: string;
  /** ready stage with a fallbackReason: the reason in words. */
  fallbackDetail?: string;
  /** "ready" on the wasm backend: the CPU threads the model runs on. */
  threads?: number;
}

export type ProgressCallback = (event: LoadProgress) => void;

/** Tracks whole-model byte progress and forwards events; a throwing callback never breaks loading. */
export class ProgressReporter {
  bytesLoaded = 0;
  bytesTotal: number;
  private readonly callback: ProgressCallback | undefined;

  constructor(callback: ProgressCallback | undefined, bytesTotal = 0) {
    this.callback = callback;
    this.bytesTotal = bytesTotal;
  }

  emit(stage: ProgressStage, file: string, loaded: number, total: number, extra: { fromCache?: boolean; backend?: string; fallbackReason?: string; fallbackDetail?: string; threads?: number } = {}): void {
    if (!this.callback) return;
    try {
      this.callback({ stage, file, loaded, total, bytesLoaded: this.bytesLoaded, bytesTotal: this.bytesTotal, ...extra });
    } catch (err) {
      console.warn("webbuild: progress callback threw", err);
    }
  }
}
