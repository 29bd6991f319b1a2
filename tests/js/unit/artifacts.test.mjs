import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { test } from "node:test";

import {
  MAX_RESUMES, ShardLoader, deleteModelFromCache, isModelCached, iterateTensors, loadModelArtifacts, loadModelLib,
  modelBaseUrl,
} from "../../../dist/modules/artifacts.js";
import { AbortedError, IntegrityError, ModelLoadError, StorageQuotaError } from "../../../dist/modules/errors.js";
import { MemoryStore, openStore } from "../../../dist/modules/storage.js";

const BASE = "https://models.example/smol/";

/** A synthetic model folder: tensors (16-byte aligned) in one stream cut into small shards. */
function makeFolder({ shardBytes = 64, sizes = [10, 40, 100, 16, 0, 200, 7, 33] } = {}) {
  let offset = 0;
  const records = sizes.map((nbytes, i) => {
    offset += -offset & 15;
    const r = { name: `t${i}`, shape: [nbytes], dtype: "uint8", byte_offset: offset, nbytes };
    offset += nbytes;
    return r;
  });
  const stream = new Uint8Array(offset);
  for (let i = 0; i < stream.length; i++) stream[i] = (i * 7 + 3) & 255;
  const shards = [];
  for (let start = 0, k = 0; start < stream.length; start += shardBytes, k++) {
    const bytes = stream.slice(start, start + shardBytes);
    shards.push({ file: `params_shard_${k}.bin`, nbytes: bytes.length, sha256: createHash("sha256").update(bytes).digest("hex"), bytes });
  }
  const tensorCache = {
    format: "webbuild-tensor-cache/1", metadata: { quantization: "q0f32" }, total_bytes: stream.length,
    shards: shards.map(({ file, nbytes, sha256 }) => ({ file, nbytes, sha256 })), records,
  };
  const chatConfig = {
    format: "webbuild-chat-config/1", model_id: "smol-q4f32_1", architecture: "llama", quantization: "q4f32_1", target: "webgpu",
    model_lib: "model.wasm", tensor_cache: "tensor-cache.json", context_window_size: 2048, prefill_chunk_size: 512,
    vocab_size: 300, tokenizer_files: ["tokenizer.json", "tokenizer_config.json"], bos_token_id: 1, eos_token_ids: [2],
    stop_token_ids: [2], stop_strings: ["<|im_end|>"], add_bos_token: false, chat_template: "{{ messages[0].content }}",
    sampling: { temperature: 0.7, top_p: 0.95, repetition_penalty: 1, frequency_penalty: 0, presence_penalty: 0 },
    webgpu: { required_features: [], required_limits: {} }, memory: {},
  };
  const files = new Map([
    ["chat-config.json", new TextEncoder().encode(JSON.stringify(chatConfig))],
    ["tensor-cache.json", new TextEncoder().encode(JSON.stringify(tensorCache))],
    ["tokenizer.json", new TextEncoder().encode(JSON.stringify({ model: { type: "BPE" } }))],
    ["tokenizer_config.json", new TextEncoder().encode("{}")],
    ["model.wasm", new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0])],
    ...shards.map((s) => [s.file, s.bytes]),
  ]);
  return { stream, records, shards, files };
}

/** A fake fetch serving `files` under BASE; counts requests; can corrupt / fail / delay. */
function fakeFetch(files, { corrupt = {}, fail = {}, delayMs = 0, offline = false } = {}) {
  const log = [];
  let inflight = 0;
  const f = async (url, init = {}) => {
    const file = url.startsWith(BASE) ? url.slice(BASE.length) : url;
    log.push({ file, init });
    if (offline) throw new TypeError("Failed to fetch");
    if (fail[file] > 0) { fail[file]--; throw new TypeError("network down"); }
    const shard = file.startsWith("params_shard_");
    if (shard) inflight++;
    f.maxInflight = Math.max(f.maxInflight, inflight);  // shard fetches only
    try {
      if (delayMs) await new Promise((r) => setTimeout(r, delayMs));
      if (init.signal?.aborted) throw new DOMException("aborted", "AbortError");
      const data = files.get(file);
      if (!data) return new Response("not found", { status: 404, statusText: "Not Found" });
      let body = data.slice();
      if (corrupt[file] > 0) { corrupt[file]--; body[0] ^= 0xff; }
      return new Response(body, { headers: { "content-length": String(body.length) } });
    } finally {
      if (shard) inflight--;
    }
  };
  f.log = log;
  f.maxInflight = 0;
  f.count = (file) => log.filter((e) => e.file === file).length;
  f.shardRequests = () => log.filter((e) => e.file.startsWith("params_shard_")).length;
  return f;
}

