"""Builds `chat-config.json`: everything the browser runtime needs to know about a model folder.

Its one description is the JSON Schema `webbuild/schema/chat-config.schema.json`, which the browser
runtime (runtime_js/src/config.ts) bundles and reads too: every document built here is validated
against the schema's `written` definition before it is returned.
"""

from __future__ import annotations

import functools
import json
from importlib import resources

import tvm
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from referencing import Registry, Resource

from . import __version__
from .compile.wasm_link import THREADS_MEMORY_PAGES
from .errors import ConfigError, CorruptFileError
from .loaders.checkpoint import Checkpoint
from .quant.scheme import QuantScheme

SCHEMA_FILE = "chat-config.schema.json"
FORMAT = "webbuild-chat-config/1"
DEFAULT_SAMPLING = {"temperature": 0.7, "top_p": 0.95, "repetition_penalty": 1.0,
                    "frequency_penalty": 0.0, "presence_penalty": 0.0}
MIB = 1024 * 1024


@functools.cache
def schema() -> dict:
    """The chat-config.json JSON Schema (package data: webbuild/schema/)."""
    return json.loads(resources.files("webbuild").joinpath("schema", SCHEMA_FILE).read_text(encoding="utf-8"))


@functools.cache
def _validator(definition: str | None) -> Draft202012Validator:
    root = schema()
    registry: Registry = Registry().with_resource(root["$id"], Resource.from_contents(root))
    ref = root["$id"] + (f"#/$defs/{definition}" if definition else "")
    return Draft202012Validator({"$ref": ref}, registry=registry)


def validate_chat_config(doc: object, where: str = "chat-config.json", *, written: bool = True) -> dict:
    """`doc` if it is a valid chat-config.json, else a CorruptFileError naming `where` and the field.

    `written=True` checks what the build must write (the schema's `written` definition: every
    property present); `written=False` what a reader needs (the root schema, as the runtime checks).
    """
    error = best_match(_validator("written" if written else None).iter_errors(doc))
    if error is not None:
        path = [str(p) for p in error.absolute_path]
        if error.validator == "required" and isinstance(error.instance, dict):
            path += [next(k for k in error.validator_value if k not in error.instance)]
        field = ".".join(path) or "(the document)"
        raise CorruptFileError(f"field {field}: {error.message}", where=where,
                               fix=f"it must match webbuild/schema/{SCHEMA_FILE}; rebuild the model folder "
                                   "with this version of webbuild")
    assert isinstance(doc, dict)  # the schema's root is an object
    pages = (doc.get("wasm_threads") or {}).get("memory_pages")
    if pages and pages["maximum"] < pages["initial"]:
        raise CorruptFileError("field wasm_threads.memory_pages: maximum is below initial", where=where,
                               fix="rebuild the model folder with this version of webbuild")
    return doc


def _token_text(value) -> str | None:
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def _as_list(value) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in (value if isinstance(value, list) else [value])]


def _added_tokens(tok, checkpoint: Checkpoint) -> dict[str, int]:
    """tokenizer.json's added_tokens as text -> id; a CorruptFileError when malformed."""
    added = tok.get("added_tokens", []) if isinstance(tok, dict) else None
    if not isinstance(added, list) or not all(
            isinstance(t, dict) and isinstance(t.get("content"), str) and isinstance(t.get("id"), int)
            and not isinstance(t.get("id"), bool) for t in added):
        raise CorruptFileError("added_tokens must be a list of objects with a string content and a whole-number id",
                               where=f"{checkpoint.source}: tokenizer.json: added_tokens",
                               fix="restore tokenizer.json from the original model")
    return {t["content"]: t["id"] for t in added}


def check_tokenizer(checkpoint: Checkpoint) -> None:
    """tokenizer.json must load as a tokenizer (the `tokenizers` library reads the same format as the
    runtime's JS tokenizer): a file that does not would build a folder no browser can load."""
    from tokenizers import Tokenizer

    try:
        Tokenizer.from_str(checkpoint.tokenizer_files["tokenizer.json"].decode("utf-8"))
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as err:  # tokenizers raises Exception types, and a Rust panic (a BaseException)
        reason = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
        raise CorruptFileError(f"tokenizer.json is not a tokenizer the runtime can load ({reason})",
                               where=f"{checkpoint.source}: tokenizer.json",
                               fix="restore tokenizer.json from the original model") from None


