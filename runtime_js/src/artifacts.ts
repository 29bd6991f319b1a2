// Loading a model folder by URL.
//
// Metadata (chat-config.json, tensor-cache.json, tokenizer files, model.wasm) is fetched from the
// network every time, so a rebuilt folder is picked up; a copy goes to the store and is used only
// when the network fails (offline). Shards are read from the store when present, otherwise fetched
// (at most `concurrency` at a time); every shard's sha256 is verified before use. A shard failing
// verification is evicted and fetched once more (bypassing the HTTP cache); a second failure throws
// IntegrityError naming the file. A request that gets no answer, or a body that brings no bytes,
// for `stallTimeoutMs` is abandoned; a shard download that stalls or drops resumes where it stopped
// with a Range request (up to MAX_RESUMES times; a server that ignores Range sends it whole again),
// and is verified whole before it is stored.
//
// Tensors: all parameters form one byte stream cut into shards; `iterateTensors` walks the records
// in stream order and yields each tensor's bytes: a view into the current shard, or a fresh copy
// when the tensor spans shards. Only the current shard (plus the prefetch window) is held.

import {
  parseChatConfig, parseTensorCache, type ChatConfig, type ShardInfo, type TensorCache, type TensorRecord,
} from "./config.js";
import {
  AbortedError, IntegrityError, ModelLoadError, StorageQuotaError, isAbortError, isQuotaError, throwIfAborted,
} from "./errors.js";
import { ProgressReporter, type ProgressCallback } from "./progress.js";
import { sha256Hex } from "./sha256.js";
import { modelBaseUrl, openStore, type CacheKind, type ShardStore } from "./storage.js";

export type FetchFn = (url: string, init?: RequestInit) => Promise<Response>;

export interface LoadOptions {
  /** Where shards are stored between loads. Default "cache" (the Cache API). */
  cache?: CacheKind;
  /** A store to use instead of `cache` (tests inject a MemoryStore). */
  store?: ShardStore;
  /** Default globalThis.fetch. */
  fetch?: FetchFn;
  /** Shards fetched / verified at once, and the prefetch window of `shards()`. Default 4. */
  concurrency?: number;
  onProgress?: ProgressCallback;
  signal?: AbortSignal;
  /** A request without an answer, or a body without new bytes, for this long is abandoned. Default 30000. */
  stallTimeoutMs?: number;
}

/** Default of LoadOptions.stallTimeoutMs. */
export const STALL_TIMEOUT_MS = 30_000;
/** Resumed (Range) requests one shard download may take after a stall or a dropped connection. */
export const MAX_RESUMES = 3;

/** A request or body that stopped making progress, or a body that broke off: worth resuming. */
class Interrupted extends Error {}

/** `promise`, or Interrupted after `ms` (the timer is cleared either way); `onStall` runs first. */
async function withinStall<T>(promise: Promise<T>, ms: number, what: string, onStall: () => void): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const stalled = new Promise<never>((_, reject) => {
    // reject first: onStall may reject `promise` (an aborted fetch), and the race must see the stall
    timer = setTimeout(() => { reject(new Interrupted(`${what}: no progress for ${ms} ms`)); onStall(); }, ms);
  });
  try {
    return await Promise.race([promise, stalled]);
  } finally {
    clearTimeout(timer);
  }
}

export interface ModelArtifacts {
  /** The model folder URL, ending in "/". */
  baseUrl: string;
  chatConfig: ChatConfig;
  tensorCache: TensorCache;
  tokenizerJson: unknown;
  /** tokenizer_config.json, or null when the folder has none. */
  tokenizerConfig: unknown;
}

export interface VerifiedShard {
  index: number;
  info: ShardInfo;
  bytes: Uint8Array;
  fromCache: boolean;
}

export interface TensorBytes {
  record: TensorRecord;
  /** The tensor's bytes: a view into a shard (valid until dropped) or a copy if it spans shards. */
  bytes: Uint8Array;
}

export { modelBaseUrl };

/** Context shared by the fetch helpers. */
class Loader {
  readonly fetchFn: FetchFn;
  readonly store: ShardStore;
  readonly signal: AbortSignal | undefined;
  readonly progress: ProgressReporter;
  readonly concurrency: number;
  readonly stallMs: number;