async function loadAll(folder, options) {
  const artifacts = await loadModelArtifacts(BASE, options);
  const loader = new ShardLoader(artifacts, options);
  const tensors = [];
  for await (const { record, bytes } of loader.tensors()) tensors.push({ name: record.name, bytes: bytes.slice() });
  return { artifacts, tensors };
}

function expectTensors(folder, tensors) {
  assert.equal(tensors.length, folder.records.length);
  for (const [i, r] of folder.records.entries()) {
    assert.equal(tensors[i].name, r.name);
    assert.deepEqual(tensors[i].bytes, folder.stream.subarray(r.byte_offset, r.byte_offset + r.nbytes), r.name);
  }
}

test("modelBaseUrl adds the trailing slash; bad URLs are model-load errors", () => {
  assert.equal(modelBaseUrl("https://a.b/m"), "https://a.b/m/");
  assert.equal(modelBaseUrl("https://a.b/m/"), "https://a.b/m/");
  assert.throws(() => modelBaseUrl("not a url"), ModelLoadError);
});

test("first load fetches every shard once, verifies, stores; tensors are exact", async () => {
  const folder = makeFolder();
  const fetch = fakeFetch(folder.files);
  const store = new MemoryStore();
  const events = [];
  const { artifacts, tensors } = await loadAll(folder, { fetch, store, onProgress: (e) => events.push(e) });
  assert.equal(artifacts.baseUrl, BASE);
  assert.equal(artifacts.chatConfig.model_id, "smol-q4f32_1");
  assert.deepEqual(artifacts.tokenizerConfig, {});
  expectTensors(folder, tensors);
  for (const s of folder.shards) assert.equal(fetch.count(s.file), 1, s.file);
  for (const s of folder.shards) assert.ok(store.data.has(BASE + s.file));
  const n = folder.shards.length;
  for (const stage of ["verify", "cache"]) {
    const ev = events.filter((e) => e.stage === stage);
    assert.equal(ev.length, n, stage);
    assert.equal(ev.at(-1).loaded, n);
    assert.equal(ev.at(-1).total, n);
    assert.deepEqual(new Set(ev.map((e) => e.file)), new Set(folder.shards.map((s) => s.file)));
  }
  const fetches = events.filter((e) => e.stage === "fetch" && e.file === "params_shard_0.bin");
  assert.equal(fetches.at(-1).loaded, 64);
  assert.equal(fetches.at(-1).total, 64);
  const last = events.filter((e) => e.stage === "cache").at(-1);
  assert.equal(last.bytesLoaded, folder.stream.length);
  assert.equal(last.bytesTotal, folder.stream.length);
});

test("second load reads shards from the store without network", async () => {
  const folder = makeFolder();
  const store = new MemoryStore();
  await loadAll(folder, { fetch: fakeFetch(folder.files), store });
  const fetch = fakeFetch(folder.files);
  const events = [];
  const { tensors } = await loadAll(folder, { fetch, store, onProgress: (e) => events.push(e) });
  expectTensors(folder, tensors);
  assert.equal(fetch.shardRequests(), 0);
  const cached = events.filter((e) => e.stage === "cache");
  assert.equal(cached.length, folder.shards.length);
  assert.ok(cached.every((e) => e.fromCache === true));
  assert.equal(events.filter((e) => e.stage === "fetch" && e.file.startsWith("params")).length, 0);
});

