import assert from "node:assert/strict";
import { test } from "node:test";

import { parseChatConfig, withContextWindow } from "../../../dist/modules/config.js";
import { ModelLoadError } from "../../../dist/modules/errors.js";

const BASE = {
  format: "webbuild-chat-config/1", model_id: "m", architecture: "rwkv", context_window_size: 256, prefill_chunk_size: 64,
  vocab_size: 320, tokenizer_files: ["tokenizer.json"], eos_token_ids: [2], sampling: { temperature: 0.7 },
};

test("a config without state describes a paged KV cache with no window (older builds)", () => {
  const c = parseChatConfig({ ...BASE });
  assert.deepEqual(c.state, { kv_state: "paged_kv_cache", sliding_window: null });
});

test("the state kind and sliding window are read from the config", () => {
  assert.deepEqual(parseChatConfig({ ...BASE, state: { kv_state: "rnn_state", sliding_window: null } }).state,
    { kv_state: "rnn_state", sliding_window: null });
  assert.equal(parseChatConfig({ ...BASE, state: { kv_state: "paged_kv_cache", sliding_window: 4096 } }).state.sliding_window, 4096);
});

test("an unknown state kind or a bad window is a model-load error", () => {
  for (const state of [{ kv_state: "lstm" }, { kv_state: "paged_kv_cache", sliding_window: 0 },
                       { kv_state: "paged_kv_cache", sliding_window: 2.5 }]) {
    assert.throws(() => parseChatConfig({ ...BASE, state }), (err) => err instanceof ModelLoadError && err.code === "model-load");
  }
});

test("contextWindow shortens the KV cache's window and caps the prefill chunk", () => {
  const c = parseChatConfig({ ...BASE });
  assert.equal(withContextWindow(c, undefined), c);
  const short = withContextWindow(c, 48);
  assert.equal(short.context_window_size, 48);
  assert.equal(short.prefill_chunk_size, 48);
  assert.equal(withContextWindow(c, 128).prefill_chunk_size, 64);
  assert.equal(c.context_window_size, 256);  // the model's config is left as it was
});

test("a contextWindow beyond the model's, or not a positive integer, is a load error", () => {
  const c = parseChatConfig({ ...BASE });
  for (const bad of [257, 0, -1, 1.5, "64"]) {
    assert.throws(() => withContextWindow(c, bad), ModelLoadError);
  }
});
