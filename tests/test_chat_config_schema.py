"""chat-config.json's one description, webbuild/schema/chat-config.schema.json: the build validates
every document it writes against it, and the runtime (runtime_js/src/config.ts) bundles it and
validates what it reads against it; the two validators must agree."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import tomllib
from pathlib import Path
from types import SimpleNamespace

import pytest
from jsonschema import Draft202012Validator

from webbuild import chat_config
from webbuild.chat_config import FORMAT, SCHEMA_FILE, make_chat_config, schema, validate_chat_config
from webbuild.errors import CorruptFileError
from webbuild.loaders.checkpoint import Checkpoint
from webbuild.quant.scheme import get_scheme

ROOT = Path(__file__).resolve().parent.parent
BASE = {"format": FORMAT, "model_id": "m", "architecture": "llama", "context_window_size": 256,
        "prefill_chunk_size": 64, "vocab_size": 320, "tokenizer_files": ["tokenizer.json"], "eos_token_ids": [2],
        "sampling": {"temperature": 0.7}}


def _with(**changes) -> dict:
    return {**copy.deepcopy(BASE), **changes}


# (document, field the error names); None: valid for a reader.
READER_CASES = [
    (BASE, None),
    (_with(state={"kv_state": "rnn_state", "sliding_window": None}), None),
    (_with(state={"kv_state": "paged_kv_cache", "sliding_window": 4096}), None),
    (_with(model_libs={"webgpu": "model.wasm", "wasm": "model-cpu.wasm", "wasm-threads": "t.wasm"},
           wasm_threads={"memory_pages": {"initial": 256, "maximum": 32768}}), None),
    (_with(format="webbuild-chat-config/2"), "format"),
    (_with(state={"kv_state": "lstm"}), "state.kv_state"),
    (_with(state={"kv_state": "paged_kv_cache", "sliding_window": 0}), "state.sliding_window"),
    (_with(state={"kv_state": "paged_kv_cache", "sliding_window": 2.5}), "state.sliding_window"),
    (_with(tokenizer_files=["vocab.json"]), "tokenizer_files"),
    (_with(eos_token_ids=[-1]), "eos_token_ids.0"),
    (_with(model_libs={"wasm": "../model-cpu.wasm"}), "model_libs.wasm"),
    (_with(model_libs={"wasm-threads": "t.wasm"}), "wasm_threads"),
    (_with(sampling="hot"), "sampling"),
    (_with(prefill_chunk_size=0), "prefill_chunk_size"),
    ({k: v for k, v in BASE.items() if k != "vocab_size"}, "vocab_size"),
]


def _fake_build(**overrides):
    """make_chat_config's inputs for a tiny llama-like model (no TVM build)."""
    config = SimpleNamespace(context_window=256, prefill_chunk=64, vocab_size=320, activation_width=128,
                             state_metadata={"kv_state": "paged_kv_cache", "sliding_window": None},
                             state_bytes=lambda dsize: (1024, 2048))
    for key, value in overrides.items():
        setattr(config, key, value)
    tokenizer = {"added_tokens": [{"id": 1, "content": "<s>"}, {"id": 2, "content": "</s>"}], "model": {"vocab": {}}}
    checkpoint = Checkpoint(source=Path("/ckpt"), config={"bos_token_id": 1, "eos_token_id": 2}, tensor_names=[],
                            read_tensor=lambda name: None,
                            tokenizer_files={"tokenizer.json": json.dumps(tokenizer).encode()},
                            generation_config={}, chat_template="{{ messages }}")
    cache = {"total_bytes": 4096, "records": [{"nbytes": 4096}]}
    return dict(model_id="tiny", arch_name="llama", config=config, scheme=get_scheme("q4f32_1"), target="webgpu",
                checkpoint=checkpoint, cache=cache, bits_per_param=4.5, source="synthetic:tiny",
                model_lib="model.wasm", model_libs={"webgpu": "model.wasm", "wasm": "model-cpu.wasm"})


