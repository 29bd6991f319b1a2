import assert from "node:assert/strict";
import { test } from "node:test";

import { ModelLoadError } from "../../../dist/modules/errors.js";
import { StreamDecoder, Tokenizer } from "../../../dist/modules/tokenizer.js";

// A tiny byte-level BPE tokenizer (GPT-2 style) built here: 3 special tokens, 256 byte tokens, a
// few merges.
function bytesToUnicode() {
  const bs = [];
  for (let i = 33; i <= 126; i++) bs.push(i);
  for (let i = 161; i <= 172; i++) bs.push(i);
  for (let i = 174; i <= 255; i++) bs.push(i);
  const cs = [...bs];
  let n = 0;
  for (let b = 0; b < 256; b++) if (!bs.includes(b)) { bs.push(b); cs.push(256 + n++); }
  return new Map(bs.map((b, i) => [b, String.fromCodePoint(cs[i])]));
}

const SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
const MERGES = [["h", "e"], ["l", "l"], ["he", "ll"], ["hell", "o"], ["Ġ", "w"], ["o", "r"], ["Ġw", "or"]];
const TEMPLATE = "{{ bos_token }}{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}" +
  "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

function tinyTokenizerJson() {
  const vocab = {};
  SPECIALS.forEach((t, i) => { vocab[t] = i; });
  for (const ch of bytesToUnicode().values()) vocab[ch] = Object.keys(vocab).length;
  for (const [a, b] of MERGES) vocab[a + b] = Object.keys(vocab).length;
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: SPECIALS.map((content, id) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true })),
    normalizer: null,
    pre_tokenizer: { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: { type: "ByteLevel", add_prefix_space: true, trim_offsets: false, use_regex: true },
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: "BPE", dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null,
      fuse_unk: false, byte_fallback: false, vocab, merges: MERGES.map(([a, b]) => `${a} ${b}`),
    },
  };
}

const CONFIG = { bos_token: "<|im_start|>", eos_token: { content: "<|im_end|>" }, chat_template: TEMPLATE };

function make(chat = {}) {
  return new Tokenizer(tinyTokenizerJson(), CONFIG, chat);
}

test("encode applies merges and adds no special tokens", () => {
  const tok = make();
  const ids = tok.encode("hello world");
  assert.deepEqual(ids.map((i) => tok.idToToken(i)), ["hello", "Ġwor", "l", "d"]);
  assert.equal(tok.decode(ids), "hello world");
});

test("special-token text maps to its id; skipSpecial drops it", () => {
  const tok = make();
  const ids = tok.encode("<|im_start|>hi<|im_end|>");
  assert.equal(ids[0], 1);
  assert.equal(ids.at(-1), 2);
  assert.equal(tok.decode(ids), "<|im_start|>hi<|im_end|>");
  assert.equal(tok.decode(ids, { skipSpecial: true }), "hi");
  assert.ok(tok.isSpecial(2));
  assert.ok(!tok.isSpecial(ids[1]));
  assert.equal(tok.tokenToId("<|im_end|>"), 2);
});

test("round trip of awkward strings", () => {
  const tok = make();
  for (const text of ["héllo wörld", "emoji 🦙👩‍👩‍👧", "中文字符", "a\tb\r\nc   d", "12345", ""]) {
    assert.equal(tok.decode(tok.encode(text)), text);
  }
});

test("chat template gets messages, add_generation_prompt, bos/eos tokens", () => {
  const tok = make();
  const prompt = tok.applyChatTemplate([{ role: "user", content: "hi" }]);
  assert.equal(prompt, "<|im_start|><|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
  assert.equal(tok.applyChatTemplate([{ role: "user", content: "hi" }], { addGenerationPrompt: false }),
    "<|im_start|><|im_start|>user\nhi<|im_end|>\n");
});

test("chat-config template takes precedence; missing template is a model-load error", () => {
  const tok = make({ chat_template: "{% for m in messages %}[{{ m.content }}]{% endfor %}" });
  assert.equal(tok.applyChatTemplate([{ role: "user", content: "x" }]), "[x]");
  const none = new Tokenizer(tinyTokenizerJson(), {}, {});
  assert.throws(() => none.applyChatTemplate([{ role: "user", content: "x" }]), ModelLoadError);
});

test("add_bos_token prepends BOS unless the prompt already starts with it", () => {
  const plain = make({ chat_template: "{% for m in messages %}{{ m.content }}{% endfor %}", bos_token_id: 0, add_bos_token: true });
  assert.equal(plain.encodeChat([{ role: "user", content: "hello" }]).ids[0], 0);
  assert.equal(plain.encodePrompt("<|endoftext|>hello").filter((i) => i === 0).length, 1);
  const off = make({ chat_template: "{% for m in messages %}{{ m.content }}{% endfor %}", bos_token_id: 0, add_bos_token: false });
  assert.notEqual(off.encodeChat([{ role: "user", content: "hello" }]).ids[0], 0);
});

test("stream decoder holds back incomplete UTF-8 and never emits U+FFFD", () => {
  const tok = make();
  const text = "hi 🦙 and 👩‍👩‍👧, ünïcödé 中文 ok";
  const ids = tok.encode(text);
  const dec = tok.streamDecoder();
  const deltas = ids.map((id) => dec.push(id));
  deltas.push(dec.flush());
  assert.equal(deltas.join(""), text);
  assert.ok(deltas.every((d) => !d.includes("\uFFFD")));
  // the llama emoji is 4 byte tokens: the first three yield nothing
  const llama = tok.encode("🦙");
  assert.equal(llama.length, 4);
  const d2 = new StreamDecoder(tok);
  assert.deepEqual(llama.map((id) => d2.push(id)), ["", "", "", "🦙"]);
});

test("stream decoder: skipSpecial, context ids, flush of dangling bytes", () => {
  const tok = make();
  const ids = tok.encode("hello<|im_end|>");
  const dec = tok.streamDecoder({ skipSpecial: true, context: tok.encode("<|im_start|>assistant\n") });
  assert.equal(ids.map((id) => dec.push(id)).join("") + dec.flush(), "hello");
  const partial = tok.encode("🦙").slice(0, 2);
  const d = tok.streamDecoder();
  assert.equal(partial.map((id) => d.push(id)).join(""), "");
  assert.equal(d.flush(), "\uFFFD");
  assert.equal(d.flush(), "");
});

test("a tokenizer.json that is not an object is a model-load error", () => {
  assert.throws(() => new Tokenizer(null), (e) => e.code === "model-load");
});

test("a word-level vocabulary's unknown words are its <unk> id (as the Rust tokenizers give them)", () => {
  const vocab = { "<unk>": 0, "<s>": 1, "</s>": 2, w5: 3, w7: 4 };
  const json = { version: "1.0", added_tokens: [], normalizer: null, post_processor: null, decoder: null,
                 pre_tokenizer: { type: "Whitespace" }, model: { type: "WordLevel", vocab, unk_token: "<unk>" } };
  const tok = new Tokenizer(json, {}, {});
  assert.deepEqual(tok.encode("w5 ** <b> w7"), [3, 0, 0, 0, 0, 4]);
});
