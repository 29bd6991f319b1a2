// The embeddings API's pure parts (embeddings.ts): request validation, truncation to the model's
// longest input with the tokenizer's frame kept, batch planning and padding, shortened vectors,
// the base64 form, and the pipeline's bookkeeping (request order kept across length-sorted batches);
// plus the model-kind error's code and its round trip through a worker message.
import assert from "node:assert/strict";
import { test } from "node:test";

import * as Emb from "../../../dist/modules/embeddings.js";
import * as E from "../../../dist/modules/errors.js";
import { Tokenizer } from "../../../dist/modules/tokenizer.js";

const EMBEDDING = { function: "encode", dimensions: 4, pooling: "mean", normalize: true, max_seq_length: 6 };
const CONFIG = { model_id: "tiny-embed", model_kind: "embedding", embedding: EMBEDDING, vocab_size: 20 };

/** A small BERT-style tokenizer.json: lowercasing normaliser, WordPiece, [CLS] $A [SEP] frame. */
function bertTokenizer() {
  const words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "cat", "sat", "on", "mat", "a", "dog", "##s", "ran", "."];
  const vocab = Object.fromEntries(words.map((w, i) => [w, i]));
  return new Tokenizer({
    version: "1.0", truncation: null, padding: null,
    added_tokens: ["[PAD]", "[UNK]", "[CLS]", "[SEP]"].map((content, id) => ({
      id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true })),
    normalizer: { type: "BertNormalizer", clean_text: true, handle_chinese_chars: true, strip_accents: null, lowercase: true },
    pre_tokenizer: { type: "BertPreTokenizer" },
    post_processor: {
      type: "TemplateProcessing",
      single: [{ SpecialToken: { id: "[CLS]", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } },
               { SpecialToken: { id: "[SEP]", type_id: 0 } }],
      pair: [],
      special_tokens: { "[CLS]": { id: "[CLS]", ids: [2], tokens: ["[CLS]"] }, "[SEP]": { id: "[SEP]", ids: [3], tokens: ["[SEP]"] } },
    },
    decoder: { type: "WordPiece", prefix: "##", cleanup: true },
    model: { type: "WordPiece", unk_token: "[UNK]", continuing_subword_prefix: "##", max_input_chars_per_word: 100, vocab },
  }, null, {});
}

test("requests: every input form, dimensions and encoding_format", () => {
  assert.deepEqual(Emb.validateEmbeddingRequest({ input: "hi" }, EMBEDDING, 20),
                   { texts: ["hi"], ids: null, dimensions: 4, base64: false });
  assert.deepEqual(Emb.validateEmbeddingRequest({ input: ["a", "b"], dimensions: 2, encoding_format: "base64" }, EMBEDDING, 20),
                   { texts: ["a", "b"], ids: null, dimensions: 2, base64: true });
  assert.deepEqual(Emb.validateEmbeddingRequest({ input: [2, 5, 3] }, EMBEDDING, 20).ids, [[2, 5, 3]]);
  assert.deepEqual(Emb.validateEmbeddingRequest({ input: [[2, 3], [2, 4, 3]] }, EMBEDDING, 20).ids, [[2, 3], [2, 4, 3]]);
  const bad = [
    [{ input: "" }, "input"], [{ input: [] }, "input"], [{ input: ["a", 1] }, "input"], [{ input: [1, 20] }, "input"],
    [{ input: [[1], [1.5]] }, "input[1]"], [{ input: [[]] }, "input[0]"], [{ input: "a", dimensions: 5 }, "dimensions"],
    [{ input: "a", dimensions: 0 }, "dimensions"], [{ input: "a", encoding_format: "int8" }, "encoding_format"],
    [{ input: "a", model: 3 }, "model"], [null, "request"],
    [{ input: Array.from({ length: Emb.MAX_INPUTS + 1 }, () => "x") }, "input"],
  ];
  for (const [body, field] of bad) {
    assert.throws(() => Emb.validateEmbeddingRequest(body, EMBEDDING, 20),
                  (err) => err instanceof E.InvalidRequestError && err.code === "invalid-request" && err.field === field,
                  JSON.stringify(body)?.slice(0, 60));
  }
});

test("truncation keeps the frame and shortens the text", () => {
  assert.deepEqual(Emb.truncateInput([2, 5, 6, 3], [5, 6], 6), [2, 5, 6, 3]);
  assert.deepEqual(Emb.truncateInput([2, 5, 6, 7, 8, 9, 3], [5, 6, 7, 8, 9], 4), [2, 5, 6, 3]);
  assert.deepEqual(Emb.truncateInput([5, 6, 7, 8], [5, 6, 7, 8], 2), [5, 6]);  // no frame
  assert.deepEqual(Emb.truncateInput([2, 5, 6, 7], [5, 6, 7], 3), [2, 5, 6]);  // frame before only
});

