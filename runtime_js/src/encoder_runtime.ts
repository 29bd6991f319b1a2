// The thin layer over TVM's JS runtime for embedding models: it opens the module and uploads the
// parameters (tvm_runtime.ts's openModule / uploadParams), and runs the module's batched encode
// function: padded (batch, seq) int32 ids and 0/1 mask in, (batch, dimensions) float32 out, read
// back to the host. Every TVM scope it opens it closes; tvmjs objects stay in this file.
import * as tvmjs from "@mlc-ai/web-runtime";

import type { TensorBytes } from "./artifacts.js";
import { ModelLoadError } from "./errors.js";
import { openModule, uploadParams, type OpenModule, type RuntimeOptions } from "./tvm_runtime.js";

export class EncoderRuntime {
  private params: tvmjs.TVMArray | null = null;

  private constructor(private readonly module: OpenModule, private readonly encodeFn: tvmjs.PackedFunc,
                      private readonly gpu: GPUDevice | null) {}

  /** Instantiate the compiled module `wasm` and find its encode function (`functionName`, from
   * chat-config.json's `embedding.function`). */
  static async create(wasm: ArrayBuffer, options: RuntimeOptions, functionName: string): Promise<EncoderRuntime> {
    const module = await openModule(wasm, options);
    const { tvm, vm } = module;
    try {
      tvm.beginScope();
      try {
        let fn: tvmjs.PackedFunc;
        try {
          fn = vm.getFunction(functionName);
        } catch (err) {
          throw new ModelLoadError(options.url, `the module has no function ${JSON.stringify(functionName)}`,
            "rebuild the model folder: chat-config.json and the module come from different builds", { cause: err });
        }
        return new EncoderRuntime(module, tvm.detachFromCurrentScope(fn), options.gpu);
      } finally {
        tvm.endScope();
      }
    } catch (err) {
      vm.dispose();
      module.threads?.dispose();
      throw err;
    }
  }

  /** CPU threads the module runs on (1 unless it is the threaded CPU module). */
  get threads(): number {
    return this.module.threads?.count ?? 1;
  }

  async loadParams(tensors: AsyncIterable<TensorBytes>, url: string, moduleFile: string): Promise<void> {
    this.params = await uploadParams(this.module, tensors, url, moduleFile);
  }

  /** Wait until the device has finished the work queued so far. */
  async sync(): Promise<void> {
    if (this.gpu) await this.module.device.sync();
  }

  /** One call: `ids` and `mask` are (batch, seq) row-major int32; returns (batch, dimensions) row-major. */
  async encode(ids: Int32Array, mask: Int32Array, batch: number, seq: number): Promise<Float32Array> {
    const { tvm, device } = this.module;
    tvm.beginScope();
    try {
      const idsIn = tvm.empty([batch, seq], "int32", device);
      idsIn.copyFrom(ids);
      const maskIn = tvm.empty([batch, seq], "int32", device);
      maskIn.copyFrom(mask);
      const out = this.encodeFn(idsIn, maskIn, this.params) as tvmjs.Tensor;
      const host = tvm.empty([...out.shape], "float32", tvm.cpu());
      host.copyFrom(out);
      await this.sync();
      const count = out.shape.reduce((a, b) => a * b, 1);
      return new Float32Array(tvm.memory.memory.buffer, host.getCPUDataAddress(), count).slice();
    } finally {
      tvm.endScope();
    }
  }

  /** After a failed load: end the CPU threads' workers (the caller destroys the GPU device). */
  stopThreads(): void {
    this.module.threads?.dispose();
  }

  /** Free everything: parameters, VM, CPU threads, the instance and the GPU device. */
  dispose(): void {
    this.params?.dispose();
    this.encodeFn.dispose();
    this.module.vm.dispose();
    this.module.threads?.dispose();
    this.module.tvm.dispose();
    this.gpu?.destroy();
  }
}
