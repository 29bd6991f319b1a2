import assert from "node:assert/strict";
import { test } from "node:test";

import { logSumExp, tokenLogprob, topK } from "../../../dist/modules/logprobs.js";

test("logSumExp is stable for large logits and -Infinity when everything is banned", () => {
  assert.ok(Math.abs(logSumExp([1000, 1000]) - (1000 + Math.log(2))) < 1e-12);
  assert.ok(Math.abs(logSumExp(Float32Array.of(0, Math.log(3))) - Math.log(4)) < 1e-7);
  assert.equal(logSumExp([-Infinity, -Infinity]), -Infinity);
});

test("topK: the k largest, largest first, lower id first on ties, NaN skipped", () => {
  assert.deepEqual(topK([1, 5, 3, 5, NaN, 4], 3), [1, 3, 5]);
  assert.deepEqual(topK([2, 1], 5), [0, 1]);
  assert.deepEqual(topK([2, 1], 0), []);
  const many = Float32Array.from({ length: 1000 }, (_, i) => Math.sin(i * 7.1));
  const sorted = [...many.keys()].sort((a, b) => many[b] - many[a] || a - b);
  assert.deepEqual(topK(many, 20), sorted.slice(0, 20));
});

test("tokenLogprob: log-softmax of the chosen token and the top alternatives, with text and bytes", () => {
  const logits = Float32Array.of(0, 1, 2, 3);
  const tokens = { decode: (ids) => `t${ids[0]}`, tokenBytes: (id) => [100 + id] };
  const entry = tokenLogprob(logits, 1, 2, tokens);
  const lse = Math.log(1 + Math.E + Math.E ** 2 + Math.E ** 3);
  assert.equal(entry.token, "t1");
  assert.ok(Math.abs(entry.logprob - (1 - lse)) < 1e-12);
  assert.deepEqual(entry.bytes, [101]);
  assert.deepEqual(entry.top_logprobs.map((t) => t.token), ["t3", "t2"]);
  assert.ok(Math.abs(entry.top_logprobs[0].logprob - (3 - lse)) < 1e-12);
});