  constructor(options: LoadOptions, signal = options.signal) {
    const f = options.fetch ?? (globalThis.fetch ? globalThis.fetch.bind(globalThis) : undefined);
    if (!f) throw new ModelLoadError("fetch", "no fetch function is available", "pass options.fetch");
    this.fetchFn = f;
    this.store = options.store ?? openStore(options.cache ?? "cache");
    this.signal = signal;
    this.progress = new ProgressReporter(options.onProgress);
    this.concurrency = Math.max(1, Math.floor(options.concurrency ?? 4));
    this.stallMs = options.stallTimeoutMs !== undefined && options.stallTimeoutMs > 0 ? options.stallTimeoutMs
      : STALL_TIMEOUT_MS;
  }

  /** fetch with the caller's signal; a request unanswered for stallMs is aborted (Interrupted). */
  private async fetchOnce(url: string, init: RequestInit): Promise<Response> {
    const request = new AbortController();
    const outer = this.signal;
    const forward = () => request.abort(outer?.reason);
    if (outer?.aborted) forward();
    else outer?.addEventListener("abort", forward, { once: true });
    try {
      return await withinStall(this.fetchFn(url, { ...init, signal: request.signal }), this.stallMs, url,
                               () => request.abort(new Interrupted("stalled")));
    } finally {
      outer?.removeEventListener("abort", forward);
    }
  }

  /** GET url; one retry on a network error or 5xx; HTTP errors become ModelLoadError. */
  async get(url: string, init: RequestInit = {}): Promise<Response> {
    for (let attempt = 1; ; attempt++) {
      throwIfAborted(this.signal);
      let response: Response;
      try {
        response = await this.fetchOnce(url, init);
      } catch (err) {
        if (this.signal?.aborted || (isAbortError(err) && !(err instanceof Interrupted))) {
          throw new AbortedError(undefined, { cause: err });
        }
        if (attempt < 2) continue;
        throw new ModelLoadError(url, `network error (${(err as Error)?.message ?? err})`,
          "check the network connection and that the server allows this origin (CORS)", { cause: err });
      }
      if (response.ok) return response;
      if (response.status >= 500 && attempt < 2) continue;
      const err = new ModelLoadError(url, `HTTP ${response.status}${response.statusText ? " " + response.statusText : ""}`,
        response.status === 404 ? "check the model URL: the file is not in the model folder" : "check the server");
      err.details.status = response.status;
      throw err;
    }
  }

  /** The next chunk of a body; Interrupted (and the body cancelled) when none comes for stallMs. */
  private read(reader: ReadableStreamDefaultReader<Uint8Array>, file: string): Promise<ReadableStreamReadResult<Uint8Array>> {
    return withinStall(reader.read(), this.stallMs, file, () => { reader.cancel().catch(() => {}); });
  }

  /** A metadata file's body, with fetch progress events (shards go through `download`). */
  async body(response: Response, file: string): Promise<Uint8Array> {
    const header = Number(response.headers.get("content-length"));
    const total = Number.isFinite(header) && header > 0 ? header : 0;
    const reader = response.body?.getReader();
    if (!reader) {
      const bytes = new Uint8Array(await response.arrayBuffer());
      this.progress.emit("fetch", file, bytes.length, total || bytes.length);
      return bytes;
    }
    let buf = new Uint8Array(total || 1 << 16);
    let n = 0;
    try {
      for (;;) {
        const { done, value } = await this.read(reader, file);
        if (done) break;
        buf = appended(buf, n, value);
        n += value.length;
        this.progress.emit("fetch", file, n, total || n);
      }
    } catch (err) {
      if (isAbortError(err) || this.signal?.aborted) throw new AbortedError(undefined, { cause: err });
      throw new ModelLoadError(file, `download interrupted (${(err as Error)?.message ?? err})`,
        "check the network connection and retry", { cause: err });
    }
    return n === buf.length ? buf : buf.slice(0, n);
  }

