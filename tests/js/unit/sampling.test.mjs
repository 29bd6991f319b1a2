import assert from "node:assert/strict";
import { test } from "node:test";

import * as S from "../../../dist/modules/sampling.js";

const BASE = { temperature: 1, top_p: 1, repetition_penalty: 1, frequency_penalty: 0, presence_penalty: 0 };

function logitsFor(probs) {
  return Float32Array.from(probs, (p) => Math.log(p));
}

test("Rng: deterministic per seed, uniform-looking, in [0, 1)", () => {
  const a = new S.Rng(1234), b = new S.Rng(1234), c = new S.Rng(1235);
  const xs = Array.from({ length: 1000 }, () => a.next());
  assert.deepEqual(xs, Array.from({ length: 1000 }, () => b.next()));
  assert.notDeepEqual(xs.slice(0, 10), Array.from({ length: 10 }, () => c.next()));
  assert.ok(xs.every((x) => x >= 0 && x < 1));
  const mean = xs.reduce((s, x) => s + x, 0) / xs.length;
  assert.ok(Math.abs(mean - 0.5) < 0.05, `mean ${mean}`);
  // large seeds use both halves
  assert.notEqual(new S.Rng(2 ** 40).next(), new S.Rng(0).next());
  const buckets = new Array(16).fill(0);
  const r = new S.Rng(7);
  for (let i = 0; i < 160000; i++) buckets[Math.floor(r.next() * 16)]++;
  for (const n of buckets) assert.ok(Math.abs(n - 10000) < 500, `bucket ${n}`);
});

test("argmax, lowest index on ties, NaN ignored", () => {
  assert.equal(S.argmax(Float32Array.of(1, 5, 3)), 1);
  assert.equal(S.argmax(Float32Array.of(2, 7, 7)), 1);
  assert.equal(S.argmax(Float32Array.of(NaN, 1, 0)), 1);
});

test("greedy (temperature 0) picks the argmax", () => {
  const logits = Float32Array.of(0.1, 2.5, -1, 2.4);
  const s = new S.Sampler({ ...BASE, temperature: 0 });
  for (let i = 0; i < 5; i++) assert.equal(s.sample(logits.slice()), 1);
});

test("tiny top_p selects the argmax", () => {
  const rng = new S.Rng(1);
  const logits = logitsFor([0.2, 0.3, 0.35, 0.15]);
  for (let i = 0; i < 200; i++) assert.equal(S.sampleFromLogits(logits, 1, 1e-6, rng), 2);
});

test("same seed, same sequence; different seed, different sequence", () => {
  const vocab = 500;
  const logits = Float32Array.from({ length: vocab }, (_, i) => Math.sin(i * 0.37) * 3);
  const draw = (seed) => {
    const s = new S.Sampler({ ...BASE, temperature: 0.9, top_p: 0.95, seed });
    return Array.from({ length: 64 }, () => { const t = s.sample(logits.slice()); s.accept(t); return t; });
  };
  assert.deepEqual(draw(42), draw(42));
  assert.notDeepEqual(draw(42), draw(43));
  const s = new S.Sampler({ ...BASE });
  assert.ok(Number.isSafeInteger(s.seed));
});

test("logit_bias -100 bans a token even under greedy; +bias promotes", () => {
  const logits = Float32Array.of(1, 9, 2);
  const s = new S.Sampler({ ...BASE, temperature: 0, logit_bias: new Map([[1, -100]]) });
  assert.equal(s.sample(logits.slice()), 2);
  const rng = new S.Rng(3);
  const banned = Float32Array.of(5, 5, 5);
  S.applyLogitBias(banned, new Map([[0, -100], [2, -100]]));
  for (let i = 0; i < 100; i++) assert.equal(S.sampleFromLogits(banned, 1, 1, rng), 1);
  const up = Float32Array.of(1, 9, 2);
  S.applyLogitBias(up, new Map([[0, 10]]));
  assert.equal(S.argmax(up), 0);
});

test("repetition penalty divides positive and multiplies negative seen logits", () => {
  const logits = Float32Array.of(2, -2, 2, -2);
  S.applyRepetitionPenalty(logits, [0, 1], 2);
  assert.deepEqual(Array.from(logits), [1, -4, 2, -2]);
  const s = new S.Sampler({ ...BASE, temperature: 0, repetition_penalty: 1.5 }, [0]);
  // token 0 was in the prompt: 3 / 1.5 = 2 < 2.5
  assert.equal(s.sample(Float32Array.of(3, 2.5)), 1);
  s.accept(1);
  // now both are seen: 3/1.5 = 2 > 2.5/1.5
  assert.equal(s.sample(Float32Array.of(3, 2.5)), 0);
});

