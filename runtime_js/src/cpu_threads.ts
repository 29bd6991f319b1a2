// Threads for the WebAssembly CPU module. model-cpu-threads.wasm is the CPU module linked with
// shared, imported memory; its parallel loops (matmul row tiles) run on a pool of Web Workers,
// each holding a second instance of the same compiled module on the same memory (see
// webbuild/compile/runtime_support/src/webbuild_threads.cc for the C side of the hand-off).
// Threads need SharedArrayBuffer, which browsers grant to cross-origin isolated pages only
// (COOP/COEP headers; `webbuild serve` sends them); elsewhere the single-threaded module runs.
import * as tvmjs from "@mlc-ai/web-runtime";
import { ModelLoadError } from "./errors.js";

/** Pages (64 KiB) of the threaded module's memory, from chat-config.json `wasm_threads`. */
export interface MemoryPages {
  initial: number;
  maximum: number;
}

/** What a worker receives: the module, the memory and where its stack, TLS and arena are. */
interface ThreadStart {
  module: WebAssembly.Module;
  memory: WebAssembly.Memory;
  id: number;
  stack: number;
  stackBytes: number;
  tls: number;
  arena: number;
  arenaBytes: number;
}

/** What a worker answers: it is ready, or it failed to start. */
interface ThreadReply {
  ready?: number;
  failed?: number;
  error?: string;
}

/** The threaded module's exports this file calls (webbuild_threads.cc and the linker's TLS helpers). */
interface ThreadExports {
  __wasm_init_tls?: (tls: number) => void;
  __tls_size: WebAssembly.Global;
  webbuild_thread_alloc(bytes: number): number;
  webbuild_threads_enable(workers: number): number;
  webbuild_threads_entered(): number;
  webbuild_threads_set_spins(spins: number): void;
}

/** A started worker, whatever the platform's worker API: browsers' Worker or node's worker_threads. */
export interface ThreadHandle {
  post(message: ThreadStart): void;
  onMessage(listener: (data: unknown) => void): void;
  terminate(): void;
}

/** Starts a worker running `source` (a classic script). */
export type SpawnThread = (source: string) => ThreadHandle;

const STACK_BYTES = 1 << 20;
const ARENA_BYTES = 1 << 20;
const START_TIMEOUT_MS = 20000;

/** The worker script: instantiate the module on the shared memory, set up this thread's stack
 * and TLS block, then enter the C loop (never returns; the pool terminates the worker). */
export const THREAD_SOURCE = `"use strict";
const port = typeof self !== "undefined" && typeof self.postMessage === "function" ? self : require("worker_threads").parentPort;
const listen = (f) => (typeof port.on === "function" ? port.on("message", f) : port.addEventListener("message", (e) => f(e.data)));
listen((m) => {
  const imports = {};
  for (const imp of WebAssembly.Module.imports(m.module)) {
    const ns = (imports[imp.module] = imports[imp.module] || {});
    if (imp.kind === "memory") ns[imp.name] = m.memory;
    else if (imp.kind === "function") ns[imp.name] = () => { throw new Error("webbuild CPU thread " + m.id + ": " + imp.module + "." + imp.name + " is not available on worker threads"); };
  }
  let inst;
  try {
    inst = new WebAssembly.Instance(m.module, imports);
    inst.exports.stackRestore(m.stack + m.stackBytes);
    if (m.tls) inst.exports.__wasm_init_tls(m.tls);
  } catch (err) {
    port.postMessage({ failed: m.id, error: String(err) });
    return;
  }
  port.postMessage({ ready: m.id });
  inst.exports.webbuild_thread_main(m.id, m.stack, m.stackBytes, m.arena, m.arenaBytes);
});
`;

