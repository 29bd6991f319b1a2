// Typed errors of the webbuild runtime. Every error carries a stable `code` (test and branch on
// it, never on the message) and a `fix`: one sentence telling the user what to do about it.

export type ErrorCode =
  | "no-webgpu"
  | "missing-shader-f16"
  | "out-of-memory"
  | "quota-exceeded"
  | "context-window-exceeded"
  | "integrity"
  | "invalid-request"
  | "model-load"
  | "aborted"
  | "model-kind-mismatch"
  | "tools-unsupported"
  | "internal";

/** Plain-object form of an error, safe to send through postMessage. */
export interface SerializedError {
  name: string;
  code: ErrorCode;
  message: string;
  fix: string;
  details?: Record<string, unknown>;
}

export class WebbuildError extends Error {
  readonly code: ErrorCode;
  readonly fix: string;
  /** Extra structured facts (file, field, url, token counts...). */
  readonly details: Record<string, unknown>;

  constructor(code: ErrorCode, message: string, fix: string, details: Record<string, unknown> = {},
              options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
    this.fix = fix;
    this.details = details;
  }

  toJSON(): SerializedError {
    return { name: this.name, code: this.code, message: this.message, fix: this.fix, details: this.details };
  }
}

export class NoWebGPUError extends WebbuildError {
  constructor(message = "WebGPU is not available in this browser", options?: { cause?: unknown; fix?: string }) {
    super("no-webgpu", message, options?.fix ??
      "use a browser with WebGPU enabled (Chrome/Edge 113+, Safari 26+, Firefox 141+ on Windows), " +
      "served from https:// or localhost", {}, options);
  }
}

export class ShaderF16Error extends WebbuildError {
  readonly modelId: string | undefined;
  constructor(modelId?: string, options?: { cause?: unknown }) {
    const f32 = modelId?.replace(/f16/g, "f32");
    super("missing-shader-f16",
      `the GPU adapter lacks the WebGPU 'shader-f16' feature that ${modelId ?? "this model"} needs`,
      f32 && f32 !== modelId
        ? `use the f32 variant of the model (${f32}) instead`
        : "use the f32 variant of the model (quantization q4f32_1 or q0f32) instead",
      { modelId }, options);
    this.modelId = modelId;
  }
}

export class OutOfMemoryError extends WebbuildError {
  constructor(message = "the GPU ran out of memory", details: Record<string, unknown> = {},
              options?: { cause?: unknown }) {
    super("out-of-memory", message,
      "close other GPU-heavy tabs, use a smaller model or quantization, or a smaller context window",
      details, options);
  }
}

export class StorageQuotaError extends WebbuildError {
  readonly file: string | undefined;
  constructor(file?: string, options?: { cause?: unknown }) {
    super("quota-exceeded", `browser storage quota exceeded${file ? ` while storing ${file}` : ""}`,
      "free browser storage for this site (or delete cached models), or load with cache: \"none\"",
      { file }, options);
    this.file = file;
  }
}

export class ContextWindowExceededError extends WebbuildError {
  readonly promptTokens: number;
  readonly maxTokens: number | null;
  readonly contextWindow: number;
  constructor(promptTokens: number, maxTokens: number | null, contextWindow: number) {
    const need = promptTokens + (maxTokens ?? 1);
    super("context-window-exceeded",
      `the request needs ${need} tokens (prompt ${promptTokens}` +
      `${maxTokens === null ? "" : ` + max_tokens ${maxTokens}`}) but the context window is ${contextWindow}`,
      "shorten the conversation or lower max_tokens", { promptTokens, maxTokens, contextWindow });
    this.promptTokens = promptTokens;
    this.maxTokens = maxTokens;
    this.contextWindow = contextWindow;
  }
}

export class IntegrityError extends WebbuildError {
  readonly file: string;
  constructor(file: string, message?: string) {
    super("integrity", message ?? `${file} does not match its sha256 in tensor-cache.json`,
      `the copy of ${file} on the server is corrupt or stale: rebuild or re-upload the model folder`, { file });
    this.file = file;
  }
}

export class InvalidRequestError extends WebbuildError {
  readonly field: string;
  constructor(field: string, message: string) {
    super("invalid-request", `${field}: ${message}`, `fix the request field '${field}'`, { field });
    this.field = field;
  }
}

export class ModelLoadError extends WebbuildError {
  readonly url: string;
  constructor(url: string, message: string, fix = "check the model URL and that the folder was built by webbuild",
              options?: { cause?: unknown }) {
    super("model-load", `${url}: ${message}`, fix, { url }, options);
    this.url = url;
  }
}

