// The thin layer over TVM's JS runtime (tvmjs): it instantiates a model's compiled module (the
// single- or multi-threaded wasm), picks the TVM device (WebGPU when given a GPUDevice, else the
// CPU), creates the VM, reads and checks `_metadata`, uploads the parameters, creates the sequence
// state (paged KV cache or RNN state) and runs one forward call with the state's begin/end around
// it. Every TVM scope is opened and closed here; tvmjs objects never leave this file and
// encoder_runtime.ts (the embedding models' counterpart, which opens modules and uploads parameters
// with `openModule` and `uploadParams`; the layers above see `Logits`, an opaque handle).
import * as tvmjs from "@mlc-ai/web-runtime";

import type { TensorBytes } from "./artifacts.js";
import { instantiateThreaded, type CpuThreads, type MemoryPages } from "./cpu_threads.js";
import { ModelLoadError } from "./errors.js";
import { checkParamRecord, parseModelMetadata, type ModelMetadata } from "./metadata.js";

/** Last-position logits of a forward call, on the device: read them once (that disposes them). */
export interface Logits {
  readonly shape: readonly number[];
  dispose(): void;
}

export interface RuntimeOptions {
  /** The module file's URL (named by errors). */
  url: string;
  /** The WebGPU device to run on; null runs the module on the CPU. */
  gpu: GPUDevice | null;
  /** CPU threads (the calling one included); more than 1 needs the threaded module and `memoryPages`. */
  threads: number;
  /** The threaded module's shared memory (chat-config.json `wasm_threads.memory_pages`). */
  memoryPages?: MemoryPages | undefined;
  /** Compile every WebGPU pipeline now instead of on first use. */
  prefetchShaders?: boolean | undefined;
  /** How many times an idle CPU worker checks for work before it sleeps. */
  threadSpins?: number | undefined;
}

/** The sequence state a model keeps between calls (chat-config.json `state`). */
export interface StateSpec {
  /** chat-config.json `state.kv_state` (the build writes the same into `_metadata`, whose `kv_state`
   * picks the state created: the module has that state's create function). */
  kind: "paged_kv_cache" | "rnn_state" | "none";
  /** Tokens the KV cache holds. */
  contextWindow: number;
  /** The most tokens one prefill call takes. */
  prefillChunk: number;
}

/** The VM's and the KV state's functions the engine calls. */
interface Functions {
  embed: tvmjs.PackedFunc;
  prefill: tvmjs.PackedFunc;
  decode: tvmjs.PackedFunc;
  argmax: tvmjs.PackedFunc | null;
  applyTokenBitmask: tvmjs.PackedFunc | null;
  addSequence: tvmjs.PackedFunc;
  removeSequence: tvmjs.PackedFunc;
  popN: tvmjs.PackedFunc;
  begin: tvmjs.PackedFunc;
  end: tvmjs.PackedFunc;
}

const SEQUENCE = 0;

/** An instantiated model module: its TVM instance, device, VM (outside every scope) and checked
 * `_metadata`, and the CPU threads' workers when it is the threaded module. */
export interface OpenModule {
  tvm: tvmjs.Instance;
  device: tvmjs.DLDevice;
  vm: tvmjs.VirtualMachine;
  metadata: ModelMetadata;
  threads: CpuThreads | null;
}

/** Instantiate the compiled module `wasm` (threaded when options.threads > 1), pick its device,
 * create its VM and read its `_metadata`. */
export async function openModule(wasm: ArrayBuffer, options: RuntimeOptions): Promise<OpenModule> {
  let tvm: tvmjs.Instance;
  let threads: CpuThreads | null = null;
  if (options.threads > 1) {
    if (!options.memoryPages) throw new ModelLoadError(options.url, "the threaded module needs wasm_threads.memory_pages", "rebuild the model folder");
    ({ tvm, threads } = await instantiateThreaded(wasm, options.memoryPages, options.threads, options.url, options.threadSpins));
  } else {
    tvm = await tvmjs.instantiate(wasm, tvmjs.createPolyfillWASI(), () => {});
  }
  try {
    if (options.gpu) tvm.initWebGPU(options.gpu);
    const device = options.gpu ? tvm.webgpu() : tvm.cpu();
    tvm.beginScope();
    try {
      const vm = tvm.detachFromCurrentScope(tvm.createVirtualMachine(device));
      if (options.prefetchShaders && options.gpu) await tvm.asyncLoadWebGPUPipelines(vm.getInternalModule());
      const metadata = parseModelMetadata(String(vm.getFunction("_metadata")()), options.url);
      return { tvm, device, vm, metadata, threads };
    } finally {
      tvm.endScope();
    }
  } catch (err) {
    threads?.dispose();
    throw err;
  }
}

