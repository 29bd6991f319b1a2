// Types and checks for the two JSON documents of a model folder: chat-config.json and
// tensor-cache.json (both written by the Python side, webbuild/chat_config.py and
// webbuild/shard/writer.py).

import { ModelLoadError } from "./errors.js";

export const CHAT_CONFIG_FORMAT = "webbuild-chat-config/1";
export const TENSOR_CACHE_FORMAT = "webbuild-tensor-cache/1";

export interface SamplingDefaults {
  temperature: number;
  top_p: number;
  repetition_penalty: number;
  frequency_penalty: number;
  presence_penalty: number;
}

/** The model's sequence state: a paged KV cache (optionally a sliding window) or an RNN state. */
export interface StateConfig {
  kv_state: "paged_kv_cache" | "rnn_state";
  /** Attention window in tokens (paged KV cache only); null when attention sees the whole context. */
  sliding_window: number | null;
}

export interface ChatConfig {
  format: string;
  model_id: string;
  architecture: string;
  quantization: string;
  target: string;
  model_lib: string;
  /** The compiled modules by backend ("webgpu": model.wasm, "wasm": model-cpu.wasm, "wasm-threads":
   * model-cpu-threads.wasm, the CPU module with shared memory for threads). */
  model_libs: Partial<Record<"webgpu" | "wasm" | "wasm-threads", string>>;
  /** The threaded CPU module's memory (it imports it: the runtime creates it). */
  wasm_threads?: { memory_pages: { initial: number; maximum: number } };
  tensor_cache: string;
  context_window_size: number;
  prefill_chunk_size: number;
  vocab_size: number;
  state: StateConfig;
  tokenizer_files: string[];
  bos_token_id: number | null;
  eos_token_ids: number[];
  stop_token_ids: number[];
  stop_strings: string[];
  add_bos_token: boolean;
  chat_template: string | null;
  sampling: SamplingDefaults;
  webgpu: { required_features: string[]; required_limits: Record<string, number> };
  memory: Record<string, number>;
  build?: Record<string, unknown>;
  [extra: string]: unknown;
}

export interface ShardInfo {
  file: string;
  nbytes: number;
  sha256: string;
}

export interface TensorRecord {
  name: string;
  shape: number[];
  dtype: string;
  /** Offset into the parameter byte stream (all shards concatenated). */
  byte_offset: number;
  nbytes: number;
}

export interface TensorCache {
  format: string;
  metadata: Record<string, unknown>;
  total_bytes: number;
  shards: ShardInfo[];
  records: TensorRecord[];
}

function isInt(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
}

function fail(url: string, what: string): never {
  throw new ModelLoadError(url, what, "rebuild the model folder with this version of webbuild");
}

/** Check the fields the runtime relies on; returns the same object typed. */
export function parseChatConfig(json: unknown, url = "chat-config.json"): ChatConfig {
  const c = json as Partial<ChatConfig> | null;
  if (!c || typeof c !== "object") fail(url, "not a JSON object");
  if (c.format !== CHAT_CONFIG_FORMAT) fail(url, `format is ${JSON.stringify(c.format)}, expected ${CHAT_CONFIG_FORMAT}`);
  for (const key of ["context_window_size", "prefill_chunk_size", "vocab_size"] as const) {
    if (!isInt(c[key]) || c[key] === 0) fail(url, `${key} must be a positive integer`);
  }
  if (!Array.isArray(c.tokenizer_files) || !c.tokenizer_files.includes("tokenizer.json")) {
    fail(url, "tokenizer_files must list tokenizer.json");
  }
  if (!Array.isArray(c.eos_token_ids) || !c.eos_token_ids.every(isInt)) fail(url, "eos_token_ids must be a list of ids");
  if (!Array.isArray(c.stop_token_ids)) c.stop_token_ids = [...c.eos_token_ids];
  if (!Array.isArray(c.stop_strings)) c.stop_strings = [];
  if (typeof c.tensor_cache !== "string") c.tensor_cache = "tensor-cache.json";
  if (typeof c.model_lib !== "string") c.model_lib = "model.wasm";
  if (!c.model_libs || typeof c.model_libs !== "object") c.model_libs = { webgpu: c.model_lib };
  for (const [kind, file] of Object.entries(c.model_libs)) {
    if (typeof file !== "string" || file.includes("/") || file.startsWith(".")) fail(url, `model_libs.${kind} must be a plain file name`);
  }
  if (c.model_libs["wasm-threads"]) {
    const pages = c.wasm_threads?.memory_pages;
    if (!pages || !isInt(pages.initial) || !isInt(pages.maximum) || pages.initial < 1 || pages.maximum < pages.initial) {
      fail(url, "wasm_threads.memory_pages must give integer initial and maximum pages (model_libs has wasm-threads)");
    }
  }
  if (!c.sampling || typeof c.sampling !== "object") fail(url, "sampling must be an object");
  c.add_bos_token = Boolean(c.add_bos_token);
  const state: StateConfig = c.state ?? { kv_state: "paged_kv_cache", sliding_window: null };
  if (state.kv_state !== "paged_kv_cache" && state.kv_state !== "rnn_state") fail(url, "state.kv_state must be paged_kv_cache or rnn_state");
  if (state.sliding_window != null && (!isInt(state.sliding_window) || state.sliding_window === 0)) {
    fail(url, "state.sliding_window must be a positive integer or null");
  }
  c.state = { kv_state: state.kv_state, sliding_window: state.sliding_window ?? null };
  return c as ChatConfig;
}

