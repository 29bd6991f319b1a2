import assert from "node:assert/strict";
import { test } from "node:test";

import {
  CompletionChunker, DEFAULT_COMPLETION_TOKENS, legacyLogprobs, mergeCompletionChunks, validateCompletionRequest,
} from "../../../dist/modules/completions.js";
import { InvalidRequestError } from "../../../dist/modules/errors.js";
import { buildChunk, buildUsage } from "../../../dist/modules/protocol.js";

function rejects(request, field) {
  assert.throws(() => validateCompletionRequest(request, { vocabSize: 100, contextWindow: 64 }), (err) => {
    assert.ok(err instanceof InvalidRequestError, String(err));
    assert.equal(err.details.field, field);
    return true;
  });
}

test("completions requests: a prompt (text or token ids), chat's sampling rules, legacy logprobs 0..5", () => {
  const r = validateCompletionRequest({ prompt: "Once upon", temperature: 0 });
  assert.equal(r.prompt, "Once upon");
  assert.equal(r.req.max_tokens, DEFAULT_COMPLETION_TOKENS);
  assert.equal(r.req.temperature, 0);
  assert.equal(r.req.logprobs, false);
  assert.equal(r.echo, false);
  const ids = validateCompletionRequest({ prompt: [1, 2, 3], logprobs: 3, max_tokens: 5, n: 2, best_of: 2 });
  assert.deepEqual(ids.prompt, [1, 2, 3]);
  assert.deepEqual([ids.req.logprobs, ids.req.top_logprobs, ids.req.max_tokens, ids.req.n], [true, 3, 5, 2]);
  assert.equal(validateCompletionRequest({ prompt: "x", logprobs: 0 }).req.logprobs, true);
  assert.equal(validateCompletionRequest({ prompt: "x", echo: true }).echo, true);
});

test("invalid completions requests name the field", () => {
  rejects({}, "prompt");
  rejects({ prompt: "" }, "prompt");
  rejects({ prompt: [] }, "prompt");
  rejects({ prompt: [1, 100] }, "prompt[1]");
  rejects({ prompt: [1, -1] }, "prompt[1]");
  rejects({ prompt: "x", suffix: "y" }, "suffix");
  rejects({ prompt: "x", logprobs: 6 }, "logprobs");
  rejects({ prompt: "x", logprobs: true }, "logprobs");
  rejects({ prompt: "x", logprobs: 1, echo: true }, "echo");
  rejects({ prompt: "x", best_of: 3 }, "best_of");
  rejects({ prompt: "x", messages: [] }, "messages");
  rejects({ prompt: "x", temperature: 3 }, "temperature");
  rejects({ prompt: "x", max_tokens: 65 }, "max_tokens");
});

test("chunks: the echo rides on each choice's first chunk, content becomes text, logprobs the legacy format", () => {
  const meta = { id: "chatcmpl-abc", created: 5, model: "m" };
  const entry = (token, logprob) => ({ token, logprob, bytes: null, top_logprobs: [{ token, logprob, bytes: null }] });
  const chunker = new CompletionChunker("Hi", 1);
  const out = [
    buildChunk(meta, { index: 0, role: "assistant", content: "" }),
    buildChunk(meta, { index: 0, content: " there", logprobs: [entry(" the", -0.5), entry("re", -0.25)] }),
    buildChunk(meta, { index: 0, finishReason: "length" }),
  ].map((c) => chunker.convert(c));
  assert.equal(out[0].object, "text_completion");
  assert.equal(out[0].id, "cmpl-abc");
  assert.equal(out[0].choices[0].text, "Hi");
  assert.deepEqual(out[1].choices[0].logprobs, { tokens: [" the", "re"], token_logprobs: [-0.5, -0.25],
    top_logprobs: [{ " the": -0.5 }, { re: -0.25 }], text_offset: [2, 6] });
  assert.equal(out[2].choices[0].finish_reason, "length");
  assert.equal(new CompletionChunker(null, 0).convert(buildChunk(meta, { index: 0, role: "assistant", content: "" })), null);
  const usage = buildUsage({ promptTokens: 1, completionTokens: 2, prefillSeconds: 1, decodeSeconds: 1, timeToFirstTokenSeconds: 1 });
  const whole = mergeCompletionChunks(meta, 1, out, usage, true);
  assert.equal(whole.choices[0].text, "Hi there");
  assert.equal(whole.choices[0].finish_reason, "length");
  assert.deepEqual(whole.choices[0].logprobs.text_offset, [2, 6]);
  assert.deepEqual(legacyLogprobs([entry("a", -1)], 0, 0).top_logprobs, [{}]);
});
