import assert from "node:assert/strict";
import { test } from "node:test";

import { ContextWindowExceededError, InvalidRequestError } from "../../../dist/modules/errors.js";
import * as P from "../../../dist/modules/protocol.js";

const SAMPLING = { temperature: 0.3, top_p: 0.9, repetition_penalty: 1.1, frequency_penalty: 0.2, presence_penalty: 0.1 };
const LIMITS = { sampling: SAMPLING, vocabSize: 1000, contextWindow: 2048 };
const user = (content) => ({ messages: [{ role: "user", content }] });

function rejects(request, field, limits = LIMITS) {
  assert.throws(() => P.validateRequest(request, limits), (err) => {
    assert.ok(err instanceof InvalidRequestError, `expected InvalidRequestError, got ${err}`);
    assert.equal(err.code, "invalid-request");
    assert.equal(err.field, field);
    return true;
  });
}

test("defaults come from the chat-config sampling block", () => {
  const r = P.validateRequest(user("hi"), LIMITS);
  assert.equal(r.temperature, 0.3);
  assert.equal(r.top_p, 0.9);
  assert.equal(r.repetition_penalty, 1.1);
  assert.equal(r.frequency_penalty, 0.2);
  assert.equal(r.presence_penalty, 0.1);
  assert.equal(r.max_tokens, null);
  assert.equal(r.seed, null);
  assert.deepEqual(r.stop, []);
  assert.equal(r.logit_bias.size, 0);
  assert.equal(r.stream, false);
  assert.equal(r.include_usage, false);
  assert.deepEqual(r.messages, [{ role: "user", content: "hi" }]);
});

test("given fields override defaults; request is not mutated", () => {
  const req = {
    model: "m", messages: [{ role: "system", content: "s" }, { role: "user", content: [{ type: "text", text: "a" }, { type: "text", text: "b" }] }],
    temperature: 0, top_p: 1, repetition_penalty: 1, frequency_penalty: -2, presence_penalty: 2,
    max_tokens: 16, seed: 42, stop: "###", logit_bias: { "5": -100, "7": 3.5 }, stream: true,
    stream_options: { include_usage: true }, n: 1, user: "ignored",
  };
  const copy = structuredClone(req);
  const r = P.validateRequest(req, LIMITS);
  assert.deepEqual(req, copy);
  assert.equal(r.temperature, 0);
  assert.equal(r.top_p, 1);
  assert.equal(r.frequency_penalty, -2);
  assert.equal(r.presence_penalty, 2);
  assert.equal(r.max_tokens, 16);
  assert.equal(r.seed, 42);
  assert.deepEqual(r.stop, ["###"]);
  assert.deepEqual([...r.logit_bias], [[5, -100], [7, 3.5]]);
  assert.equal(r.stream, true);
  assert.equal(r.include_usage, true);
  assert.equal(r.model, "m");
  assert.equal(r.messages[1].content, "ab");
});

test("assistant-last conversations are accepted", () => {
  const r = P.validateRequest({ messages: [{ role: "user", content: "a" }, { role: "assistant", content: "b" }] }, LIMITS);
  assert.equal(r.messages.length, 2);
});

test("max_completion_tokens is an alias of max_tokens", () => {
  assert.equal(P.validateRequest({ ...user("x"), max_completion_tokens: 9 }, LIMITS).max_tokens, 9);
  assert.equal(P.validateRequest({ ...user("x"), max_tokens: 9, max_completion_tokens: 9 }, LIMITS).max_tokens, 9);
  rejects({ ...user("x"), max_tokens: 9, max_completion_tokens: 10 }, "max_completion_tokens");
});

