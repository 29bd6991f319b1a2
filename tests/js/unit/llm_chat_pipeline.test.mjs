import assert from "node:assert/strict";
import { test } from "node:test";

import {
  callSize, FIRST_PREFILL_CALL, LLMChatPipeline, PREFILL_CALL_MS, prefillCallSize,
} from "../../../dist/modules/llm_chat_pipeline.js";
import { validateRequest } from "../../../dist/modules/protocol.js";

test("callSize: the module's prefill chunk (the build writes it below a sliding window)", () => {
  assert.equal(callSize({ prefillChunk: 8, slidingWindow: null, singleTokenPastWindow: true }, 100), 8);
  assert.equal(callSize({ prefillChunk: 4, slidingWindow: 5, singleTokenPastWindow: false }, 0), 4);
  assert.equal(callSize({ prefillChunk: 4, slidingWindow: 5, singleTokenPastWindow: false }, 100), 4);
  assert.equal(callSize({ prefillChunk: 3, slidingWindow: 5, singleTokenPastWindow: false }, 0), 3);
});

test("callSize: one token per call once `window` tokens are cached, only where _metadata says so", () => {
  const rule = { prefillChunk: 4, slidingWindow: 5, singleTokenPastWindow: true };
  assert.equal(callSize(rule, 4), 4);
  assert.equal(callSize(rule, 5), 1);
  assert.equal(callSize(rule, 50), 1);
});

test("prefillCallSize: every prefill's first call takes at most FIRST_PREFILL_CALL tokens, later ones what fits in PREFILL_CALL_MS", () => {
  const rule = { prefillChunk: 512, slidingWindow: null, singleTokenPastWindow: false };
  assert.equal(prefillCallSize(rule, 0, null, 0), FIRST_PREFILL_CALL);
  assert.equal(prefillCallSize({ ...rule, prefillChunk: 4 }, 0, null, 0), 4);
  assert.equal(prefillCallSize(rule, 16, PREFILL_CALL_MS / 10, 16), 10, "a slow model: 10 tokens fit");
  assert.equal(prefillCallSize(rule, 16, PREFILL_CALL_MS * 3, 16), 1, "at least one token");
  assert.equal(prefillCallSize(rule, 16, 0.0001, 16), 32, "at most twice the previous call");
  assert.equal(prefillCallSize(rule, 64, 0, 256), 512, "never above the prefill chunk");
  assert.equal(prefillCallSize(rule, 0, 0.0001, 0), FIRST_PREFILL_CALL,
               "a new prefill starts small although an earlier one was fast");
  assert.equal(prefillCallSize(rule, 0, PREFILL_CALL_MS / 4, 0), 4, "a new prefill: no more than fits");
  const sizes = [];
  for (let size = 0, cached = 0; cached < 1500; cached += size) {
    size = prefillCallSize(rule, cached, 0.0001, size);
    sizes.push(size);
  }
  assert.deepEqual(sizes.slice(0, 7), [16, 32, 64, 128, 256, 512, 512], "a fast model doubles up to the chunk");
});

/** A model runtime whose logits read back "predict" the tokens of `script` in turn (argmax or logits). */
class FakeRuntime {
  constructor({ script, singleTokenPastWindow = false, hasArgmax = true, vocab = 128, chunk = 4 }) {
    this.metadata = { params: [], kv_page_size: 16, single_token_past_window: singleTokenPastWindow,
                      prefill_chunk: chunk };
    this.hasArgmax = hasArgmax;
    this.script = script;
    this.vocab = vocab;
    this.produced = 0;
    this.calls = [];
    this.sequence = [];
    this.pops = [];
    this.resets = 0;
    this.reads = { argmax: 0, logits: 0 };
    this.live = new Set();
  }
  createState(spec) { this.state = spec; }
  async sync() { this.syncs = (this.syncs ?? 0) + 1; }
  resetSequence() { this.resets++; this.sequence = []; }
  popTokens(count) { this.pops.push(count); this.sequence.length -= count; }
  forward(tokens) {
    this.calls.push([...tokens]);
    this.sequence.push(...tokens);
    const logits = { shape: [1, 1, this.vocab], dispose: () => this.live.delete(logits) };
    this.live.add(logits);
    return logits;
  }
  next() { return this.script[this.produced++] ?? 0; }
  async readArgmax(logits) { this.reads.argmax++; logits.dispose(); return this.next(); }
  async readLogits(logits) {
    this.reads.logits++;
    const values = new Float32Array(this.vocab).fill(-30);
    values[this.next()] = 30;
    logits.dispose();
    return values;
  }
}