/** The browser's way to start a worker: a classic Worker from a Blob URL (same origin). */
export function browserSpawn(source: string): ThreadHandle {
  const url = URL.createObjectURL(new Blob([source], { type: "text/javascript" }));
  const worker = new Worker(url);
  URL.revokeObjectURL(url);
  return {
    post: (m) => worker.postMessage(m),
    onMessage: (f) => worker.addEventListener("message", (e: MessageEvent) => f(e.data)),
    terminate: () => worker.terminate(),
  };
}

/** The running pool: `count` threads in all (the calling one included). */
export interface CpuThreads {
  readonly count: number;
  dispose(): void;
}

/** Instantiate a threaded CPU module with tvmjs and start `threads - 1` workers for it. */
export async function instantiateThreaded(bytes: ArrayBuffer, pages: MemoryPages, threads: number, url: string,
                                          spins?: number, spawn: SpawnThread = browserSpawn
): Promise<{ tvm: tvmjs.Instance; threads: CpuThreads }> {
  const module = await WebAssembly.compile(bytes);
  const memory = new WebAssembly.Memory({ initial: pages.initial, maximum: pages.maximum, shared: true });
  const wasi = tvmjs.createPolyfillWASI();
  const env = wasi.imports.env as Record<string, unknown> | undefined;
  wasi.imports.env = { ...(env ?? {}), memory };
  const startLibrary = wasi.start;
  wasi.start = (inst: WebAssembly.Instance) => {
    const e = inst.exports as unknown as ThreadExports;
    // thread-locals of the main instance, before any constructor runs
    if (e.__wasm_init_tls) e.__wasm_init_tls(e.webbuild_thread_alloc(Number(e.__tls_size.value)));
    startLibrary({ exports: { ...inst.exports, memory } });
  };
  const tvm = new tvmjs.Instance(module, wasi);
  const exports = tvm.exports as unknown as ThreadExports;
  const handles: ThreadHandle[] = [];
  const dispose = () => {
    exports.webbuild_threads_enable(0);
    for (const h of handles) h.terminate();
    handles.length = 0;
  };
  try {
    const ready = [];
    for (let id = 1; id < threads; ++id) {
      const stack = exports.webbuild_thread_alloc(STACK_BYTES);
      const arena = exports.webbuild_thread_alloc(ARENA_BYTES);
      const tls = exports.__wasm_init_tls ? exports.webbuild_thread_alloc(Number(exports.__tls_size.value)) : 0;
      if (!stack || !arena) throw new ModelLoadError(url, "out of memory for the CPU threads' stacks", "use fewer threads");
      const handle = spawn(THREAD_SOURCE);
      handles.push(handle);
      ready.push(new Promise<void>((resolve, reject) => {
        handle.onMessage((data) => {
          const m = data as ThreadReply;
          if (m.ready === id) resolve();
          else if (m.failed === id) reject(new Error(m.error));
        });
      }));
      handle.post({ module, memory, id, stack, stackBytes: STACK_BYTES, tls, arena, arenaBytes: ARENA_BYTES });
    }
    const deadline = Date.now() + START_TIMEOUT_MS;
    const late = () => new Error(`CPU threads did not start within ${START_TIMEOUT_MS / 1000} s`);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => { timer = setTimeout(() => reject(late()), START_TIMEOUT_MS); });
    try {
      await Promise.race([Promise.all(ready), timeout]);
    } finally {
      clearTimeout(timer);
    }
    // each worker posts "ready" right before entering its loop: wait until all are in it
    while (exports.webbuild_threads_entered() < threads - 1) {
      if (Date.now() > deadline) throw late();
      await new Promise((r) => setTimeout(r, 1));
    }
    if (spins !== undefined) exports.webbuild_threads_set_spins(spins);
    const count = exports.webbuild_threads_enable(threads - 1) + 1;
    return { tvm, threads: { count, dispose } };
  } catch (err) {
    dispose();
    tvm.dispose();
    if (err instanceof ModelLoadError) throw err;
    throw new ModelLoadError(url, `starting the CPU threads failed: ${(err as Error).message}`,
      "create the engine with threads: 1 to run on one thread", { cause: err });
  }
}