test("a shard corrupted once is fetched once more (bypassing the HTTP cache)", async () => {
  const folder = makeFolder();
  const fetch = fakeFetch(folder.files, { corrupt: { "params_shard_2.bin": 1 } });
  const store = new MemoryStore();
  const { tensors } = await loadAll(folder, { fetch, store });
  expectTensors(folder, tensors);
  assert.equal(fetch.count("params_shard_2.bin"), 2);
  assert.equal(fetch.count("params_shard_1.bin"), 1);
  const retry = fetch.log.filter((e) => e.file === "params_shard_2.bin")[1];
  assert.equal(retry.init.cache, "reload");
  assert.deepEqual(store.data.get(BASE + "params_shard_2.bin"), folder.shards[2].bytes);
});

test("a shard corrupted twice throws IntegrityError naming the file", async () => {
  const folder = makeFolder();
  const fetch = fakeFetch(folder.files, { corrupt: { "params_shard_3.bin": 2 } });
  const store = new MemoryStore();
  await assert.rejects(loadAll(folder, { fetch, store }), (err) => {
    assert.ok(err instanceof IntegrityError);
    assert.equal(err.code, "integrity");
    assert.equal(err.file, "params_shard_3.bin");
    return true;
  });
  assert.equal(fetch.count("params_shard_3.bin"), 2);
  assert.ok(!store.data.has(BASE + "params_shard_3.bin"));
});

test("a truncated shard also fails integrity", async () => {
  const folder = makeFolder();
  folder.files.set("params_shard_0.bin", folder.files.get("params_shard_0.bin").slice(0, 10));
  await assert.rejects(loadAll(folder, { fetch: fakeFetch(folder.files), store: new MemoryStore() }),
    (err) => err instanceof IntegrityError && err.file === "params_shard_0.bin");
});

test("a corrupt stored shard is evicted and fetched again", async () => {
  const folder = makeFolder();
  const store = new MemoryStore();
  await loadAll(folder, { fetch: fakeFetch(folder.files), store });
  const bad = store.data.get(BASE + "params_shard_1.bin");
  bad[5] ^= 1;
  const fetch = fakeFetch(folder.files);
  const { tensors } = await loadAll(folder, { fetch, store });
  expectTensors(folder, tensors);
  assert.equal(fetch.shardRequests(), 1);
  assert.equal(fetch.count("params_shard_1.bin"), 1);
  assert.deepEqual(store.data.get(BASE + "params_shard_1.bin"), folder.shards[1].bytes);
});

test("QuotaExceededError from the store becomes StorageQuotaError", async () => {
  const folder = makeFolder();
  const store = new MemoryStore();
  store.put = async (key) => {
    if (key.includes("params_shard_")) throw new DOMException("quota", "QuotaExceededError");
  };
  await assert.rejects(loadAll(folder, { fetch: fakeFetch(folder.files), store }),
    (err) => err instanceof StorageQuotaError && err.code === "quota-exceeded" && err.file === "params_shard_0.bin");
});

test("other store failures only warn; loading goes on", async () => {
  const folder = makeFolder();
  const store = new MemoryStore();
  store.put = async () => { throw new TypeError("Request scheme 'blob' is unsupported"); };
  store.get = async () => { throw new Error("broken"); };
  const warn = console.warn;
  console.warn = () => {};
  try {
    const { tensors } = await loadAll(folder, { fetch: fakeFetch(folder.files), store });
    expectTensors(folder, tensors);
  } finally {
    console.warn = warn;
  }
});

test("at most `concurrency` shard fetches are in flight", async () => {
  const folder = makeFolder({ shardBytes: 16, sizes: [300, 20, 50] });
  assert.ok(folder.shards.length > 12);
  for (const concurrency of [1, 4]) {
    const fetch = fakeFetch(folder.files, { delayMs: 5 });
    const { tensors } = await loadAll(folder, { fetch, store: new MemoryStore(), concurrency });
    expectTensors(folder, tensors);
    assert.equal(fetch.maxInflight, concurrency);
  }
});