/** Characters are tokens: a prompt is its messages' contents, one id per character. */
const tokenizer = {
  encodeChat: (messages) => ({ prompt: "", ids: [...messages.map((m) => m.content).join("")].map((c) => c.charCodeAt(0)) }),
  streamDecoder: () => ({ push: (id) => String.fromCharCode(id), flush: () => "" }),
  decode: (idList) => String.fromCharCode(...idList),
  tokenBytes: (id) => [id],
};

function config({ chunk = 4, window = null, kind = "paged_kv_cache", stopStrings = [] } = {}) {
  return { model_id: "m", context_window_size: 64, prefill_chunk_size: chunk, vocab_size: 128,
           state: { kv_state: kind, sliding_window: window }, stop_token_ids: [0], stop_strings: stopStrings };
}

const ids = (text) => [...text].map((c) => c.charCodeAt(0));
const SAMPLING = { temperature: 0, top_p: 1, repetition_penalty: 1, frequency_penalty: 0, presence_penalty: 0 };
const request = (content, extra = {}) => validateRequest({ messages: [{ role: "user", content }], ...extra },
  { sampling: SAMPLING, vocabSize: 128, contextWindow: 64 });

async function run(pipeline, req, stopped = () => false) {
  const chunks = [];
  const result = await pipeline.generate(req, stopped, (c) => chunks.push(c));
  const text = chunks.map((c) => c.choices[0]?.delta?.content ?? "").join("");
  return { ...result, chunks, text };
}

test("the pipeline creates the state from chat-config's context window and _metadata's prefill chunk", () => {
  const runtime = new FakeRuntime({ script: [], chunk: 4 });
  new LLMChatPipeline(runtime, config({ chunk: 4 }), tokenizer, { backend: "webgpu", threads: 1 });
  assert.deepEqual(runtime.state, { kind: "paged_kv_cache", contextWindow: 64, prefillChunk: 4 });
  const wide = new FakeRuntime({ script: [], chunk: 512 });  // a context window (64) below the module's chunk
  new LLMChatPipeline(wide, config({ chunk: 64 }), tokenizer, { backend: "webgpu", threads: 1 });
  assert.deepEqual(wide.state, { kind: "paged_kv_cache", contextWindow: 64, prefillChunk: 64 });
});

test("prefill in chunks, then one token per decode call until max_tokens; greedy reads the device argmax", async () => {
  const runtime = new FakeRuntime({ script: ids("hello") });
  const pipeline = new LLMChatPipeline(runtime, config({ chunk: 4 }), tokenizer, { backend: "webgpu", threads: 1 });
  const r = await run(pipeline, request("abcdefghij", { max_tokens: 3 }));
  assert.deepEqual(runtime.calls.map((c) => c.length), [4, 4, 2, 1, 1]);
  assert.deepEqual(runtime.calls.slice(3), [ids("h"), ids("e")]);
  assert.equal(r.text, "hel");
  assert.equal(r.finish, "length");
  assert.equal(r.usage.prompt_tokens, 10);
  assert.equal(r.usage.completion_tokens, 3);
  assert.equal(r.usage.extra.backend, "webgpu");
  assert.equal(r.usage.extra.threads, undefined);
  assert.deepEqual(runtime.reads, { argmax: 3, logits: 0 });
  assert.equal(runtime.live.size, 0, "every logits handle is disposed");
  assert.deepEqual(r.chunks[0].choices[0].delta, { role: "assistant", content: "" });
  assert.equal(r.chunks.at(-1).choices[0].finish_reason, "length");
});

