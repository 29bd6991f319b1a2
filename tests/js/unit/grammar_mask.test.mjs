import assert from "node:assert/strict";
import { createRequire } from "node:module";
import path from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import { GrammarEngine, loadXGrammar } from "../../../dist/modules/grammar.js";
import { LLMChatPipeline } from "../../../dist/modules/llm_chat_pipeline.js";
import { validateRequest } from "../../../dist/modules/protocol.js";
import { byteLevelVocab } from "./byte_vocab.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const XGRAMMAR = path.join(here, "../../../dist/xgrammar.js");
globalThis.require ??= createRequire(import.meta.url);
globalThis.__filename ??= XGRAMMAR;

const VOCAB = 260;  // not a multiple of 32: the mask's last word is partly padding
const STOP = 256;
const LOWEST = -3.4028234663852886e38;  // what the WebGPU kernel writes (webbuild.kernels.token_bitmask)

/** A byte-level vocabulary: the 256 byte characters (GPT-2's table), a stop token, 3 unused ids. */
function byteLevelTokenizer() {
  const vocab = byteLevelVocab();
  return { model: { type: "BPE", vocab, merges: [] }, decoder: { type: "ByteLevel" },
           added_tokens: [{ id: STOP, content: "<|end|>", special: true }] };
}

/** Characters are tokens (ASCII prompts). */
const tokenizer = {
  encodeChat: (messages) => ({ prompt: "", ids: [...messages.map((m) => m.content).join("")].map((c) => c.charCodeAt(0)) }),
  streamDecoder: () => ({ push: (id) => String.fromCharCode(id), flush: () => "" }),
  decode: (ids) => String.fromCharCode(...ids),
  tokenBytes: (id) => [id],
};

/** A model runtime whose logits depend only on the sequence length (the same in every run), held
 * "on the device" until read: maskLogits applies the module's mask there, as the kernel does. */
class DeviceLogitsRuntime {
  constructor(hasTokenBitmask) {
    this.metadata = { params: [], kv_page_size: 16, single_token_past_window: false, prefill_chunk: 64 };
    this.hasArgmax = true;
    this.hasTokenBitmask = hasTokenBitmask;
    this.length = 0;
    this.reads = { argmax: 0, logits: 0, masks: 0 };
  }
  createState() {}
  async sync() {}
  resetSequence() { this.length = 0; }
  popTokens(count) { this.length -= count; }
  forward(tokens) {
    this.length += tokens.length;
    let x = this.length * 2654435761 >>> 0;
    const values = Float32Array.from({ length: VOCAB }, () => {
      x = (Math.imul(x, 1103515245) + 12345) >>> 0;
      return (x / 2 ** 32) * 8 - 4;
    });
    return { shape: [1, 1, VOCAB], values, dispose() {} };
  }
  maskLogits(logits, bitmask) {
    assert.equal(bitmask.length, Math.ceil(VOCAB / 32));
    this.reads.masks++;
    for (let i = 0; i < VOCAB; i++) if (((bitmask[i >> 5] >>> (i & 31)) & 1) === 0) logits.values[i] = LOWEST;
  }
  async readArgmax(logits) {
    this.reads.argmax++;
    let best = 0;
    for (let i = 1; i < VOCAB; i++) if (logits.values[i] > logits.values[best]) best = i;
    return best;
  }
  async readLogits(logits) { this.reads.logits++; return Float32Array.from(logits.values); }
}

const SAMPLING = { temperature: 0, top_p: 1, repetition_penalty: 1, frequency_penalty: 0, presence_penalty: 0 };
const config = { model_id: "m", context_window_size: 256, prefill_chunk_size: 64, vocab_size: VOCAB,
                 state: { kv_state: "paged_kv_cache", sliding_window: null }, stop_token_ids: [STOP], stop_strings: [] };
const SCHEMA = { type: "object", properties: { a: { type: "integer" }, b: { enum: ["x", "yz"] } }, required: ["a", "b"] };

async function generate(hasTokenBitmask, extra) {
  const runtime = new DeviceLogitsRuntime(hasTokenBitmask);
  const grammars = new GrammarEngine(byteLevelTokenizer(), VOCAB, [STOP], () => loadXGrammar(XGRAMMAR));
  const pipeline = new LLMChatPipeline(runtime, config, tokenizer, { backend: "webgpu", threads: 1 }, 0, grammars);
  const req = validateRequest({ messages: [{ role: "user", content: "json" }], max_tokens: 60,
                                response_format: { type: "json_schema", json_schema: { name: "s", schema: SCHEMA } },
                                ...extra }, { sampling: SAMPLING, vocabSize: VOCAB, contextWindow: 256 });
  let text = "";
  const result = await pipeline.generate(req, () => false, (c) => { text += c.choices[0]?.delta?.content ?? ""; });
  return { text, result, reads: runtime.reads };
}

test("greedy under a grammar: the module masks the logits and only the argmax is read back, the same tokens as the JS mask", async () => {
  const device = await generate(true, {});
  const js = await generate(false, {});
  assert.equal(device.text, js.text);
  assert.deepEqual(Object.keys(JSON.parse(device.text)).sort(), ["a", "b"]);
  const tokens = device.result.usage.completion_tokens;
  assert.deepEqual(device.reads, { argmax: tokens, logits: 0, masks: tokens });
  assert.deepEqual(js.reads, { argmax: 0, logits: tokens, masks: 0 });
  assert.equal(device.result.usage.extra.grammar_mask_where, "module");
  assert.equal(js.result.usage.extra.grammar_mask_where, "js");
});

test("sampled under a grammar: masked by the module before the one read-back, the same seeded tokens as the JS mask", async () => {
  const request = { temperature: 1.5, seed: 3, repetition_penalty: 1.1 };
  const device = await generate(true, request);
  const js = await generate(false, request);
  assert.equal(device.text, js.text);
  JSON.parse(device.text);
  const tokens = device.result.usage.completion_tokens;
  assert.deepEqual(device.reads, { argmax: 0, logits: tokens, masks: tokens });
  assert.equal(js.reads.masks, 0);
});

test("logprobs need the model's own logits: the mask stays in JS", async () => {
  const device = await generate(true, { logprobs: true });
  assert.equal(device.reads.masks, 0);
  assert.equal(device.result.usage.extra.grammar_mask_where, "js");
  assert.equal(device.text, (await generate(false, {})).text);
});