/** Upload the parameters, which must come in `_metadata.params` order (`url`: the tensor list, for
 * errors); returns them as the one array the module's functions take. */
export async function uploadParams(module: OpenModule, tensors: AsyncIterable<TensorBytes>, url: string,
                                   moduleFile: string): Promise<tvmjs.TVMArray> {
  const { tvm, device } = module;
  const expected = module.metadata.params;
  const uploaded: tvmjs.Tensor[] = [];
  tvm.beginScope();
  try {
    for await (const { record, bytes } of tensors) {
      checkParamRecord(record, bytes.byteLength, expected[uploaded.length], uploaded.length, url, moduleFile);
      const t = tvm.detachFromCurrentScope(tvm.empty(record.shape, record.dtype, device));
      t.copyFromRawBytes(bytes);
      uploaded.push(t);
    }
    if (uploaded.length !== expected.length) {
      throw new ModelLoadError(url, `has ${uploaded.length} of ${expected.length} parameters`, "rebuild the model folder");
    }
    return tvm.detachFromCurrentScope(tvm.makeTVMArray(uploaded));
  } finally {
    tvm.endScope();
  }
}

/** A VM function the module may lack (folders built before it existed), else null. */
function optionalFunction(vm: tvmjs.VirtualMachine, name: string): tvmjs.PackedFunc | null {
  try {
    // tvmjs answers a name the module lacks with undefined (or an error), not null
    return (vm.getFunction(name) as tvmjs.PackedFunc | undefined) ?? null;
  } catch {
    return null;
  }
}

export class TvmRuntime {
  private state: tvmjs.TVMObject | null = null;
  private params: tvmjs.TVMArray | null = null;
  private tokenInput: tvmjs.Tensor | null = null;
  private logitsHost: tvmjs.Tensor | null = null;
  private argmaxHost: tvmjs.Tensor | null = null;
  private bitmaskInput: tvmjs.Tensor | null = null;
  private logitsValues: Float32Array | null = null;

  private constructor(private readonly tvm: tvmjs.Instance, private readonly gpu: GPUDevice | null,
                      private readonly device: tvmjs.DLDevice, private readonly vm: tvmjs.VirtualMachine,
                      private readonly fns: Functions, readonly metadata: ModelMetadata,
                      private readonly cpuThreads: CpuThreads | null) {}

  /** CPU threads the module runs on (1 unless it is the threaded CPU module). */
  get threads(): number {
    return this.cpuThreads?.count ?? 1;
  }

  /** True when the module computes the argmax of the logits itself (greedy decoding reads 4 bytes). */
  get hasArgmax(): boolean {
    return this.fns.argmax !== null;
  }

  /** True when the module applies a grammar's token bitmask to the logits itself (`apply_token_bitmask`;
   * folders built before it lack it). */
  get hasTokenBitmask(): boolean {
    return this.fns.applyTokenBitmask !== null;
  }

  /** Instantiate the compiled module `wasm`, create its VM and read its `_metadata`. */
  static async create(wasm: ArrayBuffer, options: RuntimeOptions): Promise<TvmRuntime> {
    const { tvm, device, vm, metadata, threads } = await openModule(wasm, options);
    try {
      tvm.beginScope();
      try {
        const keep = <T extends tvmjs.Disposable>(x: T): T => tvm.detachFromCurrentScope(x);
        const argmax = optionalFunction(vm, "argmax");
        const applyTokenBitmask = optionalFunction(vm, "apply_token_bitmask");
        const fns: Functions = {
          embed: keep(vm.getFunction("embed")),
          prefill: keep(vm.getFunction("prefill")),
          decode: keep(vm.getFunction("decode")),
          argmax: argmax && keep(argmax),
          applyTokenBitmask: applyTokenBitmask && keep(applyTokenBitmask),
          addSequence: keep(tvm.getGlobalFunc("vm.builtin.kv_state_add_sequence")),
          removeSequence: keep(tvm.getGlobalFunc("vm.builtin.kv_state_remove_sequence")),
          popN: keep(tvm.getGlobalFunc("vm.builtin.kv_state_popn")),
          begin: keep(tvm.getGlobalFunc("vm.builtin.kv_state_begin_forward")),
          end: keep(tvm.getGlobalFunc("vm.builtin.kv_state_end_forward")),
        };
        return new TvmRuntime(tvm, options.gpu, device, vm, fns, metadata, threads);
      } finally {
        tvm.endScope();
      }
    } catch (err) {
      vm.dispose();
      threads?.dispose();
      throw err;
    }
  }