test("sampling reads the logits back when decoding is not plain greedy (or the module has no argmax)", async () => {
  const runtime = new FakeRuntime({ script: ids("xyz"), hasArgmax: false });
  const pipeline = new LLMChatPipeline(runtime, config(), tokenizer, { backend: "wasm", threads: 2 });
  const r = await run(pipeline, request("ab", { max_tokens: 3 }));
  assert.equal(r.text, "xyz");
  assert.deepEqual(runtime.reads, { argmax: 0, logits: 3 });
  assert.equal(r.usage.extra.threads, 2);
});

test("a stop token ends the reply with finish_reason stop; a stop string is not emitted", async () => {
  const stopToken = new LLMChatPipeline(new FakeRuntime({ script: [...ids("ok"), 0, ...ids("zz")] }), config(), tokenizer,
    { backend: "webgpu", threads: 1 });
  const a = await run(stopToken, request("q", { max_tokens: 10 }));
  assert.deepEqual([a.text, a.finish, a.usage.completion_tokens], ["ok", "stop", 3]);

  const stopString = new LLMChatPipeline(new FakeRuntime({ script: ids("one. two") }), config({ stopStrings: [". "] }),
    tokenizer, { backend: "webgpu", threads: 1 });
  const b = await run(stopString, request("q", { max_tokens: 10 }));
  assert.deepEqual([b.text, b.finish], ["one", "stop"]);
});

test("stopped() ends the generation with finish_reason abort", async () => {
  const runtime = new FakeRuntime({ script: ids("abcdefgh") });
  const pipeline = new LLMChatPipeline(runtime, config(), tokenizer, { backend: "webgpu", threads: 1 });
  let checks = 0;  // asked before and after the prefill (a one-call prompt), then before each token
  const r = await run(pipeline, request("q", { max_tokens: 10 }), () => ++checks > 4);
  assert.deepEqual([r.text, r.finish], ["ab", "abort"]);
});

test("the next turn reuses the cached prefix: only the rest is prefilled, the divergent tail popped", async () => {
  const runtime = new FakeRuntime({ script: ids("XYZ") });
  runtime.metadata.prefill_chunk = 16;
  const pipeline = new LLMChatPipeline(runtime, config({ chunk: 16 }), tokenizer, { backend: "webgpu", threads: 1 });
  await run(pipeline, request("abcdef", { max_tokens: 2 }));  // caches abcdef + X
  runtime.calls = [];
  const r = await run(pipeline, request("abcdXY", { max_tokens: 1 }));
  assert.deepEqual(runtime.pops, [3]);  // "efX" dropped
  assert.deepEqual(runtime.calls, [ids("XY")]);
  assert.equal(r.usage.prompt_tokens_details.cached_tokens, 4);
  assert.deepEqual(runtime.sequence, ids("abcdXY"));

  runtime.calls = [];
  const same = await run(pipeline, request("abcdXY", { max_tokens: 1 }));
  assert.deepEqual(runtime.calls, [ids("Y")], "the last prompt token is always recomputed");
  assert.equal(same.usage.prompt_tokens_details.cached_tokens, 5);
});

test("an RNN state cannot roll back: a divergent prompt starts the sequence again", async () => {
  const runtime = new FakeRuntime({ script: ids("XYZW") });
  const pipeline = new LLMChatPipeline(runtime, config({ kind: "rnn_state" }), tokenizer, { backend: "webgpu", threads: 1 });
  await run(pipeline, request("abc", { max_tokens: 1 }));
  const r = await run(pipeline, request("abd", { max_tokens: 1 }));
  assert.equal(runtime.resets, 1);
  assert.deepEqual(runtime.pops, []);
  assert.equal(r.usage.prompt_tokens_details.cached_tokens, 0);
  assert.deepEqual(runtime.sequence, ids("abd"));
});

test("sliding window: calls of window - 1, then one token per call where _metadata says single_token_past_window", async () => {
  const prompt = "abcdefg";
  const sizes = async (singleTokenPastWindow) => {
    // a window of 3: the build writes prefill_chunk 2 (window - 1) into _metadata and chat-config
    const runtime = new FakeRuntime({ script: ids("zz"), singleTokenPastWindow, chunk: 2 });
    const pipeline = new LLMChatPipeline(runtime, config({ chunk: 2, window: 3 }), tokenizer, { backend: "wasm", threads: 1 });
    await run(pipeline, request(prompt, { max_tokens: 1 }));
    return runtime.calls.map((c) => c.length);
  };
  assert.deepEqual(await sizes(false), [2, 2, 2, 1]);
  assert.deepEqual(await sizes(true), [2, 2, 1, 1, 1]);
});

