// getModelCacheInfo / deleteCachedModel (runtime_js/src/storage.ts): a model folder's download size,
// what a store holds of it, and removing it, without loading the model.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { test } from "node:test";

import { ShardLoader, loadModelArtifacts, loadModelLib } from "../../../dist/modules/artifacts.js";
import { ModelLoadError } from "../../../dist/modules/errors.js";
import { MemoryStore, deleteCachedModel, getModelCacheInfo } from "../../../dist/modules/storage.js";

const BASE = "https://models.example/smol/";
const SHARD_SIZES = [64, 64, 50];

/** A model folder of three shards (64, 64 and 50 bytes) as a file map. */
function makeFolder() {
  const shards = SHARD_SIZES.map((n, k) => {
    const bytes = new Uint8Array(n).map((_, i) => (i * 13 + k) & 255);
    return { file: `params_shard_${k}.bin`, nbytes: n, sha256: createHash("sha256").update(bytes).digest("hex"), bytes };
  });
  let offset = 0;
  const records = shards.map((s, i) => ({ name: `t${i}`, shape: [s.nbytes], dtype: "uint8", byte_offset: (offset += s.nbytes) - s.nbytes, nbytes: s.nbytes }));
  const tensorCache = {
    format: "webbuild-tensor-cache/1", metadata: {}, total_bytes: offset,
    shards: shards.map(({ file, nbytes, sha256 }) => ({ file, nbytes, sha256 })), records,
  };
  const chatConfig = {
    format: "webbuild-chat-config/1", model_id: "smol", architecture: "llama", quantization: "q0f32", target: "webgpu",
    model_lib: "model.wasm", model_libs: { webgpu: "model.wasm", wasm: "model-cpu.wasm" }, tensor_cache: "tensor-cache.json",
    context_window_size: 2048, prefill_chunk_size: 512, vocab_size: 300, tokenizer_files: ["tokenizer.json", "tokenizer_config.json"],
    bos_token_id: 1, eos_token_ids: [2], stop_token_ids: [2], stop_strings: [], add_bos_token: false, chat_template: null,
    sampling: { temperature: 0.7, top_p: 0.95, repetition_penalty: 1, frequency_penalty: 0, presence_penalty: 0 },
    webgpu: { required_features: [], required_limits: {} }, memory: {},
  };
  const json = (v) => new TextEncoder().encode(JSON.stringify(v));
  return new Map([
    ["chat-config.json", json(chatConfig)], ["tensor-cache.json", json(tensorCache)],
    ["tokenizer.json", json({ model: { type: "BPE" } })], ["tokenizer_config.json", json({})],
    ["model.wasm", new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0])], ["model-cpu.wasm", new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0])],
    ...shards.map((s) => [s.file, s.bytes]),
  ]);
}

/** fetch serving `files` under BASE (or failing: offline); logs the files asked for. */
function fakeFetch(files, { offline = false } = {}) {
  const f = async (url) => {
    const file = url.slice(BASE.length);
    f.log.push(file);
    if (offline) throw new TypeError("Failed to fetch");
    const data = files.get(file);
    return data ? new Response(data.slice()) : new Response("not found", { status: 404 });
  };
  f.log = [];
  return f;
}

/** Load the folder into `store` as the engine does: metadata, module, every shard. */
async function loadInto(store, files) {
  const fetch = fakeFetch(files);
  const artifacts = await loadModelArtifacts(BASE, { fetch, store });
  await loadModelLib(artifacts, { fetch, store });
  await new ShardLoader(artifacts, { fetch, store }).downloadAll();
}

test("getModelCacheInfo: the shards' size, nothing cached in an empty store, and stores nothing", async () => {
  const files = makeFolder();
  const store = new MemoryStore();
  const fetch = fakeFetch(files);
  const info = await getModelCacheInfo(BASE, { store, fetch });
  assert.deepEqual(info, { downloadBytes: 178, shards: 3, cachedShards: 0, cachedBytes: 0, cached: false });
  assert.deepEqual(fetch.log, ["chat-config.json", "tensor-cache.json"]);
  assert.equal(store.data.size, 0);
  assert.equal(store.gets, 0, "presence is asked with has(), not by reading shards");
});

test("getModelCacheInfo: a loaded model is cached; one shard missing is partly cached", async () => {
  const files = makeFolder();
  const store = new MemoryStore();
  await loadInto(store, files);
  assert.deepEqual(await getModelCacheInfo(BASE.slice(0, -1), { store, fetch: fakeFetch(files) }),
                   { downloadBytes: 178, shards: 3, cachedShards: 3, cachedBytes: 178, cached: true });
  store.data.delete(BASE + "params_shard_1.bin");
  assert.deepEqual(await getModelCacheInfo(BASE, { store, fetch: fakeFetch(files) }),
                   { downloadBytes: 178, shards: 3, cachedShards: 2, cachedBytes: 114, cached: false });
});

test("getModelCacheInfo offline reads the stored metadata; with nothing stored it is a model-load error", async () => {
  const files = makeFolder();
  const store = new MemoryStore();
  await loadInto(store, files);
  const offline = fakeFetch(files, { offline: true });
  assert.equal((await getModelCacheInfo(BASE, { store, fetch: offline })).cached, true);
  await assert.rejects(getModelCacheInfo(BASE, { store: new MemoryStore(), fetch: offline }), ModelLoadError);
  await assert.rejects(getModelCacheInfo("https://models.example/other/", { store, fetch: fakeFetch(new Map()) }), ModelLoadError);
});

test("deleteCachedModel removes the folder's shards, metadata and modules, and nothing else", async () => {
  const files = makeFolder();
  const store = new MemoryStore();
  await loadInto(store, files);
  await store.put("https://models.example/other/params_shard_0.bin", new Uint8Array([1]));
  assert.ok(store.data.size > SHARD_SIZES.length + 1);
  await deleteCachedModel(BASE, { store, fetch: fakeFetch(files) });
  assert.deepEqual([...store.data.keys()], ["https://models.example/other/params_shard_0.bin"]);
  const info = await getModelCacheInfo(BASE, { store, fetch: fakeFetch(files) });
  assert.equal(info.cachedShards, 0);
  // a second load downloads every shard again
  const fetch = fakeFetch(files);
  const artifacts = await loadModelArtifacts(BASE, { fetch, store });
  await new ShardLoader(artifacts, { fetch, store }).downloadAll();
  assert.equal(fetch.log.filter((f) => f.startsWith("params_shard_")).length, SHARD_SIZES.length);
});

test("deleteCachedModel works offline from the stored metadata", async () => {
  const files = makeFolder();
  const store = new MemoryStore();
  await loadInto(store, files);
  await deleteCachedModel(BASE, { store, fetch: fakeFetch(files, { offline: true }) });
  assert.equal(store.data.size, 0);
});
