// Tool-call syntaxes written with a special token (Mistral's [TOOL_CALLS] is a control token in its
// tokenizers): the tokenizer keeps its text when special tokens are skipped, and the grammar may
// produce it, so a model that calls a tool by emitting it is parsed; other special tokens stay out.
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import path from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import { compactJsonContents, encodedVocab, GrammarEngine, loadXGrammar } from "../../../dist/modules/grammar.js";
import { Tokenizer } from "../../../dist/modules/tokenizer.js";
import { TOOL_SYNTAXES } from "../../../dist/modules/tool_syntax.js";
import { normalizeTools, ToolCallStream, toolGrammar } from "../../../dist/modules/tools.js";
import { byteLevelVocab } from "./byte_vocab.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const XGRAMMAR = path.join(here, "../../../dist/xgrammar.js");
globalThis.require ??= createRequire(import.meta.url);
globalThis.__filename ??= XGRAMMAR;

const MISTRAL = TOOL_SYNTAXES.find((s) => s.id === "mistral");
const EOS = 256, TOOL_CALLS = 257, VOCAB = 260;
// A Mistral-style template with tools (written for these tests).
const MISTRAL_TEMPLATE = "{% if tools %}[AVAILABLE_TOOLS]{{ tools | tojson }}[/AVAILABLE_TOOLS]{% endif %}" +
  "{% for m in messages %}{% if m.role == 'user' %}[INST]{{ m.content }}[/INST]" +
  "{% elif m.tool_calls %}[TOOL_CALLS]{{ m.tool_calls | tojson }}</s>{% else %}{{ m.content }}</s>{% endif %}{% endfor %}";
const ADD = { type: "function", function: { name: "add", parameters: {
  type: "object", properties: { a: { type: "integer" }, b: { type: "integer" } }, required: ["a", "b"] } } };