test("reset() empties the sequence: nothing is reused afterwards", async () => {
  const runtime = new FakeRuntime({ script: ids("XY") });
  const pipeline = new LLMChatPipeline(runtime, config(), tokenizer, { backend: "webgpu", threads: 1 });
  await run(pipeline, request("abc", { max_tokens: 1 }));
  pipeline.reset();
  const r = await run(pipeline, request("abc", { max_tokens: 1 }));
  assert.equal(runtime.resets, 1);
  assert.equal(r.usage.prompt_tokens_details.cached_tokens, 0);
});

test("stopped() between two prefill calls: nothing is decoded, the tokens prefilled so far stay cached", async () => {
  const runtime = new FakeRuntime({ script: ids("XYZ") });
  const pipeline = new LLMChatPipeline(runtime, config({ chunk: 4 }), tokenizer, { backend: "wasm", threads: 1 });
  const r = await run(pipeline, request("abcdefghij", { max_tokens: 3 }), () => runtime.calls.length > 0);
  assert.deepEqual(runtime.calls, [ids("abcd")]);
  assert.deepEqual([r.text, r.finish, r.usage.completion_tokens], ["", "abort", 0]);
  assert.equal(r.chunks.at(-1).choices[0].finish_reason, "abort");
  assert.equal(runtime.live.size, 0, "the unused logits are disposed");
  const next = await run(pipeline, request("abcdefghij", { max_tokens: 2 }));
  assert.equal(next.usage.prompt_tokens_details.cached_tokens, 4);
  assert.deepEqual([next.text, next.finish], ["XY", "length"]);
});

test("stopped() before the prefill: no model call at all", async () => {
  const runtime = new FakeRuntime({ script: ids("XYZ") });
  const pipeline = new LLMChatPipeline(runtime, config(), tokenizer, { backend: "wasm", threads: 1 });
  const r = await run(pipeline, request("abc", { max_tokens: 3 }), () => true);
  assert.deepEqual([runtime.calls.length, r.finish, r.usage.completion_tokens], [0, "abort", 0]);
});

test("the event loop gets a turn between calls: a task queued before the generation runs during it", async () => {
  // the fake runtime answers at once, as a wasm module does: only the pipeline's turns let the task run
  const runtime = new FakeRuntime({ script: ids("abcdefghijklmnopqrstuvwxyz") });
  const pipeline = new LLMChatPipeline(runtime, config({ chunk: 4 }), tokenizer, { backend: "wasm", threads: 1 });
  let stop = false;
  setImmediate(() => { stop = true; });
  const r = await run(pipeline, request("abcdefghij", { max_tokens: 20 }), () => stop);
  assert.equal(r.finish, "abort");
  assert.deepEqual(runtime.calls, [ids("abcd")], "the first turn comes right after the first call");
});

test("yieldIntervalMs Infinity: no turns, the generation runs as one task", async () => {
  const runtime = new FakeRuntime({ script: ids("abcdefghijklmnopqrstuvwxyz") });
  const pipeline = new LLMChatPipeline(runtime, config({ chunk: 4 }), tokenizer, { backend: "wasm", threads: 1 }, Infinity);
  let stop = false;
  setImmediate(() => { stop = true; });
  const r = await run(pipeline, request("abcdefghij", { max_tokens: 20 }), () => stop);
  assert.deepEqual([r.finish, r.usage.completion_tokens], ["length", 20]);
});