test("missing files and bad documents are model-load errors naming the URL", async () => {
  const folder = makeFolder();
  const noConfig = new Map(folder.files);
  noConfig.delete("chat-config.json");
  await assert.rejects(loadModelArtifacts(BASE, { fetch: fakeFetch(noConfig), store: new MemoryStore() }),
    (err) => err instanceof ModelLoadError && err.url === BASE + "chat-config.json" && err.details.status === 404);
  const html = new Map(folder.files);
  html.set("chat-config.json", new TextEncoder().encode("<!doctype html>"));
  await assert.rejects(loadModelArtifacts(BASE, { fetch: fakeFetch(html), store: new MemoryStore() }),
    (err) => err.code === "model-load" && err.url === BASE + "chat-config.json");
  const wrongFormat = new Map(folder.files);
  wrongFormat.set("tensor-cache.json", new TextEncoder().encode(JSON.stringify({ format: "tvmjs", records: [] })));
  await assert.rejects(loadModelArtifacts(BASE, { fetch: fakeFetch(wrongFormat), store: new MemoryStore() }),
    (err) => err.code === "model-load" && err.url === BASE + "tensor-cache.json");
  const noShard = new Map(folder.files);
  noShard.delete("params_shard_1.bin");
  await assert.rejects(loadAll(folder, { fetch: fakeFetch(noShard), store: new MemoryStore() }),
    (err) => err instanceof ModelLoadError && err.url === BASE + "params_shard_1.bin");
});

test("a network error is retried once", async () => {
  const folder = makeFolder();
  const fetch = fakeFetch(folder.files, { fail: { "params_shard_0.bin": 1 } });
  const { tensors } = await loadAll(folder, { fetch, store: new MemoryStore() });
  expectTensors(folder, tensors);
  assert.equal(fetch.count("params_shard_0.bin"), 2);
  const down = fakeFetch(folder.files, { fail: { "params_shard_0.bin": 2 } });
  await assert.rejects(loadAll(folder, { fetch: down, store: new MemoryStore() }),
    (err) => err instanceof ModelLoadError && err.url === BASE + "params_shard_0.bin");
});

test("offline: metadata and model.wasm come from the store, shards too", async () => {
  const folder = makeFolder();
  const store = new MemoryStore();
  const first = await loadModelArtifacts(BASE, { fetch: fakeFetch(folder.files), store });
  await loadModelLib(first, { fetch: fakeFetch(folder.files), store });
  await new ShardLoader(first, { fetch: fakeFetch(folder.files), store }).downloadAll();
  assert.ok(await isModelCached(first, { store }));
  const warn = console.warn;
  console.warn = () => {};
  try {
    const offline = fakeFetch(folder.files, { offline: true });
    const { tensors } = await loadAll(folder, { fetch: offline, store });
    expectTensors(folder, tensors);
    const artifacts = await loadModelArtifacts(BASE, { fetch: offline, store });
    assert.deepEqual(await loadModelLib(artifacts, { fetch: offline, store }), folder.files.get("model.wasm"));
  } finally {
    console.warn = warn;
  }
  await deleteModelFromCache(first, { store });
  assert.equal(store.data.size, 0);
  assert.ok(!(await isModelCached(first, { store })));
});

test("abort stops loading with AbortedError", async () => {
  const folder = makeFolder({ shardBytes: 16 });
  const controller = new AbortController();
  const fetch = fakeFetch(folder.files, { delayMs: 5 });
  const artifacts = await loadModelArtifacts(BASE, { fetch, store: new MemoryStore() });
  const loader = new ShardLoader(artifacts, { fetch, store: new MemoryStore(), signal: controller.signal });
  let seen = 0;
  await assert.rejects((async () => {
    for await (const _ of loader.tensors()) if (++seen === 2) controller.abort();
  })(), (err) => err instanceof AbortedError && err.code === "aborted");
  const before = fetch.shardRequests();
  await new Promise((r) => setTimeout(r, 30));
  assert.equal(fetch.shardRequests(), before);
});

