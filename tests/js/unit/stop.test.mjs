import assert from "node:assert/strict";
import { test } from "node:test";

import { StopMatcher } from "../../../dist/modules/stop.js";

/** Feed deltas; return [emitted text, stopped]. */
function run(stops, deltas) {
  const m = new StopMatcher(stops);
  let out = "", stopped = false;
  for (const d of deltas) {
    const r = m.push(d);
    out += r.text;
    stopped ||= r.stopped;
  }
  if (!stopped) out += m.flush();
  return [out, stopped];
}

test("no stop strings passes text through", () => {
  const m = new StopMatcher([]);
  assert.deepEqual(m.push("abc"), { text: "abc", stopped: false });
});

test("stop string within one delta", () => {
  assert.deepEqual(run(["###"], ["Hello ### world"]), ["Hello ", true]);
});

test("stop string split over deltas is never emitted", () => {
  const m = new StopMatcher(["</end>"]);
  assert.equal(m.push("ok </").text, "ok ");
  assert.equal(m.push("en").text, "");
  const r = m.push("d> trailing");
  assert.equal(r.text, "");
  assert.equal(r.stopped, true);
  assert.equal(r.matched, "</end>");
  assert.equal(m.push("more").text, "");
  assert.equal(m.flush(), "");
});

test("held partial match released when it turns out not to be a stop", () => {
  const m = new StopMatcher(["STOP"]);
  assert.equal(m.push("aST").text, "a");
  assert.equal(m.push("x").text, "STx");
  assert.equal(m.push("ST").text, "");
  assert.equal(m.flush(), "ST");
});

test("character-by-character feeding equals whole-string result", () => {
  const text = "one two <|im_end|> three";
  const [out, stopped] = run(["<|im_end|>", "zzz"], [...text]);
  assert.equal(out, "one two ");
  assert.equal(stopped, true);
  for (let cut = 0; cut <= text.length; cut++) {
    assert.deepEqual(run(["<|im_end|>"], [text.slice(0, cut), text.slice(cut)]), ["one two ", true]);
  }
});

test("earliest of several stops wins; overlapping prefixes", () => {
  assert.deepEqual(run(["bc", "abcd"], ["xab", "cd"]), ["x", true]);
  assert.deepEqual(run(["cd", "bc"], ["xab", "cd"]), ["xa", true]);
  assert.deepEqual(run(["aab"], ["aa", "aab"]), ["aa", true]);
  assert.deepEqual(run(["\n\n"], ["line\n", "\nnext"]), ["line", true]);
});

test("stop at the very start emits nothing", () => {
  assert.deepEqual(run(["Hi"], ["H", "i there"]), ["", true]);
});

test("unicode stop strings", () => {
  assert.deepEqual(run(["🛑"], ["go 🚀 ", "🛑 no"]), ["go 🚀 ", true]);
  assert.deepEqual(run(["é!"], ["caf", "é", "?"]), ["café?", false]);
});