/** A byte-level BPE tokenizer: the 256 byte characters, then </s> and [TOOL_CALLS], both special. */
function tokenizerJson() {
  const vocab = byteLevelVocab();
  const added = (id, content) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false,
                                    special: true });
  return { version: "1.0", added_tokens: [added(EOS, "</s>"), added(TOOL_CALLS, "[TOOL_CALLS]")], normalizer: null,
           pre_tokenizer: { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
           post_processor: null, decoder: { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
           model: { type: "BPE", vocab, merges: [] } };
}

const bytes = (text) => Array.from(new TextEncoder().encode(text));

test("the tokenizer keeps the text of the special tokens its template's tool syntax writes, and only those", () => {
  const tok = new Tokenizer(tokenizerJson(), {}, { chat_template: MISTRAL_TEMPLATE });
  assert.deepEqual([...tok.keptSpecialTokens], ["[TOOL_CALLS]"]);
  const ids = [TOOL_CALLS, ...bytes('[{"name": "add"}]'), EOS];
  assert.equal(tok.decode(ids, { skipSpecial: true }), '[TOOL_CALLS][{"name": "add"}]');
  assert.equal(tok.decode(ids), '[TOOL_CALLS][{"name": "add"}]</s>');
  assert.equal(tok.decode([EOS], { skipSpecial: true }), "");
  const plain = new Tokenizer(tokenizerJson(), {}, { chat_template: "{% for m in messages %}{{ m.content }}{% endfor %}" });
  assert.equal(plain.keptSpecialTokens.size, 0, "a template without tools keeps no special token");
  assert.equal(plain.decode(ids, { skipSpecial: true }), '[{"name": "add"}]');
});

test("encodedVocab gives a kept special token its text; the others stay empty (never allowed)", () => {
  const vocab = encodedVocab(tokenizerJson(), VOCAB, new Set(["[TOOL_CALLS]"]));
  assert.equal(vocab[TOOL_CALLS], "[TOOL_CALLS]");
  assert.equal(vocab[EOS], "");
  assert.equal(encodedVocab(tokenizerJson(), VOCAB)[TOOL_CALLS], "");
});

/** The ids the grammar of a required Mistral call allows first, with and without the kept token. */
async function firstAllowed(keep) {
  const engine = new GrammarEngine(tokenizerJson(), VOCAB, [EOS], () => loadXGrammar(XGRAMMAR), keep);
  const stats = { compileSeconds: 0, maskSeconds: 0, maskedTokens: 0 };
  const tag = toolGrammar(MISTRAL, normalizeTools({ tools: [ADD], tool_choice: "required" }));
  const mask = await engine.mask({ kind: "structural_tag", tag }, stats);
  const logits = new Float32Array(VOCAB);
  await mask.apply(logits);
  const allowed = [...logits.keys()].filter((i) => logits[i] === 0);
  return { allowed, mask };
}

test("a required Mistral call may open with the [TOOL_CALLS] token; the rest is the call's JSON", async () => {
  const { allowed, mask } = await firstAllowed(new Set(["[TOOL_CALLS]"]));
  assert.ok(allowed.includes(TOOL_CALLS), "the special token opens the call");
  assert.ok(!allowed.includes(EOS));
  mask.accept(TOOL_CALLS);
  const body = '[{"name": "add", "arguments": {"a":1,"b":2}}]';
  for (const id of bytes(body)) {
    const logits = new Float32Array(VOCAB);
    await mask.apply(logits);
    assert.equal(logits[id], 0, `${String.fromCharCode(id)} allowed`);
    mask.accept(id);
  }
  mask.dispose();
  const without = await firstAllowed(new Set());
  assert.ok(!without.allowed.includes(TOOL_CALLS), "not kept: the special token is never allowed");
  without.mask.dispose();
});

test("a Mistral call streamed after the kept token is parsed into tool calls", () => {
  const tok = new Tokenizer(tokenizerJson(), {}, { chat_template: MISTRAL_TEMPLATE });
  const text = tok.decode([TOOL_CALLS, ...bytes('[{"name": "add", "arguments": {"a":1,"b":2}}]')], { skipSpecial: true });
  const stream = new ToolCallStream(MISTRAL, () => "call_x");
  const out = stream.push(text);
  const rest = stream.flush();
  assert.equal(out.content + rest.content, "");
  assert.deepEqual(out.toolCalls, [{ index: 0, id: "call_x", type: "function", function: { name: "add", arguments: "" } },
                                   { index: 0, function: { arguments: '{"a":1,"b":2}' } }]);
});

/** Whether the grammar of `req`'s tools in `syntax` (compact JSON, as the engine compiles it) accepts each text. */
async function accepts(syntax, req, texts) {
  const xg = await loadXGrammar(XGRAMMAR);
  const grammar = await xg.Grammar.fromStructuralTag(await compactJsonContents(xg, toolGrammar(syntax, normalizeTools(req))));
  const out = [];
  for (const t of texts) out.push(await xg.Testings.isGrammarAcceptString(grammar, t));
  grammar.dispose();
  return out;
}

test("Mistral: every call of a reply in one [TOOL_CALLS] list; required, auto and parallel_tool_calls false", async () => {
  const one = '[TOOL_CALLS][{"name": "add", "arguments": {"a":1,"b":2}}]';
  const two = '[TOOL_CALLS][{"name": "add", "arguments": {"a":1,"b":2}}, {"name": "add", "arguments": {"a":3,"b":4}}]';
  const bad = '[TOOL_CALLS][{"name": "add", "arguments": {"a":"x","b":2}}]';
  assert.deepEqual(await accepts(MISTRAL, { tools: [ADD], tool_choice: "required" }, ["text", one, two, bad]),
                   [false, true, true, false]);
  assert.deepEqual(await accepts(MISTRAL, { tools: [ADD], tool_choice: "required", parallel_tool_calls: false }, [one, two]),
                   [true, false]);
  assert.deepEqual(await accepts(MISTRAL, { tools: [ADD] }, ["Just text.", "Sure. " + one, "Sure. " + bad]),
                   [true, true, false]);
});
