// Pluggable byte stores for downloaded shards: the Cache API (default), IndexedDB, the Origin
// Private File System, none, and an in-memory store (tests). Keys are the shards' absolute URLs.
// Stores throw the browser's own errors; artifacts.ts maps quota errors to StorageQuotaError.
// getModelCacheInfo / deleteCachedModel (public: the chat page's download size, "cached" and
// "Remove from cache") look at one model folder's entries in a store without loading the model.

import { parseChatConfig, parseTensorCache, type ChatConfig, type TensorCache } from "./config.js";
import { InvalidRequestError, ModelLoadError } from "./errors.js";
import { sha256Hex } from "./sha256.js";

export type CacheKind = "cache" | "indexeddb" | "opfs" | "none";

export interface ShardStore {
  readonly kind: string;
  /** The stored bytes, or undefined when absent. */
  get(key: string): Promise<Uint8Array | undefined>;
  put(key: string, data: Uint8Array): Promise<void>;
  delete(key: string): Promise<void>;
  /** Whether `key` is stored, without reading its bytes (stores without it are asked with `get`). */
  has?(key: string): Promise<boolean>;
}

/** An exact-size ArrayBuffer holding `data` (no copy when `data` already spans its whole buffer). */
function ownBuffer(data: Uint8Array): ArrayBuffer {
  if (data.byteOffset === 0 && data.byteLength === data.buffer.byteLength && data.buffer instanceof ArrayBuffer) {
    return data.buffer;
  }
  return data.slice().buffer;
}

export class NoStore implements ShardStore {
  readonly kind = "none";
  async get(): Promise<undefined> { return undefined; }
  async put(): Promise<void> {}
  async delete(): Promise<void> {}
  async has(): Promise<boolean> { return false; }
}

/** In-memory store; counts operations (for tests). */
export class MemoryStore implements ShardStore {
  readonly kind = "memory";
  readonly data = new Map<string, Uint8Array>();
  gets = 0;
  puts = 0;
  deletes = 0;
  async get(key: string): Promise<Uint8Array | undefined> {
    this.gets++;
    const v = this.data.get(key);
    return v && v.slice();
  }
  async put(key: string, data: Uint8Array): Promise<void> {
    this.puts++;
    this.data.set(key, data.slice());
  }
  async delete(key: string): Promise<void> {
    this.deletes++;
    this.data.delete(key);
  }
  async has(key: string): Promise<boolean> {
    return this.data.has(key);
  }
}

/** The Cache API (`caches`), one cache named `name`. */
export class CacheApiStore implements ShardStore {
  readonly kind = "cache";
  private cache: Promise<Cache> | null = null;
  constructor(private readonly name = "webbuild") {}
  private open(): Promise<Cache> {
    this.cache ??= globalThis.caches.open(this.name);
    return this.cache;
  }
  async get(key: string): Promise<Uint8Array | undefined> {
    const response = await (await this.open()).match(key);
    return response ? new Uint8Array(await response.arrayBuffer()) : undefined;
  }
  async put(key: string, data: Uint8Array): Promise<void> {
    const response = new Response(ownBuffer(data), {
      headers: { "content-type": "application/octet-stream", "content-length": String(data.byteLength) },
    });
    await (await this.open()).put(key, response);
  }
  async delete(key: string): Promise<void> {
    await (await this.open()).delete(key);
  }
  async has(key: string): Promise<boolean> {
    return (await (await this.open()).match(key)) !== undefined;
  }
}

function request<T>(req: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error ?? new Error("IndexedDB request failed"));
  });
}

/** IndexedDB: database `name`, object store "files", values are ArrayBuffers. */
export class IndexedDBStore implements ShardStore {
  readonly kind = "indexeddb";
  private db: Promise<IDBDatabase> | null = null;
  constructor(private readonly name = "webbuild") {}
  private open(): Promise<IDBDatabase> {
    this.db ??= new Promise((resolve, reject) => {
      const req = globalThis.indexedDB.open(this.name, 1);
      req.onupgradeneeded = () => req.result.createObjectStore("files");
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => reject(req.error ?? new Error(`IndexedDB ${this.name} failed to open`));
      req.onblocked = () => reject(new Error(`IndexedDB ${this.name} is blocked by another tab`));
    });
    return this.db;
  }
  private async run<T>(mode: IDBTransactionMode, op: (s: IDBObjectStore) => IDBRequest<T>): Promise<T> {
    const tx = (await this.open()).transaction("files", mode);
    const done = new Promise<void>((resolve, reject) => {
      tx.oncomplete = () => resolve();
      tx.onerror = () => reject(tx.error ?? new Error("IndexedDB transaction failed"));
      tx.onabort = () => reject(tx.error ?? new Error("IndexedDB transaction aborted"));
    });
    const result = await request(op(tx.objectStore("files")));
    await done;
    return result;
  }
  async get(key: string): Promise<Uint8Array | undefined> {
    const v = await this.run("readonly", (s) => s.get(key) as IDBRequest<ArrayBuffer | undefined>);
    return v ? new Uint8Array(v) : undefined;
  }
  async put(key: string, data: Uint8Array): Promise<void> {
    await this.run("readwrite", (s) => s.put(ownBuffer(data), key));
  }
  async delete(key: string): Promise<void> {
    await this.run("readwrite", (s) => s.delete(key));
  }
  async has(key: string): Promise<boolean> {
    return (await this.run("readonly", (s) => s.count(key))) > 0;
  }
}