  /**
   * A shard's `size` bytes from `url`: a download that stalls or breaks off resumes at the byte it
   * reached with a Range request (MAX_RESUMES times at most); a 200 answer to a Range request (the
   * server ignored it) starts over. The bytes are not verified here.
   */
  async download(url: string, file: string, size: number, init: RequestInit = {}): Promise<Uint8Array> {
    let buf = new Uint8Array(size);
    let n = 0;
    for (let resumes = 0; ; resumes++) {
      const headers = new Headers(init.headers);
      if (n > 0) headers.set("Range", `bytes=${n}-`);
      const response = await this.get(url, { ...init, headers });
      if (n > 0 && !(response.status === 206 && contentRangeStart(response) === n)) {
        this.progress.bytesLoaded -= n;  // the server sends the whole file again
        n = 0;
      }
      const reader = response.body?.getReader();
      if (!reader) {
        const bytes = new Uint8Array(await response.arrayBuffer());
        this.progress.bytesLoaded += bytes.length;
        this.progress.emit("fetch", file, n + bytes.length, size);
        return n === 0 ? bytes : concat(buf.subarray(0, n), bytes);
      }
      try {
        for (;;) {
          const { done, value } = await this.read(reader, file);
          if (done) return n === buf.length ? buf : buf.slice(0, n);
          buf = appended(buf, n, value);
          n += value.length;
          this.progress.bytesLoaded += value.length;
          this.progress.emit("fetch", file, n, size);
        }
      } catch (err) {
        if (this.signal?.aborted || (isAbortError(err) && !(err instanceof Interrupted))) {
          this.progress.bytesLoaded -= n;
          throw new AbortedError(undefined, { cause: err });
        }
        if (resumes >= MAX_RESUMES) {
          this.progress.bytesLoaded -= n;
          throw new ModelLoadError(url, `download interrupted ${resumes + 1} times at byte ${n} of ${size} `
            + `(${(err as Error)?.message ?? err})`, "check the network connection and retry", { cause: err });
        }
        console.warn(`webbuild: ${file} broke off at byte ${n} (${(err as Error)?.message ?? err}); resuming`);
      }
    }
  }

  /** Store best-effort: quota errors become StorageQuotaError, other failures only warn. */
  async put(key: string, file: string, bytes: Uint8Array, quotaIsFatal: boolean): Promise<boolean> {
    try {
      await this.store.put(key, bytes);
      return true;
    } catch (err) {
      if (isQuotaError(err) && quotaIsFatal) throw new StorageQuotaError(file, { cause: err });
      console.warn(`webbuild: could not store ${file} (${(err as Error)?.message ?? err})`);
      return false;
    }
  }

  async lookup(key: string): Promise<Uint8Array | undefined> {
    try {
      return await this.store.get(key);
    } catch (err) {
      console.warn(`webbuild: could not read ${key} from the ${this.store.kind} store (${(err as Error)?.message ?? err})`);
      return undefined;
    }
  }

  /** Network first; the stored copy when the network fails; stores what it fetched. */
  async metadataFile(url: string, file: string): Promise<Uint8Array> {
    let bytes: Uint8Array;
    try {
      bytes = await this.body(await this.get(url), file);
    } catch (err) {
      // offline fallback: only for network failures and server errors, never for a 4xx answer
      const status = err instanceof ModelLoadError ? err.details.status : undefined;
      if (!(err instanceof ModelLoadError) || (typeof status === "number" && status < 500)) throw err;
      const stored = await this.lookup(url);
      if (!stored) throw err;
      console.warn(`webbuild: ${file}: network failed, using the stored copy`);
      return stored;
    }
    await this.put(url, file, bytes, false);
    return bytes;
  }

  async json(url: string, file: string): Promise<unknown> {
    const bytes = await this.metadataFile(url, file);
    try {
      return JSON.parse(new TextDecoder().decode(bytes));
    } catch (err) {
      throw new ModelLoadError(url, `not valid JSON (${(err as Error).message})`,
        "check the model URL (the server may have returned an HTML page) or rebuild the folder", { cause: err });
    }
  }
}

/**
 * Fetch a model folder's metadata: chat-config.json, tensor-cache.json and the tokenizer files.
 * Shards are loaded afterwards through a ShardLoader.
 */
export async function loadModelArtifacts(modelUrl: string, options: LoadOptions = {}): Promise<ModelArtifacts> {
  const baseUrl = modelBaseUrl(modelUrl);
  const loader = new Loader({ ...options, concurrency: 1 });
  const configUrl = new URL("chat-config.json", baseUrl).href;
  const chatConfig = parseChatConfig(await loader.json(configUrl, "chat-config.json"), configUrl);
  const files = ["tensor-cache.json", ...chatConfig.tokenizer_files.filter((f) => f === "tokenizer.json" || f === "tokenizer_config.json")];
  const cacheUrl = new URL(chatConfig.tensor_cache, baseUrl).href;
  const [tensorCacheJson, tokenizerJson, tokenizerConfig] = await Promise.all([
    loader.json(cacheUrl, chatConfig.tensor_cache),
    loader.json(new URL("tokenizer.json", baseUrl).href, "tokenizer.json"),
    files.includes("tokenizer_config.json")
      ? loader.json(new URL("tokenizer_config.json", baseUrl).href, "tokenizer_config.json") : Promise.resolve(null),
  ]);
  return { baseUrl, chatConfig, tensorCache: parseTensorCache(tensorCacheJson, cacheUrl), tokenizerJson, tokenizerConfig };
}

