import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { test } from "node:test";

import { sha256Hex, sha256Js } from "../../../dist/modules/sha256.js";

const hex = (b) => Buffer.from(b).toString("hex");

test("pure-JS sha256 matches node:crypto at block-boundary lengths", () => {
  for (const n of [0, 1, 3, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 1000, 65537]) {
    const data = new Uint8Array(randomBytes(n));
    assert.equal(hex(sha256Js(data)), createHash("sha256").update(data).digest("hex"), `length ${n}`);
  }
  assert.equal(hex(sha256Js(new TextEncoder().encode("abc"))),
    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
});

test("sha256Hex (WebCrypto) matches, also for a view into a larger buffer", async () => {
  const big = new Uint8Array(randomBytes(5000));
  const view = big.subarray(100, 4100);
  assert.equal(await sha256Hex(view), createHash("sha256").update(view).digest("hex"));
  assert.equal(hex(sha256Js(view)), createHash("sha256").update(view).digest("hex"));
});