  /** Upload the parameters, which must come in `_metadata.params` order (`url`: the tensor list, for errors). */
  async loadParams(tensors: AsyncIterable<TensorBytes>, url: string, moduleFile: string): Promise<void> {
    const { tvm, device, vm, metadata, cpuThreads } = this;
    this.params = await uploadParams({ tvm, device, vm, metadata, threads: cpuThreads }, tensors, url, moduleFile);
  }

  /** Create the sequence state and its one sequence: the one `_metadata.kv_state` names (the module has
   * that state's create function), with the page size or RNN history from `_metadata` too. */
  createState(spec: StateSpec): void {
    const { tvm, vm, metadata } = this;
    const shape = (n: number) => tvm.makeShapeTuple([n]);
    tvm.beginScope();
    try {
      const state: unknown = metadata.kv_state === "rnn_state"
        ? vm.getFunction("create_rnn_state")(shape(1), shape(metadata.rnn_history))
        : vm.getFunction("create_paged_kv_cache")(shape(1), shape(spec.contextWindow), shape(spec.prefillChunk),
                                                  shape(metadata.kv_page_size), shape(0));
      this.state = tvm.detachFromCurrentScope(state as tvmjs.TVMObject);
      this.fns.addSequence(this.state, new tvmjs.Scalar(SEQUENCE, "int64"));
    } finally {
      tvm.endScope();
    }
  }

  /** Wait until the device has finished the work queued so far. */
  async sync(): Promise<void> {
    if (this.gpu) await this.device.sync();
  }

  /** Empty the sequence: the next forward starts at position 0. */
  resetSequence(): void {
    this.fns.removeSequence(this.state, new tvmjs.Scalar(SEQUENCE, "int64"));
    this.fns.addSequence(this.state, new tvmjs.Scalar(SEQUENCE, "int64"));
  }

  /** Drop the last `count` tokens of the sequence (paged KV cache only). */
  popTokens(count: number): void {
    this.fns.popN(this.state, new tvmjs.Scalar(SEQUENCE, "int64"), new tvmjs.Scalar(count, "int64"));
  }

  /** One call: append `tokens` to the sequence (prefill for several, decode for one); returns last-position logits. */
  forward(tokens: readonly number[]): Logits {
    const { tvm, fns } = this;
    tvm.beginScope();
    try {
      // one-token calls (decode) reuse one input buffer: no device allocation per token
      const single = tokens.length === 1;
      if (single) this.tokenInput ??= tvm.detachFromCurrentScope(tvm.empty([1], "int32", this.device));
      const input = single && this.tokenInput ? this.tokenInput : tvm.empty([tokens.length], "int32", this.device);
      input.copyFrom(Int32Array.from(tokens));
      const embed = fns.embed(input, this.params) as tvmjs.Tensor;
      const hidden = embed.shape[embed.shape.length - 1]!;
      fns.begin(this.state, tvm.makeShapeTuple([SEQUENCE]), tvm.makeShapeTuple([tokens.length]));
      const out = (single ? fns.decode : fns.prefill)(embed.view([1, tokens.length, hidden]), this.state, this.params) as tvmjs.TVMArray;
      fns.end(this.state);
      return tvm.detachFromCurrentScope(out.get(0) as tvmjs.Tensor);
    } finally {
      tvm.endScope();
    }
  }

