// WebGPU device acquisition with the features and limits a model's chat-config asks for.
import type { ChatConfig } from "./config.js";
import { NoWebGPUError, OutOfMemoryError, ShaderF16Error } from "./errors.js";

/* eslint-disable @typescript-eslint/no-explicit-any */
type GPUAdapterLike = any;
type GPUDeviceLike = any;

/** Request an adapter and a device able to run the model, or throw a typed error with a fix. */
export async function requestModelDevice(config: ChatConfig): Promise<{ adapter: GPUAdapterLike; device: GPUDeviceLike }> {
  const gpu = (globalThis.navigator as any)?.gpu;
  if (!gpu) throw new NoWebGPUError();
  const adapter = await gpu.requestAdapter({ powerPreference: "high-performance" });
  if (!adapter) throw new NoWebGPUError();
  const features: string[] = config.webgpu?.required_features ?? [];
  if (features.includes("shader-f16") && !adapter.features.has("shader-f16")) {
    throw new ShaderF16Error(`${config.model_id}-${config.quantization}`);
  }
  const wanted: Record<string, number> = config.webgpu?.required_limits ?? {};
  const requiredLimits: Record<string, number> = {};
  for (const [name, value] of Object.entries(wanted)) {
    const available = adapter.limits[name];
    if (typeof available === "number" && available < value) {
      throw new OutOfMemoryError(`the GPU allows ${name} = ${available}, the model needs ${value}`);
    }
    requiredLimits[name] = value;
  }
  // Take the adapter's best for the limits compute kernels commonly depend on.
  for (const name of ["maxComputeWorkgroupStorageSize", "maxComputeInvocationsPerWorkgroup",
    "maxComputeWorkgroupSizeX", "maxStorageBuffersPerShaderStage"]) {
    if (typeof adapter.limits[name] === "number") requiredLimits[name] = Math.max(requiredLimits[name] ?? 0, adapter.limits[name]);
  }
  const device = await adapter.requestDevice({ requiredFeatures: features, requiredLimits });
  return { adapter, device };
}

/** Run `work`, turning a GPU out-of-memory error raised meanwhile into OutOfMemoryError. */
export async function withOutOfMemoryCheck<T>(device: GPUDeviceLike, work: () => Promise<T>): Promise<T> {
  device.pushErrorScope("out-of-memory");
  let result: T;
  try {
    result = await work();
  } finally {
    const error = await device.popErrorScope();
    if (error) throw new OutOfMemoryError(String(error.message ?? error));
  }
  return result;
}