test("breaking out of tensors() early cancels the prefetch", async () => {
  const folder = makeFolder({ shardBytes: 16 });
  const fetch = fakeFetch(folder.files, { delayMs: 2 });
  const artifacts = await loadModelArtifacts(BASE, { fetch, store: new MemoryStore() });
  const loader = new ShardLoader(artifacts, { fetch, store: new MemoryStore() });
  for await (const _ of loader.tensors()) break;
  await new Promise((r) => setTimeout(r, 30));
  assert.ok(fetch.shardRequests() <= 1 + 4, `${fetch.shardRequests()} shard requests`);
});

test("iterateTensors: views inside a shard, copies across shards (even several)", async () => {
  const folder = makeFolder({ shardBytes: 32, sizes: [8, 16, 100, 4, 0, 12] });
  const buffers = folder.shards.map((s) => s.bytes);
  const out = [];
  for await (const t of iterateTensors(folder.records, buffers)) out.push(t);
  assert.equal(out.length, folder.records.length);
  for (const { record, bytes } of out) {
    assert.deepEqual(bytes, folder.stream.subarray(record.byte_offset, record.byte_offset + record.nbytes));
  }
  const shardOf = (off) => Math.floor(off / 32);
  for (const { record, bytes } of out) {
    if (record.nbytes === 0) continue;
    const spans = shardOf(record.byte_offset) !== shardOf(record.byte_offset + record.nbytes - 1);
    const inShard = buffers.some((b) => b.buffer === bytes.buffer);
    assert.equal(inShard, !spans, record.name);
  }
  // records out of order are visited in stream order
  const shuffled = [...folder.records].reverse();
  const names = [];
  for await (const t of iterateTensors(shuffled, buffers)) names.push(t.record.name);
  assert.deepEqual(names, folder.records.map((r) => r.name));
  // a record past the end of the stream
  const bad = [{ name: "x", shape: [4], dtype: "uint8", byte_offset: folder.stream.length + 16, nbytes: 4 }];
  await assert.rejects((async () => { for await (const _ of iterateTensors(bad, buffers)); })(), ModelLoadError);
});

test("iterateTensors holds only the current shard (pulls shards lazily)", async () => {
  const folder = makeFolder({ shardBytes: 32, sizes: [20, 20, 20, 20, 20, 20] });
  let pulled = 0;
  function* shards() { for (const s of folder.shards) { pulled++; yield s.bytes; } }
  const it = iterateTensors(folder.records, shards());
  await it.next();  // t0 at 0..20: shard 0 only
  assert.equal(pulled, 1);
  await it.next();  // t1 at 32..52: shard 1 only
  assert.equal(pulled, 2);
  await it.return();
});

test("openStore: unknown kind is an invalid-request error; missing APIs fall back to no store", () => {
  assert.throws(() => openStore("floppy"), (e) => e.code === "invalid-request" && e.field === "cache");
  const warn = console.warn;
  console.warn = () => {};
  try {
    assert.equal(openStore("indexeddb").kind, "none");  // node has no indexedDB
    assert.equal(openStore("none").kind, "none");
  } finally {
    console.warn = warn;
  }
});

/**
 * A fetch serving `files` that honours `Range: bytes=N-` (206 + Content-Range) unless `ignoreRange`,
 * and misbehaves on the first `times` requests of `file`: "stall" sends `at` bytes then nothing,
 * "drop" sends `at` bytes then breaks off, "hang" never answers (until aborted).
 */
