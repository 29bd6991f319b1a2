"""Structured output (`response_format`) in headless chromium, on WebGPU (SwiftShader) and on the
WASM backend: thirty JSON Schemas (tests/json_schemas.py), `json_object` and an EBNF grammar, each
generation parsed and validated with Python `jsonschema`. Two models: a tiny random Llama with
SmolLM2's byte-level BPE vocabulary (its unconstrained output is noise, so only the grammar can make
it valid JSON; all 30 schemas on both backends) and the real SmolLM2 (its faithful `source` build;
all 30 on WASM, 8 of them on WebGPU, where SwiftShader decodes it at ~1.6 tokens/s: all 30 pass
there too, in ~6 min)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import jsonschema
import pytest

from browser_support import REPO, page_at, webbuild_server
from json_schemas import SCHEMAS
from tiny_models import save_tiny_llama

MODEL = "smollm2-135m-instruct"
ASK = [{"role": "user", "content": "Give one example value as JSON."}]

REQUESTS_JS = """async ([url, options, requests]) => {
  const wb = await import('/dist/webbuild.js');
  const engine = await wb.createEngine(url, options);
  try {
    const out = [];
    for (const request of requests) {
      const r = await engine.chat.completions.create(request);
      out.push({text: r.choices[0].message.content, finish: r.choices[0].finish_reason, usage: r.usage});
    }
    return {out, backend: engine.backend};
  } finally { await engine.unload(); }
}"""


@pytest.fixture(scope="module")
def served(model_build, tmp_path_factory):
    """A models folder with SmolLM2 (source) and a tiny random Llama on SmolLM2's vocabulary."""
    root = tmp_path_factory.mktemp("served_structured")
    smollm = model_build(MODEL, "source", "webgpu")
    source = tmp_path_factory.mktemp("tiny_bpe")
    save_tiny_llama(source, vocab_size=49152, max_position_embeddings=1024)
    shutil.copy(smollm / "tokenizer.json", source / "tokenizer.json")
    template = json.loads((smollm / "chat-config.json").read_text())["chat_template"]
    (source / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "chat_template": template}))
    tiny = model_build(source, "q0f32", "webgpu")
    for name, folder in (("smollm2-source", smollm), ("tiny-bpe", tiny)):
        shutil.copytree(folder, root / name, copy_function=os.link)
    return root


@pytest.fixture(scope="module")
def server(served):
    if not (REPO / "dist" / "xgrammar.js").exists():
        subprocess.run(["npm", "run", "build"], cwd=REPO, check=True)
    with webbuild_server(served) as url:
        yield url


@pytest.fixture(scope="module")
def page(browser, server):
    with page_at(browser, server) as pg:
        yield pg


def _schema_request(name: str, schema: dict, max_tokens: int) -> dict:
    return {"messages": ASK, "temperature": 0, "max_tokens": max_tokens,
            "response_format": {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}}


def _run(page, server, model: str, backend: str, requests: list[dict]) -> list[dict]:
    result = page.evaluate(REQUESTS_JS, [f"{server}models/{model}/", {"backend": backend}, requests])
    assert result["backend"] == backend
    return result["out"]


def _check_all(outputs: list[dict], schemas: dict[str, dict] = SCHEMAS) -> None:
    assert len(outputs) == len(schemas)
    failures = []
    for (name, schema), out in zip(schemas.items(), outputs):
        try:
            jsonschema.validate(json.loads(out["text"]), schema, cls=jsonschema.Draft202012Validator)
        except (ValueError, jsonschema.ValidationError) as exc:
            failures.append(f"{name}: {out['text']!r} ({out['finish']}): {exc}")
        assert out["usage"]["extra"]["grammar_mask_ms_per_token"] >= 0
    assert not failures, "\n".join(failures)
    assert all(out["finish"] == "stop" for out in outputs)


@pytest.mark.parametrize("backend", ["webgpu", "wasm"])
def test_tiny_random_model_gives_valid_json_for_every_schema_only_through_the_grammar(backend, page, server):
    free = {"messages": ASK, "temperature": 0, "max_tokens": 24}
    json_object = {**free, "max_tokens": 96, "response_format": {"type": "json_object"}}
    ebnf = {**free, "response_format": {"type": "grammar", "grammar": 'root ::= "yes" | "no" | "n/a"'}}
    requests = [_schema_request(name, schema, 160) for name, schema in SCHEMAS.items()] + [free, json_object, ebnf]
    outputs = _run(page, server, "tiny-bpe", backend, requests)
    _check_all(outputs[:len(SCHEMAS)])
    with pytest.raises(ValueError):  # unconstrained, the random model's text is not JSON
        json.loads(outputs[-3]["text"])
    assert isinstance(json.loads(outputs[-2]["text"]), dict)
    assert outputs[-1]["text"] in ("yes", "no", "n/a") and outputs[-1]["finish"] == "stop"
    assert outputs[0]["usage"]["extra"]["grammar_compile_s"] > 0


# SmolLM2 on SwiftShader decodes ~1.6 tokens/s: WebGPU takes one schema of each kind (all 30: ~6 min)
WEBGPU_SUBSET = ("flat_object", "number_range", "array_of_enums", "deeply_nested", "string_pattern_code",
                 "defs_ref", "nullable", "product")


@pytest.mark.parametrize("backend", ["wasm", "webgpu"])
def test_smollm2_gives_valid_json_for_every_schema(backend, page, server):
    schemas = {k: v for k, v in SCHEMAS.items() if backend == "wasm" or k in WEBGPU_SUBSET}
    outputs = _run(page, server, "smollm2-source", backend,
                   [_schema_request(name, schema, 200) for name, schema in schemas.items()])
    _check_all(outputs, schemas)


def test_a_bad_schema_or_grammar_is_an_invalid_request(page, server):
    result = page.evaluate("""async ([url]) => {
      const wb = await import('/dist/webbuild.js');
      const engine = await wb.createEngine(url, {backend: 'wasm'});
      const codes = [];
      for (const response_format of [{type: 'grammar', grammar: 'root ::= '},
                                     {type: 'json_schema', json_schema: {name: 'x', schema: {type: 'no-such-type'}}}]) {
        try {
          await engine.chat.completions.create({messages: [{role: 'user', content: 'hi'}], response_format});
          codes.push(null);
        } catch (err) { codes.push([err.code, err.details?.field]); }
      }
      const after = await engine.chat.completions.create({messages: [{role: 'user', content: 'hi'}], max_tokens: 2});
      await engine.unload();
      return {codes, after: after.usage.completion_tokens};
    }""", [f"{server}models/tiny-bpe/"])
    assert result["codes"][0] == ["invalid-request", "response_format.grammar"]
    assert result["codes"][1] == ["invalid-request", "response_format.json_schema.schema"]
    assert result["after"] == 2