test("logprobs: read back even for greedy, one entry per emitted token (no stop token), spread over the chunks", async () => {
  const runtime = new FakeRuntime({ script: [...ids("ok."), 0] });
  const pipeline = new LLMChatPipeline(runtime, config({ stopStrings: ["."] }), tokenizer, { backend: "webgpu", threads: 1 });
  const r = await run(pipeline, request("q", { max_tokens: 10, logprobs: true, top_logprobs: 2 }));
  assert.equal(runtime.reads.argmax, 0);
  assert.deepEqual([r.text, r.finish], ["ok", "stop"]);
  const entries = r.chunks.flatMap((c) => c.choices[0]?.logprobs?.content ?? []);
  // the fake's logits: 30 for the scripted token, -30 for the 127 others
  const top = -Math.log1p(127 * Math.exp(-60));
  assert.deepEqual(entries.map((e) => e.token), ["o", "k", "."], "the stop string's token is reported, the stop token not");
  for (const e of entries) {
    assert.ok(Math.abs(e.logprob - top) < 1e-12);
    assert.deepEqual(e.bytes, [e.token.charCodeAt(0)]);
    assert.equal(e.top_logprobs.length, 2);
    assert.equal(e.top_logprobs[0].token, e.token);
    assert.ok(Math.abs(e.top_logprobs[1].logprob - (-60 + top)) < 1e-9);
  }
  const plain = await run(new LLMChatPipeline(new FakeRuntime({ script: ids("ab") }), config(), tokenizer,
    { backend: "webgpu", threads: 1 }), request("q", { max_tokens: 2 }));
  assert.ok(plain.chunks.every((c) => c.choices.every((ch) => ch.logprobs === null)));
});

test("logprobs: an aborted reply reports only the tokens it emitted", async () => {
  const runtime = new FakeRuntime({ script: ids("abcdefgh") });
  const pipeline = new LLMChatPipeline(runtime, config(), tokenizer, { backend: "webgpu", threads: 1 });
  let checks = 0;
  const r = await run(pipeline, request("q", { max_tokens: 10, logprobs: true }), () => ++checks > 4);
  const entries = r.chunks.flatMap((c) => c.choices[0]?.logprobs?.content ?? []);
  assert.deepEqual([r.text, r.finish, entries.map((e) => e.token).join("")], ["ab", "abort", "ab"]);
});

test("n choices: each starts from the prompt's KV state (only its last token recomputed), seeded choices reproduce", async () => {
  class FlatRuntime extends FakeRuntime {
    async readLogits(logits) { this.reads.logits++; logits.dispose(); return new Float32Array(this.vocab); }
  }
  const sample = async () => {
    const runtime = new FlatRuntime({ script: [], chunk: 16 });
    const pipeline = new LLMChatPipeline(runtime, config({ chunk: 16 }), tokenizer, { backend: "wasm", threads: 1 });
    const req = request("abcdef", { n: 3, seed: 7, temperature: 1, max_tokens: 4, logit_bias: { "0": -100 },
                                    stream_options: { include_usage: true } });
    const r = await pipeline.generate(req, () => false, () => {});
    const chunks = [];
    runtime.calls = [];
    const again = await pipeline.generate(req, () => false, (c) => chunks.push(c));
    return { r, again, chunks, calls: runtime.calls, pops: runtime.pops };
  };
  const { r, again, chunks, calls, pops } = await sample();
  const texts = [0, 1, 2].map((i) => chunks.filter((c) => c.choices[0]?.index === i)
    .map((c) => c.choices[0].delta.content ?? "").join(""));
  assert.equal(new Set(texts).size, 3, "the choices differ");
  assert.ok(texts.every((t) => t.length === 4));
  assert.deepEqual(r.finishes, ["length", "length", "length"]);
  assert.equal(again.usage.completion_tokens, 12);
  assert.equal(again.usage.prompt_tokens, 6);
  // every choice prefills only the prompt's last token ("f"), then decodes 3 tokens one per call
  assert.equal(calls.length, 12);
  assert.deepEqual([calls[0], calls[4], calls[8]], [ids("f"), ids("f"), ids("f")]);
  assert.ok(pops.every((n) => n === 4), "each choice pops the previous choice's 3 tokens and the prompt's last");
  const last = chunks.at(-1);
  assert.deepEqual(last.choices, []);
  assert.equal(last.usage.completion_tokens, 12);
  const second = await sample();
  const texts2 = [0, 1, 2].map((i) => second.chunks.filter((c) => c.choices[0]?.index === i)
    .map((c) => c.choices[0].delta.content ?? "").join(""));
  assert.deepEqual(texts2, texts, "the same seed gives the same choices");
});
