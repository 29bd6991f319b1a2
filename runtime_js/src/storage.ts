// Pluggable byte stores for downloaded shards: the Cache API (default), IndexedDB, the Origin
// Private File System, none, and an in-memory store (tests). Keys are the shards' absolute URLs.
// Stores throw the browser's own errors; artifacts.ts maps quota errors to StorageQuotaError.

import { InvalidRequestError } from "./errors.js";
import { sha256Hex } from "./sha256.js";

export type CacheKind = "cache" | "indexeddb" | "opfs" | "none";

export interface ShardStore {
  readonly kind: string;
  /** The stored bytes, or undefined when absent. */
  get(key: string): Promise<Uint8Array | undefined>;
  put(key: string, data: Uint8Array): Promise<void>;
  delete(key: string): Promise<void>;
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
