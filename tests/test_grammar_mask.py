"""The grammar's token mask on the device (webbuild.kernels.token_bitmask): the kernel against numpy
on the host CPU target and on WebGPU (node, Dawn on SwiftShader), and in headless chromium greedy
JSON-Schema output with the mask applied by the module (WebGPU and WASM) equal, token for token, to
the output of a model folder built without the kernel (as folders built before it are), where the
runtime masks the read-back logits in JavaScript."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import numpy as np
import pytest

from browser_support import REPO, page_at, webbuild_server
from json_schemas import SCHEMAS
from node_harness import run_toy
from tiny_models import save_tiny_llama
from webbuild.kernels.token_bitmask import mask_words, token_bitmask_func

ASK = [{"role": "user", "content": "Give one example value as JSON."}]
# one schema of each kind (tests/json_schemas.py)
SUBSET = ("flat_object", "number_range", "array_of_enums", "deeply_nested", "string_pattern_code", "defs_ref",
          "nullable", "product")
STREAM_JS = """async ([url, options, requests]) => {
  const wb = await import('/dist/webbuild.js');
  const engine = await wb.createEngine(url, options);
  try {
    const out = [];
    for (const request of requests) {
      const pieces = [];
      let usage = null;
      for await (const chunk of await engine.chat.completions.create({...request, stream: true,
                                                                       stream_options: {include_usage: true}})) {
        const content = chunk.choices[0]?.delta?.content;
        if (content) pieces.push(content);
        if (chunk.usage) usage = chunk.usage;
      }
      out.push({pieces, usage});
    }
    return {out, backend: engine.backend};
  } finally { await engine.unload(); }
}"""

# vocabularies: a multiple of 32 and of the 256 GPU threads, neither, and SmolLM2's
VOCABS = (512, 1000, 49152)


def _masks(vocab: int, rng) -> list[np.ndarray]:
    """Random masks (one with its padding bits set), all but one token masked, all masked, none masked."""
    words = mask_words(vocab)
    random = rng.integers(-2**31, 2**31, words, dtype=np.int64).astype(np.int32)
    padded = random.copy()
    padded[-1] = -1  # bits past the vocabulary set: they must not write past the logits
    one = np.zeros(words, np.int32)
    keep = vocab - 1 - int(rng.integers(0, min(vocab, 40)))
    one[keep // 32] = np.int32(np.uint32(1 << (keep % 32)).view(np.int32))
    return [random, padded, one, np.zeros(words, np.int32), np.full(words, -1, np.int32)]


def _reference(logits: np.ndarray, mask: np.ndarray, masked: float = -np.inf) -> np.ndarray:
    """numpy: logits with the tokens whose bit is clear set to `masked`."""
    vocab = logits.size
    bits = ((mask.view(np.uint32)[:, None] >> np.arange(32, dtype=np.uint32)) & 1).reshape(-1)[:vocab]
    return np.where(bits == 1, logits.reshape(-1), np.float32(masked)).astype(np.float32).reshape(logits.shape)


def _cases(seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    cases = []
    for vocab in VOCABS:
        for mask in _masks(vocab, rng):
            cases.append(((rng.standard_normal((1, 1, vocab)) * 4).astype(np.float32), mask))
    return cases


def _module(funcs_and_vocabs: list[tuple[object, int]]):
    """A Relax module with one function `f{i}` per kernel: (logits, bitmask) -> logits, in place."""
    from tvm.relax.frontend import nn

    class Toy(nn.Module):
        pass

    spec = {}
    for i, (func, vocab) in enumerate(funcs_and_vocabs):
        def call(self, logits, bitmask, func=func, vocab=vocab):
            return nn.op.tensor_ir_inplace_op(func, "apply_token_bitmask", [logits, bitmask], 0,
                                              nn.Tensor.placeholder((1, 1, vocab), "float32"))
        setattr(Toy, f"f{i}", call)
        spec[f"f{i}"] = {"logits": nn.spec.Tensor([1, 1, vocab], "float32"),
                         "bitmask": nn.spec.Tensor([mask_words(vocab)], "int32"),
                         "$": {"param_mode": "none", "effect_mode": "none"}}
    mod, _ = Toy().export_tvm(spec=spec)
    return mod


def test_host_cpu_kernel_masks_in_place_like_numpy():
    import tvm
    from tvm import relax as rx

    cases = _cases(0)
    vocabs = sorted({c[0].size for c in cases})
    mod = _module([(token_bitmask_func(v, gpu=False), v) for v in vocabs])
    vm = rx.VirtualMachine(tvm.compile(mod, target="llvm"), tvm.cpu())
    for logits, mask in cases:
        want = _reference(logits, mask)
        tensor = tvm.runtime.tensor(logits)
        out = vm[f"f{vocabs.index(logits.size)}"](tensor, tvm.runtime.tensor(mask)).numpy()
        np.testing.assert_array_equal(out, want)
        np.testing.assert_array_equal(tensor.numpy(), want)  # in place: the argument holds the result
        allowed = np.isfinite(want.reshape(-1))
        if allowed.any():  # the greedy token under the mask is an allowed one
            assert allowed[int(np.argmax(out.reshape(-1)))]


@pytest.mark.parametrize("vocab", [1000, 49152])
def test_webgpu_kernel_masks_like_numpy(vocab, tmp_path):
    import tvm
    from tvm.target import Target

    from webbuild.compile import wasm_link, wasm_runtime

    wasm_runtime.build_runtime()
    cases = [c for c in _cases(1) if c[0].size == vocab]
    mod = _module([(token_bitmask_func(vocab, gpu=True), vocab)])
    target = Target({"kind": "webgpu"}, host={"kind": "llvm", "mtriple": "wasm32-unknown-unknown-wasm"})
    wasm_link.export_wasm(tvm.compile(mod, target=target), tmp_path / "mask.wasm", opt_level="O1")
    for logits, mask in cases:
        out = run_toy(tmp_path / "mask.wasm", "f0", [logits, mask])
        # WGSL has no infinity: the lowest finite float32
        np.testing.assert_array_equal(out[0], _reference(logits, mask, np.finfo(np.float32).min))


def _without_token_bitmask(spec_fn):
    """model_spec as builds made before the kernel export it (no apply_token_bitmask)."""
    def spec(*args, **kwargs):
        out = spec_fn(*args, **kwargs)
        out.pop("apply_token_bitmask", None)
        return out
    return spec


@pytest.fixture(scope="module")
def served(model_build, smollm, tmp_path_factory):
    """A models folder with one tiny random Llama on SmolLM2's vocabulary (49152 tokens) built twice:
    `tiny` as builds are now, `tiny-legacy` without apply_token_bitmask (as folders built before it)."""
    from webbuild.arch import kv_model
    from webbuild.build import BuildRequest, build

    root = tmp_path_factory.mktemp("served_grammar_mask")
    source = tmp_path_factory.mktemp("tiny_bpe_mask")
    save_tiny_llama(source, vocab_size=49152, max_position_embeddings=1024)
    (source / "tokenizer.json").write_bytes(smollm.tokenizer_files["tokenizer.json"])
    (source / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "chat_template": smollm.chat_template}))
    tiny = model_build(source, "q0f32", "webgpu")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(kv_model, "model_spec", _without_token_bitmask(kv_model.model_spec))
        legacy = build(BuildRequest(str(source), "q0f32", tmp_path_factory.mktemp("legacy_build"), target="webgpu",
                                    name="legacy")).folder
    for name, folder in (("tiny", tiny), ("tiny-legacy", legacy)):
        shutil.copytree(folder, root / name, copy_function=os.link)
    return root


@pytest.fixture(scope="module")
def page(browser, served):
    if not (REPO / "dist" / "xgrammar.js").exists():
        subprocess.run(["npm", "run", "build"], cwd=REPO, check=True)
    with webbuild_server(served) as url, page_at(browser, url) as pg:
        yield pg, url


@pytest.mark.parametrize("backend", ["webgpu", "wasm"])
def test_greedy_json_schema_output_masked_in_the_module_equals_the_js_mask(backend, page):
    pg, url = page
    requests = [{"messages": ASK, "temperature": 0, "max_tokens": 160, "response_format": {
        "type": "json_schema", "json_schema": {"name": name, "schema": SCHEMAS[name], "strict": True}}}
        for name in SUBSET]
    runs = {}
    for model in ("tiny", "tiny-legacy"):
        result = pg.evaluate(STREAM_JS, [f"{url}models/{model}/", {"backend": backend}, requests])
        assert result["backend"] == backend
        runs[model] = result["out"]
    for name, device, js in zip(SUBSET, runs["tiny"], runs["tiny-legacy"]):
        assert device["usage"]["extra"]["grammar_mask_where"] == "module"
        assert js["usage"]["extra"]["grammar_mask_where"] == "js"
        # streamed piece by piece (a chunk per token that completes text): the same tokens
        assert device["pieces"] == js["pieces"], name
        assert device["usage"]["completion_tokens"] == js["usage"]["completion_tokens"], name
        json.loads("".join(device["pieces"]))