def test_the_schema_is_valid_json_schema_and_ships_as_package_data():
    Draft202012Validator.check_schema(schema())
    assert schema()["properties"]["format"]["const"] == FORMAT
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "schema/*.json" in package_data["webbuild"]
    assert (ROOT / "webbuild" / "schema" / SCHEMA_FILE).is_file()


def test_what_the_build_writes_is_valid_and_complete():
    doc = make_chat_config(**_fake_build())
    assert set(schema()["$defs"]["written"]["required"]) <= set(doc)
    assert set(doc) <= set(schema()["properties"])  # every property the build writes is described
    assert validate_chat_config(doc) is doc
    threaded = make_chat_config(**{**_fake_build(), "model_libs": {"webgpu": "model.wasm", "wasm-threads": "t.wasm"}})
    assert validate_chat_config(threaded)["wasm_threads"]["memory_pages"]["initial"] >= 1


def test_a_build_writing_a_bad_chat_config_is_a_corrupt_file_error_naming_the_field():
    with pytest.raises(CorruptFileError) as err:
        make_chat_config(**_fake_build(state_metadata={"kv_state": "lstm", "sliding_window": None}))
    assert err.value.where == "chat-config.json" and "state.kv_state" in err.value.message
    with pytest.raises(CorruptFileError) as err:
        make_chat_config(**_fake_build(vocab_size=0))
    assert "vocab_size" in err.value.message


def test_written_requires_every_property_a_reader_may_default():
    minimal = copy.deepcopy(BASE)
    assert validate_chat_config(minimal, written=False) is minimal
    with pytest.raises(CorruptFileError) as err:
        validate_chat_config(minimal, "out/chat-config.json")
    assert err.value.where == "out/chat-config.json" and "is a required property" in err.value.message


@pytest.mark.parametrize(("doc", "field"), READER_CASES)
def test_reader_schema_cases(doc, field):
    if field is None:
        validate_chat_config(copy.deepcopy(doc), written=False)
        return
    with pytest.raises(CorruptFileError) as err:
        validate_chat_config(copy.deepcopy(doc), "m/chat-config.json", written=False)
    assert err.value.where == "m/chat-config.json"
    assert err.value.message.startswith(f"field {field}:"), err.value.message


def test_the_maximum_memory_below_the_initial_is_rejected():
    doc = _with(model_libs={"wasm-threads": "t.wasm"}, wasm_threads={"memory_pages": {"initial": 9, "maximum": 8}})
    with pytest.raises(CorruptFileError, match="wasm_threads.memory_pages"):
        validate_chat_config(doc, written=False)


def test_the_runtime_validator_agrees_with_the_build_one():
    """The same documents through runtime_js's parseChatConfig (dist/modules, `npm run test:js` builds it)."""
    module = ROOT / "dist" / "modules" / "config.js"
    node = shutil.which("node")
    if node is None or not module.is_file():
        pytest.skip("needs node and dist/modules (node runtime_js/build.mjs --modules)")
    docs = [doc for doc, _ in READER_CASES] + [make_chat_config(**_fake_build())]
    script = (f"import {{ chatConfigSchemaError }} from {json.dumps(module.as_uri())};"
              "let s = ''; for await (const c of process.stdin) s += c;"
              "console.log(JSON.stringify(JSON.parse(s).map((d) => chatConfigSchemaError(d))));")
    out = subprocess.run([node, "--input-type=module", "-e", script], input=json.dumps(docs), capture_output=True,
                         text=True, timeout=60, check=True).stdout
    js = json.loads(out)
    for (doc, field), problem in zip(READER_CASES, js):
        assert (problem is None) == (field is None), (doc, problem)
        if field is not None:
            assert problem.startswith(f"{field}:"), problem
    assert js[-1] is None
    assert chat_config.schema() is schema()