/** The Origin Private File System: directory `name`, one file per key (named by the key's sha256). */
export class OPFSStore implements ShardStore {
  readonly kind = "opfs";
  private dir: Promise<FileSystemDirectoryHandle> | null = null;
  constructor(private readonly name = "webbuild") {}
  private open(): Promise<FileSystemDirectoryHandle> {
    this.dir ??= globalThis.navigator.storage.getDirectory().then((root) => root.getDirectoryHandle(this.name, { create: true }));
    return this.dir;
  }
  private async fileName(key: string): Promise<string> {
    return (await sha256Hex(new TextEncoder().encode(key))) + ".bin";
  }
  async get(key: string): Promise<Uint8Array | undefined> {
    try {
      const handle = await (await this.open()).getFileHandle(await this.fileName(key));
      return new Uint8Array(await (await handle.getFile()).arrayBuffer());
    } catch (err) {
      if ((err as { name?: string }).name === "NotFoundError") return undefined;
      throw err;
    }
  }
  async put(key: string, data: Uint8Array): Promise<void> {
    const handle = await (await this.open()).getFileHandle(await this.fileName(key), { create: true });
    if (typeof handle.createWritable === "function") {
      const writable = await handle.createWritable();
      try {
        await writable.write(ownBuffer(data));
        await writable.close();
      } catch (err) {
        await writable.abort().catch(() => {});
        throw err;
      }
      return;
    }
    // Safari before createWritable: synchronous access handles (dedicated workers only)
    const sync = await (handle as unknown as {
      createSyncAccessHandle(): Promise<{ truncate(n: number): void; write(d: Uint8Array, o: { at: number }): number; flush(): void; close(): void }>;
    }).createSyncAccessHandle();
    try {
      sync.truncate(0);
      sync.write(data, { at: 0 });
      sync.flush();
    } finally {
      sync.close();
    }
  }
  async delete(key: string): Promise<void> {
    try {
      await (await this.open()).removeEntry(await this.fileName(key));
    } catch (err) {
      if ((err as { name?: string }).name !== "NotFoundError") throw err;
    }
  }
  async has(key: string): Promise<boolean> {
    try {
      await (await this.open()).getFileHandle(await this.fileName(key));
      return true;
    } catch (err) {
      if ((err as { name?: string }).name === "NotFoundError") return false;
      throw err;
    }
  }
}

/**
 * The store for a cache kind. Falls back to no store (with a console warning) when the browser
 * lacks the API (e.g. the Cache API on an insecure origin).
 */
export function openStore(kind: CacheKind = "cache", name = "webbuild"): ShardStore {
  const g = globalThis as { caches?: unknown; indexedDB?: unknown; navigator?: { storage?: { getDirectory?: unknown } } };
  const checks: Record<CacheKind, () => boolean> = {
    cache: () => typeof g.caches === "object" && g.caches !== null,
    indexeddb: () => typeof g.indexedDB === "object" && g.indexedDB !== null,
    opfs: () => typeof g.navigator?.storage?.getDirectory === "function",
    none: () => true,
  };
  const available = Object.hasOwn(checks, kind) ? checks[kind] : undefined;
  if (!available) throw new InvalidRequestError("cache", `must be "cache", "indexeddb", "opfs" or "none", not ${JSON.stringify(kind)}`);
  if (!available()) {
    console.warn(`webbuild: cache "${kind}" is not available here; shards will not be stored`);
    return new NoStore();
  }
  switch (kind) {
    case "cache": return new CacheApiStore(name);
    case "indexeddb": return new IndexedDBStore(name);
    case "opfs": return new OPFSStore(name);
    default: return new NoStore();
  }
}

/** What getModelCacheInfo says about one model folder and one store. */
export interface ModelCacheInfo {
  /** The parameter shards' bytes: what loading the model downloads when nothing is stored. */
  downloadBytes: number;
  /** Parameter shards in the folder. */
  shards: number;
  /** Shards present in the store (presence only: loading still verifies them). */
  cachedShards: number;
  /** Their bytes (from tensor-cache.json). */
  cachedBytes: number;
  /** Every shard is present: loading downloads no shard. */
  cached: boolean;
}