def add_stop_tokens(checkpoint: Checkpoint, texts: tuple[str, ...], where: str) -> None:
    """Make each token text in `texts` end a reply too (added to the generation config's eos ids)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(checkpoint.tokenizer_files["tokenizer.json"].decode("utf-8"))
    eos = _as_list(checkpoint.generation_config.get("eos_token_id", checkpoint.config.get("eos_token_id")))
    for text in texts:
        token_id = tokenizer.token_to_id(text)
        if token_id is None:
            raise ConfigError(f"stop token {text!r} is not in the tokenizer's vocabulary", where=where,
                              fix="give the token's exact text, as tokenizer.json lists it")
        if token_id not in eos:
            eos.append(token_id)
    checkpoint.generation_config = {**checkpoint.generation_config, "eos_token_id": eos}


def special_tokens(checkpoint: Checkpoint) -> dict:
    """bos / eos / stop ids and stop strings from the tokenizer files and the model configs."""
    try:
        tok = json.loads(checkpoint.tokenizer_files["tokenizer.json"])
        tok_cfg = json.loads(checkpoint.tokenizer_files.get("tokenizer_config.json", b"{}"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        raise CorruptFileError(f"tokenizer file is not valid JSON ({type(err).__name__})", where=str(checkpoint.source),
                               fix="restore tokenizer.json / tokenizer_config.json from the original model") from None
    if not isinstance(tok, dict) or not isinstance(tok_cfg, dict):
        raise CorruptFileError("tokenizer.json and tokenizer_config.json must each hold a JSON object",
                               where=str(checkpoint.source),
                               fix="restore tokenizer.json / tokenizer_config.json from the original model")
    by_text = _added_tokens(tok, checkpoint)
    model = tok.get("model")
    vocab = model.get("vocab") if isinstance(model, dict) else None
    if isinstance(vocab, dict):  # BPE / WordPiece: text -> id (Unigram: a list of [piece, score])
        by_text.update({k: v for k, v in vocab.items() if k in
                        {_token_text(tok_cfg.get("bos_token")), _token_text(tok_cfg.get("eos_token"))}})
    id_to_text = {v: k for k, v in by_text.items()}
    gen, cfg = checkpoint.generation_config, checkpoint.config
    bos_text = _token_text(tok_cfg.get("bos_token"))
    bos = gen.get("bos_token_id", cfg.get("bos_token_id", by_text.get(bos_text) if bos_text is not None else None))
    eos = _as_list(gen.get("eos_token_id", cfg.get("eos_token_id")))
    eos_text = _token_text(tok_cfg.get("eos_token"))
    if eos_text in by_text and by_text[eos_text] not in eos:
        eos.append(by_text[eos_text])
    stop_strings = sorted({id_to_text[i] for i in eos if i in id_to_text})
    return {"bos_token_id": bos, "eos_token_ids": eos, "stop_token_ids": list(eos), "stop_strings": stop_strings,
            "add_bos_token": bool(tok_cfg.get("add_bos_token", False))}


def sampling_defaults(checkpoint: Checkpoint) -> dict:
    """Default sampling parameters: generation_config.json values where given."""
    sampling = dict(DEFAULT_SAMPLING)
    for key in ("temperature", "top_p", "repetition_penalty"):
        if isinstance(checkpoint.generation_config.get(key), (int, float)):
            sampling[key] = float(checkpoint.generation_config[key])
    return sampling


def memory_estimate(config, scheme: QuantScheme, param_bytes: int, largest_param: int) -> dict:
    """Device memory needed: weights + KV cache (or RNN state) + a bound on the prefill activations."""
    dsize = 2 if scheme.dtype == "float16" else 4
    kv_layer, kv_bytes = config.state_bytes(dsize)
    activation = config.prefill_chunk * config.activation_width * dsize * 4 + config.vocab_size * 4
    return {
        "params_bytes": param_bytes,
        "kv_cache_bytes": kv_bytes,
        "activation_bytes_estimate": activation,
        "total_bytes_estimate": param_bytes + kv_bytes + activation,
        "largest_buffer_bytes": max(largest_param, kv_layer, activation),
    }


def webgpu_requirements(scheme: QuantScheme, memory: dict) -> dict:
    """Features and limits to request from the WebGPU adapter."""
    binding = max(memory["largest_buffer_bytes"], 128 * MIB)
    return {
        "required_features": ["shader-f16"] if scheme.needs_shader_f16 else [],
        "required_limits": {"maxStorageBufferBindingSize": binding, "maxBufferSize": binding},
    }


def make_chat_config(*, model_id: str, arch_name: str, config, scheme: QuantScheme, target: str,
                     checkpoint: Checkpoint, cache: dict, bits_per_param: float, source: str,
                     model_lib: str, model_libs: dict[str, str], weight_formats: dict | None = None,
                     model_kind: str = "chat") -> dict:
    """The full chat-config.json document, validated against the schema; `weight_formats`: format
    name -> {"params", "bits_per_param"} of the written weights (`convert.format_summary`)."""
    largest = max((r["nbytes"] for r in cache["records"]), default=0)
    memory = memory_estimate(config, scheme, cache["total_bytes"], largest)
    return validate_chat_config({
        "format": FORMAT,
        "model_kind": model_kind,
        **({"embedding": config.embedding} if model_kind == "embedding" else {}),
        "model_id": model_id,
        "architecture": arch_name,
        "quantization": scheme.name,
        "target": target,
        "model_lib": model_lib,
        "model_libs": model_libs,
        **({"wasm_threads": {"memory_pages": dict(THREADS_MEMORY_PAGES)}} if "wasm-threads" in model_libs else {}),
        "tensor_cache": "tensor-cache.json",
        "context_window_size": config.context_window,
        "prefill_chunk_size": config.prefill_chunk,
        "vocab_size": config.vocab_size,
        "state": config.state_metadata,
        "tokenizer_files": sorted(checkpoint.tokenizer_files),
        **special_tokens(checkpoint),
        "chat_template": checkpoint.chat_template,
        "sampling": sampling_defaults(checkpoint),
        "webgpu": webgpu_requirements(scheme, memory),
        "memory": memory,
        "build": {"webbuild_version": __version__, "tvm_version": tvm.__version__, "source": source,
                  "bits_per_param": round(bits_per_param, 3), "weight_formats": weight_formats or {}},
    })
