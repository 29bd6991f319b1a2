// WebGPU device acquisition with the features and limits a model's chat-config asks for.
import type { ChatConfig } from "./config.js";
import { NoWebGPUError, OutOfMemoryError, ShaderF16Error } from "./errors.js";

/** Implementations of WebGPU that run on the CPU, as adapters name them in `GPUAdapterInfo`. */
const SOFTWARE_ADAPTERS = /swiftshader|llvmpipe|lavapipe|softpipe|microsoft basic render|\bwarp\b/i;

/** The browser's preferred adapter, or NoWebGPUError. */
export async function requestModelAdapter(): Promise<GPUAdapter> {
  const gpu = (globalThis.navigator as Navigator | undefined)?.gpu;
  if (!gpu) throw new NoWebGPUError();
  const adapter = await gpu.requestAdapter({ powerPreference: "high-performance" });
  if (!adapter) throw new NoWebGPUError();
  return adapter;
}

/** How `adapter` says it runs on the CPU ("fallback adapter" or the implementation's name, e.g.
 * "swiftshader"), or null for a hardware GPU. Reads `isFallbackAdapter` (on the adapter in older
 * browsers, in `adapter.info` in newer ones) and the vendor / architecture / device / description. */
export function softwareAdapter(adapter: GPUAdapter): string | null {
  const info = (adapter.info ?? {}) as Partial<GPUAdapterInfo> & { isFallbackAdapter?: boolean };
  const named = [info.vendor, info.architecture, info.device, info.description]
    .map((text) => (typeof text === "string" ? SOFTWARE_ADAPTERS.exec(text)?.[0] : undefined)).find(Boolean);
  if (named) return named.toLowerCase();
  const legacy = (adapter as GPUAdapter & { isFallbackAdapter?: boolean }).isFallbackAdapter;
  return info.isFallbackAdapter === true || legacy === true ? "fallback adapter" : null;
}

/** Request an adapter and a device able to run the model, or throw a typed error with a fix. */
export async function requestModelDevice(config: ChatConfig, given?: GPUAdapter): Promise<{ adapter: GPUAdapter; device: GPUDevice }> {
  const adapter = given ?? await requestModelAdapter();
  const features = (config.webgpu?.required_features ?? []) as GPUFeatureName[];
  if (features.includes("shader-f16") && !adapter.features.has("shader-f16")) {
    throw new ShaderF16Error(`${config.model_id}-${config.quantization}`);
  }
  const wanted: Record<string, number> = config.webgpu?.required_limits ?? {};
  const requiredLimits: Record<string, number> = {};
  // the adapter's limits by name (GPUSupportedLimits has no index signature)
  const limits = adapter.limits as unknown as Record<string, unknown>;
  for (const [name, value] of Object.entries(wanted)) {
    const available = limits[name];
    if (typeof available === "number" && available < value) {
      throw new OutOfMemoryError(`the GPU allows ${name} = ${available}, the model needs ${value}`);
    }
    requiredLimits[name] = value;
  }
  // Take the adapter's best for the limits compute kernels commonly depend on.
  for (const name of ["maxComputeWorkgroupStorageSize", "maxComputeInvocationsPerWorkgroup",
    "maxComputeWorkgroupSizeX", "maxStorageBuffersPerShaderStage"]) {
    const best = limits[name];
    if (typeof best === "number") requiredLimits[name] = Math.max(requiredLimits[name] ?? 0, best);
  }
  const device = await adapter.requestDevice({ requiredFeatures: features, requiredLimits });
  return { adapter, device };
}

/** Run `work`, turning a GPU out-of-memory error raised meanwhile into OutOfMemoryError. */
export async function withOutOfMemoryCheck<T>(device: GPUDevice, work: () => Promise<T>): Promise<T> {
  device.pushErrorScope("out-of-memory");
  let outcome: { value: T } | { error: unknown };
  try {
    outcome = { value: await work() };
  } catch (err) {
    outcome = { error: err };
  }
  // an out-of-memory error raised meanwhile explains the failure (or spoils the result): it wins
  const error = await device.popErrorScope();
  if (error) throw new OutOfMemoryError(String(error.message ?? error));
  if ("error" in outcome) throw outcome.error;
  return outcome.value;
}