/** Options of getModelCacheInfo and deleteCachedModel. */
export interface ModelCacheOptions {
  /** The store, as in createEngine's `cache` (default "cache"). */
  cache?: CacheKind;
  /** A store to use instead of `cache` (tests). */
  store?: ShardStore;
  /** Fetches chat-config.json and tensor-cache.json (default globalThis.fetch). */
  fetch?: (url: string, init?: RequestInit) => Promise<Response>;
}

/** The model folder URL normalized to end in "/" (relative URLs resolve against the page). */
export function modelBaseUrl(modelUrl: string): string {
  const base = (globalThis as { location?: { href?: string } }).location?.href;
  let url: string;
  try {
    url = base ? new URL(modelUrl, base).href : new URL(modelUrl).href;
  } catch {
    throw new ModelLoadError(modelUrl, "not a valid URL", "pass the URL of a model folder built by webbuild");
  }
  return url.endsWith("/") ? url : url + "/";
}

/** A metadata file as JSON: from the network, else (offline, 5xx) the copy a load stored. Stores nothing. */
async function metadataJson(url: string, store: ShardStore, fetchFn: ModelCacheOptions["fetch"]): Promise<unknown> {
  let bytes: Uint8Array | undefined;
  let failure: unknown;
  try {
    const response = await (fetchFn ?? globalThis.fetch.bind(globalThis))(url);
    if (response.ok) bytes = new Uint8Array(await response.arrayBuffer());
    else if (response.status < 500) {
      throw new ModelLoadError(url, `HTTP ${response.status}`, "check the model URL: the file is not in the model folder");
    } else failure = new Error(`HTTP ${response.status}`);
  } catch (err) {
    if (err instanceof ModelLoadError) throw err;
    failure = err;
  }
  bytes ??= await store.get(url).catch(() => undefined);
  if (!bytes) {
    throw new ModelLoadError(url, `network error (${(failure as Error)?.message ?? failure})`,
      "check the network connection", { cause: failure });
  }
  try {
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch (err) {
    throw new ModelLoadError(url, `not valid JSON (${(err as Error).message})`, "check the model URL", { cause: err });
  }
}

async function modelMetadata(modelUrl: string, options: ModelCacheOptions) {
  const base = modelBaseUrl(modelUrl);
  const store = options.store ?? openStore(options.cache ?? "cache");
  const configUrl = new URL("chat-config.json", base).href;
  const config: ChatConfig = parseChatConfig(await metadataJson(configUrl, store, options.fetch), configUrl);
  const cacheUrl = new URL(config.tensor_cache, base).href;
  const tensors: TensorCache = parseTensorCache(await metadataJson(cacheUrl, store, options.fetch), cacheUrl);
  return { base, store, config, tensors };
}

async function present(store: ShardStore, key: string): Promise<boolean> {
  try {
    return store.has ? await store.has(key) : (await store.get(key)) !== undefined;
  } catch {
    return false;
  }
}

/**
 * A model folder's download size and how much of it the store (`options.cache`) holds, without
 * loading the model: reads its chat-config.json and tensor-cache.json (from the network, or the
 * stored copies when offline) and looks each shard up in the store.
 */
export async function getModelCacheInfo(modelUrl: string, options: ModelCacheOptions = {}): Promise<ModelCacheInfo> {
  const { base, store, tensors } = await modelMetadata(modelUrl, options);
  const found = await Promise.all(tensors.shards.map((s) => present(store, new URL(s.file, base).href)));
  const cachedShards = found.filter(Boolean).length;
  const cachedBytes = tensors.shards.reduce((sum, s, i) => sum + (found[i] ? s.nbytes : 0), 0);
  const downloadBytes = tensors.shards.reduce((sum, s) => sum + s.nbytes, 0);
  return { downloadBytes, shards: tensors.shards.length, cachedShards, cachedBytes, cached: cachedShards === tensors.shards.length };
}

/**
 * Remove a model folder's entries from the store (`options.cache`): its parameter shards and the
 * copies of its metadata files and compiled modules. The next load downloads them again. An engine
 * already loaded keeps running (its weights are in memory).
 */
export async function deleteCachedModel(modelUrl: string, options: ModelCacheOptions = {}): Promise<void> {
  const { base, store, config, tensors } = await modelMetadata(modelUrl, options);
  // the metadata copies last: a removal cut short can still list the shards offline
  const files = new Set([...tensors.shards.map((s) => s.file), ...config.tokenizer_files, config.model_lib,
    ...Object.values(config.model_libs), config.tensor_cache, "chat-config.json"]);
  for (const file of files) await store.delete(new URL(file, base).href);
}