function flakyFetch(files, { file, mode, at = 0, times = 1, ignoreRange = false }) {
  const log = [];
  const f = async (url, init = {}) => {
    const name = url.slice(BASE.length);
    const range = new Headers(init.headers).get("range");
    log.push({ name, range });
    const data = files.get(name);
    if (!data) return new Response("not found", { status: 404 });
    const bad = name === file && times > 0;
    if (bad) times--;
    if (bad && mode === "hang") {
      return new Promise((_, reject) => init.signal?.addEventListener("abort", () => reject(
        new DOMException("aborted", "AbortError")), { once: true }));
    }
    const start = range && !ignoreRange ? Number(/bytes=(\d+)-/.exec(range)[1]) : 0;
    const body = data.slice(start);
    const headers = { "content-length": String(body.length) };
    if (start > 0) headers["content-range"] = `bytes ${start}-${data.length - 1}/${data.length}`;
    if (!bad) return new Response(body, { status: start > 0 ? 206 : 200, headers });
    let sent = false;
    const stream = new ReadableStream({
      pull(controller) {  // the first `at` bytes, then a break ("drop") or nothing more ("stall")
        if (!sent) {
          sent = true;
          controller.enqueue(body.slice(0, at));
        } else if (mode === "drop") {
          controller.error(new TypeError("network connection lost"));
        }
      },
    }, { highWaterMark: 0 });
    return new Response(stream, { status: start > 0 ? 206 : 200, headers });
  };
  f.log = log;
  f.requests = (name) => log.filter((e) => e.name === name);
  return f;
}

for (const mode of ["stall", "drop"]) {
  test(`a shard download that ${mode === "stall" ? "stalls" : "drops"} mid-way resumes with a Range request`, async () => {
    const folder = makeFolder();
    const file = folder.shards[1].file;
    const fetch = flakyFetch(folder.files, { file, mode, at: 20 });
    const { tensors } = await loadAll(folder, { fetch, store: new MemoryStore(), stallTimeoutMs: 50 });
    expectTensors(folder, tensors);
    assert.deepEqual(fetch.requests(file).map((e) => e.range), [null, "bytes=20-"]);
  });
}

test("a server that ignores Range sends the shard again from byte 0, and the load succeeds", async () => {
  const folder = makeFolder();
  const file = folder.shards[0].file;
  const fetch = flakyFetch(folder.files, { file, mode: "drop", at: 30, ignoreRange: true });
  const { tensors } = await loadAll(folder, { fetch, store: new MemoryStore(), stallTimeoutMs: 50 });
  expectTensors(folder, tensors);
  assert.equal(fetch.requests(file).length, 2);
});

test("a shard that keeps stalling is abandoned after MAX_RESUMES resumes with a model-load error", async () => {
  const folder = makeFolder();
  const file = folder.shards[2].file;
  const fetch = flakyFetch(folder.files, { file, mode: "stall", at: 5, times: 100 });
  const store = new MemoryStore();
  await assert.rejects(loadAll(folder, { fetch, store, stallTimeoutMs: 20 }), (err) => {
    assert.ok(err instanceof ModelLoadError);
    assert.equal(err.code, "model-load");
    return true;
  });
  assert.equal(fetch.requests(file).length, MAX_RESUMES + 1);
  assert.equal(await store.get(BASE + file), undefined);  // nothing half-downloaded is stored
});

test("a request that is never answered is abandoned after the stall timeout and tried again", async () => {
  const folder = makeFolder();
  const fetch = flakyFetch(folder.files, { file: "chat-config.json", mode: "hang" });
  const { tensors } = await loadAll(folder, { fetch, store: new MemoryStore(), stallTimeoutMs: 50 });
  expectTensors(folder, tensors);
  assert.equal(fetch.requests("chat-config.json").length, 2);
});

test("the caller's abort during a stalled shard is an abort, not a resume", async () => {
  const folder = makeFolder();
  const file = folder.shards[0].file;
  const fetch = flakyFetch(folder.files, { file, mode: "stall", at: 10, times: 100 });
  const controller = new AbortController();
  setTimeout(() => controller.abort(), 30);
  await assert.rejects(loadAll(folder, { fetch, store: new MemoryStore(), stallTimeoutMs: 10_000,
                                         signal: controller.signal }), AbortedError);
});
