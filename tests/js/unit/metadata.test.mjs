import assert from "node:assert/strict";
import { test } from "node:test";

import { ModelLoadError } from "../../../dist/modules/errors.js";
import { checkParamRecord, parseModelMetadata } from "../../../dist/modules/metadata.js";

const URL_ = "http://x/models/m/model-cpu.wasm";
const META = { params: [{ name: "embed.weight" }], kv_page_size: 16, single_token_past_window: true, prefill_chunk: 8,
               context_window_size: 64 };

test("_metadata with kv_page_size, single_token_past_window and prefill_chunk parses to the same object", () => {
  assert.deepEqual(parseModelMetadata(JSON.stringify(META), URL_), META);
});

for (const key of ["kv_page_size", "single_token_past_window", "prefill_chunk", "params"]) {
  test(`_metadata without ${key} is a model-load error that says to rebuild with the current webbuild`, () => {
    const { [key]: _dropped, ...rest } = META;
    assert.throws(() => parseModelMetadata(JSON.stringify(rest), URL_), (err) => {
      assert.ok(err instanceof ModelLoadError);
      assert.equal(err.code, "model-load");
      assert.equal(err.url, URL_);
      assert.match(err.message, new RegExp(`"${key}"`));
      assert.match(err.message, /rebuild the model with the current webbuild/);
      assert.match(err.fix, /rebuild the model with the current webbuild/);
      return true;
    });
  });
}

for (const [key, value] of [["kv_page_size", 0], ["kv_page_size", 16.5], ["kv_page_size", "16"],
                            ["single_token_past_window", 1], ["single_token_past_window", null],
                            ["prefill_chunk", 0], ["prefill_chunk", 2.5], ["params", {}]]) {
  test(`_metadata with ${key} = ${JSON.stringify(value)} is a model-load error`, () => {
    assert.throws(() => parseModelMetadata(JSON.stringify({ ...META, [key]: value }), URL_),
      (err) => err instanceof ModelLoadError && err.message.includes(key));
  });
}

test("_metadata that is not a JSON object is a model-load error", () => {
  for (const text of ["not json", "[]", "null", "3"]) {
    assert.throws(() => parseModelMetadata(text, URL_), ModelLoadError);
  }
});

test("an RNN-state module's _metadata must carry rnn_history, a positive integer", () => {
  const rnn = { ...META, kv_state: "rnn_state", rnn_history: 2 };
  assert.deepEqual(parseModelMetadata(JSON.stringify(rnn), URL_), rnn);
  for (const bad of [{ ...rnn, rnn_history: undefined }, { ...rnn, rnn_history: 0 }, { ...rnn, rnn_history: "2" }]) {
    assert.throws(() => parseModelMetadata(JSON.stringify(bad), URL_),
      (err) => err instanceof ModelLoadError && err.message.includes("rnn_history"));
  }
});

const PARAM = { name: "w.q_weight", shape: [4, 2], dtype: "uint32" };
const RECORD = { name: "w.q_weight", shape: [4, 2], dtype: "uint32" };

test("a tensor record with the module's name, shape and dtype and its exact bytes passes", () => {
  checkParamRecord(RECORD, 32, PARAM, 0, "tensor-cache.json", "model.wasm");
  checkParamRecord(RECORD, 32, { name: "w.q_weight" }, 0, "tensor-cache.json", "model.wasm");  // older metadata
});

for (const [what, record, bytes, expected] of [
  ["another name", { ...RECORD, name: "w.q_scale" }, 32, PARAM],
  ["another shape", { ...RECORD, shape: [2, 4] }, 32, PARAM],
  ["another dtype", { ...RECORD, dtype: "float32" }, 32, PARAM],
  ["too few bytes", RECORD, 28, PARAM],
  ["too many bytes", RECORD, 36, PARAM],
  ["an unknown dtype", { ...RECORD, dtype: "complex64" }, 32, { name: "w.q_weight" }],
  ["a negative dimension", { ...RECORD, shape: [-4, -2] }, 32, { name: "w.q_weight" }],
  ["one record too many", RECORD, 32, undefined],
]) {
  test(`a tensor record with ${what} is a model-load error`, () => {
    assert.throws(() => checkParamRecord(record, bytes, expected, 3, "tensor-cache.json", "model.wasm"), (err) => {
      assert.ok(err instanceof ModelLoadError);
      assert.equal(err.code, "model-load");
      return true;
    });
  });
}
