import assert from "node:assert/strict";
import { createRequire } from "node:module";
import path from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import { applyBitmask, encodedVocab, GrammarEngine, loadXGrammar, vocabKind } from "../../../dist/modules/grammar.js";
import { InvalidRequestError } from "../../../dist/modules/errors.js";
import { byteLevelVocab } from "./byte_vocab.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const XGRAMMAR = path.join(here, "../../../dist/xgrammar.js");
// the xgrammar bundle's emscripten loader takes its node code path here: it needs CommonJS globals
globalThis.require ??= createRequire(import.meta.url);
globalThis.__filename ??= XGRAMMAR;

test("vocabKind reads the decoder: byte-level BPE, SentencePiece byte fallback (and its prepended space), raw", () => {
  assert.deepEqual(vocabKind({ decoder: { type: "ByteLevel" } }), { type: "byte_level", prependSpace: false });
  const llama2 = { normalizer: { type: "Sequence", normalizers: [{ type: "Prepend", prepend: "\u2581" }] },
                   decoder: { type: "Sequence", decoders: [{ type: "Replace" }, { type: "ByteFallback" }] } };
  assert.deepEqual(vocabKind(llama2), { type: "byte_fallback", prependSpace: true });
  assert.deepEqual(vocabKind({ decoder: { type: "Sequence", decoders: [{ type: "ByteFallback" }] } }),
                   { type: "byte_fallback", prependSpace: false });
  assert.deepEqual(vocabKind({ decoder: { type: "WordPiece" } }), { type: "raw", prependSpace: false });
});

test("encodedVocab: ids past the tokenizer and special tokens are empty (never allowed by the grammar)", () => {
  const tj = { model: { vocab: { a: 0, b: 1 } }, added_tokens: [{ id: 2, content: "<eos>", special: true },
                                                                  { id: 3, content: "x y", special: false }] };
  assert.deepEqual(encodedVocab(tj, 6), ["a", "b", "", "x y", "", ""]);
});

test("applyBitmask: a clear bit bans the token", () => {
  const logits = Float32Array.from({ length: 40 }, (_, i) => i);
  const mask = Int32Array.of(0b101, -1);
  applyBitmask(logits, mask);
  assert.deepEqual([...logits.slice(0, 4)], [0, -Infinity, 2, -Infinity]);
  assert.equal(logits[31], -Infinity);
  assert.deepEqual([...logits.slice(32)], [32, 33, 34, 35, 36, 37, 38, 39]);
});

/** A byte-level vocabulary: the 256 byte characters (GPT-2's table), then a stop token. */
function byteLevelTokenizer() {
  const vocab = byteLevelVocab();
  return { model: { type: "BPE", vocab, merges: [] }, decoder: { type: "ByteLevel" },
           added_tokens: [{ id: 256, content: "<|end|>", special: true }] };
}

test("GrammarEngine: the mask allows exactly what the schema can continue with, then only the stop token", async () => {
  const engine = new GrammarEngine(byteLevelTokenizer(), 260, [256], () => loadXGrammar(XGRAMMAR));
  const stats = { compileSeconds: 0, maskSeconds: 0, maskedTokens: 0 };
  const schema = JSON.stringify({ type: "object", properties: { ok: { type: "boolean" } }, required: ["ok"] });
  const mask = await engine.mask({ kind: "json_schema", schema }, stats);
  const allowed = async () => {
    const logits = new Float32Array(260);
    await mask.apply(logits);
    return [...logits.keys()].filter((i) => logits[i] === 0);
  };
  const text = '{"ok":true}';
  for (const ch of text) {
    const ids = await allowed();
    assert.ok(ids.includes(ch.charCodeAt(0)), `${ch} allowed after the text before it`);
    if (ch === "{") assert.deepEqual(ids, ["{".charCodeAt(0)], "compact JSON: the object opens at once");
    mask.accept(ch.charCodeAt(0));
  }
  assert.deepEqual(await allowed(), [256], "complete: only the stop token");
  assert.ok(stats.compileSeconds > 0 && stats.maskedTokens === text.length + 1);
  mask.dispose();
  await assert.rejects(engine.mask({ kind: "grammar", ebnf: "root ::= ", root: "root" }, stats),
                       (err) => err instanceof InvalidRequestError && err.details.field === "response_format.grammar");
});