test("batches: longest first, within the input and token limits, every input once", () => {
  const lengths = [3, 10, 1, 7, 7, 2, 9];
  const batches = Emb.planBatches(lengths, 3, 20);
  assert.deepEqual(batches, [[1, 6], [3, 4], [0, 5, 2]]);
  for (const b of batches) assert.ok(b.length <= 3 && b.length * Math.max(...b.map((i) => lengths[i])) <= 20);
  assert.deepEqual(batches.flat().sort((a, b) => a - b), [0, 1, 2, 3, 4, 5, 6]);
  assert.deepEqual(Emb.planBatches([50], 3, 20), [[0]]);  // one input longer than the token limit still runs
});

test("padding: right-padded ids and a 0/1 mask", () => {
  const { ids, mask, seq } = Emb.padBatch([[2, 5, 3], [2, 3]]);
  assert.equal(seq, 3);
  assert.deepEqual([...ids], [2, 5, 3, 2, 3, 0]);
  assert.deepEqual([...mask], [1, 1, 1, 1, 1, 0]);
});

test("shortened vectors are re-normalised when the model normalises; base64 is little-endian float32", () => {
  const v = Float32Array.from([0.6, 0.8, 0, 0]);
  assert.deepEqual([...Emb.shorten(v, 4, true)], [...v]);
  const short = Emb.shorten(Float32Array.from([3, 4, 12, 0]), 2, true);
  assert.ok(Math.abs(short[0] - 0.6) < 1e-7 && Math.abs(short[1] - 0.8) < 1e-7);
  assert.deepEqual([...Emb.shorten(Float32Array.from([3, 4, 12]), 2, false)], [3, 4]);
  const values = Float32Array.from([1.5, -2.25, 1e-8, 3.4e38]);
  const bytes = Buffer.from(Emb.float32Base64(values), "base64");
  assert.deepEqual([...new Float32Array(bytes.buffer, bytes.byteOffset, 4)], [...values]);
  assert.equal(bytes.readFloatLE(4), -2.25);
});

test("the pipeline frames texts, cuts them, and answers in request order with usage", async () => {
  const tokenizer = bertTokenizer();
  assert.deepEqual(tokenizer.encodeInput("The cat sat."), [2, 4, 5, 6, 13, 3]);
  const calls = [];
  // Each row's vector: (its length, first id, last id, batch call index): enough to check order and padding.
  const encoder = {
    async encode(ids, mask, batch, seq) {
      calls.push({ batch, seq });
      const out = new Float32Array(batch * 4);
      for (let b = 0; b < batch; b++) {
        const row = [...ids.subarray(b * seq, (b + 1) * seq)];
        const len = mask.subarray(b * seq, (b + 1) * seq).reduce((a, x) => a + x, 0);
        out.set([len, row[0], row[len - 1], calls.length], b * 4);
      }
      return out;
    },
  };
  const pipeline = new Emb.EmbeddingPipeline(encoder, CONFIG, tokenizer);
  const texts = ["the cat", "the cat sat on the mat .", "dogs ran", "a"];
  const res = await pipeline.create(Emb.validateEmbeddingRequest({ input: texts }, EMBEDDING, 20));
  assert.equal(res.object, "list");
  assert.equal(res.model, "tiny-embed");
  assert.deepEqual(res.data.map((d) => [d.object, d.index]), texts.map((_, i) => ["embedding", i]));
  // lengths with the frame: 4, 9 -> cut to 6 ([CLS] 4 words [SEP]), 5 (dog ##s ran), 3
  assert.deepEqual(res.data.map((d) => d.embedding.slice(0, 3)), [[4, 2, 3], [6, 2, 3], [5, 2, 3], [3, 2, 3]]);
  assert.deepEqual(res.usage, { prompt_tokens: 18, total_tokens: 18 });
  assert.deepEqual(calls, [{ batch: 4, seq: 6 }]);
  await assert.rejects(pipeline.create(Emb.validateEmbeddingRequest({ input: [[2, 4, 4, 4, 4, 4, 3]] }, EMBEDDING, 20)),
                       (err) => err.code === "context-window-exceeded");
  await assert.rejects(pipeline.create(Emb.validateEmbeddingRequest({ input: "a" }, EMBEDDING, 20), () => true),
                       (err) => err instanceof E.AbortedError);
});

test("a request for the other kind of model is a model-kind-mismatch error, across a worker too", () => {
  for (const [kind, operation] of [["embedding", "chat completions"], ["chat", "embeddings"]]) {
    const err = new E.ModelKindError(kind, operation);
    assert.ok(err instanceof E.WebbuildError);
    assert.equal(err.code, "model-kind-mismatch");
    assert.ok(err.fix.length > 0);
    const back = E.deserializeError(JSON.parse(JSON.stringify(E.serializeError(err))));
    assert.ok(back instanceof E.ModelKindError);
    assert.deepEqual([back.code, back.modelKind, back.operation, back.message], [err.code, kind, operation, err.message]);
  }
});
