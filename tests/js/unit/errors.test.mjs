import assert from "node:assert/strict";
import { test } from "node:test";

import * as E from "../../../dist/modules/errors.js";

const CASES = [
  [() => new E.NoWebGPUError(), E.NoWebGPUError, "no-webgpu"],
  [() => new E.ShaderF16Error("smollm2-135m-instruct-q4f16_1"), E.ShaderF16Error, "missing-shader-f16"],
  [() => new E.OutOfMemoryError(), E.OutOfMemoryError, "out-of-memory"],
  [() => new E.StorageQuotaError("params_shard_3.bin"), E.StorageQuotaError, "quota-exceeded"],
  [() => new E.ContextWindowExceededError(2000, 100, 2048), E.ContextWindowExceededError, "context-window-exceeded"],
  [() => new E.IntegrityError("params_shard_1.bin"), E.IntegrityError, "integrity"],
  [() => new E.InvalidRequestError("temperature", "must be a number"), E.InvalidRequestError, "invalid-request"],
  [() => new E.ModelLoadError("https://x/chat-config.json", "HTTP 404"), E.ModelLoadError, "model-load"],
  [() => new E.AbortedError(), E.AbortedError, "aborted"],
];

test("every error class has its code, a fix, and is a WebbuildError and an Error", () => {
  for (const [make, cls, code] of CASES) {
    const err = make();
    assert.ok(err instanceof cls);
    assert.ok(err instanceof E.WebbuildError);
    assert.ok(err instanceof Error);
    assert.equal(err.code, code);
    assert.equal(typeof err.fix, "string");
    assert.ok(err.fix.length > 0);
    assert.equal(err.name, cls.name);
  }
});

test("errors name their subject", () => {
  assert.equal(new E.IntegrityError("params_shard_1.bin").file, "params_shard_1.bin");
  assert.equal(new E.InvalidRequestError("stop[2]", "x").field, "stop[2]");
  assert.equal(new E.ModelLoadError("https://x/y.json", "HTTP 404").url, "https://x/y.json");
  assert.match(new E.ShaderF16Error("m-q4f16_1").fix, /q4f32_1/);
  assert.match(new E.ShaderF16Error().fix, /f32/);
});

test("serialize / deserialize keeps class, code, message and details", () => {
  for (const [make, cls, code] of CASES) {
    const err = make();
    const back = E.deserializeError(JSON.parse(JSON.stringify(E.serializeError(err))));
    assert.ok(back instanceof cls, code);
    assert.equal(back.code, code);
    assert.equal(back.message, err.message);
    assert.deepEqual(back.details, err.details);
  }
  const internal = E.serializeError(new TypeError("boom"));
  assert.equal(internal.code, "internal");
  assert.ok(E.deserializeError(internal) instanceof E.WebbuildError);
});

test("quota / abort detection", () => {
  assert.ok(E.isQuotaError(new DOMException("full", "QuotaExceededError")));
  assert.ok(!E.isQuotaError(new DOMException("x", "NotFoundError")));
  assert.ok(E.isAbortError(new DOMException("x", "AbortError")));
  const c = new AbortController();
  E.throwIfAborted(c.signal);
  c.abort();
  assert.throws(() => E.throwIfAborted(c.signal), E.AbortedError);
});