export class AbortedError extends WebbuildError {
  constructor(message = "the operation was aborted", options?: { cause?: unknown }) {
    super("aborted", message, "nothing to fix: the caller aborted it", {}, options);
  }
}

/** The request has tools, and the model's chat template cannot take them (`reason`: "no-tools-variable"
 * when the template never reads `tools`, "unknown-syntax" when it writes calls in no known syntax). */
export class ToolsUnsupportedError extends WebbuildError {
  readonly reason: string;
  constructor(message: string, reason: string) {
    super("tools-unsupported", message,
      "leave out `tools`, or use a model whose chat template takes tools (or give it one in chat-config.json's chat_template)",
      { reason });
    this.reason = reason;
  }
}

/** The request is for another kind of model: a chat or text completion on an embedding model, or
 * embeddings from a chat model (`modelKind`: chat-config.json's model_kind; `operation`: what was asked). */
export class ModelKindError extends WebbuildError {
  readonly modelKind: string;
  readonly operation: string;
  constructor(modelKind: string, operation: string) {
    super("model-kind-mismatch", `this is ${modelKind === "embedding" ? "an embedding" : "a chat"} model: ${operation} needs `
      + `${operation === "embeddings" ? "an embedding" : "a chat"} model`,
      operation === "embeddings" ? "load an embedding model (chat-config.json model_kind \"embedding\") for embeddings.create"
        : "load a chat model for chat and text completions; use embeddings.create with this one", { modelKind, operation });
    this.modelKind = modelKind;
    this.operation = operation;
  }
}

/** A serialized detail as text ("" when absent). */
function detailText(value: unknown): string {
  if (value === undefined || value === null) return "";
  return typeof value === "string" ? value : JSON.stringify(value);
}

const BY_CODE: Record<string, (e: SerializedError) => WebbuildError> = {
  "no-webgpu": (e) => new NoWebGPUError(e.message),
  "missing-shader-f16": (e) => new ShaderF16Error(e.details?.modelId as string | undefined),
  "out-of-memory": (e) => new OutOfMemoryError(e.message, e.details),
  "quota-exceeded": (e) => new StorageQuotaError(e.details?.file as string | undefined),
  "context-window-exceeded": (e) => new ContextWindowExceededError(
    Number(e.details?.promptTokens), (e.details?.maxTokens as number | null) ?? null, Number(e.details?.contextWindow)),
  integrity: (e) => new IntegrityError(detailText(e.details?.file), e.message),
  "invalid-request": (e) => new InvalidRequestError(detailText(e.details?.field), e.message),
  "model-load": (e) => new ModelLoadError(detailText(e.details?.url), e.message, e.fix),
  aborted: (e) => new AbortedError(e.message),
  "model-kind-mismatch": (e) => new ModelKindError(detailText(e.details?.modelKind), detailText(e.details?.operation)),
  "tools-unsupported": (e) => new ToolsUnsupportedError(e.message, detailText(e.details?.reason)),
};

/** Rebuild a typed error from its serialized form (the other side of a worker's postMessage). */
export function deserializeError(e: SerializedError): WebbuildError {
  const make = BY_CODE[e.code];
  const err = make ? make(e) : new WebbuildError(e.code ?? "internal", e.message, e.fix ?? "", e.details ?? {});
  // keep the original message verbatim (constructors may have reformatted it)
  Object.defineProperty(err, "message", { value: e.message, enumerable: false, writable: true, configurable: true });
  return err;
}

/** Serialize any thrown value; unknown errors become code "internal". */
export function serializeError(err: unknown): SerializedError {
  if (err instanceof WebbuildError) return err.toJSON();
  const message = err instanceof Error ? err.message : String(err);
  return { name: "WebbuildError", code: "internal", message, fix: "this is a webbuild bug: please report it" };
}

/** True for DOMException-style quota errors from the Cache API, IndexedDB or OPFS. */
export function isQuotaError(err: unknown): boolean {
  const name = (err as { name?: unknown } | null)?.name;
  return name === "QuotaExceededError" || name === "NS_ERROR_DOM_QUOTA_REACHED";
}

/** True for a DOMException AbortError (fetch aborted by an AbortSignal) or our AbortedError. */
export function isAbortError(err: unknown): boolean {
  return err instanceof AbortedError || (err as { name?: unknown } | null)?.name === "AbortError";
}

/** Throw AbortedError if the signal has fired. */
export function throwIfAborted(signal?: AbortSignal | null): void {
  if (signal?.aborted) throw new AbortedError(undefined, { cause: signal.reason });
}
