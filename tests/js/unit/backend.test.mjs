import assert from "node:assert/strict";
import { test } from "node:test";

import { chooseBackend } from "../../../dist/modules/backend.js";
import { parseChatConfig } from "../../../dist/modules/config.js";
import { ModelLoadError } from "../../../dist/modules/errors.js";

const URL_ = "http://x/models/m/";
const CONFIG = {
  format: "webbuild-chat-config/1", model_id: "m", architecture: "llama", context_window_size: 256, prefill_chunk_size: 64,
  vocab_size: 320, tokenizer_files: ["tokenizer.json"], eos_token_ids: [2], sampling: { temperature: 0.7 },
  model_libs: { webgpu: "model.wasm", wasm: "model-cpu.wasm", "wasm-threads": "model-cpu-threads.wasm" },
  wasm_threads: { memory_pages: { initial: 256, maximum: 32768 } },
};

/** Run `body` with the page's cross-origin isolation and worker support as given. */
async function withPage({ isolated, workers }, body) {
  const saved = { isolated: globalThis.crossOriginIsolated, worker: globalThis.Worker };
  globalThis.crossOriginIsolated = isolated;
  globalThis.Worker = workers ? class {} : undefined;
  try {
    return await body();
  } finally {
    globalThis.crossOriginIsolated = saved.isolated;
    globalThis.Worker = saved.worker;
  }
}

test("an isolated page asking for several threads gets the threaded CPU module", async () => {
  const chosen = await withPage({ isolated: true, workers: true },
    () => chooseBackend(parseChatConfig({ ...CONFIG }), "wasm", URL_, 3));
  assert.equal(chosen.moduleFile, "model-cpu-threads.wasm");
  assert.equal(chosen.threads, 3);
});

test("one thread, a page that is not cross-origin isolated, or no workers: the single-threaded module", async () => {
  for (const [page, threads] of [[{ isolated: true, workers: true }, 1], [{ isolated: false, workers: true }, 4],
                                 [{ isolated: true, workers: false }, 4]]) {
    const chosen = await withPage(page, () => chooseBackend(parseChatConfig({ ...CONFIG }), "wasm", URL_, threads));
    assert.equal(chosen.moduleFile, "model-cpu.wasm");
    assert.equal(chosen.threads, 1);
  }
});

test("a folder without the threaded module runs single-threaded", async () => {
  const config = { ...CONFIG, model_libs: { webgpu: "model.wasm", wasm: "model-cpu.wasm" } };
  delete config.wasm_threads;
  const chosen = await withPage({ isolated: true, workers: true },
    () => chooseBackend(parseChatConfig(config), "wasm", URL_, 2));
  assert.equal(chosen.moduleFile, "model-cpu.wasm");
});

test("a bad thread count is a model-load error", async () => {
  for (const threads of [0, -1, 1.5]) {
    await assert.rejects(chooseBackend(parseChatConfig({ ...CONFIG }), "wasm", URL_, threads),
      (err) => err instanceof ModelLoadError && err.code === "model-load");
  }
});

test("a threaded module without its memory size is a model-load error", () => {
  const config = { ...CONFIG };
  delete config.wasm_threads;
  assert.throws(() => parseChatConfig(config), (err) => err instanceof ModelLoadError);
});
