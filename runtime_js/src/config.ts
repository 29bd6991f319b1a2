// Types and checks for the two JSON documents of a model folder: chat-config.json and
// tensor-cache.json (both written by the Python side, webbuild/chat_config.py and
// webbuild/shard/writer.py).
//
// chat-config.json has one description, the JSON Schema webbuild/schema/chat-config.schema.json:
// the build validates what it writes against it, and this module bundles it (esbuild inlines the
// JSON) and validates what it reads against it with @cfworker/json-schema (an interpreter: no
// eval, so no 'unsafe-eval' in a page's CSP). The ChatConfig interfaces below are checked against
// the schema by tests/js/unit/config_schema.test.mjs.

import { Validator, type Schema } from "@cfworker/json-schema";

import chatConfigSchemaJson from "../../webbuild/schema/chat-config.schema.json";
import { ModelLoadError } from "./errors.js";

export const CHAT_CONFIG_FORMAT = "webbuild-chat-config/1";
// The chat-config.json JSON Schema (2020-12). Not exported: its Schema type is a devDependency's.
const CHAT_CONFIG_SCHEMA = chatConfigSchemaJson as Schema;
export const TENSOR_CACHE_FORMAT = "webbuild-tensor-cache/1";

export interface SamplingDefaults {
  temperature: number;
  top_p: number;
  repetition_penalty: number;
  frequency_penalty: number;
  presence_penalty: number;
}

/** The model's sequence state: a paged KV cache (optionally a sliding window) or an RNN state
 * ("none": an embedding model, which keeps nothing between calls). */
export interface StateConfig {
  kv_state: "paged_kv_cache" | "rnn_state" | "none";
  /** Attention window in tokens (paged KV cache only); null when attention sees the whole context. */
  sliding_window: number | null;
  /** RNN state slots per sequence (RNN state only; the runtime reads it from `_metadata`). */
  rnn_history?: number;
}

/** An embedding model's call (chat-config.json `embedding`): the module function taking padded
 * (batch, seq) int32 ids and 0/1 mask and returning (batch, dimensions) float32, the pooling and
 * normalisation it applies, and the longest input in tokens. */
export interface EmbeddingConfig {
  function: string;
  dimensions: number;
  pooling: "mean" | "cls" | "lasttoken";
  normalize: boolean;
  max_seq_length: number;
}

/** chat-config.json as the build writes it (the schema's `written` definition); parseChatConfig
 * fills the properties a reader may lack that have a default. */
export interface ChatConfig {
  format: "webbuild-chat-config/1";
  /** "chat": a language model; "embedding": a sentence encoder described by `embedding`. */
  model_kind: "chat" | "embedding";
  embedding?: EmbeddingConfig;
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
  build: { weight_formats?: Record<string, { params: number; bits_per_param: number }> };
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

// Keywords that only combine or point at other subschemas: the leaf errors under them say more.
const COMBINATORS = new Set(["properties", "additionalProperties", "items", "prefixItems", "$ref", "anyOf", "allOf", "oneOf",
                             "if", "then", "else", "not", "dependentSchemas", "unevaluatedProperties", "unevaluatedItems"]);
let chatConfigValidator: Validator | undefined;

/** "#/state/sliding_window" -> "state.sliding_window". */
function fieldName(instanceLocation: string, missing?: string): string {
  const parts = instanceLocation.replace(/^#\/?/, "").split("/").filter((p) => p !== "")
    .map((p) => decodeURIComponent(p).replace(/~1/g, "/").replace(/~0/g, "~"));
  if (missing !== undefined) parts.push(missing);
  return parts.length ? parts.join(".") : "the document";
}

/** What is wrong with `json` by the schema's root (what a reader needs), or null when it is valid. */
export function chatConfigSchemaError(json: unknown): string | null {
  chatConfigValidator ??= new Validator(CHAT_CONFIG_SCHEMA, "2020-12", true);
  const { valid, errors } = chatConfigValidator.validate(json);
  if (valid) return null;
  // The deepest instance location names the field; its leaf errors say what is wrong with it.
  const depth = (e: { instanceLocation: string }) => e.instanceLocation.split("/").length;
  const deepest = Math.max(...errors.map(depth));
  const atField = errors.filter((e) => depth(e) === deepest);
  const leaves = atField.filter((e) => !COMBINATORS.has(e.keyword));
  const shown = leaves.length ? leaves : atField;
  const missing = shown[0]?.keyword === "required" ? /required property "(.*)"/.exec(shown[0].error)?.[1] : undefined;
  const field = fieldName(shown[0]?.instanceLocation ?? "#", missing);
  return `${field}: ${shown.map((e) => e.error).join(" or ")} (schema ${shown[0]?.keywordLocation ?? "#"})`;
}

/** Fill each absent property that has a schema `default` (a fresh copy), in nested objects too. */
function fillDefaults(value: Record<string, unknown>, schema: Schema): void {
  for (const [key, sub] of Object.entries(schema.properties ?? {})) {
    if (typeof sub !== "object") continue;
    if (!(key in value) && "default" in sub) value[key] = structuredClone(sub.default);
    const child = value[key];
    if (child && typeof child === "object" && !Array.isArray(child)) fillDefaults(child as Record<string, unknown>, sub);
  }
}

/** Check `json` against the chat-config schema and fill its defaults; returns the same object typed. */
export function parseChatConfig(json: unknown, url = "chat-config.json"): ChatConfig {
  const problem = chatConfigSchemaError(json);
  if (problem !== null) fail(url, problem);
  const c = json as Partial<ChatConfig> & Record<string, unknown>;
  // Defaults that depend on other fields (the schema's description names them).
  c.stop_token_ids ??= [...(c.eos_token_ids ?? [])];
  fillDefaults(c, CHAT_CONFIG_SCHEMA);
  c.model_libs ??= { webgpu: c.model_lib ?? "model.wasm" };
  const pages = c.wasm_threads?.memory_pages;
  if (pages && pages.maximum < pages.initial) fail(url, "wasm_threads.memory_pages: maximum is below initial");
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