test("invalid requests name the field", () => {
  rejects(null, "request");
  rejects({}, "messages");
  rejects({ messages: [] }, "messages");
  rejects({ messages: ["hi"] }, "messages[0]");
  rejects({ messages: [{ role: "function", content: "x" }] }, "messages[0].role");
  rejects({ messages: [{ role: "user", content: 3 }] }, "messages[0].content");
  rejects({ messages: [{ role: "user", content: [{ type: "image_url", image_url: {} }] }] }, "messages[0].content[0].type");
  rejects({ ...user("x"), temperature: 2.5 }, "temperature");
  rejects({ ...user("x"), temperature: "1" }, "temperature");
  rejects({ ...user("x"), temperature: NaN }, "temperature");
  rejects({ ...user("x"), top_p: 0 }, "top_p");
  rejects({ ...user("x"), top_p: 1.01 }, "top_p");
  rejects({ ...user("x"), repetition_penalty: 0 }, "repetition_penalty");
  rejects({ ...user("x"), frequency_penalty: 3 }, "frequency_penalty");
  rejects({ ...user("x"), presence_penalty: -3 }, "presence_penalty");
  rejects({ ...user("x"), max_tokens: 0 }, "max_tokens");
  rejects({ ...user("x"), max_tokens: 1.5 }, "max_tokens");
  rejects({ ...user("x"), max_tokens: 4096 }, "max_tokens");
  rejects({ ...user("x"), seed: 1.5 }, "seed");
  rejects({ ...user("x"), stop: ["a", "b", "c", "d", "e"] }, "stop");
  rejects({ ...user("x"), stop: ["a", ""] }, "stop[1]");
  rejects({ ...user("x"), stop: 5 }, "stop");
  rejects({ ...user("x"), logit_bias: { abc: 1 } }, "logit_bias.abc");
  rejects({ ...user("x"), logit_bias: { "-1": 1 } }, "logit_bias.-1");
  rejects({ ...user("x"), logit_bias: { "1000": 1 } }, "logit_bias.1000");
  rejects({ ...user("x"), logit_bias: { "5": 101 } }, "logit_bias.5");
  rejects({ ...user("x"), logit_bias: [1] }, "logit_bias");
  rejects({ ...user("x"), stream: "yes" }, "stream");
  rejects({ ...user("x"), n: 0 }, "n");
  rejects({ ...user("x"), n: 65 }, "n");
  rejects({ ...user("x"), n: 1.5 }, "n");
  rejects({ ...user("x"), tools: [{ type: "function" }] }, "tools[0].function");
  rejects({ ...user("x"), logprobs: "yes" }, "logprobs");
  rejects({ ...user("x"), top_logprobs: 3 }, "top_logprobs");
  rejects({ ...user("x"), logprobs: true, top_logprobs: 21 }, "top_logprobs");
  rejects({ ...user("x"), logprobs: true, top_logprobs: 1.5 }, "top_logprobs");
  rejects({ ...user("x"), response_format: { type: "xml" } }, "response_format.type");
  rejects({ ...user("x"), response_format: "json" }, "response_format");
  rejects({ ...user("x"), response_format: { type: "json_schema" } }, "response_format.json_schema");
  rejects({ ...user("x"), response_format: { type: "json_schema", json_schema: { schema: {} } } },
          "response_format.json_schema.name");
  rejects({ ...user("x"), response_format: { type: "json_schema", json_schema: { name: "a", schema: [1] } } },
          "response_format.json_schema.schema");
  rejects({ ...user("x"), response_format: { type: "grammar", grammar: " " } }, "response_format.grammar");
});

test("null fields mean absent", () => {
  const r = P.validateRequest({ ...user("x"), temperature: null, stop: null, seed: null, n: null, max_tokens: null }, LIMITS);
  assert.equal(r.temperature, 0.3);
  assert.equal(r.max_tokens, null);
});

test("resolveMaxTokens and the context window", () => {
  assert.equal(P.resolveMaxTokens(100, null, 2048), 1948);
  assert.equal(P.resolveMaxTokens(100, 50, 2048), 50);
  assert.equal(P.resolveMaxTokens(2047, null, 2048), 1);
  for (const [p, m] of [[2048, null], [3000, null], [2000, 49]]) {
    assert.throws(() => P.resolveMaxTokens(p, m, 2048), (err) => err instanceof ContextWindowExceededError && err.code === "context-window-exceeded");
  }
});