  /** The logits, in one array reused for every token (the caller only reads it while picking one). */
  async readLogits(logits: Logits): Promise<Float32Array> {
    const { tvm } = this;
    const tensor = logits as tvmjs.Tensor;
    tvm.beginScope();
    try {
      const host = this.hostTensor("logitsHost", tensor.shape, "float32");
      host.copyFrom(tensor);
      await this.sync();
      const count = tensor.shape.reduce((a, b) => a * b, 1);
      const values = this.logitsValues && this.logitsValues.length === count ? this.logitsValues : new Float32Array(count);
      values.set(this.hostView(Float32Array, host, count));
      this.logitsValues = values;
      return values;
    } finally {
      tvm.endScope();
      tensor.dispose();
    }
  }

  /** The token id of the largest logit, computed by the module's `argmax`: 4 bytes read back. */
  async readArgmax(logits: Logits): Promise<number> {
    const { tvm } = this;
    const tensor = logits as tvmjs.Tensor;
    if (!this.fns.argmax) throw new Error("the module has no argmax function");
    tvm.beginScope();
    try {
      const token = this.fns.argmax(tensor) as tvmjs.Tensor;
      const host = this.hostTensor("argmaxHost", [1], "int32");
      host.copyFrom(token);
      await this.sync();
      return this.hostView(Int32Array, host, 1)[0]!;
    } finally {
      tvm.endScope();
      tensor.dispose();
    }
  }

  /**
   * In place, where the logits are (GPU memory, or the CPU module's memory), by the module's
   * `apply_token_bitmask`: the tokens whose bit is clear in `bitmask` (xgrammar's layout: token i is
   * bit i % 32 of word i / 32) can no longer be picked. Only the mask is copied in (vocab / 8 bytes,
   * into one tensor reused for every token); words it lacks for the vocabulary are 0 (masked).
   */
  maskLogits(logits: Logits, bitmask: Int32Array): void {
    const { tvm } = this;
    const tensor = logits as tvmjs.Tensor;
    if (!this.fns.applyTokenBitmask) throw new Error("the module has no apply_token_bitmask function");
    const words = Math.ceil(tensor.shape[tensor.shape.length - 1]! / 32);
    let mask = bitmask;
    if (mask.length !== words) {
      mask = new Int32Array(words);
      mask.set(bitmask.subarray(0, words));
    }
    tvm.beginScope();
    try {
      this.bitmaskInput ??= tvm.detachFromCurrentScope(tvm.empty([words], "int32", this.device));
      this.bitmaskInput.copyFrom(mask);
      this.fns.applyTokenBitmask(tensor, this.bitmaskInput);  // returns `tensor` itself (in place)
    } finally {
      tvm.endScope();
    }
  }

  /** After a failed load: end the CPU threads' workers (the caller destroys the GPU device). */
  stopThreads(): void {
    this.cpuThreads?.dispose();
  }

  /** Free everything: the state, parameters, VM, CPU threads, the instance and the GPU device. */
  dispose(): void {
    this.tokenInput?.dispose();
    this.logitsHost?.dispose();
    this.argmaxHost?.dispose();
    this.bitmaskInput?.dispose();
    this.state?.dispose();
    this.params?.dispose();
    this.vm.dispose();
    this.cpuThreads?.dispose();
    this.tvm.dispose();
    this.gpu?.destroy();
  }

  /** A host (CPU) tensor of `shape` kept across tokens in `slot`: no allocation per decoded token. */
  private hostTensor(slot: "logitsHost" | "argmaxHost", shape: readonly number[], dtype: string): tvmjs.Tensor {
    const held = this[slot];
    if (held && held.shape.length === shape.length && held.shape.every((d, i) => d === shape[i])) return held;
    held?.dispose();
    const fresh = this.tvm.detachFromCurrentScope(this.tvm.empty([...shape], dtype, this.tvm.cpu()));
    this[slot] = fresh;
    return fresh;
  }

  /** Read `count` elements of a host tensor straight from wasm memory (the buffer may have grown: view it now). */
  private hostView<T extends Float32Array | Int32Array>(kind: new (b: ArrayBufferLike, o: number, n: number) => T,
                                                        host: tvmjs.Tensor, count: number): T {
    return new kind(this.tvm.memory.memory.buffer, host.getCPUDataAddress(), count);
  }
}