/** The config with a shorter context window (the KV cache's size: prompt + completion tokens) and
 * the prefill chunk capped by it; unchanged without `contextWindow`. It must be a positive integer
 * no larger than the model's context_window_size. */
export function withContextWindow(config: ChatConfig, contextWindow: number | undefined, url = "chat-config.json"): ChatConfig {
  if (contextWindow === undefined) return config;
  if (!isInt(contextWindow) || contextWindow < 1 || contextWindow > config.context_window_size) {
    throw new ModelLoadError(url, `contextWindow must be an integer from 1 to the model's context_window_size `
      + `(${config.context_window_size}), got ${JSON.stringify(contextWindow)}`,
      `pass contextWindow between 1 and ${config.context_window_size}, or leave it out`);
  }
  return { ...config, context_window_size: contextWindow,
           prefill_chunk_size: Math.min(config.prefill_chunk_size, contextWindow) };
}

/** Check tensor-cache.json: shard sizes add up, every record lies inside the byte stream. */
export function parseTensorCache(json: unknown, url = "tensor-cache.json"): TensorCache {
  const t = json as Partial<TensorCache> | null;
  if (!t || typeof t !== "object") fail(url, "not a JSON object");
  if (t.format !== TENSOR_CACHE_FORMAT) fail(url, `format is ${JSON.stringify(t.format)}, expected ${TENSOR_CACHE_FORMAT}`);
  if (!Array.isArray(t.shards) || !Array.isArray(t.records)) fail(url, "shards and records must be lists");
  if (!isInt(t.total_bytes)) fail(url, "total_bytes must be a non-negative integer");
  let sum = 0;
  const files = new Set<string>();
  for (const [i, s] of t.shards.entries()) {
    if (!s || typeof s.file !== "string" || !isInt(s.nbytes) || typeof s.sha256 !== "string" ||
        !/^[0-9a-f]{64}$/.test(s.sha256)) fail(url, `shards[${i}] needs file, nbytes and a hex sha256`);
    if (s.file.includes("/") || s.file.includes("\\") || s.file.startsWith(".")) fail(url, `shards[${i}].file must be a plain file name`);
    if (files.has(s.file)) fail(url, `shards[${i}].file ${s.file} is listed twice`);
    files.add(s.file);
    sum += s.nbytes;
  }
  if (sum !== t.total_bytes) fail(url, `shard sizes add up to ${sum}, total_bytes is ${t.total_bytes}`);
  for (const [i, r] of t.records.entries()) {
    if (!r || typeof r.name !== "string" || !isInt(r.byte_offset) || !isInt(r.nbytes) ||
        !Array.isArray(r.shape) || typeof r.dtype !== "string") fail(url, `records[${i}] is malformed`);
    if (r.byte_offset + r.nbytes > t.total_bytes) fail(url, `records[${i}] (${r.name}) lies outside the byte stream`);
  }
  if (!t.metadata || typeof t.metadata !== "object") t.metadata = {};
  return t as TensorCache;
}