test("completion and chunk builders", () => {
  const id = P.makeCompletionId();
  assert.match(id, /^chatcmpl-[A-Za-z0-9]{24}$/);
  assert.notEqual(id, P.makeCompletionId());
  const usage = P.buildUsage({ promptTokens: 37, completionTokens: 11, prefillSeconds: 0.5, decodeSeconds: 2, timeToFirstTokenSeconds: 0.6 });
  assert.deepEqual(usage, {
    prompt_tokens: 37, completion_tokens: 11, total_tokens: 48, prompt_tokens_details: { cached_tokens: 0 },
    extra: { prefill_tokens_per_s: 74, decode_tokens_per_s: 5, time_to_first_token_s: 0.6 },
  });
  const reused = P.buildUsage({ promptTokens: 37, completionTokens: 11, prefillSeconds: 0.5, decodeSeconds: 2,
    timeToFirstTokenSeconds: 0.6, cachedTokens: 27 });
  assert.equal(reused.prompt_tokens_details.cached_tokens, 27);
  assert.equal(reused.extra.prefill_tokens_per_s, 20);  // only the 10 new tokens were prefilled
  const meta = { id, created: P.nowSeconds(), model: "m" };
  const c = P.buildChatCompletion(meta, [{ content: "Paris.", finishReason: "stop", logprobs: null }], usage);
  assert.equal(c.object, "chat.completion");
  assert.equal(c.choices[0].message.content, "Paris.");
  assert.equal(c.choices[0].message.role, "assistant");
  assert.equal(c.choices[0].finish_reason, "stop");
  assert.equal(c.usage.total_tokens, 48);
  const first = P.buildChunk(meta, { role: "assistant", content: "" });
  assert.deepEqual(first.choices[0].delta, { role: "assistant", content: "" });
  assert.equal(first.choices[0].finish_reason, null);
  assert.equal("usage" in first, false);
  const last = P.buildChunk(meta, { content: "x", finishReason: "length" });
  assert.deepEqual(last.choices[0].delta, { content: "x" });
  assert.equal(last.choices[0].finish_reason, "length");
  const u = P.buildChunk(meta, null, usage);
  assert.deepEqual(u.choices, []);
  assert.equal(u.usage.prompt_tokens, 37);
  assert.equal(u.object, "chat.completion.chunk");
});

test("logprobs and top_logprobs: off by default, top_logprobs up to 20 with logprobs", () => {
  const plain = P.validateRequest(user("x"));
  assert.equal(plain.logprobs, false);
  assert.equal(plain.top_logprobs, 0);
  const asked = P.validateRequest({ ...user("x"), logprobs: true, top_logprobs: 20 });
  assert.equal(asked.logprobs, true);
  assert.equal(asked.top_logprobs, 20);
  assert.equal(P.validateRequest({ ...user("x"), logprobs: true }).top_logprobs, 0);
});

test("n: 1 by default, up to MAX_N", () => {
  assert.equal(P.validateRequest(user("x")).n, 1);
  assert.equal(P.validateRequest({ ...user("x"), n: P.MAX_N }).n, P.MAX_N);
});

test("response_format: json_object is an object schema, json_schema its schema, grammar its EBNF, text none", () => {
  const fmt = (response_format) => P.validateRequest({ ...user("x"), response_format }).constraint;
  assert.equal(fmt({ type: "text" }), null);
  assert.equal(P.validateRequest(user("x")).constraint, null);
  assert.deepEqual(fmt({ type: "json_object" }), { kind: "json_schema", schema: '{"type":"object"}' });
  const schema = { type: "object", properties: { a: { type: "integer" } }, required: ["a"] };
  assert.deepEqual(fmt({ type: "json_schema", json_schema: { name: "thing", schema, strict: true } }),
                   { kind: "json_schema", schema: JSON.stringify(schema) });
  assert.deepEqual(fmt({ type: "json_schema", json_schema: { name: "any" } }), { kind: "json_schema", schema: "{}" });
  assert.deepEqual(fmt({ type: "grammar", grammar: 'root ::= "yes" | "no"' }),
                   { kind: "grammar", ebnf: 'root ::= "yes" | "no"', root: "root" });
});
