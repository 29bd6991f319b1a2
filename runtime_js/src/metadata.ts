// The model module's description of itself: the JSON string its `_metadata` VM function returns,
// written by the build (webbuild/backends/). What the runtime must know about how a module was
// compiled (its parameters, the KV-cache page size its kernels were generated for, how many tokens
// a call may take) is read from here only, never hard-coded or inferred from the backend's name.
import { ModelLoadError } from "./errors.js";

/** One parameter as the module was compiled for it. */
export interface ParamSpec {
  name: string;
  shape?: number[];
  dtype?: string;
}

interface MetadataFields {
  /** The parameters, in the order the module's functions take them (shape and dtype as compiled). */
  params: ParamSpec[];
  /** Tokens per page of the paged KV cache (the TIR kernels are generated for this size). */
  kv_page_size: number;
  /** With a sliding window: once `window` tokens are cached, each call takes one token only. */
  single_token_past_window: boolean;
  /** The most tokens one call may take: the build's prefill chunk, already below a sliding window. */
  prefill_chunk: number;
  [extra: string]: unknown;
}

/** A module whose sequence state is a paged KV cache (`create_paged_kv_cache`). */
export interface KvCacheMetadata extends MetadataFields {
  kv_state?: "paged_kv_cache";
}

/** A module whose sequence state is an RNN state (`create_rnn_state`). */
export interface RnnStateMetadata extends MetadataFields {
  kv_state: "rnn_state";
  /** RNN state slots per sequence. */
  rnn_history: number;
}

/** An embedding model's module: no sequence state (it exports `encode`, see chat-config `embedding`). */
export interface EncoderMetadata extends MetadataFields {
  kv_state: "none";
}

/** `_metadata` as parsed: `kv_state` tells which state the module creates, and what it needs for it. */
export type ModelMetadata = KvCacheMetadata | RnnStateMetadata | EncoderMetadata;

const REBUILD = "rebuild the model with the current webbuild (python -m webbuild build)";

function invalid(url: string, what: string): never {
  throw new ModelLoadError(url, `${what}; rebuild the model with the current webbuild`, REBUILD);
}

/** A required key of `_metadata`: missing means the module comes from an older webbuild. */
function required(meta: Record<string, unknown>, key: string, url: string): unknown {
  if (!(key in meta)) invalid(url, `_metadata has no "${key}" (the module was built by an older webbuild)`);
  return meta[key];
}

/** Parse and check `_metadata` of the module at `url`; throws ModelLoadError (code "model-load"). */
export function parseModelMetadata(text: string, url: string): ModelMetadata {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    invalid(url, "_metadata is not valid JSON");
  }
  if (!json || typeof json !== "object" || Array.isArray(json)) invalid(url, "_metadata is not a JSON object");
  const meta = json as Record<string, unknown>;
  const params = required(meta, "params", url);
  if (!Array.isArray(params) || !params.every((p) => typeof (p as { name?: unknown } | null)?.name === "string")) {
    invalid(url, "_metadata.params must be a list of {name}");
  }
  const pageSize = required(meta, "kv_page_size", url);
  if (typeof pageSize !== "number" || !Number.isSafeInteger(pageSize) || pageSize < 1) {
    invalid(url, `_metadata.kv_page_size must be a positive integer, got ${JSON.stringify(pageSize)}`);
  }
  const chunk = required(meta, "prefill_chunk", url);
  if (typeof chunk !== "number" || !Number.isSafeInteger(chunk) || chunk < 1) {
    invalid(url, `_metadata.prefill_chunk must be a positive integer, got ${JSON.stringify(chunk)}`);
  }
  if (meta.kv_state !== undefined && meta.kv_state !== "paged_kv_cache" && meta.kv_state !== "rnn_state"
      && meta.kv_state !== "none") {
    invalid(url, `_metadata.kv_state must be "paged_kv_cache", "rnn_state" or "none", got ${JSON.stringify(meta.kv_state)}`);
  }
  if (meta.kv_state === "rnn_state") {
    const history = required(meta, "rnn_history", url);
    if (typeof history !== "number" || !Number.isSafeInteger(history) || history < 1) {
      invalid(url, `_metadata.rnn_history must be a positive integer, got ${JSON.stringify(history)}`);
    }
  }
  const singleToken = required(meta, "single_token_past_window", url);
  if (typeof singleToken !== "boolean") {
    invalid(url, `_metadata.single_token_past_window must be true or false, got ${JSON.stringify(singleToken)}`);
  }
  return meta as ModelMetadata;
}

/** Bytes per element of the dtypes a tensor record may have. */
const DTYPE_BYTES: Record<string, number> = {
  float32: 4, float16: 2, bfloat16: 2, uint32: 4, int32: 4, int64: 8, uint8: 1, int8: 1,
};

/**
 * Check that tensor record `index` of tensor-cache.json (`record`, with `byteLength` bytes read) is
 * the parameter the module expects there: same name, shape and dtype, and exactly the bytes they
 * take. Throws ModelLoadError (code "model-load") naming `url` (the tensor list) and `moduleFile`.
 */
export function checkParamRecord(record: { name: string; shape: readonly number[]; dtype: string },
                                 byteLength: number, expected: ParamSpec | undefined, index: number,
                                 url: string, moduleFile: string): void {
  const fix = "rebuild the model folder: its files come from different builds or were edited";
  if (expected === undefined) throw new ModelLoadError(url, `has more than the ${index} parameters ${moduleFile} takes`, fix);
  if (record.name !== expected.name) {
    throw new ModelLoadError(url, `parameter ${index} is ${record.name}, ${moduleFile} expects ${expected.name}`, fix);
  }
  const shape = JSON.stringify(record.shape);
  if (expected.shape !== undefined && shape !== JSON.stringify(expected.shape)) {
    throw new ModelLoadError(url, `${record.name} has shape ${shape}, ${moduleFile} expects ${JSON.stringify(expected.shape)}`, fix);
  }
  if (expected.dtype !== undefined && record.dtype !== expected.dtype) {
    throw new ModelLoadError(url, `${record.name} is ${record.dtype}, ${moduleFile} expects ${expected.dtype}`, fix);
  }
  const size = DTYPE_BYTES[record.dtype];
  const values = record.shape.reduce((a, b) => a * b, 1);
  if (size === undefined || !record.shape.every((d) => Number.isSafeInteger(d) && d >= 0) || values * size !== byteLength) {
    throw new ModelLoadError(url, `${record.name} (${shape} ${record.dtype}) does not take its ${byteLength} bytes`, fix);
  }
}