test("frequency and presence penalties act on generated-token counts only", () => {
  const logits = Float32Array.of(1, 1, 1, 1);
  S.applyFrequencyPresencePenalty(logits, new Map([[0, 3], [1, 1]]), 0.5, 0.25);
  assert.deepEqual(Array.from(logits), [1 - 1.5 - 0.25, 1 - 0.5 - 0.25, 1, 1]);
  const s = new S.Sampler({ ...BASE, temperature: 0, frequency_penalty: 1, presence_penalty: 0 }, [0]);
  const row = () => Float32Array.of(5, 4.5, 0);
  assert.equal(s.sample(row()), 0);  // prompt tokens are not counted
  s.accept(0);
  assert.equal(s.sample(row()), 1);  // 5 - 1 < 4.5
  const p = new S.Sampler({ ...BASE, temperature: 0, presence_penalty: 2 });
  p.accept(0); p.accept(0);
  const l = row();
  p.process(l);
  assert.deepEqual(Array.from(l), [3, 4.5, 0]);  // presence counts once
});

test("temperature sampling matches the softmax distribution", () => {
  const probs = [0.5, 0.25, 0.15, 0.1];
  const temperature = 0.7;
  const logits = logitsFor(probs);
  const weights = probs.map((p) => p ** (1 / temperature));
  const z = weights.reduce((a, b) => a + b, 0);
  const expected = weights.map((w) => w / z);
  const rng = new S.Rng(99);
  const n = 100000;
  const counts = new Array(4).fill(0);
  for (let i = 0; i < n; i++) counts[S.sampleFromLogits(logits, temperature, 1, rng)]++;
  for (let k = 0; k < 4; k++) {
    const sd = Math.sqrt(expected[k] * (1 - expected[k]) / n);
    assert.ok(Math.abs(counts[k] / n - expected[k]) < 5 * sd, `token ${k}: ${counts[k] / n} vs ${expected[k]}`);
  }
});

test("top_p keeps the smallest nucleus reaching p, renormalized", () => {
  const logits = logitsFor([0.5, 0.3, 0.15, 0.05]);
  const { ids, probs } = S.nucleus(logits, 1, 0.75);
  assert.deepEqual(Array.from(ids), [0, 1]);
  assert.ok(Math.abs(probs[0] - 0.625) < 1e-6 && Math.abs(probs[1] - 0.375) < 1e-6);
  const all = S.nucleus(logits, 1, 0.95);
  assert.deepEqual(Array.from(all.ids), [0, 1, 2, 3].slice(0, 3));
  const rng = new S.Rng(5);
  const seen = new Set();
  for (let i = 0; i < 2000; i++) seen.add(S.sampleFromLogits(logits, 1, 0.75, rng));
  assert.deepEqual([...seen].sort(), [0, 1]);
});

test("top_p threshold prefilter gives the same nucleus as a full sort", () => {
  const rng = new S.Rng(11);
  for (let trial = 0; trial < 20; trial++) {
    const n = 2000;
    const logits = Float32Array.from({ length: n }, () => (rng.next() - 0.5) * 20);
    const topP = 0.5 + rng.next() * 0.49;
    const { ids } = S.nucleus(logits, 0.8, topP);
    const w = Array.from(logits, (l) => Math.exp(l / 0.8));
    const z = w.reduce((a, b) => a + b, 0);
    const order = [...w.keys()].sort((a, b) => w[b] - w[a] || a - b);
    let cum = 0, k = 0;
    while (cum < topP) cum += w[order[k++]] / z;
    assert.deepEqual(Array.from(ids), order.slice(0, k));
  }
});

test("all tokens banned falls back to argmax instead of failing", () => {
  const logits = Float32Array.of(-Infinity, -Infinity);
  assert.equal(S.sampleFromLogits(logits, 1, 0.9, new S.Rng(1)), 0);
});

test("samples from a 49152-token vocabulary stay inside its nucleus", () => {
  const rng = new S.Rng(2);
  const logits = Float32Array.from({ length: 49152 }, () => (rng.next() - 0.5) * 16);
  const temperature = 0.7, topP = 0.95;
  const max = Math.max(...logits);
  const w = Array.from(logits, (l) => Math.exp((l - max) / temperature));
  const z = w.reduce((a, b) => a + b, 0);
  const order = w.map((_, i) => i).sort((a, b) => w[b] - w[a]);
  const nucleus = new Set();
  let cum = 0;
  for (let k = 0; cum < topP + 1e-6; k++) { nucleus.add(order[k]); cum += w[order[k]] / z; }
  for (let i = 0; i < 50; i++) {
    const id = S.sampleFromLogits(logits, temperature, topP, rng);
    assert.ok(nucleus.has(id), `token ${id} is outside the top-p set of ${nucleus.size}`);
  }
});