/** `buf` with `value` written at `n`: `buf` itself, or a copy grown (doubling) when it is too small. */
function appended(buf: Uint8Array<ArrayBuffer>, n: number, value: Uint8Array): Uint8Array<ArrayBuffer> {
  let out = buf;
  if (n + value.length > buf.length) {
    out = new Uint8Array(Math.max(buf.length * 2, n + value.length));
    out.set(buf.subarray(0, n));
  }
  out.set(value, n);
  return out;
}

/** The first byte of a 206 answer's Content-Range (`bytes START-END/SIZE`), or -1. */
function contentRangeStart(response: Response): number {
  const match = /^bytes\s+(\d+)-\d+\/(\d+|\*)$/.exec(response.headers.get("content-range")?.trim() ?? "");
  return match ? Number(match[1]) : -1;
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/** Fetch a compiled model library (default model.wasm) with fetch progress (network first, store as fallback). */
export async function loadModelLib(artifacts: ModelArtifacts, options: LoadOptions = {},
                                   file = artifacts.chatConfig.model_lib): Promise<Uint8Array> {
  return new Loader(options).metadataFile(new URL(file, artifacts.baseUrl).href, file);
}

/** Fetches, verifies and stores the shards of one model; yields them and their tensors. */
export class ShardLoader {
  readonly artifacts: ModelArtifacts;
  /** Emit "compile" / "ready" through this too, so the callback sees one event stream. */
  readonly progress: ProgressReporter;
  private readonly loader: Loader;
  /** Fires on the caller's signal, or when an iteration stops early (to cancel the prefetch). */
  private readonly abort = new AbortController();
  private verified = 0;
  private cached = 0;

  /** Single use once an iteration of shards() / tensors() stops early or fails. */
  constructor(artifacts: ModelArtifacts, options: LoadOptions = {}) {
    this.artifacts = artifacts;
    const outer = options.signal;
    if (outer?.aborted) this.abort.abort(outer.reason);
    else outer?.addEventListener("abort", () => this.abort.abort(outer.reason), { once: true });
    this.loader = new Loader(options, this.abort.signal);
    this.progress = this.loader.progress;
    this.progress.bytesTotal = artifacts.tensorCache.total_bytes;
  }

  get store(): ShardStore {
    return this.loader.store;
  }

  shardUrl(info: ShardInfo): string {
    return new URL(info.file, this.artifacts.baseUrl).href;
  }

  private async verify(info: ShardInfo, bytes: Uint8Array): Promise<boolean> {
    return bytes.length === info.nbytes && (await sha256Hex(bytes)) === info.sha256;
  }

  /** One verified shard: from the store, else the network (twice at most). */
  async shard(index: number): Promise<VerifiedShard> {
    const info = this.artifacts.tensorCache.shards[index];
    if (!info) throw new RangeError(`no shard ${index}`);
    const { loader, progress } = this;
    const total = this.artifacts.tensorCache.shards.length;
    const url = this.shardUrl(info);
    throwIfAborted(loader.signal);

    const stored = await loader.lookup(url);
    if (stored) {
      if (await this.verify(info, stored)) {
        progress.bytesLoaded += info.nbytes;
        progress.emit("verify", info.file, ++this.verified, total);
        progress.emit("cache", info.file, ++this.cached, total, { fromCache: true });
        return { index, info, bytes: stored, fromCache: true };
      }
      console.warn(`webbuild: stored ${info.file} is corrupt; fetching it again`);
      await loader.store.delete(url).catch(() => {});
    }

    for (let attempt = 1; ; attempt++) {
      // a retry must not be answered from the HTTP cache with the same bad bytes
      const bytes = await loader.download(url, info.file, info.nbytes, attempt > 1 ? { cache: "reload" } : {});
      throwIfAborted(loader.signal);
      if (await this.verify(info, bytes)) {
        progress.emit("verify", info.file, ++this.verified, total);
        if (await loader.put(url, info.file, bytes, true)) progress.emit("cache", info.file, ++this.cached, total, { fromCache: false });
        return { index, info, bytes, fromCache: false };
      }
      progress.bytesLoaded -= bytes.length;
      if (attempt >= 2) {
        throw new IntegrityError(info.file, bytes.length !== info.nbytes
          ? `${info.file} has ${bytes.length} bytes, tensor-cache.json says ${info.nbytes}`
          : undefined);
      }
      console.warn(`webbuild: ${info.file} failed sha256 verification; fetching it again`);
    }
  }

  /**
   * All shards in order, verified. Up to `concurrency` shards are fetched ahead of the consumer.
   * Stopping the iteration early abandons the prefetched ones.
   */
  async *shards(): AsyncGenerator<VerifiedShard> {
    const n = this.artifacts.tensorCache.shards.length;
    const window: Promise<VerifiedShard>[] = [];
    let next = 0;
    const fill = (): void => {
      while (next < n && window.length < this.loader.concurrency) {
        const p = this.shard(next++);
        p.catch(() => {});  // observed below; avoid unhandled-rejection noise for abandoned ones
        window.push(p);
      }
    };
    let finished = false;
    try {
      fill();
      for (let i = 0; i < n; i++) {
        const shard = await window.shift()!;
        fill();
        yield shard;
      }
      finished = true;
    } finally {
      if (!finished) this.abort.abort(new AbortedError("shard loading stopped"));
    }
  }

  /** Each tensor's bytes in stream order (see iterateTensors). */
  tensors(): AsyncGenerator<TensorBytes> {
    const cache = this.artifacts.tensorCache;
    return iterateTensors(cache.records, (async function* (loader: ShardLoader) {
      for await (const s of loader.shards()) yield s.bytes;
    })(this));
  }

  /** Download, verify and store every shard without keeping them (e.g. "download for offline"). */
  async downloadAll(): Promise<void> {
    for await (const _ of this.shards()) { /* dropped */ }
  }
}

/**
 * Yield every record's bytes from the shard byte stream. `shards` yields the shard buffers in
 * order (each shard's length sets where the next begins). A tensor inside one shard is a view into
 * it; one spanning shards is copied into a fresh buffer. Records are visited in byte_offset order.
 */
export async function* iterateTensors(records: readonly TensorRecord[],
                                      shards: AsyncIterable<Uint8Array> | Iterable<Uint8Array>): AsyncGenerator<TensorBytes> {
  const ordered = [...records].sort((a, b) => a.byte_offset - b.byte_offset || a.nbytes - b.nbytes);
  const it = Symbol.asyncIterator in shards ? shards[Symbol.asyncIterator]() : shards[Symbol.iterator]();
  let cur: Uint8Array = new Uint8Array(0);
  let curStart = 0;  // stream offset of cur[0]
  const advance = async (): Promise<void> => {
    const r = await it.next();
    if (r.done) throw new ModelLoadError("tensor-cache.json", "a tensor lies past the last shard", "rebuild the model folder");
    curStart += cur.length;
    cur = r.value;
  };
  try {
    for (const record of ordered) {
      const start = record.byte_offset, end = start + record.nbytes;
      if (record.nbytes === 0) { yield { record, bytes: new Uint8Array(0) }; continue; }
      while (start >= curStart + cur.length) await advance();
      if (start < curStart) {
        throw new ModelLoadError("tensor-cache.json", `tensor ${record.name} overlaps the previous one`, "rebuild the model folder");
      }
      if (end <= curStart + cur.length) {
        yield { record, bytes: cur.subarray(start - curStart, end - curStart) };
        continue;
      }
      const out = new Uint8Array(record.nbytes);
      let written = 0;
      for (;;) {
        const from = start + written - curStart;
        const piece = cur.subarray(from, Math.min(cur.length, from + record.nbytes - written));
        out.set(piece, written);
        written += piece.length;
        if (written === record.nbytes) break;
        await advance();
      }
      yield { record, bytes: out };
    }
  } finally {
    await it.return?.();
  }
}

/** True when every shard of the model is in the store (presence only; loading still verifies). */
export async function isModelCached(artifacts: ModelArtifacts, options: LoadOptions = {}): Promise<boolean> {
  const loader = new ShardLoader(artifacts, options);
  for (const info of artifacts.tensorCache.shards) {
    if (!(await loader.store.get(loader.shardUrl(info)).catch(() => undefined))) return false;
  }
  return true;
}

/** Remove the model's shards and metadata copies from the store. */
export async function deleteModelFromCache(artifacts: ModelArtifacts, options: LoadOptions = {}): Promise<void> {
  const loader = new ShardLoader(artifacts, options);
  const files = [...artifacts.tensorCache.shards.map((s) => s.file), "chat-config.json", artifacts.chatConfig.tensor_cache,
    "tokenizer.json", "tokenizer_config.json", artifacts.chatConfig.model_lib,
    ...Object.values(artifacts.chatConfig.model_libs)];
  for (const file of files) await loader.store.delete(new URL(file, artifacts.baseUrl).href);
}
